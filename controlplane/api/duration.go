package api

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// ParsePauseDuration reads a pause length: "0" or "forever" (until
// resumed, returned as 0), whole days like "1d", or a Go duration like
// "15m" or "1h30m"; timed pauses are positive and at most model.MaxPause.
func ParsePauseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	switch s {
	case "":
		return 0, errors.New(`duration is required: "15m", "1h", "1d", a Go duration, or "0" for until resumed`)
	case "0", "forever":
		return 0, nil
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 1 || n > int(model.MaxPause/(24*time.Hour)) {
			return 0, fmt.Errorf("duration %q: days must be a whole number from 1 to %d", clip(s), model.MaxPause/(24*time.Hour))
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		d, err = time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("duration %q is not a duration like 15m, 1h or 1d", clip(s))
		}
	}
	switch {
	case d < 0:
		return 0, fmt.Errorf("duration %q is negative", clip(s))
	case d == 0:
		return 0, nil
	case d > model.MaxPause:
		return 0, fmt.Errorf("duration %q is longer than the longest pause (%s)", clip(s), formatDays(model.MaxPause))
	}
	return d, nil
}

func formatDays(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

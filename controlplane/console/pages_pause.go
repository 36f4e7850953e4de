package console

import (
	"fmt"
	"net/http"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// pauseChoice is one of the agent's pause lengths as a button.
type pauseChoice struct {
	Test     string // the data-test suffix: 15m, 1h, 1d, forever
	Duration string // what POST /api/v1/pause takes
	Label    string // catalog key
}

// pauseChoices follows model.PauseChoices, then "until resumed".
func pauseChoices() []pauseChoice {
	out := make([]pauseChoice, 0, len(model.PauseChoices)+1)
	for _, d := range model.PauseChoices {
		var s string
		switch {
		case d%(24*time.Hour) == 0:
			s = fmt.Sprintf("%dd", d/(24*time.Hour))
		case d%time.Hour == 0:
			s = fmt.Sprintf("%dh", d/time.Hour)
		default:
			s = fmt.Sprintf("%dm", d/time.Minute)
		}
		out = append(out, pauseChoice{Test: s, Duration: s, Label: "pause.for_" + s})
	}
	return append(out, pauseChoice{Test: "forever", Duration: "forever", Label: "pause.forever"})
}

// pauseData is the Pause page's data.
type pauseData struct {
	State       model.PauseState
	Active      bool
	Remaining   string // h:mm:ss left of a timed pause
	RequireCode bool
	Choices     []pauseChoice
}

func (c *Console) pausePage(w http.ResponseWriter, r *http.Request, p pageData) {
	ctx := r.Context()
	ps := c.b.PauseState(ctx)
	now := c.now()
	d := pauseData{
		State:       ps,
		Active:      ps.ActiveAt(now),
		RequireCode: c.b.Settings(ctx).RequireCodeToPause,
		Choices:     pauseChoices(),
	}
	if d.Active && !ps.Until.IsZero() {
		d.Remaining = clock(ps.Until.Sub(now))
	}
	p.Data = d
	c.render(w, r, http.StatusOK, "pause", p)
}

// clock formats a duration as h:mm:ss (hours may pass 24), rounded up to
// the second so that a running pause never shows 0:00:00.
func clock(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int64((d + time.Second - 1) / time.Second)
	return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
}

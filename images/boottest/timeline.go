package boottest

import (
	"fmt"
	"strings"
	"sync"
	"time"
)

// Timeline records when each phase of a boot test ended, to print where
// the minutes went.
type Timeline struct {
	mu    sync.Mutex
	start time.Time
	marks []mark
}

type mark struct {
	phase string
	at    time.Time
}

// NewTimeline starts a timeline now.
func NewTimeline() *Timeline { return &Timeline{start: time.Now()} }

// Mark records that phase ended now.
func (tl *Timeline) Mark(phase string) { tl.MarkAt(phase, time.Now()) }

// MarkAt records that phase ended at t (a serial console line's arrival,
// say). Marks are kept in time order.
func (tl *Timeline) MarkAt(phase string, t time.Time) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	i := len(tl.marks)
	for i > 0 && tl.marks[i-1].at.After(t) {
		i--
	}
	tl.marks = append(tl.marks, mark{})
	copy(tl.marks[i+1:], tl.marks[i:])
	tl.marks[i] = mark{phase, t}
}

// Elapsed is the time since the timeline started.
func (tl *Timeline) Elapsed() time.Duration { return time.Since(tl.start) }

// String renders the phases, one a line: its duration (from the previous
// mark) and the time since the start.
func (tl *Timeline) String() string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "%-34s %9s %9s\n", "phase", "took", "at")
	prev := tl.start
	for _, m := range tl.marks {
		fmt.Fprintf(&b, "%-34s %8.1fs %8.1fs\n", m.phase, m.at.Sub(prev).Seconds(), m.at.Sub(tl.start).Seconds())
		prev = m.at
	}
	fmt.Fprintf(&b, "%-34s %9s %8.1fs\n", "total", "", time.Since(tl.start).Seconds())
	return b.String()
}

// Package upstream decides whether an upstream (a cloud proxy, a cloud
// resolver) is healthy from the outcomes of active probes and of real
// flows, with hysteresis: it goes down after FailAfter failures in a row
// and comes back only after it has passed every check for RecoverAfter.
// The clock is the caller's: every method takes now, so tests drive it.
package upstream

import (
	"sync"
	"time"
)

// Defaults for the zero values of Params.
const (
	DefaultFailAfter    = 2
	DefaultRecoverAfter = 10 * time.Second
	// DefaultRiseAfter is the passed probes a down upstream needs (besides
	// RecoverAfter) before it is up again.
	DefaultRiseAfter = 2
)

// Params are the hysteresis of a Health.
type Params struct {
	// FailAfter is how many failures in a row (probes or real flows,
	// with no success between) take an up upstream down.
	FailAfter int
	// RecoverAfter is how long a down upstream must pass every check,
	// with no failure, before it is up again.
	RecoverAfter time.Duration
	// RiseAfter is how many successes in a row a down upstream needs, on
	// top of RecoverAfter.
	RiseAfter int
}

func (p Params) filled() Params {
	if p.FailAfter <= 0 {
		p.FailAfter = DefaultFailAfter
	}
	if p.RecoverAfter <= 0 {
		p.RecoverAfter = DefaultRecoverAfter
	}
	if p.RiseAfter <= 0 {
		p.RiseAfter = DefaultRiseAfter
	}
	return p
}

// State is a snapshot of a Health.
type State struct {
	Up bool
	// Since is when Up last changed (the creation time at first).
	Since time.Time
	// LastErr is the cause of the latest failure; nil when there was none
	// since the last success.
	LastErr error
	// Fails is the failures in a row now; Passes the successes in a row.
	Fails, Passes int
	// Downs counts the transitions to down.
	Downs uint64
}

// Health is one upstream's health. It starts up: an upstream is trusted
// until it fails. It is safe for concurrent use.
type Health struct {
	p Params

	mu       sync.Mutex
	up       bool
	since    time.Time
	okSince  time.Time // first success of the current run of successes
	fails    int
	passes   int
	lastErr  error
	downs    uint64
	onChange func(up bool, err error)
}

// New returns an up Health created at now. onChange, when set, is called
// (outside the lock) at each transition with the new state and, going
// down, the failure that decided it.
func New(p Params, now time.Time, onChange func(up bool, err error)) *Health {
	return &Health{p: p.filled(), up: true, since: now, onChange: onChange}
}

// Up reports whether the upstream is up.
func (h *Health) Up() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.up
}

// State returns a snapshot.
func (h *Health) State() State {
	h.mu.Lock()
	defer h.mu.Unlock()
	return State{Up: h.up, Since: h.since, LastErr: h.lastErr, Fails: h.fails, Passes: h.passes, Downs: h.downs}
}

// Success records a check passed at now (a probe, or a real flow served);
// it reports whether the upstream came up by it.
func (h *Health) Success(now time.Time) bool {
	h.mu.Lock()
	h.fails, h.lastErr = 0, nil
	if h.passes == 0 {
		h.okSince = now
	}
	h.passes++
	changed := false
	if !h.up && h.passes >= h.p.RiseAfter && now.Sub(h.okSince) >= h.p.RecoverAfter {
		h.up, h.since, changed = true, now, true
	}
	cb := h.onChange
	h.mu.Unlock()
	if changed && cb != nil {
		cb(true, nil)
	}
	return changed
}

// Failure records a check failed at now with cause err; it reports whether
// the upstream went down by it. A failure of a down upstream restarts its
// RecoverAfter.
func (h *Health) Failure(now time.Time, err error) bool {
	h.mu.Lock()
	h.passes, h.lastErr = 0, err
	h.fails++
	changed := false
	if h.up && h.fails >= h.p.FailAfter {
		h.up, h.since, changed = false, now, true
		h.downs++
	}
	cb := h.onChange
	h.mu.Unlock()
	if changed && cb != nil {
		cb(false, err)
	}
	return changed
}

// Down takes the upstream down at once (a definite failure, say the
// credentials refused by every check), as if FailAfter failures came.
func (h *Health) Down(now time.Time, err error) bool {
	h.mu.Lock()
	f := h.p.FailAfter - h.fails
	h.mu.Unlock()
	changed := false
	for range max(f, 1) {
		changed = h.Failure(now, err) || changed
	}
	return changed
}

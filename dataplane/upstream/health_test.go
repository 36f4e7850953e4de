package upstream

import (
	"errors"
	"testing"
	"time"
)

var errDead = errors.New("connection refused")

// clock is an injected clock for the state machine.
type clock struct{ t time.Time }

func (c *clock) now() time.Time                { return c.t }
func (c *clock) add(d time.Duration) time.Time { c.t = c.t.Add(d); return c.t }

func newTest(t *testing.T, p Params) (*Health, *clock, *[]bool) {
	t.Helper()
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	var changes []bool
	h := New(p, c.now(), func(up bool, _ error) { changes = append(changes, up) })
	return h, c, &changes
}

func TestHealthStartsUp(t *testing.T) {
	h, _, _ := newTest(t, Params{})
	if !h.Up() {
		t.Fatal("a new upstream is down; want up until it fails")
	}
}

func TestHealthGoesDownAfterFailAfterInARow(t *testing.T) {
	h, c, changes := newTest(t, Params{FailAfter: 2})
	if h.Failure(c.add(time.Second), errDead) || !h.Up() {
		t.Fatal("one failure took it down; want FailAfter=2 in a row")
	}
	h.Success(c.add(time.Second)) // a success between resets the run
	if h.Failure(c.add(time.Second), errDead) || !h.Up() {
		t.Fatal("failure, success, failure took it down: the success must reset the run")
	}
	if !h.Failure(c.add(time.Second), errDead) || h.Up() {
		t.Fatal("two failures in a row left it up")
	}
	st := h.State()
	if st.Downs != 1 || !errors.Is(st.LastErr, errDead) || !st.Since.Equal(c.now()) {
		t.Fatalf("state after going down: %+v", st)
	}
	if len(*changes) != 1 || (*changes)[0] {
		t.Fatalf("transitions reported: %v, want [false]", *changes)
	}
}

func TestHealthRecoversOnlyAfterRecoverAfterWithoutFailure(t *testing.T) {
	h, c, changes := newTest(t, Params{FailAfter: 1, RecoverAfter: 10 * time.Second, RiseAfter: 2})
	h.Failure(c.now(), errDead)
	if h.Up() {
		t.Fatal("not down after FailAfter=1 failure")
	}
	// Passing probes every second, but one failure at 5 s restarts the wait.
	for i := 0; i < 5; i++ {
		if h.Success(c.add(time.Second)) {
			t.Fatalf("up after %d s of passes; want 10 s", i+1)
		}
	}
	h.Failure(c.add(time.Second), errDead)
	// The first pass after it is at +1 s: RecoverAfter counts from there,
	// so the passes at +1 … +10 s leave it down and the one at +11 s ends it.
	for i := 1; i <= 10; i++ {
		if h.Success(c.add(time.Second)) {
			t.Fatalf("up %d s after the last failure; want 11 s", i)
		}
	}
	if !h.Success(c.add(time.Second)) || !h.Up() {
		t.Fatalf("not up after 10 s of passes: %+v", h.State())
	}
	if got := *changes; len(got) != 2 || got[0] || !got[1] {
		t.Fatalf("transitions: %v, want [false true]", got)
	}
}

func TestHealthRiseAfterNeedsSuccessesInARow(t *testing.T) {
	h, c, _ := newTest(t, Params{FailAfter: 1, RecoverAfter: time.Second, RiseAfter: 3})
	h.Failure(c.now(), errDead)
	h.Success(c.add(time.Second))
	if h.Success(c.add(5 * time.Second)) {
		t.Fatal("up after 2 successes; want RiseAfter=3")
	}
	if !h.Success(c.add(time.Second)) {
		t.Fatal("not up after 3 successes over RecoverAfter")
	}
}

func TestHealthDownIsImmediate(t *testing.T) {
	h, c, changes := newTest(t, Params{FailAfter: 3})
	if !h.Down(c.now(), errDead) || h.Up() {
		t.Fatal("Down left it up")
	}
	if h.Down(c.add(time.Second), errDead) {
		t.Fatal("Down of a down upstream reported a transition")
	}
	if len(*changes) != 1 {
		t.Fatalf("transitions: %v", *changes)
	}
}

// A flapping upstream (every other check fails) never comes back.
func TestHealthFlappingStaysDown(t *testing.T) {
	h, c, _ := newTest(t, Params{FailAfter: 2, RecoverAfter: 3 * time.Second})
	h.Failure(c.now(), errDead)
	h.Failure(c.now(), errDead)
	for i := 0; i < 100; i++ {
		h.Success(c.add(time.Second))
		h.Failure(c.add(time.Second), errDead)
		if h.Up() {
			t.Fatalf("a flapping upstream came back up after %d rounds", i)
		}
	}
}

package daemon

import (
	"testing"
	"time"
)

func TestFlowRing(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	var r flowRing
	if s, b, k, from := r.since(flowSample{at: t0, steered: 5}); s != 0 || b != 0 || k != 0 || !from.Equal(t0) {
		t.Fatalf("empty ring: %d %d %d %v", s, b, k, from)
	}
	r.add(flowSample{at: t0}) // the start
	// 90 minutes of one steered, two bypassed and one blocked flow a minute.
	for m := 1; m <= 90; m++ {
		at := t0.Add(time.Duration(m) * time.Minute)
		cur := flowSample{at: at, steered: uint64(m), bypassed: 2 * uint64(m), blocked: uint64(m)}
		s, b, k, from := r.since(cur)
		want := uint64(min(m, 60))
		if s != want || b != 2*want || k != want {
			t.Fatalf("minute %d: %d %d %d, want %d %d %d", m, s, b, k, want, 2*want, want)
		}
		if wantFrom := at.Add(-time.Duration(want) * time.Minute); !from.Equal(wantFrom) {
			t.Fatalf("minute %d: from %v, want %v", m, from, wantFrom)
		}
		r.add(cur)
	}
	if r.n != flowRingSlots {
		t.Fatalf("ring holds %d samples", r.n)
	}
	// A gap of two hours: nothing in the ring is within the hour.
	late := flowSample{at: t0.Add(4 * time.Hour), steered: 500}
	if s, _, _, from := r.since(late); s != 0 || !from.Equal(late.at) {
		t.Fatalf("after a gap: %d from %v", s, from)
	}
	if sub(1, 2) != 0 {
		t.Fatal("sub went negative")
	}
}

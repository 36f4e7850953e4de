package daemon

import (
	"sync"
	"time"
)

// flowSample is the proxy's cumulative flow counters at one moment.
type flowSample struct {
	at                         time.Time
	steered, bypassed, blocked uint64
}

// flowRingSlots is the number of per-minute samples kept: an hour.
const flowRingSlots = 60

// flowRing keeps one sample of the cumulative counters per minute in a
// 60-slot ring, so that the counts of the last hour are the current
// counters minus the oldest sample still within the hour.
type flowRing struct {
	mu    sync.Mutex
	slots [flowRingSlots]flowSample
	n     int // samples held (≤ flowRingSlots)
	next  int // slot the next sample goes to
}

// add records a sample; the oldest goes once the ring is full.
func (r *flowRing) add(s flowSample) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.slots[r.next] = s
	r.next = (r.next + 1) % flowRingSlots
	if r.n < flowRingSlots {
		r.n++
	}
}

// since returns cur minus the oldest sample taken no longer than an hour
// before cur.at, and that sample's time (cur itself when there is none).
func (r *flowRing) since(cur flowSample) (steered, bypassed, blocked uint64, from time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	base := cur
	for i := 0; i < r.n; i++ {
		// Oldest first.
		s := r.slots[(r.next-r.n+i+flowRingSlots)%flowRingSlots]
		if cur.at.Sub(s.at) <= time.Hour {
			base = s
			break
		}
	}
	return sub(cur.steered, base.steered), sub(cur.bypassed, base.bypassed), sub(cur.blocked, base.blocked), base.at
}

// sub is a-b, 0 when a counter went backwards.
func sub(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}

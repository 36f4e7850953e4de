package proxy

import (
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// Returning memory to the OS after a burst of flows has gone idle.
//
// A burst of new flows leaves the heap holding what their handshakes
// allocated (ClientHello buffers, CONNECT readers, dial state) and the
// stacks of the goroutines that ran them; once the flows park, little of
// that is live. The Go runtime keeps freed pages for reuse up to about its
// heap goal (twice the live heap of the last collection, and a quiet
// process may not collect for two minutes) and returns the rest slowly, so
// the resident memory a burst raised stays raised. Measured with 5000 idle
// flows: about 10 KiB of RSS per flow without the trim, of which about
// 1.5 KiB is live.
//
// The trimmer runs once at least trimAfterParks directions have parked
// since its last run and none has parked for trimQuiet (the burst is
// over), at most once per trimEvery: it forces a collection and returns
// every free page to the OS (debug.FreeOSMemory). That costs one full GC
// of the live heap (about a millisecond of one core per 10 MiB live, with
// the usual sub-millisecond pauses) and page faults when the heap grows
// again: small next to the burst of a thousand handshakes that earned it,
// and bounded in rate, so a daemon under steady churn pays it at most
// every trimEvery, and a daemon without bursts never. It changes neither
// GOGC nor the memory limit: with a limit set (GOMEMLIMIT,
// debug.SetMemoryLimit) the runtime still scavenges towards it on its own,
// the trim only makes an idle gateway's RSS show what it holds.
// Config.KeepFreedMemory turns it off.

const (
	trimAfterParks = 1024
	trimQuiet      = 200 * time.Millisecond
	trimEvery      = 2 * time.Second
)

// trimmer returns freed memory to the OS after bursts of parked flows.
type trimmer struct {
	parks    atomic.Int64 // directions parked since the last trim
	lastPark atomic.Int64 // unix nanoseconds
	trims    atomic.Int64 // trims done, for tests

	mu       sync.Mutex
	timer    *time.Timer
	lastTrim time.Time
}

// memTrim serves the whole process, as the memory it returns is.
var memTrim trimmer

// parked notes one more parked direction.
func (tr *trimmer) parked() {
	tr.lastPark.Store(time.Now().UnixNano())
	if tr.parks.Add(1) != trimAfterParks {
		return
	}
	tr.mu.Lock()
	if tr.timer == nil {
		tr.timer = time.AfterFunc(trimQuiet, tr.run)
	} else {
		tr.timer.Reset(trimQuiet)
	}
	tr.mu.Unlock()
}

// run trims, or waits on while directions still park or the last trim is
// too recent.
func (tr *trimmer) run() {
	now := time.Now()
	wait := trimQuiet - now.Sub(time.Unix(0, tr.lastPark.Load()))
	tr.mu.Lock()
	if w := trimEvery - now.Sub(tr.lastTrim); w > wait {
		wait = w
	}
	if wait > 0 {
		tr.timer.Reset(wait)
		tr.mu.Unlock()
		return
	}
	tr.lastTrim = now
	tr.mu.Unlock()
	tr.parks.Store(0)
	debug.FreeOSMemory()
	tr.trims.Add(1)
}

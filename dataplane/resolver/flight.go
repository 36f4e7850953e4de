package resolver

import (
	"sync"

	"github.com/miekg/dns"
)

// flightGroup runs one upstream lookup per key at a time and hands its
// result to every caller that asked for the same key meanwhile.
type flightGroup struct {
	mu sync.Mutex
	m  map[cacheKey]*flight
}

// flight is one lookup in progress.
type flight struct {
	done chan struct{}
	msg  *dns.Msg
	err  error
	dups int // callers that joined this flight
}

// do runs fn for k unless a call for k is in progress, in which case it
// waits for that call's result; shared reports that the result went to
// more than one caller.
func (g *flightGroup) do(k cacheKey, fn func() (*dns.Msg, error)) (msg *dns.Msg, err error, shared bool) {
	g.mu.Lock()
	if g.m == nil {
		g.m = map[cacheKey]*flight{}
	}
	if f, ok := g.m[k]; ok {
		f.dups++
		g.mu.Unlock()
		<-f.done
		return f.msg, f.err, true
	}
	f := &flight{done: make(chan struct{})}
	g.m[k] = f
	g.mu.Unlock()

	defer func() {
		g.mu.Lock()
		delete(g.m, k)
		shared = f.dups > 0
		g.mu.Unlock()
		close(f.done)
	}()
	f.msg, f.err = fn()
	return f.msg, f.err, false
}

// joiners is how many callers wait for the flight of k now.
func (g *flightGroup) joiners(k cacheKey) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f, ok := g.m[k]; ok {
		return f.dups
	}
	return 0
}

package resolver

import (
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Suggested per-client limits for a small office (about 200 clients); the
// Config fields they go in are off when zero.
const (
	DefaultMaxTCPPerClient           = 16
	DefaultQueriesPerSecondPerClient = 200
	DefaultQueryBurst                = 400
	// maxRateClients bounds the token buckets kept; idle ones go first.
	maxRateClients = 4096
)

// clientKey is what a per-client limit counts by: the IPv4 address, or the
// IPv6 /64 (one host can pick any address in its /64).
func clientKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// bucket is one client's token bucket.
type bucket struct {
	tokens float64
	last   time.Time
}

// rateLimiter is a token bucket per client key over a bounded map.
type rateLimiter struct {
	rate  float64 // tokens per second; 0 is no limit
	burst float64
	max   int
	now   func() time.Time

	mu        sync.Mutex
	buckets   map[netip.Addr]*bucket
	lastSweep time.Time
}

func newRateLimiter(rate float64, burst int, max int, now func() time.Time) *rateLimiter {
	if burst <= 0 {
		burst = int(2 * rate)
	}
	return &rateLimiter{rate: rate, burst: float64(max1(burst)), max: max, now: now, buckets: map[netip.Addr]*bucket{}}
}

func max1(n int) int { return max(n, 1) }

// allow takes a token for the client at a, reporting whether it had one.
func (l *rateLimiter) allow(a netip.Addr) bool {
	if l == nil || l.rate <= 0 {
		return true
	}
	k := clientKey(a)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[k]
	if !ok {
		if len(l.buckets) >= l.max {
			l.evictLocked(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[k] = b
	} else if d := now.Sub(b.last); d > 0 {
		b.tokens = min(l.burst, b.tokens+d.Seconds()*l.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// evictLocked makes room for one bucket: the idle ones (refilled to the
// burst, so forgetting them changes nothing) at most once a second, else
// any one.
func (l *rateLimiter) evictLocked(now time.Time) {
	if now.Sub(l.lastSweep) >= time.Second {
		l.lastSweep = now
		full := time.Duration(l.burst / l.rate * float64(time.Second))
		for k, b := range l.buckets {
			if now.Sub(b.last) >= full {
				delete(l.buckets, k)
			}
		}
	}
	if len(l.buckets) < l.max {
		return
	}
	for k := range l.buckets {
		delete(l.buckets, k)
		return
	}
}

func (l *rateLimiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// connCounter counts open TCP connections per client key.
type connCounter struct {
	max int // 0 is no limit
	mu  sync.Mutex
	n   map[netip.Addr]int
}

// acquire counts one more connection of the client at a, unless it has max.
func (c *connCounter) acquire(a netip.Addr) bool {
	if c.max <= 0 {
		return true
	}
	k := clientKey(a)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[k] >= c.max {
		return false
	}
	if c.n == nil {
		c.n = map[netip.Addr]int{}
	}
	c.n[k]++
	return true
}

func (c *connCounter) release(a netip.Addr) {
	if c.max <= 0 {
		return
	}
	k := clientKey(a)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[k]--; c.n[k] <= 0 {
		delete(c.n, k)
	}
}

// refusedReply is the REFUSED answer to a raw request (FORMERR when it
// does not parse), for a TCP query over its client's rate.
func refusedReply(raw []byte) []byte {
	if len(raw) < headerLen || raw[2]&0x80 != 0 {
		return nil // a response: never answer it
	}
	q := new(dns.Msg)
	if err := q.Unpack(raw); err != nil || len(q.Question) != 1 {
		return formErr(raw)
	}
	out := errorReply(q, dns.RcodeRefused)
	b, err := out.Pack()
	if err != nil {
		return formErr(raw)
	}
	return b
}

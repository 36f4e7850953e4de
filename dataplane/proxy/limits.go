package proxy

import (
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/cloudsteer/cloudsteer/internal/destaddr"
)

// flowLimits counts the flows served now, overall and per client, and
// refuses a flow over MaxFlows or MaxFlowsPerClient.
type flowLimits struct {
	max, perClient int

	refused, refusedPerClient atomic.Uint64

	mu    sync.Mutex
	total int
	per   map[netip.Addr]int // clientKey -> flows; entries at zero are deleted
}

// clientKey is what a per-client limit counts by: the IPv4 address, or
// the /64 of an IPv6 address (a client may rotate privacy addresses
// within its /64).
func clientKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return a
}

// take counts one more flow of client key, or reports false (and counts
// the refusal) when a limit is reached.
func (l *flowLimits) take(key netip.Addr) bool {
	if l.max == 0 && l.perClient == 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max > 0 && l.total >= l.max {
		l.refused.Add(1)
		return false
	}
	if l.perClient > 0 {
		if l.per == nil {
			l.per = make(map[netip.Addr]int)
		}
		if l.per[key] >= l.perClient {
			l.refusedPerClient.Add(1)
			return false
		}
		l.per[key]++
	}
	l.total++
	return true
}

// release ends one flow of client key.
func (l *flowLimits) release(key netip.Addr) {
	if l.max == 0 && l.perClient == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perClient > 0 {
		if n := l.per[key] - 1; n > 0 {
			l.per[key] = n
		} else {
			delete(l.per, key)
		}
	}
}

// destAllowed reports whether the proxy may dial a on a client's behalf
// (directly, or ask the cloud proxy for it by address), and why not: only
// global unicast addresses (no loopback, unspecified, link-local,
// multicast, the IPv4 broadcast address or 0.0.0.0/8, also in IPv4-mapped
// form) that are not the gateway's own.
func (p *Proxy) destAllowed(a netip.Addr) (bool, string) {
	a = a.Unmap()
	if a.IsLoopback() && p.allowLoopback {
		return true, ""
	}
	if why := destaddr.Refusal(a); why != "" {
		return false, why
	}
	if p.local.Has(a) {
		return false, "one of the gateway's own addresses"
	}
	return true, ""
}

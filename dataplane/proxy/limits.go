package proxy

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
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

// localAddrsRefresh is how long the list of the gateway's own addresses
// is trusted before it is read again.
const localAddrsRefresh = 3 * time.Second

// localAddrs caches the addresses of the gateway's interfaces.
type localAddrs struct {
	mu    sync.Mutex
	at    time.Time
	addrs map[netip.Addr]bool
	// list replaces net.InterfaceAddrs in tests.
	list func() ([]net.Addr, error)
}

// has reports whether a is one of the gateway's own addresses.
func (l *localAddrs) has(a netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := time.Now(); l.addrs == nil || now.Sub(l.at) >= localAddrsRefresh {
		list := l.list
		if list == nil {
			list = net.InterfaceAddrs
		}
		if ifas, err := list(); err == nil || l.addrs == nil {
			m := make(map[netip.Addr]bool, len(ifas))
			for _, ia := range ifas {
				if pn, ok := ia.(*net.IPNet); ok {
					if ip, ok := netip.AddrFromSlice(pn.IP); ok {
						m[ip.Unmap()] = true
					}
				}
			}
			l.addrs = m
		}
		l.at = now
	}
	return l.addrs[a.Unmap()]
}

// destAllowed reports whether the proxy may dial a on a client's behalf
// (directly, or ask the cloud proxy for it by address), and why not: only
// global unicast addresses (no loopback, unspecified, link-local,
// multicast, the IPv4 broadcast address or 0.0.0.0/8, also in IPv4-mapped
// form) that are not the gateway's own.
func (p *Proxy) destAllowed(a netip.Addr) (bool, string) {
	a = a.Unmap()
	switch {
	case !a.IsValid():
		return false, "no address"
	case a.IsLoopback():
		if p.allowLoopback {
			return true, ""
		}
		return false, "loopback address"
	case a.IsUnspecified():
		return false, "unspecified address"
	case a.IsLinkLocalUnicast():
		return false, "link-local address"
	case a.IsMulticast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast():
		return false, "multicast address"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return false, "broadcast address"
	case a.Is4() && a.As4()[0] == 0:
		return false, "\"this network\" address (0.0.0.0/8)"
	case !a.IsGlobalUnicast():
		return false, "not a global unicast address"
	case p.local.has(a):
		return false, "one of the gateway's own addresses"
	}
	return true, ""
}

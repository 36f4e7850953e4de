// Package destaddr decides which addresses the gateway may dial, or learn
// as a bypass destination, on a LAN client's behalf: global unicast
// addresses of somebody else, never loopback, link-local, multicast,
// broadcast, "this network" or the gateway's own.
package destaddr

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// Refusal says why a must not be dialed or learned on a client's behalf,
// or "" when it may. It judges the address class only; Local tells the
// gateway's own addresses. An IPv4-mapped IPv6 address is refused as such:
// a caller holding one from the kernel unmaps it first.
func Refusal(a netip.Addr) string {
	switch {
	case !a.IsValid():
		return "no address"
	case a.Is4In6():
		return "IPv4-mapped IPv6 address"
	case a.Zone() != "":
		return "address with a zone"
	case a.IsLoopback():
		return "loopback address"
	case a.IsUnspecified():
		return "unspecified address"
	case a.IsLinkLocalUnicast():
		return "link-local address"
	case a.IsMulticast():
		return "multicast address"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "broadcast address"
	case a.Is4() && a.As4()[0] == 0:
		return `"this network" address (0.0.0.0/8)`
	case !a.IsGlobalUnicast():
		return "not a global unicast address"
	}
	return ""
}

// DefaultTTL is how long Local trusts a reading of the interfaces.
const DefaultTTL = 3 * time.Second

// Local caches the addresses of this network namespace's interfaces.
// The zero value reads them with net.InterfaceAddrs every DefaultTTL.
type Local struct {
	// TTL is how long a reading is trusted; zero means DefaultTTL.
	TTL time.Duration
	// List replaces net.InterfaceAddrs (tests).
	List func() ([]net.Addr, error)
	// Now replaces time.Now (tests).
	Now func() time.Time

	mu    sync.Mutex
	read  time.Time
	addrs map[netip.Addr]bool
}

// Has reports whether a (IPv4-mapped or not) is one of the gateway's own
// addresses. A failed reading keeps the last good one.
func (l *Local) Has(a netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	ttl := l.TTL
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if t := now(); l.addrs == nil || t.Sub(l.read) >= ttl || t.Before(l.read) {
		l.read = t
		list := l.List
		if list == nil {
			list = net.InterfaceAddrs
		}
		if ifas, err := list(); err == nil || l.addrs == nil {
			m := make(map[netip.Addr]bool, len(ifas))
			for _, ia := range ifas {
				if n, ok := ia.(*net.IPNet); ok {
					if x, ok := netip.AddrFromSlice(n.IP); ok {
						m[x.Unmap()] = true
					}
				}
			}
			l.addrs = m
		}
	}
	return l.addrs[a.Unmap()]
}

// Reset forgets the last reading, so the next Has reads the interfaces.
func (l *Local) Reset() {
	l.mu.Lock()
	l.addrs = nil
	l.mu.Unlock()
}

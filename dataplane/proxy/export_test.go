package proxy

import (
	"net"
	"net/netip"
)

// TrimCount returns how many times the process returned memory after a
// burst of idle flows.
func TrimCount() int64 { return memTrim.trims.Load() }

// AllowLoopback lets p dial loopback addresses, where the tests' origins
// and cloud proxies live.
func AllowLoopback(p *Proxy) { p.allowLoopback = true }

// SetLocalAddrs makes p take addrs as the gateway's own addresses.
func SetLocalAddrs(p *Proxy, addrs ...string) {
	p.local.List = func() ([]net.Addr, error) {
		var out []net.Addr
		for _, a := range addrs {
			ip := netip.MustParseAddr(a)
			out = append(out, &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(ip.BitLen(), ip.BitLen())})
		}
		return out, nil
	}
	p.local.Reset()
}

// DestAllowed is p.destAllowed.
func DestAllowed(p *Proxy, a netip.Addr) (bool, string) { return p.destAllowed(a) }

// ClientKey is clientKey.
func ClientKey(a netip.Addr) netip.Addr { return clientKey(a) }

// SmallFlowBytes is smallFlowBytes.
const SmallFlowBytes = smallFlowBytes

// StartSpliced is ts.Start with a done that also gets, of the bytes each
// direction copied, those it moved by splice(2).
func StartSpliced(ts *Tunnels, a, b net.Conn, done func(aToB, bToA, splicedAToB, splicedBToA int64)) bool {
	ready := make(chan *tunnel, 1)
	t := ts.start(a, b, func(x, y int64) {
		t := <-ready
		done(x, y, t.dirs[0].spliced, t.dirs[1].spliced)
	})
	ready <- t
	return t != nil
}

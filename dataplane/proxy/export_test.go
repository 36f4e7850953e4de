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

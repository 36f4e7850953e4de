package daemon

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/cloudsteer/cloudsteer/internal/destaddr"
)

// hostCheck decides which Host headers the network admin API answers: an
// address of a LAN interface (or loopback), "localhost", or a name in
// admin.hostnames. A DNS-rebinding page names its own domain and is
// refused.
type hostCheck struct {
	names atomic.Pointer[[]string] // admin.hostnames, lowercased, reloadable
	// lan holds the LAN interfaces' addresses, read again at most every
	// hostsRefresh, so an address added a moment ago works.
	lan destaddr.Local
}

// hostsRefresh is how long the LAN address list is reused.
const hostsRefresh = time.Second

func (d *Daemon) setHostnames(hs []string) {
	names := make([]string, 0, len(hs))
	for _, h := range hs {
		names = append(names, strings.TrimSuffix(strings.ToLower(h), "."))
	}
	d.hosts.names.Store(&names)
}

// allowHost is api.Options.AllowHost.
func (d *Daemon) allowHost(addr netip.Addr, name string) bool {
	h := &d.hosts
	if name != "" {
		if name == "localhost" {
			return true
		}
		if p := h.names.Load(); p != nil {
			return slices.Contains(*p, name)
		}
		return false
	}
	return addr.IsLoopback() || h.lan.Has(addr)
}

// lanAddrs lists every address of the named interfaces.
func lanAddrs(ifaces []string) ([]net.Addr, error) {
	var out []net.Addr
	for _, n := range ifaces {
		l, err := netlink.LinkByName(n)
		if err != nil {
			continue
		}
		as, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			continue
		}
		for _, a := range as {
			if a.IPNet != nil {
				out = append(out, a.IPNet)
			}
		}
	}
	return out, nil
}

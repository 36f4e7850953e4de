package daemon

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
)

// hostCheck decides which Host headers the network admin API answers: an
// address of a LAN interface (or loopback), "localhost", or a name in
// admin.hostnames. A DNS-rebinding page names its own domain and is
// refused.
type hostCheck struct {
	names atomic.Pointer[[]string] // admin.hostnames, lowercased, reloadable

	lan   []string                   // LAN interface names
	addrs func() map[netip.Addr]bool // the LAN interfaces' addresses now (netlink)

	mu     sync.Mutex
	cached map[netip.Addr]bool
	at     time.Time
}

// hostsRefresh is how long the LAN address list is reused; a miss
// re-reads it at most this often, so an address added a moment ago works.
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
	if addr.IsLoopback() {
		return true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cached[addr] {
		return true
	}
	if h.cached != nil && time.Since(h.at) < hostsRefresh {
		return false
	}
	if h.addrs != nil {
		h.cached = h.addrs()
	} else {
		h.cached = lanAddrs(h.lan)
	}
	h.at = time.Now()
	return h.cached[addr]
}

// lanAddrs returns every address of the named interfaces.
func lanAddrs(ifaces []string) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
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
			if ip, ok := netip.AddrFromSlice(a.IP); ok {
				out[ip.Unmap()] = true
			}
		}
	}
	return out
}

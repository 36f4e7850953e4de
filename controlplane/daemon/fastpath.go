package daemon

import (
	"fmt"
	"net"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// defaultRouteInterfaces returns the names of the interfaces the IPv4 and
// IPv6 default routes leave through (every nexthop of a multipath route),
// in the calling thread's namespace, leaving out lo and the LAN interfaces.
func defaultRouteInterfaces(lan []string) ([]string, error) {
	var out []string
	add := func(index int) {
		if index == 0 {
			return
		}
		ifc, err := net.InterfaceByIndex(index)
		if err != nil || ifc.Name == "lo" || slices.Contains(lan, ifc.Name) || slices.Contains(out, ifc.Name) {
			return
		}
		out = append(out, ifc.Name)
	}
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		routes, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			if r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones != 0 {
					continue
				}
			}
			add(r.LinkIndex)
			for _, nh := range r.MultiPath {
				add(nh.LinkIndex)
			}
		}
	}
	return out, nil
}

// fastPathConfigured reports whether the config asks for the fast path
// (it is on while untracking is).
func (d *Daemon) fastPathConfigured() bool {
	return *d.cfg.Firewall.UntrackUnsteered && *d.cfg.Firewall.FastPath
}

// startFastPath attaches the WAN forwarder and lets the firewall's
// untracking state switch the fast path: on exactly while the stack would
// do nothing for unsteered TCP but route it. The WAN interfaces are
// followed from then on (linkwatch.go).
func (d *Daemon) startFastPath() {
	d.followWAN()
	s := d.steer
	d.fw.OnUntrackChange(func(untracking bool) {
		if err := s.SetFastPath(untracking); err != nil {
			d.log.Warn("switch fast path", "on", untracking, "err", err)
			return
		}
		d.log.Info("fast path", "on", untracking, "wan", d.links.WANInUse())
	})
}

// wantedWAN returns firewall.wan_interfaces, or else the interfaces of the
// default routes now.
func (d *Daemon) wantedWAN() ([]string, error) {
	if wan := d.cfg.Firewall.WANInterfaces; len(wan) > 0 {
		return wan, nil
	}
	return defaultRouteInterfaces(d.cfg.LANInterfaces)
}

// followWAN finds the WAN interfaces wanted now and, with the fast path,
// attaches the forwarder to each one there is that lacks it (a new one, or
// one made anew) and logs the WAN interfaces in use when they changed. The
// forwarder stays on an interface that is no longer wanted: it only
// forwards what the FIB routes, as the stack would.
func (d *Daemon) followWAN() {
	w := d.links
	want, err := d.wantedWAN()
	if err != nil {
		w.warnOnce(d, "wan", "cannot find the WAN interfaces", err)
		return
	}
	idx := map[int]string{}
	for _, n := range want {
		if ifc, err := net.InterfaceByName(n); err == nil {
			idx[ifc.Index] = n
		}
	}
	w.mu.Lock()
	// An interface that goes takes its addresses with it before the burst
	// of events ends, so the old ifindex is still known when they do.
	w.wanIdx = idx
	w.mu.Unlock()
	if !d.fastPathConfigured() {
		return
	}
	got, err := d.steer.ReattachWAN(want)
	if err != nil {
		w.warnOnce(d, "wan", "fast path: forwarder not attached; traffic from there takes the stack", err)
	} else {
		w.clear("wan")
	}
	attached := d.steer.WANAttached()
	var inUse []string
	for _, n := range want {
		if slices.Contains(attached, n) {
			inUse = append(inUse, n)
		}
	}
	w.mu.Lock()
	was := w.wan
	w.wan = inUse
	w.mu.Unlock()
	if len(got) > 0 || !slices.Equal(was, inUse) {
		d.log.Info("fast path WAN interfaces", "in_use", inUse, "attached_now", got, "was", was,
			"from", map[bool]string{true: "firewall.wan_interfaces", false: "default routes"}[len(d.cfg.Firewall.WANInterfaces) > 0])
	}
}

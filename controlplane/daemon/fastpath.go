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

// startFastPath attaches the WAN forwarder and lets the firewall's
// untracking state switch the fast path: on exactly while the stack would
// do nothing for unsteered TCP but route it.
func (d *Daemon) startFastPath() {
	wan := d.cfg.Firewall.WANInterfaces
	if len(wan) == 0 {
		var err error
		if wan, err = defaultRouteInterfaces(d.cfg.LANInterfaces); err != nil {
			d.log.Warn("fast path: no WAN interfaces found, only traffic from the LAN takes it", "err", err)
		}
	}
	if len(wan) > 0 {
		if err := d.steer.AttachWAN(wan); err != nil {
			d.log.Warn("fast path: traffic from the WAN side takes the stack", "wan", wan, "err", err)
		}
	}
	s := d.steer
	d.fw.OnUntrackChange(func(untracking bool) {
		if err := s.SetFastPath(untracking); err != nil {
			d.log.Warn("switch fast path", "on", untracking, "err", err)
			return
		}
		d.log.Info("fast path", "on", untracking, "wan", s.WANAttached())
	})
}

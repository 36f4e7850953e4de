package lab

import (
	"context"
	"fmt"
	"net/netip"
)

// Links that come and go, as they do on a real router: a WAN link
// re-dialled (PPPoE) or re-plugged (a USB modem) is a new device of the
// same name, so is a LAN bridge re-made; a DHCP renew may bring a new
// address. DeleteWAN/AddWAN and DeleteLAN/AddLAN take the gateway's veth
// away (with its peer) and make it again with the same names, addresses
// and routes, so the new devices differ from the old ones only in their
// ifindex; RenumberWAN changes the WAN addresses in place.

// DeleteWAN deletes the gateway's WAN veth (its peer in the internet
// namespace goes with it, and so do the routes over it).
func (l *Lab) DeleteWAN(ctx context.Context) error {
	return run(ctx, ipIn(l.NS(RoleGW), "link", "del", GWWANIf)...)
}

// AddWAN makes the gateway's WAN veth again, with the gateway's current
// WAN addresses, the internet side's, the default routes and the internet's
// routes back to the LAN subnets.
func (l *Lab) AddWAN(ctx context.Context) error {
	gw, inet := l.NS(RoleGW), l.NS(RoleInet)
	wan4, wan6 := l.WANAddrs()
	steps := [][]string{
		ipIn(gw, "link", "add", GWWANIf, "type", "veth", "peer", "name", InetIf, "netns", inet),
		addrArgs(gw, GWWANIf, wan4),
		addrArgs(gw, GWWANIf, wan6),
		addrArgs(inet, InetIf, InetV4),
		addrArgs(inet, InetIf, InetV6),
		ipIn(gw, "link", "set", GWWANIf, "up"),
		ipIn(inet, "link", "set", InetIf, "up"),
	}
	steps = append(steps, l.wanRoutes(wan4, wan6)...)
	return runSteps(ctx, "add WAN link", steps)
}

// wanRoutes are the routes over the WAN link: the gateway's default routes
// and the internet's routes to the LAN subnets through the gateway's WAN
// addresses wan4 and wan6 ("replace", so they can be run again).
func (l *Lab) wanRoutes(wan4, wan6 netip.Prefix) [][]string {
	gw, inet := l.NS(RoleGW), l.NS(RoleInet)
	steps := [][]string{
		ipIn(gw, "-4", "route", "replace", "default", "via", InetV4.Addr().String()),
		ipIn(gw, "-6", "route", "replace", "default", "via", InetV6.Addr().String()),
		ipIn(inet, "-4", "route", "replace", ClientV4.Masked().String(), "via", wan4.Addr().String()),
		ipIn(inet, "-6", "route", "replace", ClientV6.Masked().String(), "via", wan6.Addr().String()),
	}
	if l.lan2 {
		steps = append(steps,
			ipIn(inet, "-4", "route", "replace", Client2V4.Masked().String(), "via", wan4.Addr().String()),
			ipIn(inet, "-6", "route", "replace", Client2V6.Masked().String(), "via", wan6.Addr().String()))
	}
	return steps
}

// RenumberWAN gives the gateway's WAN interface the addresses v4 and v6
// in place of its current ones, as a DHCP client does with a new lease:
// the old addresses go (and with the last IPv4 one the routes over the
// link), the new ones come, then the routes are put back (the internet's
// routes to the LAN now go through the new addresses).
func (l *Lab) RenumberWAN(ctx context.Context, v4, v6 netip.Prefix) error {
	gw := l.NS(RoleGW)
	old4, old6 := l.WANAddrs()
	steps := [][]string{
		ipIn(gw, "-4", "addr", "del", old4.String(), "dev", GWWANIf),
		ipIn(gw, "-6", "addr", "del", old6.String(), "dev", GWWANIf),
		addrArgs(gw, GWWANIf, v4),
		addrArgs(gw, GWWANIf, v6),
	}
	steps = append(steps, l.wanRoutes(v4, v6)...)
	if err := runSteps(ctx, "renumber WAN", steps); err != nil {
		return err
	}
	l.mu.Lock()
	l.wan4, l.wan6 = v4, v6
	l.mu.Unlock()
	return nil
}

// WANAddrs returns the gateway's WAN addresses now: GWWANV4 and GWWANV6
// unless RenumberWAN changed them.
func (l *Lab) WANAddrs() (v4, v6 netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	v4, v6 = GWWANV4, GWWANV6
	if l.wan4.IsValid() {
		v4, v6 = l.wan4, l.wan6
	}
	return v4, v6
}

// DeleteLAN deletes the gateway's (first) LAN veth; the client's end goes
// with it, and so do the client's routes.
func (l *Lab) DeleteLAN(ctx context.Context) error {
	return run(ctx, ipIn(l.NS(RoleGW), "link", "del", GWLANIf)...)
}

// AddLAN makes the gateway's LAN veth again with the same names, addresses
// and the client's default routes.
func (l *Lab) AddLAN(ctx context.Context) error {
	lan, gw := l.NS(RoleLAN), l.NS(RoleGW)
	return runSteps(ctx, "add LAN link", [][]string{
		ipIn(lan, "link", "add", ClientIf, "type", "veth", "peer", "name", GWLANIf, "netns", gw),
		addrArgs(lan, ClientIf, ClientV4),
		addrArgs(lan, ClientIf, ClientV6),
		addrArgs(gw, GWLANIf, GWLANV4),
		addrArgs(gw, GWLANIf, GWLANV6),
		ipIn(lan, "link", "set", ClientIf, "up"),
		ipIn(gw, "link", "set", GWLANIf, "up"),
		ipIn(lan, "-4", "route", "replace", "default", "via", GWLANV4.Addr().String()),
		ipIn(lan, "-6", "route", "replace", "default", "via", GWLANV6.Addr().String()),
	})
}

// addrArgs are the arguments that add p to dev in ns (IPv6 without
// duplicate address detection, as everywhere in the lab).
func addrArgs(ns, dev string, p netip.Prefix) []string {
	args := ipIn(ns, family(p.Addr()), "addr", "add", p.String(), "dev", dev)
	if p.Addr().Is6() {
		args = append(args, "nodad")
	}
	return args
}

func runSteps(ctx context.Context, what string, steps [][]string) error {
	for _, s := range steps {
		if err := run(ctx, s...); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	return nil
}

package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// reachTimeout bounds the wait until the first echo through the gateway is
// answered (v4 and v6 each).
const reachTimeout = 15 * time.Second

// ServiceAddrs returns every address the internet namespace carries on its
// loopback: the lab services' and the sites'.
func ServiceAddrs() []netip.Addr {
	addrs := []netip.Addr{
		CloudProxyV4, CloudProxyV6,
		SquidV4, SquidV6,
		CloudProxy2V4, CloudProxy2V6,
		CloudDNSV4, CloudDNSV6,
		AuthDNSV4, AuthDNSV6,
	}
	for _, s := range Sites {
		addrs = append(addrs, s.V4, s.V6)
	}
	return addrs
}

// buildTopology creates the namespaces, veth pairs, addresses and routes.
// Nothing is created in the caller's namespace: each veth is created inside
// one lab namespace with its peer placed straight into the other.
func (l *Lab) buildTopology(ctx context.Context) error {
	lan, lan2, gw, inet := l.NS(RoleLAN), l.NS(RoleLAN2), l.NS(RoleGW), l.NS(RoleInet)
	var steps [][]string
	add := func(args ...string) { steps = append(steps, args) }
	sysctl := func(ns, kv string) { add("ip", "netns", "exec", ns, "sysctl", "-qw", kv) }

	var nss []string
	for _, role := range l.Roles() {
		nss = append(nss, l.NS(role))
	}
	for _, ns := range nss {
		add("ip", "netns", "add", ns)
		add(ipIn(ns, "link", "set", "lo", "up")...)
		// Addresses are usable at once: no duplicate address detection
		// (set before the veths exist, so they inherit it).
		sysctl(ns, "net.ipv6.conf.all.accept_dad=0")
		sysctl(ns, "net.ipv6.conf.default.accept_dad=0")
	}
	sysctl(gw, "net.ipv4.ip_forward=1")
	sysctl(gw, "net.ipv6.conf.all.forwarding=1")

	add(ipIn(lan, "link", "add", ClientIf, "type", "veth", "peer", "name", GWLANIf, "netns", gw)...)
	add(ipIn(gw, "link", "add", GWWANIf, "type", "veth", "peer", "name", InetIf, "netns", inet)...)
	if l.lan2 {
		add(ipIn(lan2, "link", "add", Client2If, "type", "veth", "peer", "name", GWLAN2If, "netns", gw)...)
	}

	addr := func(ns, dev string, p netip.Prefix) {
		args := ipIn(ns, family(p.Addr()), "addr", "add", p.String(), "dev", dev)
		if p.Addr().Is6() {
			args = append(args, "nodad")
		}
		add(args...)
	}
	addr(lan, ClientIf, ClientV4)
	addr(lan, ClientIf, ClientV6)
	addr(gw, GWLANIf, GWLANV4)
	addr(gw, GWLANIf, GWLANV6)
	addr(gw, GWWANIf, GWWANV4)
	addr(gw, GWWANIf, GWWANV6)
	addr(inet, InetIf, InetV4)
	addr(inet, InetIf, InetV6)
	for _, a := range ServiceAddrs() {
		addr(inet, "lo", netip.PrefixFrom(a, a.BitLen()))
	}
	if l.lan2 {
		addr(lan2, Client2If, Client2V4)
		addr(lan2, Client2If, Client2V6)
		addr(gw, GWLAN2If, GWLAN2V4)
		addr(gw, GWLAN2If, GWLAN2V6)
		add(ipIn(lan2, "link", "set", Client2If, "up")...)
		add(ipIn(gw, "link", "set", GWLAN2If, "up")...)
	}
	add(ipIn(lan, "link", "set", ClientIf, "up")...)
	add(ipIn(gw, "link", "set", GWLANIf, "up")...)
	add(ipIn(gw, "link", "set", GWWANIf, "up")...)
	add(ipIn(inet, "link", "set", InetIf, "up")...)

	route := func(ns string, dst string, via netip.Prefix) {
		add(ipIn(ns, family(via.Addr()), "route", "add", dst, "via", via.Addr().String())...)
	}
	route(lan, "default", GWLANV4)
	route(lan, "default", GWLANV6)
	route(gw, "default", InetV4)
	route(gw, "default", InetV6)
	route(inet, ClientV4.Masked().String(), GWWANV4)
	route(inet, ClientV6.Masked().String(), GWWANV6)
	if l.lan2 {
		route(lan2, "default", GWLAN2V4)
		route(lan2, "default", GWLAN2V6)
		route(inet, Client2V4.Masked().String(), GWWANV4)
		route(inet, Client2V6.Masked().String(), GWWANV6)
	}

	for _, s := range steps {
		if err := run(ctx, s...); err != nil {
			return fmt.Errorf("build lab: %w", err)
		}
	}
	if l.nat {
		if err := runStdin(ctx, routerRuleset(l.LANInterfaces()), "ip", "netns", "exec", gw, "nft", "-f", "-"); err != nil {
			return fmt.Errorf("build lab: office router: %w", err)
		}
	}
	for role, servers := range Nameservers {
		if ns := l.NS(role); ns != "" {
			if err := writeResolvConf(ns, servers); err != nil {
				return err
			}
		}
	}
	return nil
}

// RouterRuleset returns the office router's nftables table of
// Options.NAT for the given LAN interfaces (see routerRuleset), for a
// program that turns the router on and off in a running lab (the
// benchmark measures the same lab with and without it). Remove it with
// `nft delete table inet RouterTable` in the gateway namespace.
func RouterRuleset(lanIfs []string) string { return routerRuleset(lanIfs) }

// RouterTable is the nftables table (family inet) that makes the gateway
// namespace an office router under Options.NAT.
const RouterTable = "labrouter"

// routerRuleset returns the office router's nftables table: IPv4 leaving
// the WAN interface is masqueraded (as a small office router does, for
// every source), and forwarding is stateful with policy drop: replies and
// related ICMP pass, new flows only from a LAN interface to the WAN.
// Traffic to and from the gateway itself (cloudsteer's listeners and its
// dials) is not forwarded and so not filtered here.
func routerRuleset(lanIfs []string) string {
	q := make([]string, len(lanIfs))
	for i, n := range lanIfs {
		q[i] = fmt.Sprintf("%q", n)
	}
	return fmt.Sprintf(`table inet %[1]s {
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		ct state invalid drop
		iifname { %[2]s } oifname %[3]q accept
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname %[3]q meta nfproto ipv4 masquerade
	}
}
`, RouterTable, strings.Join(q, ", "), GWWANIf)
}

// Nameservers are the resolvers in each namespace's resolv.conf (what
// programs run through `ip netns exec` use): the LAN clients ask an
// address nobody runs, so their names resolve only when cloudsteer on the
// gateway answers; the gateway asks the cloud DNS; the internet asks the
// authoritative server.
var Nameservers = map[string][]netip.Addr{
	RoleLAN:  {NobodyDNSV4, NobodyDNSV6},
	RoleLAN2: {NobodyDNSV4, NobodyDNSV6},
	RoleGW:   {CloudDNSV4, CloudDNSV6},
	RoleInet: {AuthDNSV4, AuthDNSV6},
}

// netnsEtc is where `ip netns exec` finds files it binds over /etc.
const netnsEtc = "/etc/netns"

// writeResolvConf writes /etc/netns/NS/resolv.conf.
func writeResolvConf(ns string, servers []netip.Addr) error {
	dir := filepath.Join(netnsEtc, ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	var b strings.Builder
	b.WriteString("# cloudsteer lab\n")
	for _, a := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", a)
	}
	b.WriteString("options timeout:2 attempts:1\n")
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write resolv.conf of %s: %w", ns, err)
	}
	return nil
}

// waitReachable waits until the LAN clients reach a site address through
// the gateway over IPv4 and IPv6.
func (l *Lab) waitReachable(ctx context.Context) error {
	site := Sites[0]
	clients := []string{RoleLAN}
	if l.lan2 {
		clients = append(clients, RoleLAN2)
	}
	for _, role := range clients {
		for _, dst := range []netip.Addr{site.V4, site.V6} {
			pctx, cancel := context.WithTimeout(ctx, reachTimeout)
			err := l.Ping(pctx, role, dst)
			cancel()
			if err != nil {
				return fmt.Errorf("lab not reachable from %s: %w", role, err)
			}
		}
	}
	return nil
}

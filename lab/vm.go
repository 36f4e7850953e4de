package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"time"
)

// The VM gateway (Options.VMGateway): the gateway namespace runs no
// cloudsteer and routes nothing; it holds two bridges, each joining a lab
// link to a tap device a virtual machine (the appliance image under qemu)
// opens: TapWAN is bridged with the internet namespace's link, TapLAN with
// the LAN client's. The VM is then the router: the LAN client has no
// address until it asks the VM's DHCP server (DHCPLease), and the internet
// side has no route to the LAN (the VM masquerades).
const (
	TapWAN    = "tapwan" // the VM's first NIC: WAN
	TapLAN    = "taplan" // the VM's second NIC: LAN
	BridgeWAN = "brwan"
	BridgeLAN = "brlan"
)

// VMWANV4 and VMWANV6 are the addresses the VM's WAN NIC gets (configured
// statically in the image's router.conf by the boot test), with InetV4 and
// InetV6 as its gateway: the same as GWWANV4/GWWANV6, so SeenAs and the
// lab servers' address check hold for a VM gateway too.
var (
	VMWANV4 = GWWANV4
	VMWANV6 = GWWANV6
)

// buildVMTopology is buildTopology for Options.VMGateway: the LAN client
// and the internet namespace as usual, but the gateway namespace bridges
// their links to the taps TapLAN and TapWAN and has no address, route or
// forwarding of its own.
func (l *Lab) buildVMTopology(ctx context.Context) error {
	lan, gw, inet := l.NS(RoleLAN), l.NS(RoleGW), l.NS(RoleInet)
	var steps [][]string
	add := func(args ...string) { steps = append(steps, args) }
	sysctl := func(ns, kv string) { add("ip", "netns", "exec", ns, "sysctl", "-qw", kv) }
	for _, ns := range []string{lan, gw, inet} {
		add("ip", "netns", "add", ns)
		add(ipIn(ns, "link", "set", "lo", "up")...)
		sysctl(ns, "net.ipv6.conf.all.accept_dad=0")
		sysctl(ns, "net.ipv6.conf.default.accept_dad=0")
	}
	// The bridges and their ports carry no IPv6 of their own (no link-local
	// addresses, router solicitations or MLD from the gateway namespace).
	sysctl(gw, "net.ipv6.conf.default.disable_ipv6=1")
	sysctl(gw, "net.ipv6.conf.all.disable_ipv6=1")

	add(ipIn(lan, "link", "add", ClientIf, "type", "veth", "peer", "name", GWLANIf, "netns", gw)...)
	add(ipIn(gw, "link", "add", GWWANIf, "type", "veth", "peer", "name", InetIf, "netns", inet)...)
	for _, br := range []struct{ bridge, port, tap string }{{BridgeLAN, GWLANIf, TapLAN}, {BridgeWAN, GWWANIf, TapWAN}} {
		// A bridge that forwards at once (no STP, no forward delay) and
		// ages nothing out during a test.
		add(ipIn(gw, "link", "add", br.bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0")...)
		add("ip", "netns", "exec", gw, "ip", "tuntap", "add", "dev", br.tap, "mode", "tap")
		add(ipIn(gw, "link", "set", br.port, "master", br.bridge)...)
		add(ipIn(gw, "link", "set", br.tap, "master", br.bridge)...)
		add(ipIn(gw, "link", "set", br.port, "up")...)
		add(ipIn(gw, "link", "set", br.tap, "up")...)
		add(ipIn(gw, "link", "set", br.bridge, "up")...)
	}
	addr := func(ns, dev string, p netip.Prefix) {
		args := ipIn(ns, family(p.Addr()), "addr", "add", p.String(), "dev", dev)
		if p.Addr().Is6() {
			args = append(args, "nodad")
		}
		add(args...)
	}
	addr(inet, InetIf, InetV4)
	addr(inet, InetIf, InetV6)
	for _, a := range ServiceAddrs() {
		addr(inet, "lo", netip.PrefixFrom(a, a.BitLen()))
	}
	add(ipIn(lan, "link", "set", ClientIf, "up")...)
	add(ipIn(inet, "link", "set", InetIf, "up")...)
	for _, s := range steps {
		if err := run(ctx, s...); err != nil {
			return fmt.Errorf("build vm lab: %w", err)
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

// VMGateway reports whether the lab was built for a VM gateway
// (Options.VMGateway).
func (l *Lab) VMGateway() bool { return l.vm }

// SetResolvers rewrites the resolv.conf programs in the namespace of role
// use (through `ip netns exec`), e.g. to the DNS server a DHCP lease named.
func (l *Lab) SetResolvers(role string, servers []netip.Addr) error {
	ns := l.NS(role)
	if ns == "" {
		return fmt.Errorf("set resolvers of %q: unknown lab role", role)
	}
	return writeResolvConf(ns, servers)
}

// Lease is what a DHCP server handed a lab client.
type Lease struct {
	Addr   netip.Prefix // the address and its subnet, configured on the client's interface
	Router netip.Addr   // the default route the client now has
	DNS    []netip.Addr
	Server netip.Addr // the DHCP server's identifier
	Domain string     // the domain name the server gave (option 15), if any
	Time   time.Duration
}

// LeaseHostname is the host name a lab client sends in its DHCP requests
// (option 12), so the gateway's DHCP server can name it: "lab-" + role.
func LeaseHostname(role string) string { return "lab-" + role }

// udhcpcScript is the script busybox udhcpc runs: on a lease it configures
// the address and default route, and writes the lease's fields to the file
// named by $CLOUDSTEER_LEASE_FILE, one key=value a line.
const udhcpcScript = `#!/bin/sh
# Written by the cloudsteer lab: applies a DHCP lease and records it.
set -eu
case "$1" in
deconfig)
	ip -4 addr flush dev "$interface"
	;;
bound|renew)
	ip -4 addr flush dev "$interface"
	ip -4 addr add "$ip/$mask" dev "$interface"
	if [ -n "${router:-}" ]; then
		ip -4 route replace default via "${router%% *}" dev "$interface"
	fi
	{
		echo "ip=$ip"
		echo "mask=$mask"
		echo "router=${router:-}"
		echo "dns=${dns:-}"
		echo "serverid=${serverid:-}"
		echo "lease=${lease:-}"
		echo "domain=${domain:-}"
	} >"$CLOUDSTEER_LEASE_FILE.tmp"
	mv "$CLOUDSTEER_LEASE_FILE.tmp" "$CLOUDSTEER_LEASE_FILE"
	;;
esac
`

// DHCPLease asks for a DHCPv4 lease on the client interface of role with
// busybox udhcpc (Debian package udhcpc) and applies it (address, default
// route; not resolv.conf: see SetResolvers). It retries until a server
// answers or ctx ends, so it can be started while the VM still boots.
func (l *Lab) DHCPLease(ctx context.Context, role string) (Lease, error) {
	ns := l.NS(role)
	if ns == "" {
		return Lease{}, fmt.Errorf("dhcp lease for %q: unknown lab role", role)
	}
	bin, err := exec.LookPath("udhcpc")
	if err != nil {
		return Lease{}, fmt.Errorf("dhcp lease: %w (install udhcpc)", err)
	}
	script := l.Path("udhcpc.script")
	if err := os.WriteFile(script, []byte(udhcpcScript), 0o755); err != nil {
		return Lease{}, fmt.Errorf("write udhcpc script: %w", err)
	}
	leaseFile := l.Path("lease-" + role)
	_ = os.Remove(leaseFile)
	logPath := l.Path("udhcpc-" + role + ".log")
	start := time.Now()
	for {
		// -n: exit when no lease after -t tries of -T seconds; -q: exit
		// with the lease (the address stays).
		cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, bin, "-f", "-q", "-n",
			"-t", "5", "-T", "2", "-i", ClientIf, "-s", script, "-x", "hostname:"+LeaseHostname(role))
		cmd.Env = append(os.Environ(), "CLOUDSTEER_LEASE_FILE="+leaseFile)
		out, runErr := cmd.CombinedOutput()
		appendFile(logPath, out)
		if runErr == nil {
			lease, err := readLease(leaseFile)
			if err != nil {
				return Lease{}, err
			}
			lease.Time = time.Since(start)
			return lease, nil
		}
		select {
		case <-ctx.Done():
			return Lease{}, fmt.Errorf("dhcp lease on %s in %s: none after %s: %w; udhcpc: %s",
				ClientIf, ns, time.Since(start).Round(time.Second), ctx.Err(), tail(logPath, 600))
		case <-time.After(time.Second):
		}
	}
}

// appendFile appends b to the file at path, best effort (a log).
func appendFile(path string, b []byte) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.Write(b)
}

// readLease parses the file udhcpcScript writes.
func readLease(path string) (Lease, error) {
	f, err := os.Open(path)
	if err != nil {
		return Lease{}, fmt.Errorf("read lease: %w", err)
	}
	defer f.Close()
	kv := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			kv[k] = v
		}
	}
	if err := sc.Err(); err != nil {
		return Lease{}, fmt.Errorf("read lease: %w", err)
	}
	return parseLease(kv)
}

// parseLease builds a Lease from udhcpc's variables (mask is a prefix
// length; router and dns may hold several space-separated addresses).
func parseLease(kv map[string]string) (Lease, error) {
	var lease Lease
	ip, err := netip.ParseAddr(kv["ip"])
	if err != nil {
		return lease, fmt.Errorf("parse lease address: %w", err)
	}
	var bits int
	if _, err := fmt.Sscan(kv["mask"], &bits); err != nil {
		return lease, fmt.Errorf("parse lease mask %q: %w", kv["mask"], err)
	}
	if bits < 0 || bits > 32 || !ip.Is4() {
		return lease, fmt.Errorf("parse lease: %s/%d is no IPv4 prefix", ip, bits)
	}
	lease.Addr = netip.PrefixFrom(ip, bits)
	if f := strings.Fields(kv["router"]); len(f) > 0 {
		if lease.Router, err = netip.ParseAddr(f[0]); err != nil {
			return lease, fmt.Errorf("parse lease router: %w", err)
		}
	}
	for _, s := range strings.Fields(kv["dns"]) {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return lease, fmt.Errorf("parse lease dns: %w", err)
		}
		lease.DNS = append(lease.DNS, a)
	}
	if s := kv["serverid"]; s != "" {
		if lease.Server, err = netip.ParseAddr(s); err != nil {
			return lease, fmt.Errorf("parse lease server: %w", err)
		}
	}
	lease.Domain = kv["domain"]
	return lease, nil
}

// StartVM runs args (a qemu command line) in the gateway namespace of a
// lab built with Options.VMGateway, its output appended to logFile, until
// Close (or the returned process is ended). qemu opens TapWAN and TapLAN
// there by name.
func (l *Lab) StartVM(logFile string, args ...string) (*exec.Cmd, <-chan error, error) {
	if !l.vm {
		return nil, nil, errors.New("start vm: the lab has no vm gateway (Options.VMGateway)")
	}
	if len(args) == 0 {
		return nil, nil, errors.New("start vm: no command")
	}
	p, err := l.start("vm", logFile, append([]string{"ip", "netns", "exec", l.NS(RoleGW)}, args...)...)
	if err != nil {
		return nil, nil, err
	}
	done := make(chan error, 1)
	go func() {
		<-p.done
		done <- p.err
	}()
	return p.cmd, done, nil
}

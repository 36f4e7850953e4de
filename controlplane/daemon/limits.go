package daemon

import (
	"context"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/cloudsteer/cloudsteer/controlplane/config"
	"github.com/cloudsteer/cloudsteer/dataplane/firewall"
	"github.com/cloudsteer/cloudsteer/dataplane/resolver"
)

// Descriptors.
//
// Each steered flow holds two descriptors (client and upstream), each DNS
// over TCP client one. A reserve that client flows can never use is kept
// for the rest: the resolver's upstream sockets, dials to the cloud proxy
// for probes and pool refills, the admin API, the state store, eBPF and
// netlink handles. When limits.flows does not fit next to it, the
// effective flows limit is lowered.
const (
	// minReserve is the smallest reserve; above 10 240 descriptors it is
	// a tenth of the limit.
	minReserve = 1024
	// minFlows is the effective flows limit however small the descriptor
	// limit is (the daemon warns).
	minFlows = 16
	// maxSoft caps the soft limit used in the sums (an unlimited one).
	maxSoft = 1 << 24
)

// fdPlan is how the daemon shares its descriptor limit.
type fdPlan struct {
	Soft    uint64 // soft RLIMIT_NOFILE
	Reserve int    // never for client flows
	DNSTCP  int    // the resolver's client TCP connections, all listeners
	Asked   int    // limits.flows (0: off)
	Flows   int    // the effective overall flows limit
	Clamped bool   // Flows is below Asked (or Asked was off)
}

// planDescriptors fits asked flows (0: as many as fit) of two descriptors
// each, dnsTCP resolver connections and the reserve into soft.
func planDescriptors(soft uint64, asked, dnsTCP int) fdPlan {
	s := int(min(soft, maxSoft))
	p := fdPlan{Soft: soft, DNSTCP: dnsTCP, Asked: asked}
	p.Reserve = min(max(minReserve, s/10), s/2)
	fit := max((s-p.Reserve-dnsTCP)/2, minFlows)
	p.Flows = asked
	if asked == 0 || asked > fit {
		p.Flows, p.Clamped = fit, asked != 0
	}
	return p
}

// raiseNoFile makes the soft descriptor limit the hard one and returns
// both. Go's runtime already does so at start on Linux (to hard-1, see
// syscall/rlimit.go); this only acts when something lowered it since.
func raiseNoFile() (soft, hard uint64, err error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, 0, fmt.Errorf("read descriptor limit: %w", err)
	}
	if lim.Cur+1 < lim.Max {
		want := lim
		want.Cur = lim.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &want); err != nil {
			return lim.Cur, lim.Max, fmt.Errorf("raise descriptor limit to %d: %w", lim.Max, err)
		}
		lim = want
	}
	return lim.Cur, lim.Max, nil
}

// planLimits raises the descriptor limit, fits limits.flows into it and
// logs the effective limits (and one warning when flows was lowered).
func (d *Daemon) planLimits() error {
	soft, hard, err := raiseNoFile()
	if err != nil {
		if soft == 0 {
			return err
		}
		// Not fatal: plan with the soft limit there is.
		d.log.Warn("cannot raise the descriptor limit", "nofile_soft", soft, "nofile_hard", hard, "err", err)
	}
	l := d.cfg.Limits
	// The resolver bounds client TCP connections per DNS listener.
	dnsTCP := resolver.DefaultMaxTCPConns * len(d.cfg.LANInterfaces) * 2
	p := planDescriptors(soft, config.Value(l.Flows), dnsTCP)
	d.fds = p
	if p.Clamped {
		d.log.Warn("limits.flows lowered to fit the descriptor limit",
			"limits_flows", p.Asked, "effective_flows", p.Flows, "nofile_soft", p.Soft, "nofile_hard", hard,
			"reserve", p.Reserve, "dns_tcp", p.DNSTCP, "need", 2*p.Asked+p.DNSTCP+p.Reserve)
	}
	d.log.Info("limits", "flows", p.Flows, "flows_per_client", config.Value(l.FlowsPerClient),
		"new_flows_per_second_per_client", config.Value(l.NewFlowsPerSecondPerClient),
		"dns_tcp_per_client", config.Value(l.DNSTCPPerClient),
		"dns_queries_per_second_per_client", config.Value(l.DNSQueriesPerSecondPerClient),
		"nofile_soft", p.Soft, "reserve", p.Reserve, "dns_tcp", p.DNSTCP)
	return nil
}

// EffectiveMaxFlows is the overall steered-flow limit after fitting
// limits.flows into the descriptor limit: what proxy.Config.MaxFlows gets.
func (d *Daemon) EffectiveMaxFlows() int { return d.fds.Flows }

// firewallLimits turns the limits section into the kernel's per-client
// limits (the rate limits get a burst of twice the rate).
func firewallLimits(l config.Limits) firewall.Limits {
	u := func(p *int) uint32 { return uint32(config.Value(p)) }
	return firewall.Limits{
		FlowsPerClient:      u(l.FlowsPerClient),
		NewFlowsPerSecond:   u(l.NewFlowsPerSecondPerClient),
		NewFlowsBurst:       uint32(config.Burst(config.Value(l.NewFlowsPerSecondPerClient))),
		DNSTCPPerClient:     u(l.DNSTCPPerClient),
		DNSQueriesPerSecond: u(l.DNSQueriesPerSecondPerClient),
		DNSQueriesBurst:     uint32(config.Burst(config.Value(l.DNSQueriesPerSecondPerClient))),
	}
}

// LimitRefusals returns the refusals per limit (metrics.LimitNames): the
// kernel's counters. The proxy's (flows, flows_per_client) and the
// resolver's (dns_tcp_per_client, dns_tcp, dns_queries_per_client) are
// added to the same names.
func (d *Daemon) LimitRefusals() map[string]uint64 {
	out := map[string]uint64{}
	if d.fw != nil {
		k, err := d.fw.LimitRefusals()
		if err != nil {
			d.log.Warn("read kernel limit counters", "err", err)
		}
		for name, n := range k {
			out[name] += n
		}
	}
	if d.proxy != nil {
		ps := d.proxy.Stats()
		out["flows"] += ps.RefusedFlows
		out["flows_per_client"] += ps.RefusedFlowsPerClient
	}
	if d.resolver != nil {
		st := d.resolver.Stats()
		out["dns_tcp_per_client"] += st.RefusedTCPClient
		out["dns_tcp"] += st.RefusedTCP - st.RefusedTCPClient
		out["dns_queries_per_client"] += st.RateLimited
	}
	return out
}

// Listeners and the WAN.
//
// Every TCP and UDP listener of the daemon is bound to a device
// (SO_BINDTODEVICE): the steered ones to each LAN interface, the admin
// API to each LAN interface and lo. The kernel then never matches a packet
// that came in on any other interface to them, whatever its destination
// address (the WAN address, a LAN address routed over the WAN link): such
// a SYN gets a reset from the stack, as for a closed port, and a datagram
// a port unreachable. That holds with or without the nftables table, so
// there is no instant, at start, at stop or when the process is killed
// and the kernel closes its sockets and its netlink socket in an order of
// its own, in which a WAN host reaches a listener. The table's guard
// stays as a second wall.
//
// Binding to a device, not to addresses: the redirect sends IPv4 to the
// primary address of the incoming interface and IPv6 to one of its
// addresses chosen by scope; addresses come and go (SLAAC, privacy
// addresses, DHCP), may be link-local, and the same address must not be
// reachable over the WAN link. The device is what the packet came in on.

// bindToDevice returns a ListenConfig.Control that binds the socket to
// dev before it is bound to its address, and then runs next.
func bindToDevice(dev string, next func(fd uintptr) error) func(string, string, syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if serr = unix.BindToDevice(int(fd), dev); serr != nil {
				serr = fmt.Errorf("bind to device %s: %w", dev, serr)
				return
			}
			if next != nil {
				serr = next(fd)
			}
		})
		if err == nil {
			err = serr
		}
		return err
	}
}

// listenTCP listens on port of every address of family fam ("4" or "6")
// for packets that come in on dev only. A clientFirst listener (TLS,
// HTTP: the client always speaks first) sets TCP_DEFER_ACCEPT, so a
// connection is handed over with its first bytes (the ClientHello) and
// accepting it and reading them is one wake-up.
func listenTCP(ctx context.Context, fam, dev string, port uint16, clientFirst bool) (net.Listener, error) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	var deferAccept func(uintptr) error
	if clientFirst {
		deferAccept = func(fd uintptr) error {
			if err := unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, deferAcceptSeconds); err != nil {
				return fmt.Errorf("set TCP_DEFER_ACCEPT: %w", err)
			}
			return nil
		}
	}
	lc.Control = bindToDevice(dev, deferAccept)
	addr := wildcard(fam, port)
	ln, err := lc.Listen(ctx, "tcp"+fam, addr)
	if err != nil {
		return nil, fmt.Errorf("listen on tcp%s %s on %s: %w", fam, addr, dev, err)
	}
	return ln, nil
}

// listenUDP is listenTCP for a UDP socket.
func listenUDP(ctx context.Context, fam, dev string, port uint16) (net.PacketConn, error) {
	lc := net.ListenConfig{Control: bindToDevice(dev, nil)}
	addr := wildcard(fam, port)
	pc, err := lc.ListenPacket(ctx, "udp"+fam, addr)
	if err != nil {
		return nil, fmt.Errorf("listen on udp%s %s on %s: %w", fam, addr, dev, err)
	}
	return pc, nil
}

func wildcard(fam string, port uint16) string {
	if fam == "6" {
		return fmt.Sprintf("[::]:%d", port)
	}
	return fmt.Sprintf("0.0.0.0:%d", port)
}

// listenerNames are the serve-loop names of kind ("tls", "http", "dns")
// over both families and every LAN interface.
func (d *Daemon) listenerNames(kinds ...string) []string {
	var out []string
	for _, k := range kinds {
		for _, dev := range d.cfg.LANInterfaces {
			out = append(out, k+"4@"+dev, k+"6@"+dev)
		}
	}
	return out
}

package firewall

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

// Client addresses of the limit tests, on the lab client's eth0: the first
// client, another address in the first client's IPv6 /64 (the same client
// to the limits), and a second client (its own IPv4 address, its own /64).
var (
	clientA   = []netip.Addr{netip.MustParseAddr("10.10.0.10"), netip.MustParseAddr("fd00:10::10")}
	sameA64   = netip.MustParseAddr("fd00:10::99")
	clientB   = []netip.Addr{netip.MustParseAddr("10.10.0.11"), netip.MustParseAddr("fd00:11::11")}
	serverFor = map[bool]netip.Addr{false: netip.MustParseAddr("10.20.0.2"), true: netip.MustParseAddr("fd00:20::2")}
)

// newLimitLab is newLab with the second client's addresses and the
// classifier stand-in, and cfg's table in the gateway.
func newLimitLab(t *testing.T, lim Limits) (lab, *Table) {
	t.Helper()
	l := newLab(t)
	privtest.Run(t, l.client, "ip", "addr", "add", "10.10.0.11/24", "dev", "eth0")
	privtest.Run(t, l.client, "ip", "addr", "add", "fd00:10::99/64", "dev", "eth0", "nodad")
	privtest.Run(t, l.client, "ip", "addr", "add", "fd00:11::11/64", "dev", "eth0", "nodad")
	privtest.Run(t, l.gw, "ip", "addr", "add", "fd00:11::1/64", "dev", "lan0", "nodad")
	privtest.Run(t, l.server, "ip", "-6", "route", "add", "fd00:11::/64", "via", "fd00:20::1")
	// The gateway learns each client address's neighbour entry before the
	// test: in this lab a solicitation of the gateway for an address it
	// never heard from went unanswered for longer than a dial waits (seen
	// with the reset and the SYN-ACK alike, limits or not).
	for _, a := range []string{"10.10.0.10", "10.10.0.11", "fd00:10::10", "fd00:10::99", "fd00:11::11"} {
		privtest.Run(t, l.client, "ping", "-c1", "-W3", "-I", a, map[bool]string{false: "10.10.0.1", true: "fd00:10::1"}[strings.Contains(a, ":")])
	}
	classify(t, l.gw, testMarks)
	cfg := testConfig()
	cfg.Limits = lim
	return l, newTable(t, l.gw, cfg)
}

// holdTCP listens on addr in ns, greets each connection and holds it open
// until the client closes it; it returns the number accepted so far.
func holdTCP(tb testing.TB, ns, addr, greeting string) *atomic.Int64 {
	tb.Helper()
	var n atomic.Int64
	privtest.ServeTCP(tb, ns, addr, func(c net.Conn) {
		n.Add(1)
		_, _ = fmt.Fprintln(c, greeting)
		_ = c.SetReadDeadline(time.Now().Add(2 * hangGuard))
		_, _ = io.Copy(io.Discard, c)
	})
	return &n
}

// dialFrom connects from ns with source address src and returns the
// connection after reading the server's greeting, or the error.
func dialFrom(tb testing.TB, ns string, src netip.Addr, to netip.AddrPort) (net.Conn, error) {
	tb.Helper()
	var c net.Conn
	err := privtest.Do(ns, func() (err error) {
		d := net.Dialer{Timeout: dropWait, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
		d.SetMultipathTCP(false)
		c, err = d.Dial("tcp", to.String())
		return err
	})
	if err != nil {
		return nil, err
	}
	tb.Cleanup(func() { c.Close() })
	_ = c.SetReadDeadline(time.Now().Add(hangGuard))
	if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
		c.Close()
		return nil, fmt.Errorf("read greeting: %w", err)
	}
	return c, nil
}

// wantRefused fails unless err is a connection refused (the reset the
// limit rules answer with), not a timeout.
func wantRefused(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: connected, want refused with a reset", what)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("%s: %v, want ECONNREFUSED (a reset)", what, err)
	}
}

func refusals(t *testing.T, tab *Table) map[string]uint64 {
	t.Helper()
	r, err := tab.LimitRefusals()
	if err != nil {
		t.Fatalf("LimitRefusals: %v", err)
	}
	return r
}

func TestLimitRulesLayout(t *testing.T) {
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "nft", "ip")
	ns := privtest.NewNetNS(t)
	cfg := testConfig()
	cfg.Limits = Limits{FlowsPerClient: 512, NewFlowsPerSecond: 200, NewFlowsBurst: 400, DNSTCPPerClient: 16,
		DNSQueriesPerSecond: 200, DNSQueriesBurst: 400}
	tab := newTable(t, ns, cfg)
	text := privtest.Run(t, ns, "nft", "list", "table", "inet", "cloudsteer")
	for _, want := range []string{
		"chain client_limits {",
		"type filter hook input priority filter - 10; policy accept;",
		"update @new_flows_v4 { ip saddr limit rate over 200/second burst 400 packets } counter name \"new_flows_per_client\" reject with tcp reset",
		"add @flows_v4 { ip saddr ct count over 512 } counter name \"flows_per_client\" reject with tcp reset",
		"add @flows_v6 { ip6 saddr & ffff:ffff:ffff:ffff:: ct count over 512 } counter name \"flows_per_client\" reject with tcp reset",
		"add @dns_tcp_v6 { ip6 saddr & ffff:ffff:ffff:ffff:: ct count over 16 } counter name \"dns_tcp_per_client\" reject with tcp reset",
		"update @dns_queries_v4 { ip saddr limit rate over 200/second burst 400 packets } counter name \"dns_queries_per_client\" drop",
		"ct status dnat",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("table lacks %q:\n%s", want, text)
		}
	}
	want := map[string]uint64{RefusedFlowsPerClient: 0, RefusedNewFlowsPerClient: 0, RefusedDNSTCPPerClient: 0, RefusedDNSQueriesPerClient: 0}
	if diff := cmp.Diff(want, refusals(t, tab)); diff != "" {
		t.Errorf("LimitRefusals (-want +got):\n%s", diff)
	}
}

func TestLimitConfigValidate(t *testing.T) {
	for _, tt := range []struct {
		lim  Limits
		want string
	}{
		{Limits{NewFlowsBurst: 5}, "NewFlowsBurst is 5 without a rate"},
		{Limits{DNSQueriesPerSecond: 10, DNSQueriesBurst: 5}, "DNSQueriesBurst is 5, less than DNSQueriesPerSecond (10)"},
		{Limits{FlowsPerClient: 1 << 30}, "FlowsPerClient is 1073741824, more than"},
	} {
		cfg := testConfig()
		cfg.TableName = DefaultTableName
		cfg.Limits = tt.lim
		if err := cfg.validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v, want %q", tt.lim, err, tt.want)
		}
	}
}

// TestFlowsPerClient: a client at its count of open steered flows gets a
// reset for the next one, while another client still connects; closing a
// flow frees a place. The IPv6 client is its /64.
func TestFlowsPerClient(t *testing.T) {
	const max = 3
	l, tab := newLimitLab(t, Limits{FlowsPerClient: max})
	holdTCP(t, l.gw, ":15443", "tls-proxy")
	for i, v6 := range []bool{false, true} {
		to := netip.AddrPortFrom(serverFor[v6], 443)
		t.Run(map[bool]string{false: "v4", true: "v6"}[v6], func(t *testing.T) {
			before := refusals(t, tab)[RefusedFlowsPerClient]
			var held []net.Conn
			for n := 0; n < max; n++ {
				c, err := dialFrom(t, l.client, clientA[i], to)
				if err != nil {
					t.Fatalf("flow %d of %d: %v", n+1, max, err)
				}
				held = append(held, c)
			}
			_, err := dialFrom(t, l.client, clientA[i], to)
			wantRefused(t, fmt.Sprintf("flow %d from %v", max+1, clientA[i]), err)
			if v6 {
				_, err := dialFrom(t, l.client, sameA64, to)
				wantRefused(t, fmt.Sprintf("flow from %v (same /64)", sameA64), err)
			}
			if _, err := dialFrom(t, l.client, clientB[i], to); err != nil {
				t.Fatalf("second client %v while the first is at its limit: %v", clientB[i], err)
			}
			if got := refusals(t, tab)[RefusedFlowsPerClient] - before; got < 1 {
				t.Errorf("flows_per_client counter rose by %d, want at least 1", got)
			}
			held[0].Close()
			ok := eventually(hangGuard, func() bool {
				c, err := dialFrom(t, l.client, clientA[i], to)
				if err == nil {
					c.Close()
				}
				return err == nil
			})
			if !ok {
				t.Fatal("after closing a flow the client still cannot open one")
			}
			for _, c := range held {
				c.Close()
			}
		})
	}
}

// TestNewFlowsRate: a client opening flows faster than its rate gets
// resets for the excess (each flow closed at once, so only the rate
// limits), while another client still connects.
func TestNewFlowsRate(t *testing.T) {
	const rate, burst, tries = 5, 10, 60
	l, tab := newLimitLab(t, Limits{NewFlowsPerSecond: rate, NewFlowsBurst: burst})
	accepted := holdTCP(t, l.gw, ":15080", "http-proxy")
	to := netip.AddrPortFrom(serverFor[false], 80)
	start := time.Now()
	var ok, refused int
	for n := 0; n < tries; n++ {
		c, err := dialFrom(t, l.client, clientA[0], to)
		switch {
		case err == nil:
			ok++
			c.Close()
		case errors.Is(err, syscall.ECONNREFUSED):
			refused++
		default:
			t.Fatalf("flow %d: %v, want connected or refused", n, err)
		}
	}
	elapsed := time.Since(start)
	// The bucket allows burst at once and rate per second after.
	if most := burst + int(float64(rate)*elapsed.Seconds()) + 1; ok > most || ok < burst {
		t.Errorf("%d of %d flows connected in %v, want %d..%d", ok, tries, elapsed, burst, most)
	}
	if refused == 0 {
		t.Fatal("no flow was refused")
	}
	if _, err := dialFrom(t, l.client, clientB[0], to); err != nil {
		t.Fatalf("second client while the first is over its rate: %v", err)
	}
	if got := refusals(t, tab)[RefusedNewFlowsPerClient]; got != uint64(refused) {
		t.Errorf("new_flows_per_client counter %d, want %d (the refused flows)", got, refused)
	}
	if got := accepted.Load(); got != int64(ok+1) {
		t.Errorf("proxy accepted %d flows, want %d", got, ok+1)
	}
}

// TestDNSTCPPerClient: DNS over TCP connections beyond the count get a
// reset, another client's still connect.
func TestDNSTCPPerClient(t *testing.T) {
	const max = 2
	l, tab := newLimitLab(t, Limits{DNSTCPPerClient: max})
	holdTCP(t, l.gw, ":53", "dns-tcp")
	to := netip.AddrPortFrom(netip.MustParseAddr("192.0.2.53"), 53)
	for n := 0; n < max; n++ {
		if _, err := dialFrom(t, l.client, clientA[0], to); err != nil {
			t.Fatalf("dns tcp %d: %v", n+1, err)
		}
	}
	_, err := dialFrom(t, l.client, clientA[0], to)
	wantRefused(t, "dns tcp over the count", err)
	if _, err := dialFrom(t, l.client, clientB[0], to); err != nil {
		t.Fatalf("second client's dns tcp: %v", err)
	}
	if got := refusals(t, tab)[RefusedDNSTCPPerClient]; got != 1 {
		t.Errorf("dns_tcp_per_client counter %d, want 1", got)
	}
}

// TestDNSQueryRate: one client's DNS datagrams beyond its rate are dropped
// before the resolver's socket (all from one source port, one conntrack
// entry), while another client's query is answered.
func TestDNSQueryRate(t *testing.T) {
	const rate, burst, tries = 5, 10, 100
	l, tab := newLimitLab(t, Limits{DNSQueriesPerSecond: rate, DNSQueriesBurst: burst})
	var got atomic.Int64
	var pc net.PacketConn
	privtest.InNetNS(t, l.gw, func() {
		var err error
		if pc, err = net.ListenPacket("udp", ":53"); err != nil {
			t.Fatal(err)
		}
	})
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			got.Add(1)
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
	to := netip.AddrPortFrom(netip.MustParseAddr("192.0.2.53"), 53)
	var c *net.UDPConn
	privtest.InNetNS(t, l.client, func() {
		var err error
		c, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(clientA[0], 0)), net.UDPAddrFromAddrPort(to))
		if err != nil {
			t.Fatal(err)
		}
	})
	defer c.Close()
	start := time.Now()
	for n := 0; n < tries; n++ {
		if _, err := c.Write([]byte("q")); err != nil {
			t.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	// The second client is answered while the first is over its rate.
	var b *net.UDPConn
	privtest.InNetNS(t, l.client, func() {
		var err error
		b, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(clientB[0], 0)), net.UDPAddrFromAddrPort(to))
		if err != nil {
			t.Fatal(err)
		}
	})
	defer b.Close()
	_ = b.SetDeadline(time.Now().Add(hangGuard))
	if _, err := b.Write([]byte("b")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Read(make([]byte, 16)); err != nil {
		t.Fatalf("second client's query: %v", err)
	}
	var reached int64
	eventually(time.Second, func() bool {
		reached = got.Load() - 1
		return refusals(t, tab)[RefusedDNSQueriesPerClient]+uint64(reached) == tries
	})
	if most := int64(burst + int(float64(rate)*elapsed.Seconds()) + 1); reached > most || reached < burst {
		t.Errorf("%d of %d queries reached the resolver in %v, want %d..%d", reached, tries, elapsed, burst, most)
	}
	if dropped := refusals(t, tab)[RefusedDNSQueriesPerClient]; dropped+uint64(reached) != tries {
		t.Errorf("dns_queries_per_client counter %d + %d reached != %d sent", dropped, reached, tries)
	}
}

// eventually polls cond every 20 ms for up to timeout.
func eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

package firewall

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

// hangGuard bounds every wait in these tests so a broken path fails the
// test instead of hanging it; no assertion depends on it.
const hangGuard = 10 * time.Second

// dropWait is how long a connection attempt waits before it counts as
// dropped. A drop is also checked on the drop rule's counter.
const dropWait = 1500 * time.Millisecond

// lab is client ns ↔ gw ns ↔ server ns, addressed as docs/design.md's lab:
// client eth0 10.10.0.10 / fd00:10::10, gw lan0 10.10.0.1 / fd00:10::1,
// gw wan0 10.20.0.1 / fd00:20::1, server eth0 10.20.0.2 / fd00:20::2.
type lab struct{ client, gw, server string }

func newLab(tb testing.TB) lab {
	tb.Helper()
	privtest.RequireRoot(tb)
	privtest.RequireCommand(tb, "ip", "nft", "sysctl")
	l := lab{client: privtest.NewNetNS(tb), gw: privtest.NewNetNS(tb), server: privtest.NewNetNS(tb)}
	run := func(ns string, args ...string) { privtest.Run(tb, ns, args...) }
	// The veth pairs are created inside the namespaces, so they vanish with them.
	run(l.gw, "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", l.client)
	run(l.gw, "ip", "link", "add", "wan0", "type", "veth", "peer", "name", "eth0", "netns", l.server)
	run(l.gw, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	for _, a := range []struct{ ns, dev, v4, v6 string }{
		{l.client, "eth0", "10.10.0.10/24", "fd00:10::10/64"},
		{l.gw, "lan0", "10.10.0.1/24", "fd00:10::1/64"},
		{l.gw, "wan0", "10.20.0.1/24", "fd00:20::1/64"},
		{l.server, "eth0", "10.20.0.2/24", "fd00:20::2/64"},
	} {
		run(a.ns, "ip", "addr", "add", a.v4, "dev", a.dev)
		run(a.ns, "ip", "addr", "add", a.v6, "dev", a.dev, "nodad")
		run(a.ns, "ip", "link", "set", a.dev, "up")
	}
	run(l.client, "ip", "route", "add", "default", "via", "10.10.0.1")
	run(l.client, "ip", "-6", "route", "add", "default", "via", "fd00:10::1")
	run(l.server, "ip", "route", "add", "10.10.0.0/24", "via", "10.20.0.1")
	run(l.server, "ip", "-6", "route", "add", "fd00:10::/64", "via", "fd00:20::1")
	return l
}

// classify stands in for the eBPF classifier (bpf/steer.c): a test-only
// table that marks LAN ingress before conntrack and before our nat chain.
func classify(tb testing.TB, ns string, m Marks) {
	tb.Helper()
	rules := fmt.Sprintf(`table inet cstest_classify {
	chain classify {
		type filter hook prerouting priority -300; policy accept;
		iifname "lan0" tcp dport 80 meta mark set %#x
		iifname "lan0" tcp dport 443 meta mark set %#x
		iifname "lan0" meta l4proto { tcp, udp } th dport 53 meta mark set %#x
		iifname "lan0" udp dport 443 meta mark set %#x
	}
}
`, m.HTTP, m.TLS, m.DNS, m.QUIC)
	cmd := privtest.Command(ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("nft -f (classifier stand-in): %v\n%s", err, out)
	}
}

// accepted is what a test TCP server saw of one connection.
type accepted struct {
	remote, local netip.AddrPort
	orig          netip.AddrPort
	origErr       error
}

// serveTCP listens on addr inside ns (dual-stack for ":port"), greets each
// connection with greeting and a newline, and reports it on the channel.
func serveTCP(tb testing.TB, ns, addr, greeting string) <-chan accepted {
	tb.Helper()
	ch := make(chan accepted, 16)
	privtest.ServeTCP(tb, ns, addr, func(c net.Conn) {
		tc := c.(*net.TCPConn)
		a := accepted{
			remote: tc.RemoteAddr().(*net.TCPAddr).AddrPort(),
			local:  tc.LocalAddr().(*net.TCPAddr).AddrPort(),
		}
		a.orig, a.origErr = OriginalDst(tc)
		_, _ = fmt.Fprintln(c, greeting)
		c.Close()
		select {
		case ch <- a:
		default:
		}
	})
	return ch
}

// serveUDPEcho echoes datagrams on addr inside ns.
func serveUDPEcho(tb testing.TB, ns, addr string) {
	tb.Helper()
	var pc net.PacketConn
	privtest.InNetNS(tb, ns, func() {
		var err error
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			tb.Fatalf("listen udp %s in %s: %v", addr, ns, err)
		}
	})
	done := make(chan struct{})
	tb.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
}

// dialTCP connects from inside ns.
func dialTCP(tb testing.TB, ns string, to netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	tb.Helper()
	var c net.Conn
	err := privtest.Do(ns, func() (err error) {
		d := net.Dialer{Timeout: timeout}
		d.SetMultipathTCP(false)
		c, err = d.Dial("tcp", to.String())
		return err
	})
	if c != nil {
		tb.Cleanup(func() { c.Close() })
	}
	return c, err
}

// greeting connects from ns to `to` and returns the server's first line.
func greeting(tb testing.TB, ns string, to netip.AddrPort) string {
	tb.Helper()
	c, err := dialTCP(tb, ns, to, hangGuard)
	if err != nil {
		tb.Fatalf("dial %s from %s: %v", to, ns, err)
	}
	_ = c.SetDeadline(time.Now().Add(hangGuard))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		tb.Fatalf("read from %s: %v", to, err)
	}
	return strings.TrimSpace(line)
}

func next(tb testing.TB, ch <-chan accepted) accepted {
	tb.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(hangGuard):
		tb.Fatal("the listener saw no connection")
		return accepted{}
	}
}

// udpExchange sends payload on a connected UDP socket from ns and returns
// the answer or the socket error (a connected socket only takes answers
// from the address it is connected to).
func udpExchange(tb testing.TB, ns string, to netip.AddrPort, payload string, wait time.Duration) (string, error) {
	tb.Helper()
	var c *net.UDPConn
	privtest.InNetNS(tb, ns, func() {
		var err error
		if c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to)); err != nil {
			tb.Fatalf("dial udp %s: %v", to, err)
		}
	})
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write([]byte(payload)); err != nil {
		return "", err
	}
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// packets returns the counter of rule i in chain of our table in ns.
func packets(tb testing.TB, ns, chain string, i int) uint64 {
	tb.Helper()
	l, ok := listTable(tb, ns, "cloudsteer")
	if !ok || len(l.rules[chain]) <= i {
		tb.Fatalf("no rule %d in chain %s", i, chain)
	}
	return l.rules[chain][i].packets
}

// Rule positions in the input chain (TestRulesPresentThenGone pins the layout).
const (
	inDropTCPNotLAN = 0
	inDropUDPNotLAN = 1
	inAcceptUDPMark = 5
	inDropTCPNoNAT  = 6
)

// expectDropped dials `to` from ns and wants no answer at all (not even a
// reset) and the input rule's counter to go up.
func expectDropped(t *testing.T, l lab, ns string, to netip.AddrPort, rule int) {
	t.Helper()
	before := packets(t, l.gw, "input", rule)
	c, err := dialTCP(t, ns, to, dropWait)
	if err == nil {
		line, _ := bufio.NewReader(c).ReadString('\n')
		t.Fatalf("dial %s from %s connected (greeting %q), want dropped", to, ns, line)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("dial %s: %v, want a timeout (dropped, not refused)", to, err)
	}
	if after := packets(t, l.gw, "input", rule); after <= before {
		t.Errorf("input rule %d counter %d -> %d, want it to count the drop", rule, before, after)
	}
}

func TestTraffic(t *testing.T) {
	l := newLab(t)
	classify(t, l.gw, testMarks)
	cfg := testConfig() // lan0; HTTP 15080, TLS 15443, DNS 53, guard 15000
	newTable(t, l.gw, cfg)

	tlsProxy := serveTCP(t, l.gw, ":15443", "tls-proxy")
	httpProxy := serveTCP(t, l.gw, ":15080", "http-proxy")
	dnsTCP := serveTCP(t, l.gw, ":53", "dns-tcp")
	gwOwn := serveTCP(t, l.gw, ":443", "gw-own-443")
	admin := serveTCP(t, l.gw, ":15000", "admin")
	serveUDPEcho(t, l.gw, ":53")
	serveTCP(t, l.server, ":443", "server-443")
	serveTCP(t, l.server, ":80", "server-80")
	serveUDPEcho(t, l.server, ":443")
	serveUDPEcho(t, l.server, ":444")

	for _, fam := range []struct {
		name                     string
		client, server, lan, wan netip.Addr
		dnsNobody                netip.Addr
		loopback                 netip.Addr
	}{
		{"v4", netip.MustParseAddr("10.10.0.10"), netip.MustParseAddr("10.20.0.2"), netip.MustParseAddr("10.10.0.1"),
			netip.MustParseAddr("10.20.0.1"), netip.MustParseAddr("192.0.2.53"), netip.MustParseAddr("127.0.0.1")},
		{"v6", netip.MustParseAddr("fd00:10::10"), netip.MustParseAddr("fd00:20::2"), netip.MustParseAddr("fd00:10::1"),
			netip.MustParseAddr("fd00:20::1"), netip.MustParseAddr("2001:db8:2::53"), netip.MustParseAddr("::1")},
	} {
		at := func(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }
		t.Run(fam.name, func(t *testing.T) {
			t.Run("tls to server lands on the proxy with its original destination", func(t *testing.T) {
				if got := greeting(t, l.client, at(fam.server, 443)); got != "tls-proxy" {
					t.Fatalf("greeting %q, want tls-proxy", got)
				}
				a := next(t, tlsProxy)
				if a.origErr != nil || a.orig != at(fam.server, 443) {
					t.Errorf("OriginalDst = %v, %v; want %v", a.orig, a.origErr, at(fam.server, 443))
				}
				if a.remote.Addr().Unmap() != fam.client {
					t.Errorf("proxy saw client %v, want %v", a.remote, fam.client)
				}
			})
			t.Run("http to server lands on the proxy with its original destination", func(t *testing.T) {
				if got := greeting(t, l.client, at(fam.server, 80)); got != "http-proxy" {
					t.Fatalf("greeting %q, want http-proxy", got)
				}
				if a := next(t, httpProxy); a.origErr != nil || a.orig != at(fam.server, 80) {
					t.Errorf("OriginalDst = %v, %v; want %v", a.orig, a.origErr, at(fam.server, 80))
				}
			})
			t.Run("tls to the gateway's own addresses is not proxied", func(t *testing.T) {
				for _, own := range []netip.Addr{fam.lan, fam.wan} {
					if got := greeting(t, l.client, at(own, 443)); got != "gw-own-443" {
						t.Errorf("to %v: greeting %q, want gw-own-443", own, got)
					}
					next(t, gwOwn)
				}
			})
			t.Run("dns over udp to any address is answered from that address", func(t *testing.T) {
				for _, to := range []netip.Addr{fam.dnsNobody, fam.server} {
					got, err := udpExchange(t, l.client, at(to, 53), "query-"+to.String(), hangGuard)
					if err != nil || got != "query-"+to.String() {
						t.Errorf("to %v: answer %q, %v; want the echo", to, got, err)
					}
				}
			})
			t.Run("dns over udp to the gateway itself (redirect without address change)", func(t *testing.T) {
				before := packets(t, l.gw, "input", inAcceptUDPMark)
				got, err := udpExchange(t, l.client, at(fam.lan, 53), "query-gw", hangGuard)
				if err != nil || got != "query-gw" {
					t.Fatalf("answer %q, %v; want the echo", got, err)
				}
				// Redirect to the address asked leaves no DNAT bit; the DNS mark lets it in.
				if after := packets(t, l.gw, "input", inAcceptUDPMark); after <= before {
					t.Errorf("the DNS-mark accept rule did not count (%d -> %d)", before, after)
				}
			})
			t.Run("dns over tcp lands on the resolver with its original destination", func(t *testing.T) {
				if got := greeting(t, l.client, at(fam.dnsNobody, 53)); got != "dns-tcp" {
					t.Fatalf("greeting %q, want dns-tcp", got)
				}
				if a := next(t, dnsTCP); a.origErr != nil || a.orig != at(fam.dnsNobody, 53) {
					t.Errorf("OriginalDst = %v, %v; want %v", a.orig, a.origErr, at(fam.dnsNobody, 53))
				}
			})
			t.Run("quic is rejected with port unreachable", func(t *testing.T) {
				// Control: unmarked UDP reaches the server's echo.
				if got, err := udpExchange(t, l.client, at(fam.server, 444), "ping", hangGuard); err != nil || got != "ping" {
					t.Fatalf("control udp/444: %q, %v; want the echo", got, err)
				}
				got, err := udpExchange(t, l.client, at(fam.server, 443), "quic", hangGuard)
				if !errors.Is(err, syscall.ECONNREFUSED) {
					t.Fatalf("udp/443: %q, %v; want ECONNREFUSED", got, err)
				}
			})
			t.Run("proxy port from the wan side is dropped", func(t *testing.T) {
				expectDropped(t, l, l.server, at(fam.wan, cfg.TLSPort), inDropTCPNotLAN)
				// The address does not matter, the interface does.
				expectDropped(t, l, l.server, at(fam.lan, cfg.TLSPort), inDropTCPNotLAN)
				expectDropped(t, l, l.server, at(fam.wan, 15000), inDropTCPNotLAN)
			})
			t.Run("dns port from the wan side is dropped", func(t *testing.T) {
				before := packets(t, l.gw, "input", inDropUDPNotLAN)
				got, err := udpExchange(t, l.server, at(fam.wan, 53), "query", dropWait)
				if err == nil {
					t.Fatalf("got answer %q from the wan side", got)
				}
				if after := packets(t, l.gw, "input", inDropUDPNotLAN); after <= before {
					t.Errorf("udp wan drop counter %d -> %d", before, after)
				}
			})
			t.Run("direct connection to the proxy port without redirect is dropped", func(t *testing.T) {
				expectDropped(t, l, l.client, at(fam.lan, cfg.TLSPort), inDropTCPNoNAT)
				expectDropped(t, l, l.client, at(fam.lan, cfg.HTTPPort), inDropTCPNoNAT)
				expectDropped(t, l, l.gw, at(fam.loopback, cfg.TLSPort), inDropTCPNoNAT)
			})
			t.Run("guard port is open from the lan and lo", func(t *testing.T) {
				if got := greeting(t, l.client, at(fam.lan, 15000)); got != "admin" {
					t.Errorf("from lan: %q", got)
				}
				next(t, admin)
				if got := greeting(t, l.gw, at(fam.loopback, 15000)); got != "admin" {
					t.Errorf("from lo: %q", got)
				}
				next(t, admin)
			})
		})
	}
}

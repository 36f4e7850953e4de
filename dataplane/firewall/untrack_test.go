package firewall

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cloudsteer/cloudsteer/dataplane/steer"
	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

// attachClassifier attaches the real eBPF classifier to lan0 in ns (the
// nft stand-in of TestTraffic would be another ruleset and turn
// untracking off).
func attachClassifier(tb testing.TB, ns string) *steer.Steer {
	tb.Helper()
	var s *steer.Steer
	privtest.InNetNS(tb, ns, func() {
		var err error
		if s, err = steer.New(context.Background(), steer.Config{Interfaces: []string{"lan0"}}); err != nil {
			tb.Fatalf("attach classifier: %v", err)
		}
	})
	tb.Cleanup(func() { s.Close() })
	got := Marks{HTTP: steer.MarkHTTP, TLS: steer.MarkTLS, DNS: steer.MarkDNS, QUIC: steer.MarkQUIC, Untrack: steer.MarkUntrack}
	if got != testMarks {
		tb.Fatalf("classifier marks %+v, the tests assume %+v", got, testMarks)
	}
	return s
}

// serveLineEcho echoes lines on addr inside ns, each prefixed with
// prefix, connection by connection.
func serveLineEcho(tb testing.TB, ns, addr, prefix string) {
	tb.Helper()
	privtest.ServeTCP(tb, ns, addr, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(3 * hangGuard))
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := io.WriteString(c, prefix+line); err != nil {
				return
			}
		}
	})
}

// conntrackHas reports whether ns's conntrack table holds an entry whose
// original direction starts at from (source address and port).
func conntrackHas(tb testing.TB, ns string, from netip.AddrPort) bool {
	tb.Helper()
	out, err := privtest.Command(ns, "cat", "/proc/net/nf_conntrack").CombinedOutput()
	if err != nil {
		tb.Fatalf("read /proc/net/nf_conntrack in %s: %v\n%s", ns, err, out)
	}
	src := "src=" + ctAddr(from.Addr()) + " "
	sport := fmt.Sprintf(" sport=%d ", from.Port())
	for _, line := range strings.Split(string(out), "\n") {
		// The first src= and sport= are the original direction's.
		i, j := strings.Index(line, "src="), strings.Index(line, " sport=")
		if i < 0 || j < 0 {
			continue
		}
		if strings.HasPrefix(line[i:], src) && strings.HasPrefix(line[j:], sport) {
			return true
		}
	}
	return false
}

// roundTrip writes line to c and wants it echoed with prefix.
func roundTrip(tb testing.TB, c net.Conn, r *bufio.Reader, prefix, line string) {
	tb.Helper()
	_ = c.SetDeadline(time.Now().Add(hangGuard))
	if _, err := fmt.Fprintln(c, line); err != nil {
		tb.Fatalf("write %q: %v", line, err)
	}
	got, err := r.ReadString('\n')
	if err != nil || strings.TrimSpace(got) != prefix+line {
		tb.Fatalf("echo of %q: %q, %v; want %q", line, got, err, prefix+line)
	}
}

// waitUntracking polls until tab.Untracking() is want.
func waitUntracking(tb testing.TB, tab *Table, want bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * untrackPoll)
	for tab.Untracking() != want {
		if time.Now().After(deadline) {
			tb.Fatalf("Untracking() stayed %v for %v", !want, 5*untrackPoll)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Rule positions in the untrack_prerouting chain.
const (
	preMark     = 0
	preWAN      = 1
	preOtherLAN = 2
)

func TestUntrackUnsteered(t *testing.T) {
	l := newLab(t)
	cls := attachClassifier(t, l.gw)
	cfg := testConfig()
	cfg.UntrackUnsteered = true
	tab := newTable(t, l.gw, cfg)
	if !tab.Untracking() {
		t.Fatal("Untracking() = false with no other ruleset in the namespace")
	}

	lst, _ := listTable(t, l.gw, "cloudsteer")
	wantChains := map[string]chainInfo{
		"prerouting":         {Type: "nat", Hook: "prerouting", Prio: -100, Policy: "accept"},
		"forward":            {Type: "filter", Hook: "forward", Prio: 0, Policy: "accept"},
		"input":              {Type: "filter", Hook: "input", Prio: 0, Policy: "accept"},
		"untrack_prerouting": {Type: "filter", Hook: "prerouting", Prio: -300, Policy: "accept"},
		"untrack_output":     {Type: "filter", Hook: "output", Prio: -300, Policy: "accept"},
		"reach":              {Type: "filter", Hook: "input", Prio: 2147483646, Policy: "accept"},
		"reach_first":        {Type: "filter", Hook: "input", Prio: -2147483647, Policy: "accept"},
	}
	if diff := cmp.Diff(wantChains, lst.chains); diff != "" {
		t.Errorf("chains (-want +got):\n%s", diff)
	}
	wantRules := map[string][]string{
		"untrack_prerouting": {
			"meta mark == 0x0c570006 counter notrack",
			"meta iifname != @listener_ifaces meta l4proto == tcp counter notrack",
			"meta iifname == @listener_ifaces tcp dport != {443,53,80} counter notrack",
		},
		"untrack_output": {"tcp sport != {15080,15443,53} counter notrack"},
	}
	for chain, want := range wantRules {
		if diff := cmp.Diff(want, lst.ruleTexts(chain)); diff != "" {
			t.Errorf("chain %s rules (-want +got):\n%s", chain, diff)
		}
	}

	const size = 4 << 20
	serveStream(t, l.server, ":9000", size)
	serveLineEcho(t, l.server, ":443", "server ")
	serveLineEcho(t, l.server, ":80", "server ")
	serveLineEcho(t, l.gw, ":15080", "proxy ")
	tlsProxy := serveTCP(t, l.gw, ":15443", "tls-proxy")

	// download fetches the stream from the server's port 9000 and returns
	// the client's address and the bytes received.
	download := func(t *testing.T, server netip.Addr) (netip.AddrPort, int) {
		c, err := dialTCP(t, l.client, netip.AddrPortFrom(server, 9000), hangGuard)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		_ = c.SetDeadline(time.Now().Add(hangGuard))
		n, err := io.Copy(io.Discard, c)
		if err != nil {
			t.Fatalf("download: %v", err)
		}
		return c.LocalAddr().(*net.TCPAddr).AddrPort(), int(n)
	}

	for _, fam := range []struct {
		name   string
		server netip.Addr
		bypass netip.Prefix
	}{
		{"v4", netip.MustParseAddr("10.20.0.2"), netip.MustParsePrefix("10.20.0.2/32")},
		{"v6", netip.MustParseAddr("fd00:20::2"), netip.MustParsePrefix("fd00:20::2/128")},
	} {
		t.Run(fam.name, func(t *testing.T) {
			t.Run("a steered flow stays on the proxy when its destination is bypassed", func(t *testing.T) {
				c, err := dialTCP(t, l.client, netip.AddrPortFrom(fam.server, 80), hangGuard)
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				r := bufio.NewReader(c)
				roundTrip(t, c, r, "proxy ", "while steered")
				if err := cls.AddBypass(fam.bypass); err != nil {
					t.Fatal(err)
				}
				defer cls.DeleteBypass(fam.bypass)
				roundTrip(t, c, r, "proxy ", "after its destination was bypassed")
				if !conntrackHas(t, l.gw, c.LocalAddr().(*net.TCPAddr).AddrPort()) {
					t.Error("the steered flow has no conntrack entry")
				}
				// A new flow to it now goes straight to the server.
				c2, err := dialTCP(t, l.client, netip.AddrPortFrom(fam.server, 80), hangGuard)
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				roundTrip(t, c2, bufio.NewReader(c2), "server ", "a new flow")
			})
			t.Run("unsteered tcp is forwarded whole and not tracked", func(t *testing.T) {
				fromLAN := packets(t, l.gw, "untrack_prerouting", preOtherLAN)
				fromWAN := packets(t, l.gw, "untrack_prerouting", preWAN)
				from, n := download(t, fam.server)
				if n != size {
					t.Fatalf("received %d bytes, want %d", n, size)
				}
				if conntrackHas(t, l.gw, from) {
					t.Errorf("conntrack tracks the unsteered flow from %v", from)
				}
				// The data comes in from the WAN side: at least one packet
				// per 64 KiB; the client's SYN and ACKs from the LAN.
				if got := packets(t, l.gw, "untrack_prerouting", preWAN) - fromWAN; got < size/(64<<10) {
					t.Errorf("wan-side untrack rule counted %d packets for a %d-byte flow", got, size)
				}
				if got := packets(t, l.gw, "untrack_prerouting", preOtherLAN) - fromLAN; got < 3 {
					t.Errorf("lan-side untrack rule counted %d packets", got)
				}
			})
			t.Run("steered tls is tracked and redirected", func(t *testing.T) {
				c, err := dialTCP(t, l.client, netip.AddrPortFrom(fam.server, 443), hangGuard)
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				_ = c.SetDeadline(time.Now().Add(hangGuard))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil || strings.TrimSpace(line) != "tls-proxy" {
					t.Fatalf("greeting %q, %v; want tls-proxy", line, err)
				}
				a := next(t, tlsProxy)
				if a.origErr != nil || a.orig != netip.AddrPortFrom(fam.server, 443) {
					t.Errorf("OriginalDst = %v, %v; want %v", a.orig, a.origErr, netip.AddrPortFrom(fam.server, 443))
				}
				if !conntrackHas(t, l.gw, c.LocalAddr().(*net.TCPAddr).AddrPort()) {
					t.Error("the steered flow has no conntrack entry")
				}
			})
			t.Run("a bypassed flow stays up when its name leaves the bypass list", func(t *testing.T) {
				if err := cls.AddBypass(fam.bypass); err != nil {
					t.Fatal(err)
				}
				c, err := dialTCP(t, l.client, netip.AddrPortFrom(fam.server, 443), hangGuard)
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				r := bufio.NewReader(c)
				from := c.LocalAddr().(*net.TCPAddr).AddrPort()
				before := packets(t, l.gw, "untrack_prerouting", preMark)
				roundTrip(t, c, r, "server ", "while bypassed")
				if conntrackHas(t, l.gw, from) {
					t.Errorf("the bypassed flow from %v is tracked", from)
				}
				if packets(t, l.gw, "untrack_prerouting", preMark) == before {
					t.Error("the untrack-mark rule counted nothing")
				}
				// The classifier remembers the flow started bypassed.
				if err := cls.DeleteBypass(fam.bypass); err != nil {
					t.Fatal(err)
				}
				roundTrip(t, c, r, "server ", "after the bypass ended")
				roundTrip(t, c, r, "server ", "and once more")
				if conntrackHas(t, l.gw, from) {
					t.Errorf("the flow from %v is tracked after its bypass ended", from)
				}
				select {
				case a := <-tlsProxy:
					t.Errorf("the proxy got a connection from %v mid-stream", a.remote)
				default:
				}
			})
		})
	}

	t.Run("another ruleset turns untracking off, and its removal back on", func(t *testing.T) {
		var mu sync.Mutex
		var heard []bool
		tab.OnUntrackChange(func(on bool) { mu.Lock(); heard = append(heard, on); mu.Unlock() })
		defer tab.OnUntrackChange(nil)
		privtest.Run(t, l.gw, "nft", "add", "table", "ip", "somebody_else")
		waitUntracking(t, tab, false)
		lst, _ := listTable(t, l.gw, "cloudsteer")
		for _, c := range []string{"untrack_prerouting", "untrack_output"} {
			if _, ok := lst.chains[c]; ok {
				t.Errorf("chain %s still there with another ruleset present", c)
			}
		}
		// Flows that started untracked keep their addresses when
		// conntrack picks them up (a masquerade would rewrite them).
		if got, want := lst.chains[pickupName], (chainInfo{Type: "nat", Hook: "postrouting", Prio: 99, Policy: "accept"}); got != want {
			t.Errorf("pickup chain %+v, want %+v", got, want)
		}
		if diff := cmp.Diff([]string{
			`meta iifname == @listener_ifaces tcp flags ! syn meta nfproto == ipv4 counter snat:{"family": "ip", "addr": {"payload": {"protocol": "ip", "field": "saddr"}}}`,
			`meta iifname == @listener_ifaces tcp flags ! syn meta nfproto == ipv6 counter snat:{"family": "ip6", "addr": {"payload": {"protocol": "ip6", "field": "saddr"}}}`,
		}, lst.ruleTexts(pickupName)); diff != "" {
			t.Errorf("pickup rules (-want +got):\n%s", diff)
		}
		from, n := download(t, netip.MustParseAddr("10.20.0.2"))
		if n != size {
			t.Fatalf("received %d bytes, want %d", n, size)
		}
		if !conntrackHas(t, l.gw, from) {
			t.Errorf("flow from %v untracked although another ruleset may need conntrack", from)
		}

		privtest.Run(t, l.gw, "nft", "delete", "table", "ip", "somebody_else")
		gone := time.Now()
		waitUntracking(t, tab, true)
		if waited := time.Since(gone); waited < untrackSettle-untrackPoll {
			t.Errorf("untracking back after %v, before settling for %v", waited, untrackSettle)
		}
		if lst, _ := listTable(t, l.gw, "cloudsteer"); lst.chains[pickupName] != (chainInfo{}) {
			t.Error("pickup chain still there with untracking back on")
		}
		from, _ = download(t, netip.MustParseAddr("10.20.0.2"))
		if conntrackHas(t, l.gw, from) {
			t.Errorf("flow from %v tracked after the other ruleset left", from)
		}

		// An IPsec policy counts as another ruleset.
		privtest.Run(t, l.gw, "ip", "xfrm", "policy", "add", "src", "10.10.0.0/24", "dst", "192.0.2.0/24", "dir", "out")
		waitUntracking(t, tab, false)
		privtest.Run(t, l.gw, "ip", "xfrm", "policy", "flush")
		waitUntracking(t, tab, true)

		// The state flips before the callback hears of it.
		want := []bool{true, false, true, false, true}
		for deadline := time.Now().Add(2 * untrackPoll); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			mu.Lock()
			n := len(heard)
			mu.Unlock()
			if n >= len(want) {
				break
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(heard, want) {
			t.Errorf("OnUntrackChange heard %v, want %v", heard, want)
		}
	})

	t.Run("a table that finds another ruleset starts tracking everything", func(t *testing.T) {
		ns := privtest.NewNetNS(t)
		privtest.Run(t, ns, "nft", "add", "table", "netdev", "somebody_else")
		cfg := testConfig()
		cfg.UntrackUnsteered = true
		tab := newTable(t, ns, cfg)
		if tab.Untracking() {
			t.Error("Untracking() = true next to another table")
		}
		lst, _ := listTable(t, ns, "cloudsteer")
		if _, ok := lst.chains["untrack_prerouting"]; ok {
			t.Error("untrack chain installed next to another table")
		}
	})
}

// ctAddr writes a as /proc/net/nf_conntrack does: IPv6 in all eight
// groups of four hex digits (%pI6).
func ctAddr(a netip.Addr) string {
	if a.Is4() {
		return a.String()
	}
	b := a.As16()
	groups := make([]string, 8)
	for i := range groups {
		groups[i] = fmt.Sprintf("%02x%02x", b[2*i], b[2*i+1])
	}
	return strings.Join(groups, ":")
}

// serveStream listens on addr inside ns and writes size bytes to each
// connection, then closes it.
func serveStream(tb testing.TB, ns, addr string, size int) {
	tb.Helper()
	block := make([]byte, 64<<10)
	privtest.ServeTCP(tb, ns, addr, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(hangGuard))
		for left := size; left > 0; left -= len(block) {
			if _, err := c.Write(block[:min(left, len(block))]); err != nil {
				return
			}
		}
	})
}

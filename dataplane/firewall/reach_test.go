package firewall

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

// debianInput is a Debian-style nftables.conf input chain: policy drop,
// only lo and established/related accepted.
const debianInput = `table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		iif "lo" accept
		ct state established,related accept
	}
}
`

func loadRuleset(tb testing.TB, ns, rules string) {
	tb.Helper()
	cmd := privtest.Command(ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("nft -f: %v\n%s", err, out)
	}
}

func reach(tb testing.TB, tab *Table) Reach {
	tb.Helper()
	r, err := tab.Reach()
	if err != nil {
		tb.Fatalf("Reach: %v", err)
	}
	return r
}

// TestReachCountsBlockedRedirects checks the counters the daemon's
// detection uses: a redirected TLS flow counts once as redirected and once
// as arrived; behind a Debian-style input policy drop every SYN
// (retransmissions too) counts as redirected and none as arrived; with
// the one rule the advice names, they arrive again. InputBlockers names
// the chain and the command.
func TestReachCountsBlockedRedirects(t *testing.T) {
	l := newLab(t)
	classify(t, l.gw, testMarks)
	tab := newTable(t, l.gw, testConfig())
	serveTCP(t, l.gw, ":15443", "tls-proxy")
	to := netip.MustParseAddrPort("10.20.0.2:443")

	r0 := reach(t, tab)
	c, err := dialTCP(t, l.client, to, dropWait)
	if err != nil {
		t.Fatalf("steered dial: %v", err)
	}
	c.Close()
	r1 := reach(t, tab)
	if r1.V4.WebEntered-r0.V4.WebEntered != 1 || r1.V4.WebArrived-r0.V4.WebArrived != 1 {
		t.Errorf("one steered flow: redirected %d, arrived %d; want 1, 1", r1.V4.WebEntered-r0.V4.WebEntered, r1.V4.WebArrived-r0.V4.WebArrived)
	}
	if b, err := tab.InputBlockers(); err != nil || len(b) != 0 {
		t.Errorf("InputBlockers alone = %v, %v", b, err)
	}

	loadRuleset(t, l.gw, debianInput)
	if _, err := dialTCP(t, l.client, to, dropWait); err == nil {
		t.Fatal("dial through the Debian-style input chain connected")
	}
	r2 := reach(t, tab)
	if r2.V4.WebEntered-r1.V4.WebEntered < 2 || r2.V4.WebArrived != r1.V4.WebArrived {
		t.Errorf("blocked: redirected +%d (want >= 2: SYN and a retransmission), arrived +%d (want 0)",
			r2.V4.WebEntered-r1.V4.WebEntered, r2.V4.WebArrived-r1.V4.WebArrived)
	}
	b, err := tab.InputBlockers()
	if err != nil || len(b) != 1 {
		t.Fatalf("InputBlockers = %v, %v; want inet filter input", b, err)
	}
	if got, want := b[0].Fix(), "nft add rule inet filter input ct status dnat accept"; got != want {
		t.Errorf("Fix() = %q, want %q", got, want)
	}
	if b[0].AcceptsDNAT || b[0].EndsInDrop {
		t.Errorf("blocker %+v", b[0])
	}
	if adv := BlockAdvice(b); !strings.Contains(adv, "nft add rule inet filter input ct status dnat accept") {
		t.Errorf("advice %q", adv)
	}

	privtest.Run(t, l.gw, "nft", "add", "rule", "inet", "filter", "input", "ct", "status", "dnat", "accept")
	c, err = dialTCP(t, l.client, to, dropWait)
	if err != nil {
		t.Fatalf("dial after the admin's rule: %v", err)
	}
	c.Close()
	if r3 := reach(t, tab); r3.V4.WebArrived-r2.V4.WebArrived != 1 {
		t.Errorf("after the rule: arrived +%d, want 1", r3.V4.WebArrived-r2.V4.WebArrived)
	}
	if b, _ := tab.InputBlockers(); len(b) != 1 || !b[0].AcceptsDNAT {
		t.Errorf("InputBlockers after the rule = %+v, want it to accept dnat", b)
	}

	// An IPv6-only drop: IPv6 redirects enter and do not arrive, IPv4
	// ones still do.
	privtest.Run(t, l.gw, "nft", "delete", "table", "inet", "filter")
	loadRuleset(t, l.gw, "table ip6 v6only {\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t\tct state established,related accept\n\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept\n\t}\n}\n")
	r4 := reach(t, tab)
	if _, err := dialTCP(t, l.client, netip.MustParseAddrPort("[fd00:20::2]:443"), dropWait); err == nil {
		t.Fatal("IPv6 dial through the ip6 drop connected")
	}
	if c, err = dialTCP(t, l.client, to, dropWait); err != nil {
		t.Fatalf("IPv4 dial beside the ip6 drop: %v", err)
	}
	c.Close()
	r5 := reach(t, tab)
	if r5.V6.WebEntered-r4.V6.WebEntered < 2 || r5.V6.WebArrived != r4.V6.WebArrived || r5.V4.WebArrived-r4.V4.WebArrived != 1 {
		t.Errorf("ip6 drop: v6 entered +%d arrived +%d, v4 arrived +%d; want >= 2, 0, 1",
			r5.V6.WebEntered-r4.V6.WebEntered, r5.V6.WebArrived-r4.V6.WebArrived, r5.V4.WebArrived-r4.V4.WebArrived)
	}
	if b, _ := tab.InputBlockers(); len(b) != 1 || b[0].Fix() != "nft add rule ip6 v6only input ct status dnat accept" {
		t.Errorf("InputBlockers beside the ip6 drop = %+v", b)
	}

	// A chain that ends in an explicit drop gets an insert, not an add.
	loadRuleset(t, l.gw, "table ip other {\n\tchain inbound {\n\t\ttype filter hook input priority 10; policy drop;\n\t\tcounter drop\n\t}\n}\n")
	b, _ = tab.InputBlockers()
	var fixes []string
	for _, x := range b {
		fixes = append(fixes, x.Fix())
	}
	if len(b) != 2 || !slices.Contains(fixes, "nft insert rule ip other inbound ct status dnat accept") {
		t.Errorf("fixes %q", fixes)
	}

	// HoldDNS puts one return for marked DNS first in prerouting, and
	// takes it out again.
	for range 2 {
		if err := tab.HoldDNS(true); err != nil {
			t.Fatal(err)
		}
	}
	lst, _ := listTable(t, l.gw, "cloudsteer")
	pre := lst.ruleTexts("prerouting")
	if len(pre) != 7 || pre[0] != "meta mark == 0x0c570004 counter return" {
		t.Errorf("prerouting while holding DNS: %q", pre)
	}
	if err := tab.HoldDNS(false); err != nil {
		t.Fatal(err)
	}
	lst, _ = listTable(t, l.gw, "cloudsteer")
	if pre := lst.ruleTexts("prerouting"); len(pre) != 6 || strings.Contains(pre[0], "return") {
		t.Errorf("prerouting after releasing DNS: %q", pre)
	}
}

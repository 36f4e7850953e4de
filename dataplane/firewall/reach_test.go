package firewall

import (
	"net/netip"
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
	if r1.WebRedirected-r0.WebRedirected != 1 || r1.WebArrived-r0.WebArrived != 1 {
		t.Errorf("one steered flow: redirected %d, arrived %d; want 1, 1", r1.WebRedirected-r0.WebRedirected, r1.WebArrived-r0.WebArrived)
	}
	if b, err := tab.InputBlockers(); err != nil || len(b) != 0 {
		t.Errorf("InputBlockers alone = %v, %v", b, err)
	}

	loadRuleset(t, l.gw, debianInput)
	if _, err := dialTCP(t, l.client, to, dropWait); err == nil {
		t.Fatal("dial through the Debian-style input chain connected")
	}
	r2 := reach(t, tab)
	if r2.WebRedirected-r1.WebRedirected < 2 || r2.WebArrived != r1.WebArrived {
		t.Errorf("blocked: redirected +%d (want >= 2: SYN and a retransmission), arrived +%d (want 0)",
			r2.WebRedirected-r1.WebRedirected, r2.WebArrived-r1.WebArrived)
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
	if r3 := reach(t, tab); r3.WebArrived-r2.WebArrived != 1 {
		t.Errorf("after the rule: arrived +%d, want 1", r3.WebArrived-r2.WebArrived)
	}
	if b, _ := tab.InputBlockers(); len(b) != 1 || !b[0].AcceptsDNAT {
		t.Errorf("InputBlockers after the rule = %+v, want it to accept dnat", b)
	}

	// A chain that ends in an explicit drop gets an insert, not an add.
	loadRuleset(t, l.gw, "table ip other {\n\tchain inbound {\n\t\ttype filter hook input priority 10; policy drop;\n\t\tcounter drop\n\t}\n}\n")
	b, _ = tab.InputBlockers()
	var fixes []string
	for _, x := range b {
		fixes = append(fixes, x.Fix())
	}
	if len(b) != 2 || fixes[1] != "nft insert rule ip other inbound ct status dnat accept" {
		t.Errorf("fixes %q", fixes)
	}
}

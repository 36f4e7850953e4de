package firewall

import (
	"strings"
	"testing"

	"github.com/cloudsteer/cloudsteer/dataplane/nfqueue"
	"github.com/cloudsteer/cloudsteer/dataplane/quicgate"
	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

func gateConfig(compat bool) *quicgate.RuleConfig {
	return &quicgate.RuleConfig{MarkOK: 0x0c570011, MarkNo: 0x0c570012, CtMask: 0x20000000, CtOK: 0x20000000, Queue: 15443, Compat: compat}
}

func TestQUICGateConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*quicgate.RuleConfig)
		want string
	}{
		{"valid", func(*quicgate.RuleConfig) {}, ""},
		{"ok mark is the quic mark", func(g *quicgate.RuleConfig) { g.MarkOK = testMarks.QUIC }, "marks QUIC and QUIC gate OK are both"},
		{"no mark 0", func(g *quicgate.RuleConfig) { g.MarkNo = 0 }, "mark QUIC gate NO is 0"},
		{"ct value outside the mask", func(g *quicgate.RuleConfig) { g.CtOK = 0x10000000 }, "not a non-zero value under the mask"},
		{"no ct mask", func(g *quicgate.RuleConfig) { g.CtMask = 0 }, "not a non-zero value under the mask"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.QUICGate = gateConfig(false)
			tc.edit(cfg.QUICGate)
			err := cfg.validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("validate: %v, want %q", err, tc.want)
			}
		})
	}
}

// TestQUICGateRules: with QUICGate set, the forward chain holds the gate's
// rules (quicgate.AddRules) instead of the plain reject, and the table
// still goes away on Close.
func TestQUICGateRules(t *testing.T) {
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "nft")
	ns := privtest.NewNetNS(t)
	var compat bool
	privtest.InNetNS(t, ns, func() { compat = !nfqueue.Available(false) })
	cfg := testConfig()
	cfg.QUICGate = gateConfig(compat)
	tab := newTable(t, ns, cfg)
	out := privtest.Run(t, ns, "nft", "list", "chain", "inet", "cloudsteer", "forward")
	for _, want := range []string{
		"meta mark 0x0c570005 meta l4proto udp ct mark & 0x20000000 == 0x20000000 counter",
		"ip saddr . udp sport . ip daddr @quic_no4 counter",
		"ip6 saddr . udp sport . ip6 daddr @quic_no6 counter",
		"meta mark 0x0c570011 meta l4proto udp ct mark set ct mark | 0x20000000 counter", // nft prints (m & ^M) | M as m | M
		"add @quic_no4 { ip saddr . udp sport . ip daddr } counter",
		"add @quic_no6 { ip6 saddr . udp sport . ip6 daddr } counter",
		"meta mark 0x0c570005 meta l4proto udp ct state new counter",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("forward chain lacks %q", want)
		}
	}
	if strings.Contains(out, "ct state new counter packets 0 bytes 0 reject") {
		t.Error("forward chain still has the plain reject")
	}
	if t.Failed() {
		t.Logf("forward chain (compat %v):\n%s", compat, out)
	}
	if err := tab.Close(); err != nil {
		t.Fatal(err)
	}
	if got := tableNames(t, ns); len(got) != 0 {
		t.Errorf("tables after Close: %v", got)
	}
}

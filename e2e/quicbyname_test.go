package e2e

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/gateway"
)

// TestQUICByName runs the gateway with firewall.quic_by_name (issue 13
// §3): QUIC naming a bypass name, sent to an address cloudsteer's resolver
// gives for that name, passes — though the client asked the gateway no DNS,
// so the kernel bypass map has no entry and the gate asks the resolver —
// while QUIC naming an inspected site, or naming the bypass name at another
// site's address, is rejected (a browser then falls back to TCP). IPv4 and
// IPv6, with the lab's real quic-go client and server.
func TestQUICByName(t *testing.T) {
	e := newEnv(t, false)
	g := e.startGateway(gateway.Options{BypassDomains: []string{"bank.example"}, Extra: "firewall:\n  quic_by_name: true\n"})
	if !strings.Contains(g.Log(), "QUIC by name on") {
		t.Fatalf("gate not on:\n%s", g.Log())
	}
	bank, aka, www := site(t, "bank.example"), site(t, "gw1.akaetp.net"), site(t, "www.example.com")
	probe := func(addr netip.Addr, name string) (string, error) {
		return e.run(lab.RoleLAN, 10*time.Second, bins.lab, "quic-probe", "--addr", netip.AddrPortFrom(addr, 443).String(),
			"--name", name, "--ca", e.lab.CAFile(), "--timeout", "3s")
	}
	// One bypass name per family (an admin one and a system one): the
	// gate's resolver lookup for a name puts its addresses of both
	// families in the kernel bypass map, after which that name passes on
	// the kernel path without the gate.
	for _, fam := range []struct {
		name     string
		bypass   lab.Site
		dst, www netip.Addr
	}{{"ipv4", bank, bank.V4, www.V4}, {"ipv6", aka, aka.V6, www.V6}} {
		t.Run(fam.name, func(t *testing.T) {
			out, err := probe(fam.dst, fam.bypass.Name)
			if err != nil || !strings.Contains(out, "hello from "+fam.bypass.Name+" via quic") {
				t.Fatalf("QUIC to a bypass name at its address: %q, %v", out, err)
			}
			if out, err := probe(fam.www, www.Name); err == nil {
				t.Fatalf("QUIC to an inspected site worked: %q", out)
			}
			if out, err := probe(fam.www, fam.bypass.Name); err == nil {
				t.Fatalf("QUIC naming the bypass name at another site's address worked: %q", out)
			}
		})
	}
	// Each verdict counted once per flow, by reason.
	out, err := e.run(lab.RoleLAN, 10*time.Second, "curl", "-s", "--max-time", "3", "http://10.10.0.1:9080/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`cloudsteer_quic_flows_total{reason="bypass"} 2`,
		`cloudsteer_quic_flows_total{reason="not_bypass"} 2`,
		`cloudsteer_quic_flows_total{reason="other_address"} 2`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if t.Failed() {
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "cloudsteer_quic_flows_total") {
				t.Log(line)
			}
		}
	}
}

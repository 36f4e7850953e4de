package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/config"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
	"github.com/cloudsteer/cloudsteer/dataplane/nfqueue"
	"github.com/cloudsteer/cloudsteer/internal/privtest"
	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/gateway"
)

// TestQUICByName runs the gateway with firewall.quic_by_name, on by
// default (issue 13 §3): QUIC naming a bypass name, sent to an address cloudsteer's resolver
// gives for that name, passes — though the client asked the gateway no DNS,
// so the kernel bypass map has no entry and the gate asks the resolver —
// while QUIC naming an inspected site, or naming the bypass name at another
// site's address, is rejected (a browser then falls back to TCP). IPv4 and
// IPv6, with the lab's real quic-go client and server.
func TestQUICByName(t *testing.T) {
	e := newEnv(t, false)
	g := e.startGateway(gateway.Options{BypassDomains: []string{"bank.example"}})
	if !strings.Contains(g.Log(), "QUIC by name on") {
		t.Fatalf("gate not on:\n%s", g.Log())
	}
	bank, aka, www := site(t, "bank.example"), site(t, "gw1.akaetp.net"), site(t, "www.example.com")
	probe := e.quicProbe
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

// quicProbe runs the lab's quic-go client from the LAN host: an HTTP/3-ish
// request naming name (SNI) to addr:443; its output holds "hello from NAME
// via quic" when the origin answered over QUIC.
func (e *env) quicProbe(addr netip.Addr, name string) (string, error) {
	return e.run(lab.RoleLAN, 10*time.Second, bins.lab, "quic-probe", "--addr", netip.AddrPortFrom(addr, 443).String(),
		"--name", name, "--ca", e.lab.CAFile(), "--timeout", "3s")
}

// TestQUICByNameUnavailable: firewall.quic_by_name is on (the default) but
// the kernel cannot give cloudsteer the queue (another program holds NFQUEUE
// firewall.quic_queue in the gateway namespace). cloudsteer keeps the old
// behaviour — QUIC to a bypass name is rejected until a DNS answer puts its
// address in the bypass map, then passes in the kernel — logs one warning,
// and `cloudsteer status` lists quic_by_name_unavailable without calling
// the gateway unprotected. IPv4 and IPv6.
func TestQUICByNameUnavailable(t *testing.T) {
	e := newEnv(t, false)
	var held *nfqueue.Queue
	if err := privtest.Do(e.lab.NS(lab.RoleGW), func() error {
		var err error
		held, err = nfqueue.Open(config.DefaultQUICQueue, 16)
		return err
	}); err != nil {
		t.Fatalf("hold the QUIC queue in the gateway namespace: %v", err)
	}
	t.Cleanup(func() { held.Close() })
	g := e.startGateway(gateway.Options{BypassDomains: []string{"bank.example"}})
	if n := strings.Count(g.Log(), "QUIC by name unavailable"); n != 1 || strings.Contains(g.Log(), "QUIC by name on") {
		t.Fatalf("want one 'QUIC by name unavailable' warning and no gate, got %d:\n%s", n, g.Log())
	}

	sock := gateway.SocketPath(e.lab, "gw")
	out, _, code := e.cli(sock, "status")
	if !strings.Contains(out, model.ReasonQUICByNameUnavailable) || !strings.Contains(out, "bypass map") {
		t.Errorf("status (exit %d) does not list %s:\n%s", code, model.ReasonQUICByNameUnavailable, out)
	}
	if st := e.gwStatus(t, sock); st.State == model.NotProtected {
		t.Errorf("QUIC by name unavailable made the gateway unprotected: %+v", st.Reasons)
	}

	bank, aka, www := site(t, "bank.example"), site(t, "gw1.akaetp.net"), site(t, "www.example.com")
	for _, fam := range []struct {
		name, qtype, server string
		bypass              lab.Site
		dst, www            netip.Addr
	}{
		{"ipv4", "A", lab.GWLANV4.Addr().String(), bank, bank.V4, www.V4},
		{"ipv6", "AAAA", lab.GWLANV6.Addr().String(), aka, aka.V6, www.V6},
	} {
		t.Run(fam.name, func(t *testing.T) {
			if out, err := e.quicProbe(fam.dst, fam.bypass.Name); err == nil {
				t.Fatalf("QUIC to a bypass name whose address the kernel does not know yet worked without the gate: %q", out)
			}
			ans, err := e.dig(fam.server, fam.bypass.Name, fam.qtype)
			if err != nil || !strings.Contains(ans, fam.dst.String()) {
				t.Fatalf("dig %s %s @%s: %q, %v", fam.bypass.Name, fam.qtype, fam.server, ans, err)
			}
			var last string
			if !eventually(5*time.Second, func() bool {
				out, err := e.quicProbe(fam.dst, fam.bypass.Name)
				last = fmt.Sprint(out, err)
				return err == nil && strings.Contains(out, "hello from "+fam.bypass.Name+" via quic")
			}) {
				t.Fatalf("QUIC to a bypass name after its DNS answer (address in the bypass map): %s", last)
			}
			if out, err := e.quicProbe(fam.www, www.Name); err == nil {
				t.Fatalf("QUIC to an inspected site worked: %q", out)
			}
		})
	}
	if n := e.metric(t, `cloudsteer_quic_flows_total{reason="bypass"}`); n != 0 {
		t.Errorf("the gate decided %v flows though it is not running", n)
	}
}

package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/gateway"
	"github.com/cloudsteer/cloudsteer/lab/servers"
)

// plainDNSCounter counts, in the internet namespace, plain DNS (UDP and
// TCP port 53) arriving from the gateway's WAN link: what a capture on the
// lab's WAN side would see.
func plainDNSCounter(t *testing.T, e *env) (read func() int) {
	t.Helper()
	const table = "csplaindns"
	rules := fmt.Sprintf(`table inet %s {
	chain in {
		type filter hook prerouting priority -300; policy accept;
		iifname %q udp dport 53 counter
		iifname %q tcp dport 53 counter
	}
}
`, table, lab.InetIf, lab.InetIf)
	if out, err := e.run(lab.RoleInet, 10*time.Second, "sh", "-c", "printf '%s' \"$0\" | nft -f -", rules); err != nil {
		t.Fatalf("add counter: %v %s", err, out)
	}
	t.Cleanup(func() { e.run(lab.RoleInet, 10*time.Second, "nft", "delete", "table", "inet", table) })
	return func() int {
		out, err := e.run(lab.RoleInet, 10*time.Second, "nft", "-j", "list", "table", "inet", table)
		if err != nil {
			t.Fatalf("read counter: %v", err)
		}
		var doc struct {
			Nftables []struct {
				Rule *struct {
					Expr []map[string]json.RawMessage `json:"expr"`
				} `json:"rule"`
			} `json:"nftables"`
		}
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatalf("parse nft output: %v", err)
		}
		n := 0
		for _, o := range doc.Nftables {
			if o.Rule == nil {
				continue
			}
			for _, ex := range o.Rule.Expr {
				if c, ok := ex["counter"]; ok {
					var cnt struct{ Packets int }
					json.Unmarshal(c, &cnt)
					n += cnt.Packets
				}
			}
		}
		return n
	}
}

// TestEncryptedDNSUpstreams: with only an encrypted cloud resolver
// configured (by name, with a bootstrap address, verified by the lab CA),
// LAN clients' queries are answered through it, the cloud resolver logs
// them on that transport, and not one plain DNS packet leaves the
// gateway's WAN interface. The control: the same counter sees plain DNS
// when the gateway uses the plain resolver.
func TestEncryptedDNSUpstreams(t *testing.T) {
	e := newEnv(t, false)
	count := plainDNSCounter(t, e)
	boot := fmt.Sprintf("bootstrap: {%s: [%q, %q]}", servers.CloudDNSName, lab.CloudDNSV4, lab.CloudDNSV6)
	boot6 := fmt.Sprintf("bootstrap: {%s: [%q]}", servers.CloudDNSName, lab.CloudDNSV6)
	for _, tc := range []struct{ name, upstream, transport, boot string }{
		{"tls", "tls://" + servers.CloudDNSName, "tls", boot},
		{"https", "https://" + servers.CloudDNSName + "/dns-query", "https", boot},
		{"h3", "h3://" + servers.CloudDNSName + "/dns-query", "h3", boot},
		{"quic", "quic://" + servers.CloudDNSName, "quic", boot},
		{"tls over ipv6", "tls://" + servers.CloudDNSName, "tls", boot6},
		{"https over ipv6", "https://" + servers.CloudDNSName + "/dns-query", "https", boot6},
		{"h3 over ipv6", "h3://" + servers.CloudDNSName + "/dns-query", "h3", boot6},
		{"quic over ipv6", "quic://" + servers.CloudDNSName, "quic", boot6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := count()
			start := time.Now()
			e.gatewayFor(t, gateway.Options{DNSUpstreams: []string{tc.upstream}, DNS: []string{tc.boot, "ca_file: " + e.lab.CAFile()}})
			// LAN clients ask over IPv4 and IPv6, for A and AAAA.
			for i := range 6 {
				server, qtype := lab.NobodyDNSV4.String(), "A"
				if i%2 == 1 {
					server, qtype = lab.NobodyDNSV6.String(), "AAAA"
				}
				name := fmt.Sprintf("e%d-%d.%s.www.example.com", i, start.UnixNano(), tc.transport)
				if _, err := e.dig(server, name, qtype); err != nil { // NXDOMAIN is an answer
					t.Fatalf("%s %s @%s through %s: %v", name, qtype, server, tc.transport, err)
				}
			}
			if out, err := e.dig(lab.NobodyDNSV6.String(), "www.example.com", "AAAA"); err != nil || strings.TrimSpace(out) != "2001:db8:113::10" {
				t.Fatalf("www.example.com AAAA through %s: %q %v", tc.transport, out, err)
			}
			if out, err := e.dig(lab.NobodyDNSV4.String(), "scores.sports.example", "A"); err != nil || strings.TrimSpace(out) != "0.0.0.0" {
				t.Fatalf("sinkholed name through %s: %q %v", tc.transport, out, err)
			}
			var seen int
			for _, r := range e.dnsLog(start) {
				if r.Server != "cloud" {
					continue
				}
				if r.Transport != tc.transport {
					t.Errorf("cloud resolver saw %s %s over %s, want %s only", r.Name, r.Type, r.Transport, tc.transport)
				}
				if v6 := strings.HasPrefix(r.Remote, "["); tc.boot == boot6 && !v6 {
					t.Errorf("cloud resolver saw %s from %s with only an IPv6 bootstrap address", r.Name, r.Remote)
				}
				seen++
			}
			if seen < 8 {
				t.Errorf("cloud resolver logged %d queries over %s, want at least 8", seen, tc.transport)
			}
			if n := count() - before; n != 0 {
				t.Fatalf("%d plain DNS packets left the WAN interface with only %s configured", n, tc.upstream)
			}
		})
	}
	t.Run("control plain", func(t *testing.T) {
		before := count()
		e.gatewayFor(t, gateway.Options{})
		if _, err := e.dig(lab.NobodyDNSV4.String(), fmt.Sprintf("c%d.www.example.com", time.Now().UnixNano()), "A"); err != nil {
			t.Fatal(err)
		}
		if count() == before {
			t.Fatal("the counter saw no plain DNS from a gateway with plain upstreams: it counts nothing")
		}
	})
}

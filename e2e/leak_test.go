package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/gateway"
)

// leakWatch counts, on the internet namespace's link to the gateway,
// packets addressed to a site on the ports cloudsteer handles (TCP 80,
// 443, 53, 853; UDP 53, 443, 853), per family, and a control port (TCP
// 22, which cloudsteer leaves alone) to prove the counting sees traffic.
const leakWatch = `table inet leakwatch {
	chain pre {
		type filter hook prerouting priority -300; policy accept;
		iifname "%[1]s" ip daddr %[2]s tcp dport { 80, 443, 53, 853 } counter comment "leak4"
		iifname "%[1]s" ip daddr %[2]s udp dport { 53, 443, 853 } counter comment "leak4"
		iifname "%[1]s" ip daddr %[2]s tcp dport 22 counter comment "control4"
		iifname "%[1]s" ip6 daddr %[3]s tcp dport { 80, 443, 53, 853 } counter comment "leak6"
		iifname "%[1]s" ip6 daddr %[3]s udp dport { 53, 443, 853 } counter comment "leak6"
		iifname "%[1]s" ip6 daddr %[3]s tcp dport 22 counter comment "control6"
	}
}
`

var counterLine = regexp.MustCompile(`counter packets (\d+) bytes \d+ comment "(\w+)"`)

// TestNoLeaks: every LAN packet to TCP 80/443/53/853, UDP 443/53/853 is
// handled by the gateway — steered to the cloud proxy or the resolver, or
// refused — and none reaches the WAN side as the client sent it, over
// IPv6 and IPv4, on a plain router and behind the masquerading one.
func TestNoLeaks(t *testing.T) {
	for _, fw := range []lab.Firewall{lab.FirewallRouter, lab.FirewallNone} {
		t.Run(string(fw), func(t *testing.T) {
			e := newLabEnv(t, lab.Options{Firewall: fw})
			e.startGateway(gateway.Options{})
			www := site(t, "www.example.com")
			rules := filepath.Join(t.TempDir(), "leakwatch.nft")
			if err := os.WriteFile(rules, fmt.Appendf(nil, leakWatch, lab.InetIf, www.V4, www.V6), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := e.run(lab.RoleInet, 10*time.Second, "nft", "-f", rules); err != nil {
				t.Fatalf("load the watch: %v: %s", err, out)
			}
			for _, a := range []string{www.V6.String(), www.V4.String()} {
				// Steered: HTTPS and HTTP through the cloud proxy, DNS to the resolver.
				if _, err := e.curl("https://www.example.com/", www.Name, a); err != nil {
					t.Fatalf("https via %s: %v", a, err)
				}
				if _, err := e.curl("http://www.example.com/", www.Name, a); err != nil {
					t.Fatalf("http via %s: %v", a, err)
				}
				for _, proto := range []string{"+notcp", "+tcp"} {
					if ans, err := e.dig(a, "www.example.com", "A", proto); err != nil || ans == "" {
						t.Fatalf("dig @%s %s: %q, %v", a, proto, ans, err)
					}
				}
				// Refused: QUIC, DNS over TLS and over QUIC.
				e.run(lab.RoleLAN, 10*time.Second, bins.lab, "quic-probe", "--addr", joinPort(a, 443), "--name", www.Name, "--ca", e.lab.CAFile(), "--timeout", "2s")
				e.run(lab.RoleLAN, 10*time.Second, "curl", "-sS", "--max-time", "2", "telnet://"+joinPort(a, 853))
				e.run(lab.RoleLAN, 10*time.Second, "dig", "+time=1", "+tries=1", "-p", "853", "@"+a, "www.example.com")
				// Control: TCP 22 is not cloudsteer's; it must be seen.
				e.run(lab.RoleLAN, 10*time.Second, "curl", "-sS", "--max-time", "2", "telnet://"+joinPort(a, 22))
			}
			out, err := e.run(lab.RoleInet, 10*time.Second, "nft", "list", "table", "inet", "leakwatch")
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]int{}
			for _, m := range counterLine.FindAllStringSubmatch(out, -1) {
				n, _ := strconv.Atoi(m[1])
				got[m[2]] += n
			}
			t.Logf("WAN-side counts: %v", got)
			if got["control4"] == 0 || got["control6"] == 0 {
				t.Fatalf("the watch saw no control traffic (%v): it would not see a leak either\n%s", got, out)
			}
			if got["leak4"] != 0 || got["leak6"] != 0 {
				t.Errorf("LAN packets reached the WAN side unhandled: %v\n%s", got, out)
			}
		})
	}
}

// joinPort is host:port with brackets for IPv6.
func joinPort(addr string, port int) string {
	for _, c := range addr {
		if c == ':' {
			return fmt.Sprintf("[%s]:%d", addr, port)
		}
	}
	return fmt.Sprintf("%s:%d", addr, port)
}

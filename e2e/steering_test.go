// Package e2e runs cloudsteer in the namespace lab against real peers —
// curl, dig, Squid, a quic-go client — and checks what each hop saw.
package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/gateway"
	"github.com/cloudsteer/cloudsteer/lab/servers"
)

const clientV4, clientV6 = "10.10.0.10", "fd00:10::10"

func site(t *testing.T, name string) lab.Site {
	s, ok := lab.SiteByName(name)
	if !ok {
		t.Fatalf("no lab site %s", name)
	}
	return s
}

// TestSteering runs one gateway with the lab cloud proxy and walks the
// cases of the steering issue against it, once beside each of the lab
// gateway's firewalls: the masquerading office router (the default), none
// (plain routing) and an OpenWrt-fw4-like ruleset.
func TestSteering(t *testing.T) {
	for _, fw := range []lab.Firewall{lab.FirewallRouter, lab.FirewallNone, lab.FirewallFW4} {
		t.Run(string(fw), func(t *testing.T) { testSteering(t, fw) })
	}
}

func testSteering(t *testing.T, fw lab.Firewall) {
	e := newLabEnv(t, lab.Options{Firewall: fw})
	g := e.startGateway(gateway.Options{BypassDomains: []string{"bank.example"}})
	www := site(t, "www.example.com")

	t.Run("a/https via cloud proxy", func(t *testing.T) {
		for _, tc := range []struct {
			fam, addr, client string
		}{{"v4", www.V4.String(), clientV4}, {"v6", www.V6.String(), clientV6}} {
			t.Run(tc.fam, func(t *testing.T) {
				start := time.Now()
				path := "/?case=a-" + tc.fam
				body, err := e.curl("https://www.example.com"+path, "www.example.com", tc.addr)
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(body, "hello from www.example.com via https") {
					t.Fatalf("client got %q", body)
				}
				var saw *servers.ProxyRecord
				eventually(2*time.Second, func() bool {
					for _, r := range e.proxyLog(start) {
						if r.Method == "CONNECT" && r.Target == "www.example.com:443" && r.XFF == tc.client {
							saw = &r
							return true
						}
					}
					return false
				})
				if saw == nil {
					t.Fatalf("cloud proxy saw no CONNECT www.example.com:443 with XFF %s: %+v", tc.client, e.proxyLog(start))
				}
				if !saw.AuthOK || saw.User != lab.EntitlementCode || saw.Status != 200 {
					t.Fatalf("cloud proxy record: %+v", *saw)
				}
				var origin []servers.OriginRecord
				for _, r := range e.originLog(start) {
					if r.Path == path {
						origin = append(origin, r)
					}
				}
				if len(origin) != 1 || origin[0].SNI != "www.example.com" || origin[0].Proto != "https" {
					t.Fatalf("origin saw %+v", origin)
				}
				if h := hostOf(origin[0].Remote); h == tc.client {
					t.Fatalf("origin was reached directly from the client (%s), not via the cloud proxy", h)
				}
			})
		}
	})

	t.Run("b/http absolute-form via cloud proxy", func(t *testing.T) {
		news := site(t, "news.example.com")
		for _, fam := range families {
			t.Run(fam.name, func(t *testing.T) {
				start := time.Now()
				b1, b2 := "b1-"+fam.name, "b2-"+fam.name
				// Two requests on one keep-alive connection, naming different hosts.
				c, err := e.lab.DialContext(context.Background(), lab.RoleLAN, "tcp", net.JoinHostPort(fam.dst(news), "80"))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				fmt.Fprintf(c, "GET /?case=%s HTTP/1.1\r\nHost: news.example.com\r\n\r\nGET /?case=%s HTTP/1.1\r\nHost: www.example.com\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n", b1, b2)
				br := bufio.NewReader(c)
				var body string
				for range 2 {
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						t.Fatal(err)
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					body += string(b)
				}
				if !strings.Contains(body, "hello from news.example.com via http") || !strings.Contains(body, "hello from www.example.com via http") {
					t.Fatalf("client got %q", body)
				}
				var urls []string
				eventually(2*time.Second, func() bool {
					urls = nil
					for _, r := range e.proxyLog(start) {
						if r.Method == "GET" && r.XFF == fam.client() && r.AuthOK {
							urls = append(urls, r.URL)
						}
					}
					return len(urls) == 2
				})
				want := []string{"http://news.example.com/?case=" + b1, "http://www.example.com/?case=" + b2}
				if strings.Join(urls, " ") != strings.Join(want, " ") {
					t.Fatalf("cloud proxy saw absolute-form %v for the client %s, want %v", urls, fam.client(), want)
				}
			})
		}
	})

	t.Run("c/sports site blocked", func(t *testing.T) {
		sports := site(t, "scores.sports.example")
		for _, fam := range families {
			t.Run(fam.name, func(t *testing.T) {
				start := time.Now()
				_, err := e.curl("https://scores.sports.example/", "scores.sports.example", fam.dst(sports))
				if err == nil {
					t.Fatal("HTTPS to a blocked site succeeded")
				}
				body, err := e.curl("http://scores.sports.example/", "scores.sports.example", fam.dst(sports), "-w", "\nstatus=%{http_code}")
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(body, "status=403") || !strings.Contains(body, "Category: Sports") {
					t.Fatalf("HTTP block page did not reach the client as it is: %q", body)
				}
				var blocked int
				eventually(2*time.Second, func() bool {
					blocked = 0
					for _, r := range e.proxyLog(start) {
						if r.Status == 403 && strings.HasPrefix(r.Target, "scores.sports.example") && r.XFF == fam.client() {
							blocked++
						}
					}
					return blocked == 2
				})
				if blocked != 2 {
					t.Fatalf("cloud proxy blocked %d requests of the client %s, want 2 (CONNECT and GET)", blocked, fam.client())
				}
				for _, r := range e.originLog(start) {
					if r.Site == "scores.sports.example" {
						t.Fatalf("blocked origin was reached: %+v", r)
					}
				}
			})
		}
		if !eventually(2*time.Second, func() bool { return strings.Contains(g.Log(), "blocked by cloud proxy") }) {
			t.Fatal("gateway logged no block event")
		}
	})

	t.Run("d/bypass by SNI without DNS", func(t *testing.T) {
		// No DNS first: the proxy reads the SNI, asks cloudsteer's resolver
		// for the name, finds the client's destination among its addresses
		// and splices to it; that answer puts the address in the kernel map,
		// so the next flow is plain routing.
		// Behind NAT a routed IPv4 flow also comes from the gateway's WAN
		// address: tell the two apart over IPv6 there.
		bank := site(t, "bank.example")
		addr, gwAddr, client := bank.V4.String(), lab.GWWANV4.Addr().String(), clientV4
		if e.lab.NAT() {
			addr, gwAddr, client = bank.V6.String(), lab.GWWANV6.Addr().String(), clientV6
		}
		start := time.Now()
		if _, err := e.curl("https://bank.example/?case=sni1", "bank.example", addr); err != nil {
			t.Fatal(err)
		}
		if got := e.originRemote(start, "/?case=sni1"); got != gwAddr {
			t.Fatalf("first flow: origin saw %q, want the gateway (spliced by the proxy)", got)
		}
		if _, err := e.curl("https://bank.example/?case=sni2", "bank.example", addr); err != nil {
			t.Fatal(err)
		}
		if got := e.originRemote(start, "/?case=sni2"); got != client {
			t.Fatalf("second flow: origin saw %q, want the client (learned into the kernel bypass map)", got)
		}
		for _, r := range e.proxyLog(start) {
			if strings.HasPrefix(r.Target, "bank.example") {
				t.Fatalf("cloud proxy saw a bypass name: %+v", r)
			}
		}
	})

	t.Run("d/bypass passes untouched", func(t *testing.T) {
		for _, name := range []string{"gw1.akaetp.net", "bank.example"} {
			s := site(t, name)
			for _, tc := range []struct{ fam, addr, client, qtype string }{
				{"v4", s.V4.String(), clientV4, "A"}, {"v6", s.V6.String(), clientV6, "AAAA"},
			} {
				t.Run(name+"/"+tc.fam, func(t *testing.T) {
					start := time.Now()
					// The client resolves the name through cloudsteer, which
					// learns the address, so the flow stays in the kernel.
					ans, err := e.dig(lab.NobodyDNSV4.String(), name, tc.qtype)
					if err != nil || !strings.Contains(ans, tc.addr) {
						t.Fatalf("dig %s %s = %q, %v", name, tc.qtype, ans, err)
					}
					path := "/?case=d-" + tc.fam
					body, err := e.curl("https://"+name+path, name, tc.addr)
					if err != nil {
						t.Fatal(err)
					}
					if !strings.Contains(body, "hello from "+name) {
						t.Fatalf("client got %q", body)
					}
					found := eventually(2*time.Second, func() bool {
						for _, r := range e.originLog(start) {
							if r.Path == path && r.Site == name {
								if hostOf(r.Remote) != e.seenAs(tc.client) {
									t.Fatalf("origin saw %s, want the client %s as routed (%s)", r.Remote, tc.client, e.seenAs(tc.client))
								}
								return true
							}
						}
						return false
					})
					if !found {
						t.Fatal("origin saw nothing")
					}
					for _, r := range e.proxyLog(start) {
						if strings.HasPrefix(r.Target, name) {
							t.Fatalf("cloud proxy saw a bypass flow: %+v", r)
						}
					}
				})
			}
		}
	})

	t.Run("e/dns to any resolver address", func(t *testing.T) {
		for _, tc := range []struct {
			name, server, qtype, want string
			extra                     []string
		}{
			{"udp v4", lab.NobodyDNSV4.String(), "A", www.V4.String(), nil},
			{"tcp v4", lab.NobodyDNSV4.String(), "A", www.V4.String(), []string{"+tcp"}},
			{"udp v6", lab.NobodyDNSV6.String(), "AAAA", www.V6.String(), nil},
			{"tcp v6", lab.NobodyDNSV6.String(), "AAAA", www.V6.String(), []string{"+tcp"}},
			{"gateway address", "10.10.0.1", "A", www.V4.String(), nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ans, err := e.dig(tc.server, "www.example.com", tc.qtype, tc.extra...)
				if err != nil {
					t.Fatal(err)
				}
				if strings.TrimSpace(ans) != tc.want {
					t.Fatalf("dig @%s = %q, want %s", tc.server, ans, tc.want)
				}
			})
		}
		// The cloud DNS saw the gateway forwarding (once: the rest is cached).
		start := time.Now()
		if ans, err := e.dig(lab.NobodyDNSV4.String(), "news.example.com", "A"); err != nil || strings.TrimSpace(ans) != "203.0.113.11" {
			t.Fatalf("dig news = %q, %v", ans, err)
		}
		ok := eventually(2*time.Second, func() bool {
			for _, r := range e.dnsLog(start) {
				if r.Server == "cloud" && r.Name == "news.example.com." && hostOf(r.Remote) == "10.20.0.1" {
					return true
				}
			}
			return false
		})
		if !ok {
			t.Fatalf("cloud DNS did not see the gateway's query: %+v", e.dnsLog(start))
		}
		// A large answer: truncated over UDP, complete over TCP.
		ans, err := e.run(lab.RoleLAN, 10*time.Second, "dig", "+time=3", "+tries=1", "@"+lab.NobodyDNSV4.String(), "big.example.com", "A")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(ans, "status: NOERROR") || strings.Count(ans, "IN\tA\t") < 30 {
			t.Fatalf("large answer not complete after TCP retry:\n%s", ans)
		}
	})

	t.Run("e/dns repeats answered in the kernel", func(t *testing.T) {
		// dig's default EDNS cookie option sends a query to the resolver;
		// without it the query is one the eBPF answerer serves.
		kernelAnswers := func() float64 { return e.metric(t, "cloudsteer_dns_kernel_answers_total") }
		for _, tc := range []struct{ server, qtype, want string }{
			{lab.NobodyDNSV4.String(), "A", www.V4.String()},
			{lab.NobodyDNSV6.String(), "AAAA", www.V6.String()},
		} {
			if ans, err := e.dig(tc.server, "www.example.com", tc.qtype, "+nocookie"); err != nil || strings.TrimSpace(ans) != tc.want {
				t.Fatalf("first dig @%s = %q, %v", tc.server, ans, err)
			}
			before := kernelAnswers()
			start := time.Now()
			for i := range 3 {
				if ans, err := e.dig(tc.server, "WwW.ExAmPlE.CoM", tc.qtype, "+nocookie"); err != nil || strings.TrimSpace(ans) != tc.want {
					t.Fatalf("repeat %d @%s = %q, %v", i, tc.server, ans, err)
				}
			}
			if got := kernelAnswers() - before; got != 3 {
				t.Fatalf("kernel answered %v of 3 repeats @%s", got, tc.server)
			}
			for _, r := range e.dnsLog(start) {
				if r.Server == "cloud" && strings.EqualFold(r.Name, "www.example.com.") {
					t.Fatalf("cloud DNS saw a repeat answered from cache: %+v", r)
				}
			}
		}
	})

	t.Run("f/quic rejected except bypass", func(t *testing.T) {
		for _, tc := range []struct{ fam, addr string }{{"udp4", www.V4.String() + ":443"}, {"udp6", "[" + www.V6.String() + "]:443"}} {
			t.Run(tc.fam, func(t *testing.T) {
				err := privtest.Do(e.lab.NS(lab.RoleLAN), func() error {
					c, err := net.Dial(tc.fam, tc.addr)
					if err != nil {
						return err
					}
					defer c.Close()
					c.SetDeadline(time.Now().Add(3 * time.Second))
					if _, err := c.Write([]byte("quic initial")); err != nil {
						return err
					}
					_, err = c.Read(make([]byte, 64))
					if !errors.Is(err, syscall.ECONNREFUSED) {
						return fmt.Errorf("UDP 443 read: %v, want ECONNREFUSED (ICMP port unreachable)", err)
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			})
		}
		aka := site(t, "gw1.akaetp.net")
		for _, fam := range families {
			if out, err := e.quicProbe(fam.pick(aka.V4, aka.V6), aka.Name); err != nil || !strings.Contains(out, "hello from gw1.akaetp.net via quic") {
				t.Fatalf("%s: QUIC to a bypass destination: %q, %v", fam.name, out, err)
			}
			if out, err := e.quicProbe(fam.pick(www.V4, www.V6), www.Name); err == nil {
				t.Fatalf("%s: QUIC to a steered destination worked: %q", fam.name, out)
			}
		}
	})

	t.Run("f2/dns over tls rejected except bypass", func(t *testing.T) { checkDoT(t, e) })
	t.Run("f3/application dns kept in the gateway", func(t *testing.T) { checkApplicationDNS(t, e) })

	t.Run("g/listeners unreachable from the internet side", func(t *testing.T) {
		for _, target := range []string{"10.20.0.1", "10.10.0.1", "[fd00:20::1]"} {
			for _, port := range []int{15080, 15443, 15053} {
				err := privtest.Do(e.lab.NS(lab.RoleInet), func() error {
					c, err := net.DialTimeout("tcp", fmt.Sprintf("%s:%d", target, port), time.Second)
					if err == nil {
						c.Close()
						return fmt.Errorf("connected to %s:%d from the internet", target, port)
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			// DNS over UDP to the resolver port and to port 53: no answer.
			for _, port := range []string{"15053", "53"} {
				if ans, err := e.run(lab.RoleInet, 10*time.Second, "dig", "+time=1", "+tries=1", "-p", port, "@"+strings.Trim(target, "[]"), "www.example.com"); err == nil && strings.Contains(ans, "ANSWER SECTION") {
					t.Fatalf("resolver answered the internet on %s port %s:\n%s", target, port, ans)
				}
			}
		}
	})

	t.Run("j/bad clients do not stop the daemon", func(t *testing.T) {
		lanDial := func(addr string) net.Conn {
			t.Helper()
			c, err := e.lab.DialContext(context.Background(), lab.RoleLAN, "tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		// Garbage on 443: the proxy closes the connection.
		c := lanDial(www.V4.String() + ":443")
		junk := make([]byte, 4096)
		rand.Read(junk)
		junk[0] = 0x47 // not a TLS record type
		c.Write(junk)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("proxy answered garbage")
		}
		c.Close()
		// A half-sent ClientHello stays open while others are served.
		half := lanDial(www.V4.String() + ":443")
		defer half.Close()
		half.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc})
		// An oversized HTTP head is refused.
		big := lanDial(www.V4.String() + ":80")
		fmt.Fprintf(big, "GET / HTTP/1.1\r\nHost: www.example.com\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 200<<10))
		big.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp := make([]byte, 64)
		n, _ := big.Read(resp)
		big.Close()
		if n > 0 && !strings.Contains(string(resp[:n]), "431") && !strings.Contains(string(resp[:n]), "400") {
			t.Fatalf("oversized head answered %q", resp[:n])
		}
		body, err := e.curl("https://www.example.com/?case=j", "www.example.com", www.V4.String())
		if err != nil || !strings.Contains(body, "hello from www.example.com") {
			t.Fatalf("daemon stopped serving after bad clients: %q, %v", body, err)
		}
		if !g.Running() {
			t.Fatalf("daemon died:\n%s", g.Log())
		}
	})
}

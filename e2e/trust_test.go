package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/gateway"
)

// TestTrustBypassNeedsDNS checks, with Squid as the cloud proxy, that a
// name a client asserts (TLS SNI, HTTP Host) cannot choose an uninspected
// destination: a bypass flow goes direct only to an address cloudsteer's
// resolver gave for the name, and only those addresses enter the kernel
// bypass map. It runs with the gateway routing the LAN's addresses and
// with it masquerading them (NAT): there a routed flow and one the gateway
// spliced both reach the origin from the gateway's WAN address, so which
// of the two a flow was is told by the proxy's accepted-flows counter.
// (Under NAT another nftables ruleset exists, so cloudsteer's untracking
// fast path is off: bypassed flows are routed through conntrack.)
func TestTrustBypassNeedsDNS(t *testing.T) {
	eachNAT(t, testTrustBypassNeedsDNS)
}

func testTrustBypassNeedsDNS(t *testing.T, nat bool) {
	e := newLabEnv(t, lab.Options{Squid: true, Firewall: firewallFor(nat)})
	e.startGateway(gateway.Options{
		ProxyURL: fmt.Sprintf("http://%s:%d", lab.SquidV4, lab.SquidPort),
		Username: lab.EntitlementCode, Password: lab.SquidCodePassword,
		BypassDomains: []string{"bank.example"},
	})
	sock := gateway.SocketPath(e.lab, "")
	www, aka, bank := site(t, "www.example.com"), site(t, "gw1.akaetp.net"), site(t, "bank.example")

	// squidSawFrom reports whether Squid logged method url for client.
	squidSawFrom := func(t *testing.T, since time.Time, method, url, client string) bool {
		t.Helper()
		// Squid writes its access log line when a transaction ends.
		return eventually(5*time.Second, func() bool {
			recs, err := e.lab.SquidLog()
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				if !r.Time.Before(since.Truncate(time.Second)) && r.Method == method && r.URL == url && r.XFF == client {
					return true
				}
			}
			return false
		})
	}
	squidSaw := func(t *testing.T, since time.Time, method, url string) bool {
		t.Helper()
		return squidSawFrom(t, since, method, url, clientV4)
	}
	// originSaw waits for the origin's record of path and returns the site
	// whose address was hit and the remote it saw ("" when none came).
	originSaw := func(start time.Time, path string) (site, remote string) {
		eventually(2*time.Second, func() bool {
			for _, r := range e.originLog(start) {
				if r.Path == path {
					site, remote = r.Site, hostOf(r.Remote)
					return true
				}
			}
			return false
		})
		return site, remote
	}

	// Per family a bypass name of its own: the first flow's resolver
	// lookup enters the name's addresses of both families in the kernel
	// map, so the second family's first flow would not reach the proxy.
	akamai := site(t, "www.akamai.com")
	for _, fam := range []struct {
		ipFamily
		bypass lab.Site
	}{{families[0], bank}, {families[1], akamai}} {
		t.Run("agent with its own DNS goes direct/"+fam.name, func(t *testing.T) {
			// The client never asks the gateway for the bypass name: cloudsteer
			// asks its resolver now, finds the client's address among the
			// answers and splices to it; the answer is evidence, so the next
			// flow stays in the kernel (plain routing).
			name, dst, tag := fam.bypass.Name, fam.dst(fam.bypass), "trust-dot-"+fam.name
			start := time.Now()
			accepted := e.metric(t, "cloudsteer_proxy_flows_accepted_total")
			body, err := e.curl("https://"+name+"/?case="+tag+"-1", name, dst)
			if err != nil || !strings.Contains(body, "hello from "+name) {
				t.Fatalf("client got %q, %v", body, err)
			}
			if s, r := originSaw(start, "/?case="+tag+"-1"); s != name || r != fam.gwWAN() {
				t.Fatalf("origin saw site %q from %q, want %s spliced by the gateway (%s)", s, r, name, fam.gwWAN())
			}
			if n := e.metric(t, "cloudsteer_proxy_flows_accepted_total"); n != accepted+1 {
				t.Fatalf("the proxy accepted %v flows for the first one, want 1 (spliced by the gateway)", n-accepted)
			}
			if _, err := e.curl("https://"+name+"/?case="+tag+"-2", name, dst); err != nil {
				t.Fatal(err)
			}
			if s, r := originSaw(start, "/?case="+tag+"-2"); s != name || r != e.seenAs(fam.client()) {
				t.Fatalf("second flow: origin saw site %q from %q, want the client as routed (%s)", s, r, e.seenAs(fam.client()))
			}
			if n := e.metric(t, "cloudsteer_proxy_flows_accepted_total"); n != accepted+1 {
				t.Fatalf("the proxy accepted the second flow (%v in all), want it routed in the kernel", n-accepted)
			}
			// The routed flow skipped conntrack and the IP stack, unless the
			// office router's ruleset needs them (NAT): then both are off.
			want := 1.0
			if nat {
				want = 0
			}
			if u, f := e.metric(t, "cloudsteer_untracking_unsteered"), e.metric(t, "cloudsteer_fast_path"); u != want || f != want {
				t.Fatalf("untracking_unsteered %v, fast_path %v; want %v for NAT=%v", u, f, want, nat)
			}
			if squidSawFrom(t, start, "CONNECT", name+":443", fam.client()) {
				t.Fatal("Squid saw a bypass flow")
			}
		})
	}

	// forged makes one flow that names gw1.akaetp.net (a system bypass
	// name) but is sent to www.example.com's address, and checks that it
	// reached gw1.akaetp.net's real address, not the client's pick.
	forged := func(t *testing.T, scheme, tag, addr, gwAddr string) {
		t.Helper()
		start := time.Now()
		path := "/?case=" + tag
		body, err := e.curl(scheme+"://gw1.akaetp.net"+path, "gw1.akaetp.net", addr, "-k")
		if err != nil || !strings.Contains(body, "hello from gw1.akaetp.net") {
			t.Fatalf("client got %q, %v; want gw1.akaetp.net's own answer", body, err)
		}
		s, r := originSaw(start, path)
		if s != "gw1.akaetp.net" {
			t.Fatalf("the forged flow reached site %q (from %q), want gw1.akaetp.net's address", s, r)
		}
		if r != gwAddr {
			t.Fatalf("gw1.akaetp.net saw %q, want the gateway %s (spliced to the name's address of the same family)", r, gwAddr)
		}
	}
	// inspected checks that www.example.com at its own address still goes
	// through Squid: the forged flows did not put it into the bypass map.
	inspected := func(t *testing.T, tag string) {
		t.Helper()
		start := time.Now()
		body, err := e.curl("https://www.example.com/?case="+tag, "www.example.com", www.V4.String())
		if err != nil || !strings.Contains(body, "hello from www.example.com via https") {
			t.Fatalf("client got %q, %v", body, err)
		}
		if !squidSaw(t, start, "CONNECT", "www.example.com:443") {
			recs, _ := e.lab.SquidLog()
			t.Fatalf("www.example.com was not CONNECTed through Squid after a forged bypass name: %+v", recs)
		}
		if s, r := originSaw(start, "/?case="+tag); s != "www.example.com" || r == e.seenAs(clientV4) {
			t.Fatalf("origin saw site %q from %q, want www.example.com through Squid", s, r)
		}
		start = time.Now()
		body, err = e.curl("http://www.example.com/?case="+tag+"-http", "www.example.com", www.V4.String())
		if err != nil || !strings.Contains(body, "hello from www.example.com via http") {
			t.Fatalf("client got %q, %v", body, err)
		}
		if !squidSaw(t, start, "GET", "http://www.example.com/?case="+tag+"-http") {
			t.Fatal("plain HTTP to www.example.com was not sent through Squid after a forged bypass name")
		}
	}

	t.Run("forged SNI", func(t *testing.T) {
		forged(t, "https", "trust-sni", www.V4.String(), lab.GWWANV4.Addr().String())
		forged(t, "https", "trust-sni6", www.V6.String(), lab.GWWANV6.Addr().String())
		inspected(t, "trust-after-sni")
	})
	t.Run("forged Host", func(t *testing.T) {
		forged(t, "http", "trust-host", www.V4.String(), lab.GWWANV4.Addr().String())
		forged(t, "http", "trust-host6", www.V6.String(), lab.GWWANV6.Addr().String())
		inspected(t, "trust-after-host")
	})

	for _, fam := range families {
		t.Run("real address of a system name without gateway DNS/"+fam.name, func(t *testing.T) {
			start := time.Now()
			path := "/?case=trust-aka-" + fam.name
			body, err := e.curl("https://gw1.akaetp.net"+path, "gw1.akaetp.net", fam.dst(aka))
			if err != nil || !strings.Contains(body, "hello from gw1.akaetp.net") {
				t.Fatalf("client got %q, %v", body, err)
			}
			if s, _ := originSaw(start, path); s != "gw1.akaetp.net" {
				t.Fatalf("origin saw site %q, want gw1.akaetp.net", s)
			}
		})
	}

	for _, fam := range families {
		t.Run("bypass name without an address is refused/"+fam.name, func(t *testing.T) {
			start := time.Now()
			path := "/?case=trust-nx-" + fam.name
			if body, err := e.curl("https://nosuch.akamai.com"+path, "nosuch.akamai.com", fam.dst(www), "-k"); err == nil {
				t.Fatalf("a bypass name without DNS address was served: %q", body)
			}
			if s, r := originSaw(start, path); s != "" {
				t.Fatalf("origin %q saw the refused flow from %q", s, r)
			}
			target := net.JoinHostPort(fam.dst(www), "443")
			var list api.EventList
			ok := eventually(3*time.Second, func() bool {
				e.cliJSON(sock, &list, "events", "--name", "nosuch")
				for _, ev := range list.Events {
					if ev.Client == fam.client() && ev.Name == "nosuch.akamai.com" && ev.Reason == "bypass_refused" && ev.Target == target {
						return true
					}
				}
				return false
			})
			if !ok {
				t.Fatalf("no event naming client %s, name and address %s: %+v", fam.client(), target, list.Events)
			}
			inspected(t, "trust-after-nx-"+fam.name)
		})
	}

	t.Run("forged SNIs do not grow the kernel map", func(t *testing.T) {
		before := e.metric(t, "cloudsteer_bypass_map_entries")
		// one name, many addresses: each flow goes to the name's address
		for i := range 20 {
			addr := fmt.Sprintf("203.0.113.%d", 100+i)
			body, err := e.curl("https://gw1.akaetp.net/?case=trust-flood", "gw1.akaetp.net", addr, "-k")
			if err != nil || !strings.Contains(body, "hello from gw1.akaetp.net") {
				t.Fatalf("flow to %s: %q, %v", addr, body, err)
			}
		}
		// many names without addresses, each pinned to another address
		args := []string{"curl", "-sk", "--max-time", "3"}
		for i := range 20 {
			args = append(args, "--resolve", fmt.Sprintf("n%d.akaetp.net:443:203.0.113.%d", i, 150+i), fmt.Sprintf("https://n%d.akaetp.net/", i))
		}
		e.run(lab.RoleLAN, 90*time.Second, args...) // every one is refused
		if after := e.metric(t, "cloudsteer_bypass_map_entries"); after > before {
			t.Fatalf("kernel bypass map grew from %v to %v entries with forged names", before, after)
		}
		inspected(t, "trust-after-flood")
	})
}

package e2e

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/gateway"
)

// secondClientV4 is a second LAN host: another address on the LAN
// client's interface, a client of its own to the limits. sameClientV6 is
// another address in the LAN client's IPv6 /64: to the limits the same
// client (an IPv6 client is its /64), so the IPv6 second host is the lab's
// second LAN host (lab.Client2V6, its own /64).
const secondClientV4, sameClientV6 = "10.10.0.11", "fd00:10::11"

// TestKernelLimits runs the daemon (Squid as the cloud proxy) with small
// limits and checks that the kernel enforces them per client from the
// config: the first LAN host holding its count of HTTPS flows gets a
// reset for the next one, its DNS queries beyond the rate go unanswered,
// while a second LAN host's HTTPS and DNS work; and the refusals are in
// /metrics. It runs with the gateway routing the LAN's addresses and with
// it masquerading them (NAT: another nftables ruleset with a stateful
// forward filter in the namespace, which the limits must not depend on),
// and per IP family (a fresh gateway for each: the clients' addresses,
// the flows and the queries of that family; over IPv6 another address in
// the first host's /64 is refused with it).
func TestKernelLimits(t *testing.T) {
	eachNAT(t, testKernelLimits)
}

func testKernelLimits(t *testing.T, nat bool) {
	const flows, qps = 5, 5
	e := newLabEnv(t, lab.Options{Squid: true, Firewall: firewallFor(nat), LAN2: true})
	www := site(t, "www.example.com")
	if _, err := e.run(lab.RoleLAN, 5*time.Second, "ip", "addr", "add", secondClientV4+"/24", "dev", lab.ClientIf); err != nil {
		t.Fatal(err)
	}
	if _, err := e.run(lab.RoleLAN, 5*time.Second, "ip", "-6", "addr", "add", sameClientV6+"/64", "dev", lab.ClientIf, "nodad"); err != nil {
		t.Fatal(err)
	}
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			e.gatewayFor(t, gateway.Options{
				Name:     "limits-" + fam.name,
				ProxyURL: fmt.Sprintf("http://%s:%d", lab.SquidV4, lab.SquidPort),
				Username: lab.EntitlementCode, Password: lab.SquidCodePassword,
				Extra: fmt.Sprintf("limits:\n  flows_per_client: %d\n  dns_queries_per_second_per_client: %d\n", flows, qps),
			})
			limitsFor(t, e, fam, www, flows, qps)
		})
	}
}

// limitsFor checks the limits of a running gateway over family fam.
func limitsFor(t *testing.T, e *env, fam ipFamily, www lab.Site, flows, qps int) {
	first, second, secondRole := fam.client(), secondClientV4, lab.RoleLAN
	if fam.v6 {
		second, secondRole = lab.Client2V6.Addr().String(), lab.RoleLAN2
	}
	lanNS := e.lab.NS(lab.RoleLAN)
	to := netip.AddrPortFrom(fam.pick(www.V4, www.V6), 443)
	dnsServer, qtype, wwwAddr := fam.pick(lab.NobodyDNSV4, lab.NobodyDNSV6), dns.TypeA, fam.dst(www)
	if fam.v6 {
		qtype = dns.TypeAAAA
	}

	dial := func(src string) (net.Conn, error) {
		var c net.Conn
		err := privtest.Do(lanNS, func() (err error) {
			d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
			d.SetMultipathTCP(false)
			c, err = d.Dial("tcp", to.String())
			return err
		})
		return c, err
	}
	// The first host holds its count of flows (TCP only: the proxy waits
	// for a ClientHello that does not come).
	for i := range flows {
		c, err := dial(first)
		if err != nil {
			t.Fatalf("flow %d of %d: %v", i+1, flows, err)
		}
		defer c.Close()
	}
	if c, err := dial(first); err == nil {
		c.Close()
		t.Fatalf("flow %d from %s connected, want a reset", flows+1, first)
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("flow %d from %s: %v, want connection refused (a reset)", flows+1, first, err)
	}
	if fam.v6 {
		if c, err := dial(sameClientV6); err == nil {
			c.Close()
			t.Fatalf("a flow from %s, in the first host's /64, connected: want it counted with %s and reset", sameClientV6, first)
		} else if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("a flow from %s (same /64): %v, want connection refused (a reset)", sameClientV6, err)
		}
	}
	// The first host's curl fails at once; the second host's works.
	start := time.Now()
	if _, err := e.curl("https://www.example.com/?case=limit-first", "www.example.com", wwwAddr, "--interface", first); err == nil {
		t.Fatal("first host's HTTPS worked while at its flow limit")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("first host's refused curl took %v, want a fast failure", d)
	}
	start = time.Now()
	if _, err := e.curlFrom(secondRole, "https://www.example.com/?case=limit-second", "www.example.com", wwwAddr, "--interface", second); err != nil {
		t.Fatalf("second host's HTTPS while the first is at its limit: %v", err)
	}
	if remote := e.originRemote(start, "/?case=limit-second"); remote == "" {
		t.Error("the origin did not see the second host's request")
	}
	if n := e.metric(t, `cloudsteer_limit_refused_total{limit="flows_per_client"}`); n < 2 {
		t.Errorf("flows_per_client refusals %v, want at least 2", n)
	}

	// DNS: the first host sends queries for names not in any cache as
	// fast as it can from one socket; those over its rate are dropped.
	const tries = 60
	answered := 0
	err := privtest.Do(lanNS, func() error {
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(first)}, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dnsServer, 53)))
		if err != nil {
			return err
		}
		defer c.Close()
		for i := range tries {
			m := new(dns.Msg)
			m.SetQuestion(fmt.Sprintf("flood%d-%s.example.com.", i, fam.name), qtype)
			b, _ := m.Pack()
			if _, err := c.Write(b); err != nil {
				return err
			}
		}
		buf := make([]byte, 1500)
		for {
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Read(buf); err != nil {
				return nil
			}
			answered++
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if answered >= tries || answered > 2*qps+qps {
		t.Errorf("%d of %d queries answered, want about the burst (%d)", answered, tries, 2*qps)
	}
	ans, err := e.run(secondRole, 10*time.Second, "dig", "+short", "+time=3", "+tries=1", "@"+dnsServer.String(), "www.example.com", dns.TypeToString[qtype], "-b", second)
	if err != nil || strings.TrimSpace(ans) != wwwAddr {
		t.Fatalf("second host's DNS while the first is over its rate: %q, %v", ans, err)
	}
	if n := e.metric(t, `cloudsteer_limit_refused_total{limit="dns_queries_per_client"}`); n < float64(tries-3*qps) {
		t.Errorf("dns_queries_per_client refusals %v, want at least %d", n, tries-3*qps)
	}
}

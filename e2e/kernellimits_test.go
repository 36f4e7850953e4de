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
// client's interface, a client of its own to the limits.
const secondClientV4 = "10.10.0.11"

// TestKernelLimits runs the daemon (Squid as the cloud proxy) with small
// limits and checks that the kernel enforces them per client from the
// config: the first LAN host holding its count of HTTPS flows gets a
// reset for the next one, its DNS queries beyond the rate go unanswered,
// while a second LAN host's HTTPS and DNS work; and the refusals are in
// /metrics. It runs with the gateway routing the LAN's addresses and with
// it masquerading them (NAT: another nftables ruleset with a stateful
// forward filter in the namespace, which the limits must not depend on).
func TestKernelLimits(t *testing.T) {
	eachNAT(t, testKernelLimits)
}

func testKernelLimits(t *testing.T, nat bool) {
	const flows, qps = 5, 5
	e := newLabEnv(t, lab.Options{Squid: true, Firewall: firewallFor(nat)})
	www := site(t, "www.example.com")
	if _, err := e.run(lab.RoleLAN, 5*time.Second, "ip", "addr", "add", secondClientV4+"/24", "dev", lab.ClientIf); err != nil {
		t.Fatal(err)
	}
	e.startGateway(gateway.Options{
		ProxyURL: fmt.Sprintf("http://%s:%d", lab.SquidV4, lab.SquidPort),
		Username: lab.EntitlementCode, Password: lab.SquidCodePassword,
		Extra: fmt.Sprintf("limits:\n  flows_per_client: %d\n  dns_queries_per_second_per_client: %d\n", flows, qps),
	})
	lanNS := e.lab.NS(lab.RoleLAN)
	to := netip.AddrPortFrom(www.V4, 443)

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
		c, err := dial(clientV4)
		if err != nil {
			t.Fatalf("flow %d of %d: %v", i+1, flows, err)
		}
		defer c.Close()
	}
	if c, err := dial(clientV4); err == nil {
		c.Close()
		t.Fatalf("flow %d from %s connected, want a reset", flows+1, clientV4)
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("flow %d from %s: %v, want connection refused (a reset)", flows+1, clientV4, err)
	}
	// The first host's curl fails at once; the second host's works.
	start := time.Now()
	if _, err := e.curl("https://www.example.com/?case=limit-first", "www.example.com", www.V4.String()); err == nil {
		t.Fatal("first host's HTTPS worked while at its flow limit")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("first host's refused curl took %v, want a fast failure", d)
	}
	start = time.Now()
	if _, err := e.curl("https://www.example.com/?case=limit-second", "www.example.com", www.V4.String(), "--interface", secondClientV4); err != nil {
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
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(clientV4)}, net.UDPAddrFromAddrPort(netip.AddrPortFrom(lab.NobodyDNSV4, 53)))
		if err != nil {
			return err
		}
		defer c.Close()
		for i := range tries {
			m := new(dns.Msg)
			m.SetQuestion(fmt.Sprintf("flood%d.example.com.", i), dns.TypeA)
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
	ans, err := e.dig(lab.NobodyDNSV4.String(), "www.example.com", "A", "-b", secondClientV4)
	if err != nil || strings.TrimSpace(ans) != www.V4.String() {
		t.Fatalf("second host's DNS while the first is over its rate: %q, %v", ans, err)
	}
	if n := e.metric(t, `cloudsteer_limit_refused_total{limit="dns_queries_per_client"}`); n < float64(tries-3*qps) {
		t.Errorf("dns_queries_per_client refusals %v, want at least %d", n, tries-3*qps)
	}
}

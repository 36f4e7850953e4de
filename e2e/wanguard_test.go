package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/gateway"
)

// wanProbe is one gateway port a WAN host keeps trying.
type wanProbe struct {
	proto string // "tcp" or "udp" (a DNS query)
	to    netip.AddrPort

	attempts  atomic.Int64
	lastStart atomic.Int64 // when the latest attempt began (Unix ns)
	mu        sync.Mutex
	hits      []string // what succeeded, and when
}

func (p *wanProbe) hit(what string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hits = append(p.hits, time.Now().Format("15:04:05.000")+" "+what)
}

// dnsQuery is a query for www.example.com A, packed.
func dnsQuery(t testing.TB) []byte {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion("www.example.com.", dns.TypeA)
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tryOnce makes one attempt from the calling thread's namespace and
// reports whether the port answered: a TCP connection established, or
// any datagram back for the DNS query. wait bounds the attempt.
func tryOnce(ctx context.Context, proto string, to netip.AddrPort, query []byte, wait time.Duration) (ok bool, err error) {
	switch proto {
	case "tcp":
		d := net.Dialer{Timeout: wait}
		d.SetMultipathTCP(false)
		c, err := d.DialContext(ctx, "tcp", to.String())
		if err != nil {
			return false, err
		}
		c.Close()
		return true, nil
	default:
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
		if err != nil {
			return false, err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(wait))
		if _, err := c.Write(query); err != nil {
			return false, err
		}
		n, err := c.Read(make([]byte, 1500))
		return n > 0, err
	}
}

// run keeps trying until ctx is done, on a thread inside namespace ns.
func (p *wanProbe) run(ctx context.Context, ns string, query []byte) error {
	return privtest.Do(ns, func() error {
		for ctx.Err() == nil {
			p.lastStart.Store(time.Now().UnixNano())
			ok, err := tryOnce(ctx, p.proto, p.to, query, 400*time.Millisecond)
			p.attempts.Add(1)
			if ok {
				p.hit(fmt.Sprintf("%s %v answered", p.proto, p.to))
			}
			if err != nil && errors.Is(err, syscall.ECONNREFUSED) {
				// Nothing listens (or a reset): try again soon, without
				// spinning on the shared CPUs.
				time.Sleep(time.Millisecond)
			}
		}
		return nil
	})
}

// TestWANGuard checks that no gateway port (the proxy and resolver
// listeners, the admin API) ever answers a WAN host, on the gateway's WAN
// address or on its LAN address routed over the WAN link, while the
// gateway is started and stopped (SIGTERM) and killed (SIGKILL) again and
// again; and that the LAN client is served between restarts, with Squid as
// the cloud proxy.
//
// It runs in two labs. "routed": the gateway namespace holds nothing but
// cloudsteer, so only cloudsteer (its listeners bound to the LAN
// interface, its nftables guard) can stop the probes. "nat": the namespace
// is also a masquerading office router with a stateful forward filter
// (table inet labrouter, policy drop); that filter sees only forwarded
// packets, and every probe is addressed to the gateway itself (input, not
// forward), so there too only cloudsteer stops them, now beside another
// ruleset and with conntrack in use. In both, a control listener of the
// test's own on the gateway (all addresses, a port cloudsteer does not
// use) must answer the WAN host on each probed address before cloudsteer
// starts: that proves the probes' packets reach the gateway's sockets in
// that lab, so a probe that never answers was stopped by cloudsteer.
func TestWANGuard(t *testing.T) {
	eachNAT(t, testWANGuard)
}

func testWANGuard(t *testing.T, nat bool) {
	e := newLabEnv(t, lab.Options{Squid: true, Firewall: firewallFor(nat)})
	privtest.RequireCommand(t, "ss")
	www := site(t, "www.example.com")
	inet := e.lab.NS(lab.RoleInet)
	query := dnsQuery(t)
	targets := []netip.Addr{lab.GWWANV4.Addr(), lab.GWLANV4.Addr(), lab.GWWANV6.Addr(), lab.GWLANV6.Addr()}

	// Controls: the probes' own code reaches what does listen, from the
	// WAN namespace: Squid and the cloud resolver there, and a listener
	// on the gateway at each address the probes try.
	const controlPort = 15999
	privtest.ServeTCP(t, e.lab.NS(lab.RoleGW), fmt.Sprintf(":%d", controlPort), func(net.Conn) {})
	controls := []struct {
		proto string
		to    netip.AddrPort
	}{
		{"tcp", netip.AddrPortFrom(lab.SquidV4, lab.SquidPort)},
		{"udp", netip.AddrPortFrom(lab.CloudDNSV4, 53)},
	}
	for _, a := range targets {
		controls = append(controls, struct {
			proto string
			to    netip.AddrPort
		}{"tcp", netip.AddrPortFrom(a, controlPort)})
	}
	privtest.InNetNS(t, inet, func() {
		for _, c := range controls {
			if ok, err := tryOnce(context.Background(), c.proto, c.to, query, 3*time.Second); !ok {
				t.Fatalf("control %s %v from the WAN side: %v", c.proto, c.to, err)
			}
		}
	})

	var probes []*wanProbe
	for _, a := range targets {
		for _, port := range []uint16{15080, 15443, 15053, 9080, 443, 80} {
			probes = append(probes, &wanProbe{proto: "tcp", to: netip.AddrPortFrom(a, port)})
		}
		probes = append(probes, &wanProbe{proto: "udp", to: netip.AddrPortFrom(a, 15053)})
	}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, p := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.run(ctx, inet, query); err != nil {
				t.Error(err)
			}
		}()
	}
	stopProbes := sync.OnceFunc(func() { stop(); wg.Wait() })
	t.Cleanup(stopProbes)

	// Every probe is trying before the first start (and, checked below,
	// still after the last stop): a probe that gets no answer (a drop)
	// makes an attempt per 400 ms, one that is refused far more often.
	if !eventually(5*time.Second, func() bool {
		for _, p := range probes {
			if p.attempts.Load() == 0 {
				return false
			}
		}
		return true
	}) {
		t.Fatal("the WAN probes did not start")
	}

	const restarts = 10
	connects := e.squidConnects(t, "www.example.com")
	for i := range restarts {
		g := e.startGateway(gateway.Options{
			ProxyURL: fmt.Sprintf("http://%s:%d", lab.SquidV4, lab.SquidPort),
			Username: lab.EntitlementCode, Password: lab.SquidCodePassword,
		})
		listenersOnLANOnly(t, e)
		if i == 0 {
			// The kernel's refusal counters are exported (from zero).
			e.metric(t, `cloudsteer_limit_refused_total{limit="flows_per_client"}`)
		}
		// The LAN client is served: HTTPS through Squid, DNS.
		if _, err := e.curl(fmt.Sprintf("https://www.example.com/?case=wanguard-%d", i), "www.example.com", www.V4.String()); err != nil {
			t.Fatalf("run %d: LAN client's HTTPS: %v\n%s", i, err, g.Log())
		}
		if ans, err := e.dig(lab.NobodyDNSV4.String(), "www.example.com", "A"); err != nil || strings.TrimSpace(ans) != www.V4.String() {
			t.Fatalf("run %d: LAN client's DNS: %q, %v", i, ans, err)
		}
		if i%2 == 0 {
			if err := g.Stop(); err != nil {
				t.Fatalf("run %d: SIGTERM: %v\n%s", i, err, g.Log())
			}
		} else if err := g.Kill(); err != nil {
			t.Fatalf("run %d: SIGKILL: %v", i, err)
		}
	}
	// Squid carried the LAN client's HTTPS of every run (it logs a
	// tunnel when it ends).
	if !eventually(5*time.Second, func() bool { return e.squidConnects(t, "www.example.com") >= connects+restarts }) {
		t.Errorf("Squid logged %d CONNECTs to www.example.com for %d runs", e.squidConnects(t, "www.example.com")-connects, restarts)
	}
	// A last look after the final stop, then the verdict.
	stopped := time.Now()
	time.Sleep(500 * time.Millisecond)
	stopProbes()
	for _, p := range probes {
		if last := time.Unix(0, p.lastStart.Load()); !last.After(stopped) {
			t.Errorf("%s %v: last attempt began %v, before the final stop: the probe did not run throughout", p.proto, p.to, last.Format("15:04:05.000"))
		}
		for _, h := range p.hits {
			t.Errorf("reached from the WAN side: %s", h)
		}
	}
	var total int64
	for _, p := range probes {
		total += p.attempts.Load()
	}
	t.Logf("%d WAN probe targets, %d attempts over %d restarts", len(probes), total, restarts)
}

// listenersOnLANOnly checks, with ss in the gateway namespace, that every
// socket on a gateway port is bound to a LAN interface or lo: the kernel
// then never hands it a packet that came in from the WAN side, with or
// without the nftables table.
func listenersOnLANOnly(t *testing.T, e *env) {
	t.Helper()
	out, err := e.run(lab.RoleGW, 5*time.Second, "ss", "-Htuln")
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		local := f[4]
		i := strings.LastIndex(local, ":")
		switch local[i+1:] {
		case "15080", "15443", "15053", "9080", "443", "80":
		default:
			continue
		}
		seen++
		if !strings.Contains(local, "%"+lab.GWLANIf+":") && !strings.Contains(local, "%lo:") {
			t.Errorf("socket %s %s is not bound to %s or lo", f[0], local, lab.GWLANIf)
		}
	}
	// TLS, HTTP, DNS TCP and UDP on lan0, the admin API on lan0 and lo,
	// the console's HTTPS and HTTP on lan0; both families.
	if seen != 16 {
		t.Errorf("%d sockets on gateway ports, want 16:\n%s", seen, out)
	}
}

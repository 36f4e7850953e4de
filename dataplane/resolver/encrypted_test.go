package resolver

import (
	"context"
	"crypto/x509"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/cloudsteer/cloudsteer/dataplane/resolver/transport"
	"github.com/cloudsteer/cloudsteer/internal/privtest"
	"github.com/cloudsteer/cloudsteer/lab/servers"
)

// encName is the encrypted test servers' TLS name.
const encName = "dns.enc.test"

// encAddr is the A record encHandler gives name.
func encAddr(name string) netip.Addr {
	h := fnv.New32a()
	h.Write([]byte(strings.ToLower(name)))
	v := h.Sum32()
	return netip.AddrFrom4([4]byte{198, 18, byte(v >> 8), byte(v)})
}

// encHandler answers every A query with encAddr(name), anything else
// with an empty NOERROR, and counts the queries.
type encHandler struct{ n atomic.Int64 }

func (h *encHandler) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	h.n.Add(1)
	m := new(dns.Msg).SetReply(r)
	m.RecursionAvailable = true
	if len(r.Question) == 1 && r.Question[0].Qtype == dns.TypeA {
		q := r.Question[0]
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: encAddr(q.Name).AsSlice()}}
	}
	if len(r.Question) == 1 && r.Question[0].Qtype == dns.TypeNS && r.Question[0].Name == "." {
		rr, _ := dns.NewRR(". 518400 IN NS a.root-servers.net.")
		m.Answer = []dns.RR{rr}
	}
	w.WriteMsg(m)
}

type encServers struct {
	*servers.EncryptedDNS
	h    *encHandler
	pool *x509.CertPool
}

// startEncServers runs DoT, DoH and DoQ on addr (ephemeral ports), with a
// certificate for encName from a CA made for the test.
func startEncServers(tb testing.TB, addr netip.Addr) *encServers {
	tb.Helper()
	ca, err := servers.LoadOrCreateCA(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	leaf, err := ca.Issue([]string{encName}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	h := &encHandler{}
	e, err := servers.StartEncryptedDNS(context.Background(), servers.EncryptedDNSConfig{Addr: addr, Cert: leaf, Handler: h, Logger: testLogger(tb)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { e.Close() })
	return &encServers{EncryptedDNS: e, h: h, pool: ca.Pool()}
}

// spec is the upstream of kind k as the config would give it: the name
// with its bootstrap address.
func (s *encServers) spec(tb testing.TB, k transport.Kind) transport.Spec {
	tb.Helper()
	var raw string
	var ap netip.AddrPort
	switch k {
	case transport.TLS:
		ap = s.DoT
		raw = fmt.Sprintf("tls://%s:%d", encName, ap.Port())
	case transport.HTTPS:
		ap = s.DoH
		raw = fmt.Sprintf("https://%s:%d/dns-query", encName, ap.Port())
	case transport.HTTP3:
		ap = s.DoH3
		raw = fmt.Sprintf("h3://%s:%d/dns-query", encName, ap.Port())
	case transport.QUIC:
		ap = s.DoQ
		raw = fmt.Sprintf("quic://%s:%d", encName, ap.Port())
	}
	sp, err := transport.Parse(raw)
	if err != nil {
		tb.Fatal(err)
	}
	sp.Addrs = []netip.Addr{ap.Addr()}
	return sp
}

func (s *encServers) conns(k transport.Kind) int64 {
	dot, doh, doh3, doq := s.Conns()
	return map[transport.Kind]int64{transport.TLS: dot, transport.HTTPS: doh, transport.HTTP3: doh3, transport.QUIC: doq}[k]
}

var encKinds = []transport.Kind{transport.TLS, transport.HTTPS, transport.HTTP3, transport.QUIC}

// noPlain makes any plain exchange of r a test failure.
func noPlain(t *testing.T, r *Resolver) {
	r.exchange = func(_ context.Context, addr netip.AddrPort, _ []byte, tcp bool) ([]byte, error) {
		t.Errorf("plain dns exchange to %s (tcp %v) with only encrypted upstreams", addr, tcp)
		return nil, errNoUpstream
	}
}

func checkEncAnswer(t *testing.T, m *dns.Msg, name string) {
	t.Helper()
	if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
		t.Fatalf("%s: rcode %s, %d answers", name, rcodeName(m.Rcode), len(m.Answer))
	}
	if a, ok := m.Answer[0].(*dns.A); !ok || a.A.String() != encAddr(dns.Fqdn(name)).String() {
		t.Fatalf("%s: answer %v, want %s", name, m.Answer[0], encAddr(dns.Fqdn(name)))
	}
}

// Cache misses through each encrypted transport are answered right, and
// all of them cost one connection (one handshake) to the upstream.
func TestEncryptedUpstreamOneHandshake(t *testing.T) {
	s := startEncServers(t, netip.MustParseAddr("127.0.0.1"))
	for _, k := range encKinds {
		t.Run(k.String(), func(t *testing.T) {
			r := startResolver(t, Config{Servers: []transport.Spec{s.spec(t, k)}, RootCAs: s.pool})
			t.Cleanup(func() { r.Close() })
			noPlain(t, r.Resolver)
			for i := range 30 {
				name := fmt.Sprintf("m%d.%s.example.", i, k)
				network := "udp"
				if i%3 == 0 {
					network = "tcp"
				}
				checkEncAnswer(t, ask(t, r.addr, network, query(name, dns.TypeA)), name)
			}
			if n := s.conns(k); n != 1 {
				t.Fatalf("%d connections accepted for 30 cache misses, want 1", n)
			}
			if st := r.Stats(); st.CacheMisses != 30 || st.UpstreamErrors != 0 {
				t.Fatalf("stats: %+v", st)
			}
			if st := r.UpstreamStates(); len(st) != 1 || st[0].Name != s.spec(t, k).String() || !st[0].Active || st[0].Addr.IsValid() {
				t.Fatalf("states: %+v", st)
			}
		})
	}
}

// blackhole is a TCP listener that accepts connections and never sends a
// byte (a dead DoT or DoH server behind a firewall that does not reset);
// it counts the connections.
func blackhole(tb testing.TB) (netip.AddrPort, *atomic.Int64) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var n atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			tb.Cleanup(func() { c.Close() })
		}
	}()
	tb.Cleanup(func() { ln.Close() })
	return ln.Addr().(*net.TCPAddr).AddrPort(), &n
}

// A dead first upstream costs one timeout; the next one answers, and
// while the first is down it gets no more queries.
func TestEncryptedDeadUpstreamSkipped(t *testing.T) {
	s := startEncServers(t, netip.MustParseAddr("127.0.0.1"))
	for _, k := range encKinds {
		t.Run(k.String(), func(t *testing.T) {
			hole, accepted := blackhole(t)
			dead := transport.Spec{Kind: transport.TLS, Host: encName, Port: hole.Port(), Addrs: []netip.Addr{hole.Addr()}}
			r := startResolver(t, Config{Servers: []transport.Spec{dead, s.spec(t, k)}, RootCAs: s.pool, Timeout: 300 * time.Millisecond})
			t.Cleanup(func() { r.Close() })
			noPlain(t, r.Resolver)
			start := time.Now()
			checkEncAnswer(t, ask(t, r.addr, "udp", query("first.dead.example.", dns.TypeA)), "first.dead.example.")
			if el := time.Since(start); el < 300*time.Millisecond {
				t.Fatalf("first answer after %v: the dead upstream was not tried first", el)
			}
			for i := range 10 {
				name := fmt.Sprintf("n%d.dead.example.", i)
				start := time.Now()
				checkEncAnswer(t, ask(t, r.addr, "udp", query(name, dns.TypeA)), name)
				if el := time.Since(start); el > 250*time.Millisecond {
					t.Fatalf("%s took %v: the dead upstream was tried again", name, el)
				}
			}
			if n := accepted.Load(); n != 1 {
				t.Fatalf("the dead upstream got %d connections, want 1", n)
			}
			st := r.UpstreamStates()
			if st[0].Up || !st[1].Active {
				t.Fatalf("states: %+v", st)
			}
		})
	}
}

// plainTrap listens for plain DNS on UDP and TCP port 53 of addr and
// counts what arrives.
func plainTrap(tb testing.TB, addr netip.Addr) *atomic.Int64 {
	tb.Helper()
	ap := netip.AddrPortFrom(addr, 53)
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		tb.Fatalf("listen plain udp 53: %v", err)
	}
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap))
	if err != nil {
		tb.Fatalf("listen plain tcp 53: %v", err)
	}
	tb.Cleanup(func() { pc.Close(); ln.Close() })
	var n atomic.Int64
	go func() {
		buf := make([]byte, 65535)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			n.Add(1)
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	return &n
}

// With only encrypted upstreams no plain DNS packet is sent: not for
// queries, not for probes of a down upstream, not when an upstream is
// dead, and not to find the servers' names (their bootstrap address is
// where a plain listener waits).
func TestNoPlainDNSWithEncryptedUpstreams(t *testing.T) {
	privtest.RequireRoot(t) // port 53
	addr := netip.MustParseAddr("127.0.83.1")
	trap := plainTrap(t, addr)
	s := startEncServers(t, addr)
	deadDoQ := transport.Spec{Kind: transport.QUIC, Host: encName, Port: 853, Addrs: []netip.Addr{addr}}
	specs := []transport.Spec{deadDoQ}
	for _, k := range encKinds {
		specs = append(specs, s.spec(t, k))
	}
	r := startResolver(t, Config{Servers: specs, RootCAs: s.pool, Timeout: 300 * time.Millisecond, RecoverAfter: time.Hour})
	t.Cleanup(func() { r.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.RunHealth(ctx, 50*time.Millisecond)
	for i := range 20 {
		name := fmt.Sprintf("p%d.plain.example.", i)
		network := []string{"udp", "tcp"}[i%2]
		checkEncAnswer(t, ask(t, r.addr, network, query(name, dns.TypeA)), name)
		if m := ask(t, r.addr, network, query(name, dns.TypeAAAA).SetEdns0(4096, true)); m.Rcode != dns.RcodeSuccess {
			t.Fatalf("%s AAAA: %s", name, rcodeName(m.Rcode))
		}
	}
	if _, err := r.LookupAddrs(ctx, "lookup.plain.example"); err != nil {
		t.Fatalf("lookup: %v", err)
	}
	if err := r.Healthy(ctx); err != nil {
		t.Fatalf("healthy: %v", err)
	}
	time.Sleep(300 * time.Millisecond) // probes of the dead DoQ upstream
	if n := trap.Load(); n != 0 {
		t.Fatalf("%d plain DNS packets or connections reached %s:53", n, addr)
	}
	if s.h.n.Load() == 0 {
		t.Fatal("the encrypted servers saw no query")
	}
}

// sizeHandler records the wire size of each query.
type sizeHandler struct {
	encHandler
	sizes chan int
}

func (h *sizeHandler) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	b, _ := r.Pack()
	opt := r.IsEdns0()
	padded := false
	if opt != nil {
		for _, o := range opt.Option {
			if o.Option() == dns.EDNS0PADDING {
				padded = true
			}
		}
	}
	if !padded {
		h.sizes <- -len(b)
	} else {
		h.sizes <- len(b)
	}
	h.encHandler.ServeDNS(w, r)
}

// Queries to an encrypted upstream are padded to 128-byte blocks (RFC
// 8467), whatever the name's length; the answer is still the right one.
func TestEncryptedQueriesPadded(t *testing.T) {
	ca, err := servers.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue([]string{encName}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &sizeHandler{sizes: make(chan int, 100)}
	e, err := servers.StartEncryptedDNS(context.Background(), servers.EncryptedDNSConfig{Addr: netip.MustParseAddr("127.0.0.1"), Cert: leaf, Handler: h, DoHPort: -1, DoH3Port: -1, DoQPort: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	sp := transport.Spec{Kind: transport.TLS, Host: encName, Port: e.DoT.Port(), Addrs: []netip.Addr{e.DoT.Addr()}}
	r := startResolver(t, Config{Servers: []transport.Spec{sp}, RootCAs: ca.Pool()})
	t.Cleanup(func() { r.Close() })
	for _, name := range []string{"a.example.", "a-much-longer-name.with.several.labels.example.", strings.Repeat("x", 60) + ".example."} {
		checkEncAnswer(t, ask(t, r.addr, "udp", query(name, dns.TypeA)), name)
		if n := <-h.sizes; n <= 0 || n%128 != 0 {
			t.Fatalf("query for %s: %d bytes on the wire (negative: no padding option), want a multiple of 128", name, n)
		}
	}
}

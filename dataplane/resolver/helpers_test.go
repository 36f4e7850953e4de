package resolver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// bigCount is how many A records big.example.com has: more than fit in 512
// bytes, fewer than fit in 1232.
const bigCount = 50

func mustRR(tb testing.TB, s string) dns.RR {
	tb.Helper()
	rr, err := dns.NewRR(s)
	if err != nil {
		tb.Fatalf("parse rr %q: %v", s, err)
	}
	return rr
}

// zoneAnswer is the fake cloud resolver's data: it answers q as a
// recursive resolver would for a few lab names.
func zoneAnswer(q *dns.Msg) *dns.Msg {
	m := new(dns.Msg).SetReply(q)
	m.RecursionAvailable = true
	if len(q.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		return m
	}
	qq := q.Question[0]
	name := strings.ToLower(qq.Name)
	rr := func(s string) dns.RR {
		r, err := dns.NewRR(s)
		if err != nil {
			panic(err)
		}
		return r
	}
	soa := rr("example.com. 3600 IN SOA ns.example.com. host.example.com. 1 7200 900 1209600 60")
	addr := func(owner string, ttl int, v4, v6 string) {
		// built as structs: owner may be any name the fuzzer makes
		switch qq.Qtype {
		case dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: uint32(ttl)},
				A:   net.ParseIP(v4)})
		case dns.TypeAAAA:
			m.Answer = append(m.Answer, &dns.AAAA{
				Hdr:  dns.RR_Header{Name: owner, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: uint32(ttl)},
				AAAA: net.ParseIP(v6)})
		default:
			m.Ns = append(m.Ns, soa)
		}
	}
	switch {
	case name == ".":
		if qq.Qtype == dns.TypeNS {
			m.Answer = append(m.Answer, rr(". 518400 IN NS a.root-servers.net."))
		}
	case name == "www.example.com.":
		addr(qq.Name, 300, "203.0.113.10", "2001:db8:113::10")
	case name == "short.example.com.":
		addr(qq.Name, 5, "203.0.113.11", "2001:db8:113::11")
	case name == "alias.example.com.":
		m.Answer = append(m.Answer,
			rr("alias.example.com. 600 IN CNAME mid.example.net."),
			rr("mid.example.net. 120 IN CNAME www.example.com."))
		addr("www.example.com.", 300, "203.0.113.10", "2001:db8:113::10")
	case name == "nx.example.com.":
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, soa)
	case name == "big.example.com.":
		for i := range bigCount {
			m.Answer = append(m.Answer, rr(fmt.Sprintf("big.example.com. 300 IN A 198.18.0.%d", i+1)))
		}
	case name == "tc.example.com.":
		addr(qq.Name, 300, "203.0.113.12", "2001:db8:113::12")
	case strings.HasPrefix(name, "slow"):
		addr(qq.Name, 300, "203.0.113.13", "2001:db8:113::13")
	case name == "blocked.example.com.": // a cloud resolver's sinkhole
		addr(qq.Name, 300, "0.0.0.0", "::")
	case name == "fail.example.com.":
		m.Rcode = dns.RcodeServerFailure
	default:
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, soa)
	}
	if opt := q.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), opt.Do())
	}
	return m
}

// fakeUpstream is a miekg/dns server on loopback (UDP and TCP on one
// port) that answers from zoneAnswer and counts what it was asked.
type fakeUpstream struct {
	addr netip.AddrPort

	udpQueries, tcpQueries atomic.Int64
	inflight, maxInflight  atomic.Int64
	mu                     sync.Mutex
	names                  map[string]int // lowercase name → queries seen
	// gate, when not nil, holds every "slow*" query until it is closed.
	gate chan struct{}
}

// hold makes the upstream hold every "slow*" query until the returned
// function (also called at cleanup) releases them.
func (f *fakeUpstream) hold(tb testing.TB) (release func()) {
	g := make(chan struct{})
	f.mu.Lock()
	f.gate = g
	f.mu.Unlock()
	release = sync.OnceFunc(func() { close(g) })
	tb.Cleanup(release)
	return release
}

func (f *fakeUpstream) count(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.names[strings.ToLower(dns.Fqdn(name))]
}

func (f *fakeUpstream) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	_, tcp := w.RemoteAddr().(*net.TCPAddr)
	if tcp {
		f.tcpQueries.Add(1)
	} else {
		f.udpQueries.Add(1)
	}
	n := f.inflight.Add(1)
	defer f.inflight.Add(-1)
	for {
		m := f.maxInflight.Load()
		if n <= m || f.maxInflight.CompareAndSwap(m, n) {
			break
		}
	}
	if len(q.Question) == 1 {
		f.mu.Lock()
		f.names[strings.ToLower(q.Question[0].Name)]++
		gate := f.gate
		f.mu.Unlock()
		if gate != nil && strings.HasPrefix(strings.ToLower(q.Question[0].Name), "slow") {
			<-gate
		}
	}
	m := zoneAnswer(q)
	if !tcp {
		if len(q.Question) == 1 && strings.EqualFold(q.Question[0].Name, "tc.example.com.") {
			m.Answer = nil
			m.Truncated = true
		}
		size := dns.MinMsgSize
		if opt := q.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// listenLoopback opens a UDP socket and a TCP listener on the same free
// loopback port.
func listenLoopback(tb testing.TB, host string) (net.PacketConn, net.Listener) {
	tb.Helper()
	lc := net.ListenConfig{}
	lc.SetMultipathTCP(false)
	for range 20 {
		pc, err := lc.ListenPacket(context.Background(), "udp", net.JoinHostPort(host, "0"))
		if err != nil {
			tb.Fatalf("listen udp: %v", err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := lc.Listen(context.Background(), "tcp", net.JoinHostPort(host, fmt.Sprint(port)))
		if err != nil {
			pc.Close()
			continue
		}
		tb.Cleanup(func() { pc.Close(); ln.Close() })
		return pc, ln
	}
	tb.Fatal("no free loopback port for udp and tcp")
	return nil, nil
}

func newFakeUpstream(tb testing.TB) *fakeUpstream {
	tb.Helper()
	return newFakeUpstreamOn(tb, "127.0.0.1")
}

// newFakeUpstreamOn starts a fake upstream on host ("127.0.0.1" or "::1").
func newFakeUpstreamOn(tb testing.TB, host string) *fakeUpstream {
	tb.Helper()
	f := &fakeUpstream{names: map[string]int{}}
	pc, ln := listenLoopback(tb, host)
	f.addr = pc.LocalAddr().(*net.UDPAddr).AddrPort()
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: f}, {Listener: ln, Handler: f}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.ActivateAndServe()
		}()
		<-started
		tb.Cleanup(func() {
			srv.Shutdown()
			<-done
		})
	}
	return f
}

// deadUDPAddr is a loopback address where nothing listens.
func deadUDPAddr(tb testing.TB) netip.AddrPort {
	tb.Helper()
	return deadUDPAddrOn(tb, "127.0.0.1")
}

// deadUDPAddrOn is a loopback address on host where nothing listens.
func deadUDPAddrOn(tb testing.TB, host string) netip.AddrPort {
	tb.Helper()
	pc, ln := listenLoopback(tb, host)
	a := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	pc.Close()
	ln.Close()
	return a
}

// fakeClock is a settable clock for the cache.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// snoopLog records Snoop calls.
type snoopLog struct {
	mu    sync.Mutex
	calls []snoopCall
}

type snoopCall struct {
	name  string
	addrs []netip.Addr
	ttl   time.Duration
}

func (s *snoopLog) snoop(name string, addrs []netip.Addr, ttl time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, snoopCall{name, append([]netip.Addr(nil), addrs...), ttl})
}

func (s *snoopLog) take() []snoopCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls
	s.calls = nil
	return c
}

func testLogger(tb testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// runningResolver is a Resolver serving on loopback.
type runningResolver struct {
	*Resolver
	addr netip.AddrPort // same port for udp and tcp
}

// startResolver serves a Resolver built from cfg on a loopback port until
// the test ends, and checks that Serve returns cleanly.
func startResolver(tb testing.TB, cfg Config) *runningResolver {
	tb.Helper()
	return startResolverOn(tb, "127.0.0.1", cfg)
}

// startResolverOn is startResolver on host ("127.0.0.1" or "::1").
func startResolverOn(tb testing.TB, host string, cfg Config) *runningResolver {
	tb.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(tb)
	}
	r, err := New(cfg)
	if err != nil {
		tb.Fatalf("new resolver: %v", err)
	}
	pc, ln := listenLoopback(tb, host)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, pc, ln) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("serve: %v", err)
		}
	})
	return &runningResolver{Resolver: r, addr: pc.LocalAddr().(*net.UDPAddr).AddrPort()}
}

// ask sends one query to the resolver over network ("udp" or "tcp").
func ask(tb testing.TB, addr netip.AddrPort, network string, q *dns.Msg) *dns.Msg {
	tb.Helper()
	c := dns.Client{Net: network, Timeout: 5 * time.Second, UDPSize: 65535}
	m, _, err := c.Exchange(q, addr.String())
	if err != nil {
		tb.Fatalf("exchange %s over %s: %v", q.Question[0].Name, network, err)
	}
	if m.Id != q.Id {
		tb.Fatalf("answer id %d, query id %d", m.Id, q.Id)
	}
	return m
}

func query(name string, qtype uint16) *dns.Msg {
	return new(dns.Msg).SetQuestion(name, qtype)
}

// waitFor polls cond until it holds or the test's patience (10s) ends.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var errNoUpstream = errors.New("no upstream in this test")

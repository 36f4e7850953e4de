package resolver

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// diffResolver is a Resolver with an in-memory upstream, a fake clock and
// recorded Snoop and OnQuery calls, for comparing the fast path with the
// general one.
type diffResolver struct {
	*Resolver
	clock  *fakeClock
	snoops *snoopLog
	mu     sync.Mutex
	infos  []QueryInfo
}

func newDiffResolver(tb testing.TB) *diffResolver {
	tb.Helper()
	d := &diffResolver{clock: newFakeClock(), snoops: &snoopLog{}}
	r, err := New(Config{
		Upstreams: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53")},
		Now:       d.clock.Now,
		Logger:    testLogger(tb),
		CacheSize: 64,
		Snoop:     d.snoops.snoop,
		OnQuery: func(qi QueryInfo) {
			d.mu.Lock()
			d.infos = append(d.infos, qi)
			d.mu.Unlock()
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	r.exchange = memExchange
	d.Resolver = r
	return d
}

func (d *diffResolver) takeInfos() []QueryInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	i := d.infos
	d.infos = nil
	return i
}

// compare answers raw through the fast path and the general path and
// fails t when they differ in anything but name compression; it reports
// whether the fast path answered.
func (d *diffResolver) compare(t *testing.T, raw []byte, transport string) bool {
	t.Helper()
	client := netip.MustParseAddrPort("192.0.2.1:5353")
	d.snoops.take()
	d.takeInfos()
	fast, ok := d.fastAnswer(raw, client, transport, nil)
	if !ok {
		return false
	}
	fastSnoops, fastInfos := d.snoops.take(), d.takeInfos()
	slow := d.handleGeneral(context.Background(), raw, client, transport)
	slowSnoops, slowInfos := d.snoops.take(), d.takeInfos()
	fm := checkAnswer(t, raw, fast, transport)
	sm := checkAnswer(t, raw, slow, transport)
	if fm == nil || sm == nil {
		t.Fatalf("%s: fast answer %x, general answer %x", transport, fast, slow)
	}
	if fm.MsgHdr != sm.MsgHdr {
		t.Errorf("%s: fast header %+v, general %+v", transport, fm.MsgHdr, sm.MsgHdr)
	}
	if !slices.Equal(fm.Question, sm.Question) {
		t.Errorf("%s: fast question %v, general %v", transport, fm.Question, sm.Question)
	}
	for i, sec := range [][2][]dns.RR{{fm.Answer, sm.Answer}, {fm.Ns, sm.Ns}, {fm.Extra, sm.Extra}} {
		if len(sec[0]) != len(sec[1]) {
			t.Fatalf("%s: section %d: fast %v, general %v", transport, i, sec[0], sec[1])
		}
		for j := range sec[0] {
			// owner names compressed to the question take the client's case
			if f, s := sec[0][j].String(), sec[1][j].String(); !strings.EqualFold(f, s) {
				t.Errorf("%s: section %d record %d: fast %q, general %q", transport, i, j, f, s)
			}
		}
	}
	if len(fastSnoops) != len(slowSnoops) {
		t.Fatalf("%s: fast snoops %v, general %v", transport, fastSnoops, slowSnoops)
	}
	for i := range fastSnoops {
		f, s := fastSnoops[i], slowSnoops[i]
		if f.name != s.name || f.ttl != s.ttl || !slices.Equal(f.addrs, s.addrs) {
			t.Errorf("%s: snoop %d: fast %v, general %v", transport, i, f, s)
		}
	}
	if len(fastInfos) != 1 || len(slowInfos) != 1 {
		t.Fatalf("%s: OnQuery calls: fast %v, general %v", transport, fastInfos, slowInfos)
	}
	fastInfos[0].Duration, slowInfos[0].Duration = 0, 0
	if fastInfos[0] != slowInfos[0] {
		t.Errorf("%s: OnQuery: fast %+v, general %+v", transport, fastInfos[0], slowInfos[0])
	}
	return true
}

func TestFastPath(t *testing.T) {
	cookie := func(m *dns.Msg) *dns.Msg {
		o := m.IsEdns0()
		o.Option = append(o.Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"})
		return m
	}
	edns := func(m *dns.Msg, size uint16, do bool) *dns.Msg { m.SetEdns0(size, do); return m }
	cd := func(m *dns.Msg) *dns.Msg { m.CheckingDisabled = true; return m }
	noRD := func(m *dns.Msg) *dns.Msg { m.RecursionDesired = false; return m }
	tests := []struct {
		name     string
		q        *dns.Msg
		after    time.Duration // clock advance between caching and asking
		wantFast map[string]bool
	}{
		{name: "plain A", q: query("www.example.com.", dns.TypeA), wantFast: map[string]bool{"udp": true, "tcp": true}},
		{name: "mixed case CNAME chain", q: query("AlIaS.ExAmPlE.cOm.", dns.TypeA), after: 42 * time.Second, wantFast: map[string]bool{"udp": true, "tcp": true}},
		{name: "no RD", q: noRD(query("www.example.com.", dns.TypeAAAA)), wantFast: map[string]bool{"udp": true, "tcp": true}},
		{name: "EDNS0 DO", q: edns(query("www.example.com.", dns.TypeAAAA), 1232, true), after: 299 * time.Second, wantFast: map[string]bool{"udp": true, "tcp": true}},
		{name: "EDNS0 cookie", q: cookie(edns(query("WWW.example.com.", dns.TypeA), 4096, false)), wantFast: map[string]bool{"udp": true, "tcp": true}},
		{name: "CD", q: cd(query("www.example.com.", dns.TypeA)), wantFast: map[string]bool{"udp": true, "tcp": true}},
		{name: "negative", q: query("nx.example.com.", dns.TypeA), after: 30 * time.Second, wantFast: map[string]bool{"udp": true, "tcp": true}},
		{name: "root NS", q: query(".", dns.TypeNS), wantFast: map[string]bool{"udp": true, "tcp": true}},
		{name: "too big for 512 bytes", q: query("big.example.com.", dns.TypeA), wantFast: map[string]bool{"udp": false, "tcp": true}},
		{name: "too big for a small EDNS0 size", q: edns(query("big.example.com.", dns.TypeA), 300, false), wantFast: map[string]bool{"udp": false, "tcp": true}},
		{name: "big fits EDNS0 size", q: edns(query("big.example.com.", dns.TypeA), 4096, false), wantFast: map[string]bool{"udp": true, "tcp": true}},
		{name: "escaped name", q: query(`w\.ww.example.com.`, dns.TypeA), wantFast: map[string]bool{"udp": false, "tcp": false}},
		{name: "EDNS version 1", q: func() *dns.Msg {
			m := edns(query("www.example.com.", dns.TypeA), 1232, false)
			m.IsEdns0().SetVersion(1)
			return m
		}(), wantFast: map[string]bool{"udp": false, "tcp": false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newDiffResolver(t)
			raw, err := tc.q.Pack()
			if err != nil {
				t.Fatal(err)
			}
			for _, transport := range []string{"udp", "tcp"} {
				d.handleGeneral(context.Background(), raw, netip.MustParseAddrPort("192.0.2.1:5353"), transport)
			}
			d.clock.Advance(tc.after)
			for _, transport := range []string{"udp", "tcp"} {
				if got := d.compare(t, raw, transport); got != tc.wantFast[transport] {
					t.Errorf("%s: fast path answered %t, want %t", transport, got, tc.wantFast[transport])
				}
			}
		})
	}
}

// TestFastPathExpiry checks that the fast path does not serve an expired
// answer.
func TestFastPathExpiry(t *testing.T) {
	d := newDiffResolver(t)
	raw, err := query("short.example.com.", dns.TypeA).Pack()
	if err != nil {
		t.Fatal(err)
	}
	client := netip.MustParseAddrPort("192.0.2.1:5353")
	d.handle(context.Background(), raw, client, "udp")
	if !d.compare(t, raw, "udp") {
		t.Fatal("fresh answer not served by the fast path")
	}
	d.clock.Advance(5 * time.Second)
	if _, ok := d.fastAnswer(raw, client, "udp", nil); ok {
		t.Fatal("expired answer served by the fast path")
	}
}

// FuzzParseFastQuery checks the fast path's query parser against
// miekg/dns: whatever it accepts must unpack to the same question and
// EDNS0 fields.
func FuzzParseFastQuery(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		q, name, ok := parseFastQuery(raw, nil)
		if !ok {
			return
		}
		m := new(dns.Msg)
		if err := m.Unpack(raw); err != nil {
			t.Fatalf("accepted a query miekg/dns does not unpack: %v", err)
		}
		if m.Response || m.Opcode != dns.OpcodeQuery || len(m.Question) != 1 || len(m.Answer) != 0 || len(m.Ns) != 0 {
			t.Fatalf("accepted %v", m)
		}
		qq := m.Question[0]
		if strings.ToLower(qq.Name) != string(name) || qq.Qtype != q.qtype || qq.Qclass != q.qclass || m.CheckingDisabled != q.cd {
			t.Fatalf("parsed %q %+v, miekg/dns %v cd=%t", name, q, qq, m.CheckingDisabled)
		}
		wire := make([]byte, 256)
		n, err := dns.PackDomainName(qq.Name, wire, 0, nil, false)
		if err != nil || n != q.nameEnd-headerLen || !strings.EqualFold(string(wire[:n]), string(raw[headerLen:q.nameEnd])) {
			t.Fatalf("name ends at %d, miekg/dns packs %x (%v)", q.nameEnd, wire[:n], err)
		}
		opt := m.IsEdns0()
		if (opt != nil) != q.edns || len(m.Extra) != len(slices.DeleteFunc(slices.Clone(m.Extra), func(rr dns.RR) bool { return rr != opt })) {
			t.Fatalf("edns %t, miekg/dns extra %v", q.edns, m.Extra)
		}
		if opt != nil && (opt.UDPSize() != q.udpSize || opt.Do() != q.do || opt.Version() != 0) {
			t.Fatalf("parsed %+v, miekg/dns %v", q, opt)
		}
	})
}

// FuzzFastPath compares the fast path's answers with the general path's
// for any request whose answer was cached by the general path.
func FuzzFastPath(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(uint8(3), s)
	}
	d := newDiffResolver(f)
	client := netip.MustParseAddrPort("192.0.2.1:5353")
	f.Fuzz(func(t *testing.T, wait uint8, raw []byte) {
		for _, transport := range []string{"udp", "tcp"} {
			d.handleGeneral(context.Background(), raw, client, transport)
		}
		d.clock.Advance(time.Duration(wait) * time.Second)
		for _, transport := range []string{"udp", "tcp"} {
			d.compare(t, raw, transport)
		}
	})
}

// plainPacketConn hides the AddrPort methods of a *net.UDPConn, so that
// Serve takes its net.PacketConn path.
type plainPacketConn struct{ net.PacketConn }

// TestServePlainPacketConn checks misses and hits over a PacketConn that
// is not a *net.UDPConn.
func TestServePlainPacketConn(t *testing.T) {
	up := newFakeUpstream(t)
	r, err := New(Config{Upstreams: []netip.AddrPort{up.addr}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	pc, _ := listenLoopback(t, "127.0.0.1")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, plainPacketConn{pc}, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	addr := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	for i, name := range []string{"www.example.com.", "WWW.example.com."} {
		m := ask(t, addr, "udp", query(name, dns.TypeA))
		if len(m.Answer) != 1 || m.Question[0].Name != name {
			t.Fatalf("query %d: answer %v", i, m)
		}
	}
	if st := r.Stats(); st.CacheHits != 1 || st.CacheMisses != 1 {
		t.Errorf("hits %d misses %d, want 1 and 1", st.CacheHits, st.CacheMisses)
	}
}

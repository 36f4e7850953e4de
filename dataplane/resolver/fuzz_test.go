package resolver

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// memExchange answers upstream queries in memory from zoneAnswer, as the
// fake upstream does over the network.
func memExchange(_ context.Context, _ netip.AddrPort, query []byte, tcp bool) ([]byte, error) {
	q := new(dns.Msg)
	if err := q.Unpack(query); err != nil {
		return nil, err
	}
	m := zoneAnswer(q)
	if !tcp && len(q.Question) == 1 && q.Question[0].Name == "tc.example.com." {
		m.Answer, m.Truncated = nil, true
	}
	if !tcp {
		m.Truncate(upstreamUDPSize)
	}
	return m.Pack()
}

func fuzzSeeds(tb testing.TB) [][]byte {
	var seeds [][]byte
	add := func(m *dns.Msg) {
		b, err := m.Pack()
		if err != nil {
			tb.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	for _, name := range []string{"www.example.com.", "ALIAS.example.com.", "nx.example.com.", "big.example.com.", "tc.example.com.", "fail.example.com.", "."} {
		for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeNS} {
			add(query(name, qt))
			q := query(name, qt)
			q.SetEdns0(4096, true)
			add(q)
		}
	}
	q := query("www.example.com.", dns.TypeA)
	q.SetEdns0(512, false)
	q.IsEdns0().SetVersion(2)
	add(q)
	add(new(dns.Msg).SetNotify("example.com."))
	for _, name := range []string{"WwW.ExAmPlE.CoM.", "alias.example.com.", "nx.example.com.", "short.example.com."} {
		q := query(name, dns.TypeA)
		q.CheckingDisabled = true
		add(q)
		q = query(name, dns.TypeAAAA)
		q.RecursionDesired = false
		q.SetEdns0(300, true)
		q.IsEdns0().Option = append(q.IsEdns0().Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"})
		add(q)
	}
	seeds = append(seeds,
		[]byte{},
		[]byte{0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0},
		[]byte{0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1},
		[]byte{0xff, 0xff, 0x80, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	)
	return seeds
}

// FuzzHandle feeds raw request bytes to the resolver's request path (the
// function the UDP and TCP servers call), with an in-memory upstream.
func FuzzHandle(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	clock := newFakeClock()
	r, err := New(Config{
		Upstreams: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53")},
		Now:       clock.Now,
		Logger:    testLogger(f),
		CacheSize: 64,
		Snoop:     checkSnoop(),
	})
	if err != nil {
		f.Fatal(err)
	}
	r.exchange = memExchange
	client := netip.MustParseAddrPort("192.0.2.1:5353")
	f.Fuzz(func(t *testing.T, raw []byte) {
		clock.Advance(7 * time.Second)
		for _, transport := range []string{"udp", "tcp"} {
			out := r.handle(context.Background(), raw, client, transport)
			checkAnswer(t, raw, out, transport)
		}
	})
}

// FuzzUpstreamReply feeds raw bytes as the upstream's answer (its ID made
// to match) to a client query: parse, check, cache, snoop and answer.
func FuzzUpstreamReply(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		q := new(dns.Msg)
		if q.Unpack(s) != nil || len(q.Question) != 1 {
			continue
		}
		for _, tcp := range []bool{false, true} {
			if b, err := memExchange(context.Background(), netip.AddrPort{}, s, tcp); err == nil {
				f.Add(uint8(q.Question[0].Qtype), b)
			}
		}
	}
	f.Add(uint8(dns.TypeA), []byte{0, 0, 0x80, 0, 0, 1, 0, 1, 0, 0, 0, 0})
	snoop := checkSnoop()
	client := netip.MustParseAddrPort("[2001:db8::1]:5353")
	f.Fuzz(func(t *testing.T, qtype uint8, reply []byte) {
		r, err := New(Config{
			Upstreams: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53")},
			Logger:    testLogger(t),
			Snoop:     snoop,
		})
		if err != nil {
			t.Fatal(err)
		}
		r.exchange = func(_ context.Context, _ netip.AddrPort, query []byte, tcp bool) ([]byte, error) {
			if len(reply) < 2 {
				return nil, errors.New("short")
			}
			b := append([]byte(nil), reply...)
			b[0], b[1] = query[0], query[1]
			return b, nil
		}
		q := query("www.example.com.", uint16(qtype))
		q.Id = 0x4242
		req, err := q.Pack()
		if err != nil {
			t.Fatal(err)
		}
		for _, transport := range []string{"udp", "tcp", "udp"} { // the second udp is from the cache
			out := r.handle(context.Background(), req, client, transport)
			m := checkAnswer(t, req, out, transport)
			if m == nil {
				t.Fatal("no answer to a valid query")
			}
		}
	})
}

// checkAnswer checks the invariants of any answer to raw and returns it
// unpacked (nil when there was none).
func checkAnswer(t *testing.T, raw, out []byte, transport string) *dns.Msg {
	t.Helper()
	if out == nil {
		if len(raw) >= headerLen && raw[2]&0x80 == 0 {
			t.Fatalf("%s: no answer to a query", transport)
		}
		return nil
	}
	if len(raw) < headerLen || raw[2]&0x80 != 0 {
		t.Fatalf("%s: answered a request that should be dropped", transport)
	}
	if out[0] != raw[0] || out[1] != raw[1] || out[2]&0x80 == 0 {
		t.Fatalf("%s: answer id %x QR=%t, request id %x", transport, out[:2], out[2]&0x80 != 0, raw[:2])
	}
	m := new(dns.Msg)
	if err := m.Unpack(out); err != nil {
		t.Fatalf("%s: answer does not unpack: %v", transport, err)
	}
	if transport == "udp" {
		limit := dns.MinMsgSize
		q := new(dns.Msg)
		if q.Unpack(raw) == nil {
			if opt := q.IsEdns0(); opt != nil {
				limit = max(limit, int(opt.UDPSize()))
			}
		}
		if len(out) > limit {
			t.Fatalf("udp answer %d bytes, client limit %d", len(out), limit)
		}
	}
	return m
}

func checkSnoop() func(string, []netip.Addr, time.Duration) {
	return func(name string, addrs []netip.Addr, ttl time.Duration) {
		if name == "" || len(addrs) == 0 || ttl < 0 {
			panic("bad snoop call: " + name)
		}
		for _, a := range addrs {
			if !a.IsValid() || a.Is4In6() {
				panic("bad snoop address " + a.String())
			}
		}
	}
}

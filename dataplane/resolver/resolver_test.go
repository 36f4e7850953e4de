package resolver

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestAnswers(t *testing.T) {
	up := newFakeUpstream(t)
	snoops := &snoopLog{}
	var infoMu sync.Mutex
	var infos []QueryInfo
	r := startResolver(t, Config{
		Upstreams: []netip.AddrPort{up.addr},
		Snoop:     snoops.snoop,
		OnQuery: func(qi QueryInfo) {
			infoMu.Lock()
			infos = append(infos, qi)
			infoMu.Unlock()
		},
	})
	v4 := netip.MustParseAddr("203.0.113.10")
	v6 := netip.MustParseAddr("2001:db8:113::10")
	tests := []struct {
		name      string
		qname     string
		qtype     uint16
		network   string
		wantRcode int
		wantAddr  netip.Addr
		wantSnoop []snoopCall
	}{
		{
			name: "A", qname: "www.example.com.", qtype: dns.TypeA, network: "udp",
			wantAddr:  v4,
			wantSnoop: []snoopCall{{"www.example.com", []netip.Addr{v4}, 300 * time.Second}},
		},
		{
			name: "AAAA over tcp", qname: "www.example.com.", qtype: dns.TypeAAAA, network: "tcp",
			wantAddr:  v6,
			wantSnoop: []snoopCall{{"www.example.com", []netip.Addr{v6}, 300 * time.Second}},
		},
		{
			name: "mixed case keeps the question case", qname: "WwW.ExAmPlE.CoM.", qtype: dns.TypeA, network: "udp",
			wantAddr:  v4,
			wantSnoop: []snoopCall{{"www.example.com", []netip.Addr{v4}, 300 * time.Second}},
		},
		{
			name: "CNAME chain", qname: "Alias.Example.com.", qtype: dns.TypeA, network: "udp",
			wantAddr: v4,
			wantSnoop: []snoopCall{
				// the query name holds the address only while both CNAMEs hold
				{"alias.example.com", []netip.Addr{v4}, 120 * time.Second},
				{"mid.example.net", []netip.Addr{v4}, 120 * time.Second},
				{"www.example.com", []netip.Addr{v4}, 300 * time.Second},
			},
		},
		{
			name: "CNAME chain AAAA", qname: "alias.example.com.", qtype: dns.TypeAAAA, network: "tcp",
			wantAddr: v6,
			wantSnoop: []snoopCall{
				{"alias.example.com", []netip.Addr{v6}, 120 * time.Second},
				{"mid.example.net", []netip.Addr{v6}, 120 * time.Second},
				{"www.example.com", []netip.Addr{v6}, 300 * time.Second},
			},
		},
		{name: "NXDOMAIN", qname: "nx.example.com.", qtype: dns.TypeA, network: "udp", wantRcode: dns.RcodeNameError},
		{name: "NODATA (MX)", qname: "www.example.com.", qtype: dns.TypeMX, network: "udp"},
		{name: "upstream SERVFAIL", qname: "fail.example.com.", qtype: dns.TypeA, network: "udp", wantRcode: dns.RcodeServerFailure},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := query(tc.qname, tc.qtype)
			m := ask(t, r.addr, tc.network, q)
			if m.Rcode != tc.wantRcode {
				t.Fatalf("rcode %s, want %s", dns.RcodeToString[m.Rcode], dns.RcodeToString[tc.wantRcode])
			}
			if len(m.Question) != 1 || m.Question[0].Name != tc.qname {
				t.Errorf("question %v, want %s as asked", m.Question, tc.qname)
			}
			if !m.Response || !m.RecursionAvailable || !m.RecursionDesired {
				t.Errorf("flags QR=%t RA=%t RD=%t, want all set", m.Response, m.RecursionAvailable, m.RecursionDesired)
			}
			var got []netip.Addr
			for _, rr := range m.Answer {
				switch v := rr.(type) {
				case *dns.A:
					a, _ := netip.AddrFromSlice(v.A.To4())
					got = append(got, a)
				case *dns.AAAA:
					a, _ := netip.AddrFromSlice(v.AAAA)
					got = append(got, a)
				}
			}
			if tc.wantAddr.IsValid() && !slices.Equal(got, []netip.Addr{tc.wantAddr}) {
				t.Errorf("addresses %v, want %v", got, tc.wantAddr)
			}
			if !tc.wantAddr.IsValid() && len(got) != 0 {
				t.Errorf("addresses %v, want none", got)
			}
			calls := snoops.take()
			if len(calls) != len(tc.wantSnoop) {
				t.Fatalf("snoop calls %v, want %v", calls, tc.wantSnoop)
			}
			for i, c := range calls {
				w := tc.wantSnoop[i]
				// a cached answer may be a second or so older
				if c.name != w.name || !slices.Equal(c.addrs, w.addrs) || c.ttl > w.ttl || c.ttl < w.ttl-2*time.Second {
					t.Errorf("snoop call %d: %v, want %v", i, c, w)
				}
			}
		})
	}
	infoMu.Lock()
	defer infoMu.Unlock()
	if len(infos) != len(tests) {
		t.Fatalf("OnQuery called %d times, want %d", len(infos), len(tests))
	}
	if qi := infos[1]; qi.Name != "www.example.com" || qi.Type != dns.TypeAAAA || qi.Transport != "tcp" ||
		qi.Rcode != dns.RcodeSuccess || !qi.Client.Addr().IsLoopback() {
		t.Errorf("OnQuery for AAAA over tcp: %+v", qi)
	}
	if !infos[2].Cached {
		t.Errorf("OnQuery for the repeated A query: not cached: %+v", infos[2])
	}
	st := r.Stats()
	if st.Rcodes["NOERROR"] != 6 || st.Rcodes["NXDOMAIN"] != 1 || st.Rcodes["SERVFAIL"] != 1 {
		t.Errorf("stats by rcode %v", st.Rcodes)
	}
}

func TestCache(t *testing.T) {
	tests := []struct {
		name    string
		qname   string
		qtype   uint16
		rcode   int
		ttl     uint32 // TTL of the first record upstream gives (answer, or SOA for negative)
		advance time.Duration
		cached  bool // the second query is answered from the cache
	}{
		{name: "positive within TTL", qname: "www.example.com.", qtype: dns.TypeA, ttl: 300, advance: 100 * time.Second, cached: true},
		{name: "TTL expiry", qname: "short.example.com.", qtype: dns.TypeA, ttl: 5, advance: 5 * time.Second, cached: false},
		{name: "NXDOMAIN cached (SOA minimum)", qname: "nx.example.com.", qtype: dns.TypeA, rcode: dns.RcodeNameError, ttl: 60, advance: 59 * time.Second, cached: true},
		{name: "NXDOMAIN expires after SOA minimum", qname: "nx.example.com.", qtype: dns.TypeAAAA, rcode: dns.RcodeNameError, ttl: 60, advance: 60 * time.Second, cached: false},
		{name: "NODATA cached", qname: "www.example.com.", qtype: dns.TypeTXT, ttl: 60, advance: 30 * time.Second, cached: true},
		{name: "SERVFAIL not cached", qname: "fail.example.com.", qtype: dns.TypeA, rcode: dns.RcodeServerFailure, advance: 0, cached: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			up := newFakeUpstream(t)
			clock := newFakeClock()
			r := startResolver(t, Config{Upstreams: []netip.AddrPort{up.addr}, Now: clock.Now})
			first := ask(t, r.addr, "udp", query(tc.qname, tc.qtype))
			clock.Advance(tc.advance)
			// another client, other case: same cache entry
			second := ask(t, r.addr, "tcp", query(strings.ToUpper(tc.qname), tc.qtype))
			for i, m := range []*dns.Msg{first, second} {
				if m.Rcode != tc.rcode {
					t.Fatalf("answer %d: rcode %s, want %s", i, dns.RcodeToString[m.Rcode], dns.RcodeToString[tc.rcode])
				}
			}
			wantUp := 2
			if tc.cached {
				wantUp = 1
			}
			if n := up.count(tc.qname); n != wantUp {
				t.Errorf("upstream asked %d times, want %d", n, wantUp)
			}
			if tc.rcode == dns.RcodeServerFailure {
				return
			}
			ttlOf := func(m *dns.Msg) uint32 {
				if len(m.Answer) > 0 {
					return m.Answer[0].Header().Ttl
				}
				if len(m.Ns) > 0 {
					return m.Ns[0].Header().Ttl
				}
				t.Fatalf("answer without records: %v", m)
				return 0
			}
			if got := ttlOf(first); got != tc.ttl {
				t.Errorf("first TTL %d, want %d", got, tc.ttl)
			}
			wantSecond := tc.ttl
			if tc.cached {
				wantSecond -= uint32(tc.advance / time.Second)
			}
			if got := ttlOf(second); got != wantSecond {
				t.Errorf("second TTL %d, want %d", got, wantSecond)
			}
			st := r.Stats()
			if tc.cached && (st.CacheHits != 1 || st.CacheMisses != 1) {
				t.Errorf("stats hits %d misses %d, want 1 and 1", st.CacheHits, st.CacheMisses)
			}
			if !tc.cached && (st.CacheHits != 0 || st.CacheMisses != 2) {
				t.Errorf("stats hits %d misses %d, want 0 and 2", st.CacheHits, st.CacheMisses)
			}
		})
	}
}

func TestCacheKeyDOBit(t *testing.T) {
	up := newFakeUpstream(t)
	r := startResolver(t, Config{Upstreams: []netip.AddrPort{up.addr}})
	plain := query("www.example.com.", dns.TypeA)
	do := query("www.example.com.", dns.TypeA)
	do.SetEdns0(1232, true)
	ask(t, r.addr, "udp", plain)
	m := ask(t, r.addr, "udp", do)
	ask(t, r.addr, "udp", do)
	if n := up.count("www.example.com."); n != 2 {
		t.Errorf("upstream asked %d times, want 2 (one per DO bit)", n)
	}
	opt := m.IsEdns0()
	if opt == nil || !opt.Do() {
		t.Errorf("answer to a DO query lacks OPT with DO: %v", m.Extra)
	}
}

func TestTruncation(t *testing.T) {
	up := newFakeUpstream(t)
	r := startResolver(t, Config{Upstreams: []netip.AddrPort{up.addr}})
	t.Run("upstream TC over UDP retried over TCP", func(t *testing.T) {
		m := ask(t, r.addr, "udp", query("tc.example.com.", dns.TypeA))
		if m.Truncated || len(m.Answer) != 1 {
			t.Fatalf("answer TC=%t with %d records, want full answer", m.Truncated, len(m.Answer))
		}
		if up.tcpQueries.Load() != 1 {
			t.Errorf("upstream tcp queries %d, want 1", up.tcpQueries.Load())
		}
	})
	tests := []struct {
		name    string
		network string
		edns    uint16 // 0: no EDNS0
		wantTC  bool
	}{
		{name: "512-byte UDP client gets TC", network: "udp", wantTC: true},
		{name: "EDNS0 512 UDP client gets TC", network: "udp", edns: 512, wantTC: true},
		{name: "EDNS0 4096 UDP client gets all", network: "udp", edns: 4096},
		{name: "TCP client gets all", network: "tcp"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := query("big.example.com.", dns.TypeA)
			if tc.edns != 0 {
				q.SetEdns0(tc.edns, false)
			}
			c := dns.Client{Net: tc.network, Timeout: 5 * time.Second}
			conn, err := c.Dial(r.addr.String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.UDPSize = 65535
			if err := conn.WriteMsg(q); err != nil {
				t.Fatal(err)
			}
			raw, err := conn.ReadMsgHeader(nil)
			if err != nil {
				t.Fatal(err)
			}
			m := new(dns.Msg)
			if err := m.Unpack(raw); err != nil {
				t.Fatal(err)
			}
			if m.Truncated != tc.wantTC {
				t.Fatalf("TC=%t, want %t", m.Truncated, tc.wantTC)
			}
			if tc.network == "udp" && tc.edns <= 512 && len(raw) > 512 {
				t.Errorf("udp answer is %d bytes, over 512", len(raw))
			}
			if !tc.wantTC && len(m.Answer) != bigCount {
				t.Errorf("%d answer records, want %d", len(m.Answer), bigCount)
			}
			if tc.wantTC && len(m.Answer) >= bigCount {
				t.Errorf("truncated answer still has %d records", len(m.Answer))
			}
		})
	}
	if n := up.count("big.example.com."); n != 1 {
		t.Errorf("upstream asked %d times for big.example.com, want 1 (cached)", n)
	}
}

func TestUpstreamFailure(t *testing.T) {
	good := newFakeUpstream(t)
	dead := deadUDPAddr(t)
	// silent reads queries and never answers: a blackholed resolver.
	silentPC, _ := listenLoopback(t, "127.0.0.1")
	silent := silentPC.LocalAddr().(*net.UDPAddr).AddrPort()
	tests := []struct {
		name      string
		upstreams []netip.AddrPort
		wantRcode int
		wantErrs  uint64
	}{
		{name: "only upstream down: SERVFAIL", upstreams: []netip.AddrPort{dead}, wantRcode: dns.RcodeServerFailure, wantErrs: 1},
		{name: "all upstreams down: SERVFAIL", upstreams: []netip.AddrPort{dead, silent}, wantRcode: dns.RcodeServerFailure, wantErrs: 2},
		{name: "failover from refused port", upstreams: []netip.AddrPort{dead, good.addr}, wantErrs: 1},
		{name: "failover from timeout", upstreams: []netip.AddrPort{silent, good.addr}, wantErrs: 1},
		{name: "first upstream good", upstreams: []netip.AddrPort{good.addr, dead}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := startResolver(t, Config{Upstreams: tc.upstreams, Timeout: 300 * time.Millisecond})
			for _, network := range []string{"udp", "tcp"} {
				q := query("www.example.com.", dns.TypeA)
				q.Id = 0xbeef
				m := ask(t, r.addr, network, q)
				if m.Rcode != tc.wantRcode {
					t.Fatalf("%s: rcode %s, want %s", network, dns.RcodeToString[m.Rcode], dns.RcodeToString[tc.wantRcode])
				}
				if len(m.Question) != 1 || m.Question[0].Name != "www.example.com." {
					t.Errorf("%s: question %v", network, m.Question)
				}
			}
			st := r.Stats()
			// the second query is cached after a success, or retries every
			// upstream after a failure
			want := tc.wantErrs
			if tc.wantRcode == dns.RcodeServerFailure {
				want *= 2
			}
			if st.UpstreamErrors != want {
				t.Errorf("upstream errors %d, want %d", st.UpstreamErrors, want)
			}
			err := r.Healthy(context.Background())
			if (err == nil) != (tc.wantRcode == dns.RcodeSuccess) {
				t.Errorf("Healthy: %v", err)
			}
		})
	}
}

func TestMalformed(t *testing.T) {
	up := newFakeUpstream(t)
	r := startResolver(t, Config{Upstreams: []netip.AddrPort{up.addr}})
	valid, _ := query("www.example.com.", dns.TypeA).Pack()
	twoQuestions := query("www.example.com.", dns.TypeA)
	twoQuestions.Question = append(twoQuestions.Question, dns.Question{Name: "b.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
	twoQ, _ := twoQuestions.Pack()
	notify := new(dns.Msg).SetNotify("example.com.")
	notifyRaw, _ := notify.Pack()
	badVers := query("www.example.com.", dns.TypeA)
	badVers.SetEdns0(1232, false)
	badVers.IsEdns0().SetVersion(1)
	badVersRaw, _ := badVers.Pack()
	axfr, _ := query("example.com.", dns.TypeAXFR).Pack()
	response := append([]byte(nil), valid...)
	response[2] |= 0x80

	tests := []struct {
		name      string
		raw       []byte
		wantRcode int // -1: no answer
	}{
		{name: "empty", raw: []byte{}, wantRcode: -1},
		{name: "3 bytes", raw: []byte{1, 2, 3}, wantRcode: -1},
		{name: "header claims a question it lacks", raw: []byte{0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}, wantRcode: dns.RcodeFormatError},
		{name: "truncated question", raw: valid[:len(valid)-3], wantRcode: dns.RcodeFormatError},
		{name: "garbage after header", raw: append([]byte{0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}, 0xc0, 0x0c, 0xff, 0xff), wantRcode: dns.RcodeFormatError},
		{name: "label pointer loop", raw: []byte{0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1}, wantRcode: dns.RcodeFormatError},
		{name: "two questions", raw: twoQ, wantRcode: dns.RcodeFormatError},
		{name: "NOTIFY opcode", raw: notifyRaw, wantRcode: dns.RcodeNotImplemented},
		{name: "EDNS version 1", raw: badVersRaw, wantRcode: dns.RcodeBadVers},
		{name: "AXFR", raw: axfr, wantRcode: dns.RcodeRefused},
		{name: "a response, not a query", raw: response, wantRcode: -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, network := range []string{"udp", "tcp"} {
				m, raw := sendRaw(t, r.addr, network, tc.raw, tc.wantRcode >= 0)
				if tc.wantRcode < 0 {
					continue
				}
				if m.Rcode != tc.wantRcode {
					t.Errorf("%s: rcode %s, want %s", network, rcodeName(m.Rcode), rcodeName(tc.wantRcode))
				}
				if raw[0] != tc.raw[0] || raw[1] != tc.raw[1] || !m.Response {
					t.Errorf("%s: answer id %x QR=%t, want id %x with QR", network, raw[:2], m.Response, tc.raw[:2])
				}
			}
			// the resolver keeps serving
			for _, network := range []string{"udp", "tcp"} {
				if m := ask(t, r.addr, network, query("www.example.com.", dns.TypeA)); m.Rcode != dns.RcodeSuccess {
					t.Fatalf("%s: valid query after %s: rcode %s", network, tc.name, rcodeName(m.Rcode))
				}
			}
		})
	}
	if st := r.Stats(); st.Malformed == 0 || st.Dropped == 0 {
		t.Errorf("stats malformed %d dropped %d, want both counted", st.Malformed, st.Dropped)
	}
}

// sendRaw sends raw bytes as one UDP datagram or one length-prefixed TCP
// message and returns the answer; when no answer is expected it checks
// that none comes (UDP: within 300ms; TCP: the connection closes or stays
// silent).
func sendRaw(tb testing.TB, addr netip.AddrPort, network string, raw []byte, wantAnswer bool) (*dns.Msg, []byte) {
	tb.Helper()
	c, err := net.Dial(network, addr.String())
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	out := raw
	if network == "tcp" {
		out = binary.BigEndian.AppendUint16(nil, uint16(len(raw)))
		out = append(out, raw...)
	}
	if _, err := c.Write(out); err != nil {
		tb.Fatal(err)
	}
	wait := 5 * time.Second
	if !wantAnswer {
		wait = 300 * time.Millisecond
	}
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 65537)
	var n int
	if network == "tcp" {
		n, err = readFull(c, buf[:2])
		if err == nil {
			n, err = readFull(c, buf[:binary.BigEndian.Uint16(buf)])
		}
	} else {
		n, err = c.Read(buf)
	}
	if !wantAnswer {
		if err == nil {
			tb.Fatalf("%s: got an answer (%d bytes), want none", network, n)
		}
		return nil, nil
	}
	if err != nil {
		tb.Fatalf("%s: read answer: %v", network, err)
	}
	m := new(dns.Msg)
	if err := m.Unpack(buf[:n]); err != nil {
		tb.Fatalf("%s: unpack answer: %v", network, err)
	}
	return m, buf[:n]
}

func TestConcurrencyBound(t *testing.T) {
	const limit = 4
	const sent = 10
	up := newFakeUpstream(t)
	gate := up.hold(t)
	r := startResolver(t, Config{Upstreams: []netip.AddrPort{up.addr}, MaxConcurrent: limit, Timeout: 10 * time.Second})

	c, err := net.Dial("udp", r.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range sent {
		q := query("slow"+string(rune('a'+i))+".example.com.", dns.TypeA)
		q.Id = uint16(i + 1)
		b, _ := q.Pack()
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the resolver to drop what is over its limit", func() bool {
		return up.inflight.Load() == limit && r.Stats().Dropped == sent-limit
	})
	// Measured while the upstream holds them all: once released, a reply
	// can reach the resolver before the fake upstream counts it done.
	if maxIn := up.maxInflight.Load(); maxIn != limit {
		t.Errorf("upstream saw %d queries at once, limit %d", maxIn, limit)
	}
	// A TCP query waits for a free slot instead of being dropped.
	tcpDone := make(chan *dns.Msg, 1)
	go func() {
		cl := dns.Client{Net: "tcp", Timeout: 10 * time.Second}
		m, _, err := cl.Exchange(query("www.example.com.", dns.TypeA), r.addr.String())
		if err != nil {
			t.Errorf("tcp query: %v", err)
		}
		tcpDone <- m
	}()
	gate()
	got := map[uint16]bool{}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 65535)
	for len(got) < limit {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read answers (have %d of %d): %v", len(got), limit, err)
		}
		m := new(dns.Msg)
		if err := m.Unpack(buf[:n]); err != nil || m.Rcode != dns.RcodeSuccess {
			t.Fatalf("answer %v: %v", m, err)
		}
		got[m.Id] = true
	}
	if m := <-tcpDone; m == nil || m.Rcode != dns.RcodeSuccess {
		t.Errorf("tcp query while full: %v", m)
	}
}

func TestCoalescing(t *testing.T) {
	const clients = 8
	up := newFakeUpstream(t)
	gate := up.hold(t)
	r := startResolver(t, Config{Upstreams: []netip.AddrPort{up.addr}, Timeout: 10 * time.Second})
	var wg sync.WaitGroup
	answers := make(chan *dns.Msg, clients)
	for range clients {
		wg.Go(func() {
			cl := dns.Client{Net: "udp", Timeout: 10 * time.Second}
			m, _, err := cl.Exchange(query("slow.example.com.", dns.TypeA), r.addr.String())
			if err != nil {
				t.Errorf("query: %v", err)
			}
			answers <- m
		})
	}
	k := cacheKey{name: "slow.example.com.", qtype: dns.TypeA, qclass: dns.ClassINET}
	waitFor(t, "every query to join one upstream exchange", func() bool { return r.flights.joiners(k) == clients-1 })
	gate()
	wg.Wait()
	close(answers)
	for m := range answers {
		if m == nil || m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
			t.Errorf("answer %v", m)
		}
	}
	if n := up.count("slow.example.com."); n != 1 {
		t.Errorf("upstream asked %d times, want 1", n)
	}
	if st := r.Stats(); st.Coalesced != clients {
		t.Errorf("coalesced %d, want %d", st.Coalesced, clients)
	}
}

func TestServeStops(t *testing.T) {
	up := newFakeUpstream(t)
	r, err := New(Config{Upstreams: []netip.AddrPort{up.addr}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	pc, ln := listenLoopback(t, "127.0.0.1")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, pc, ln) }()
	addr := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	ask(t, addr, "udp", query("www.example.com.", dns.TypeA))
	// an idle TCP client must not keep Serve from returning
	idle, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err == nil {
		t.Error("idle tcp connection still open after Serve returned")
	}
}

func TestNewValidates(t *testing.T) {
	up := netip.MustParseAddrPort("127.0.0.1:53")
	tests := []struct {
		name string
		cfg  Config
	}{
		{name: "no upstreams", cfg: Config{}},
		{name: "zero upstream", cfg: Config{Upstreams: []netip.AddrPort{{}}}},
		{name: "port 0", cfg: Config{Upstreams: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}}},
		{name: "negative timeout", cfg: Config{Upstreams: []netip.AddrPort{up}, Timeout: -1}},
		{name: "min above max ttl", cfg: Config{Upstreams: []netip.AddrPort{up}, MinTTL: time.Hour, MaxTTL: time.Minute}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); err == nil {
				t.Error("New accepted a bad config")
			}
		})
	}
	if _, err := New(Config{Upstreams: []netip.AddrPort{up}}); err != nil {
		t.Errorf("New with defaults: %v", err)
	}
}

func TestIPv6Loopback(t *testing.T) {
	up4 := newFakeUpstream(t)
	up6 := newFakeUpstreamOn(t, "::1")
	var clients sync.Map
	tests := []struct {
		name      string
		upstreams []netip.AddrPort
	}{
		{name: "v6 upstream", upstreams: []netip.AddrPort{up6.addr}},
		{name: "v6 upstream down, v4 upstream", upstreams: []netip.AddrPort{deadUDPAddrOn(t, "::1"), up4.addr}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := startResolverOn(t, "::1", Config{
				Upstreams: tc.upstreams,
				OnQuery:   func(qi QueryInfo) { clients.Store(qi.Client.Addr(), qi.Transport) },
			})
			if !r.addr.Addr().Is6() {
				t.Fatalf("resolver on %s, want [::1]", r.addr)
			}
			for _, network := range []string{"udp", "tcp"} {
				m := ask(t, r.addr, network, query("www.example.com.", dns.TypeAAAA))
				if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
					t.Fatalf("%s: answer %v", network, m)
				}
			}
		})
	}
	if _, ok := clients.Load(netip.IPv6Loopback()); !ok {
		t.Error("OnQuery never saw client ::1")
	}
	if up6.count("www.example.com.") != 1 || up4.count("www.example.com.") != 1 {
		t.Errorf("upstream queries: v6 %d, v4 %d; want 1 each", up6.count("www.example.com."), up4.count("www.example.com."))
	}
}

func TestSinkholed(t *testing.T) {
	for _, tc := range []struct {
		name string
		rr   string
		want bool
	}{
		{"a zero", "x. 60 IN A 0.0.0.0", true},
		{"aaaa zero", "x. 60 IN AAAA ::", true},
		{"a real", "x. 60 IN A 203.0.113.10", false},
		{"cname", "x. 60 IN CNAME y.", false},
	} {
		rr, err := dns.NewRR(tc.rr)
		if err != nil {
			t.Fatal(err)
		}
		m := &dns.Msg{Answer: []dns.RR{rr}}
		if got := sinkholed(m); got != tc.want {
			t.Errorf("%s: sinkholed = %v, want %v", tc.name, got, tc.want)
		}
	}
}

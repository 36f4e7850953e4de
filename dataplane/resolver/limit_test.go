package resolver

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// askFrom sends one query from the local address from ("127.0.0.2").
func askFrom(tb testing.TB, from string, addr netip.AddrPort, network string, q *dns.Msg) (*dns.Msg, error) {
	tb.Helper()
	d := &net.Dialer{Timeout: 2 * time.Second}
	if network == "udp" {
		d.LocalAddr = &net.UDPAddr{IP: net.ParseIP(from)}
	} else {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c := dns.Client{Net: network, Timeout: 2 * time.Second, Dialer: d}
	m, _, err := c.Exchange(q, addr.String())
	return m, err
}

// floodUDP sends n queries from one socket on from as fast as it can and
// returns how many answers came back.
func floodUDP(tb testing.TB, from string, addr netip.AddrPort, n int) int {
	tb.Helper()
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(from)}, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	q := query("www.example.com.", dns.TypeA)
	for i := range n {
		q.Id = uint16(i + 1)
		b, _ := q.Pack()
		if _, err := c.Write(b); err != nil {
			tb.Fatal(err)
		}
	}
	got := 0
	buf := make([]byte, 4096)
	for {
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Read(buf); err != nil {
			return got
		}
		got++
	}
}

func TestUDPRateLimitPerClient(t *testing.T) {
	up := newFakeUpstream(t)
	r := startResolver(t, Config{Upstreams: []netip.AddrPort{up.addr}, QueriesPerSecondPerClient: 20, QueryBurst: 10})
	// warm the cache so every answer is a fast cache hit
	if m, err := askFrom(t, "127.0.0.3", r.addr, "udp", query("www.example.com.", dns.TypeA)); err != nil || m.Rcode != dns.RcodeSuccess {
		t.Fatalf("warm-up: %v, %v", m, err)
	}
	start := time.Now()
	got := floodUDP(t, "127.0.0.1", r.addr, 300)
	// burst plus the refill over the flood's duration, with room to spare
	bound := 10 + int(20*time.Since(start).Seconds()) + 5
	if got > bound || got == 0 {
		t.Fatalf("flooder got %d of 300 answers, want 1..%d", got, bound)
	}
	st := r.Stats()
	// The kernel may drop part of the flood before the resolver reads it.
	if st.RateLimited < 100 || st.RateLimited+uint64(got) > 300 || st.Dropped < st.RateLimited {
		t.Fatalf("stats %+v: want most of the flood rate limited, counted as dropped", st)
	}
	// the flooder is still limited, another client is not
	if _, err := askFrom(t, "127.0.0.1", r.addr, "udp", query("www.example.com.", dns.TypeA)); err == nil {
		// one token may have refilled since; a second try right away finds none
		if got := floodUDP(t, "127.0.0.1", r.addr, 50); got > 10 {
			t.Fatalf("flooder got %d of 50 answers right after its flood", got)
		}
	}
	for i := range 5 {
		m, err := askFrom(t, "127.0.0.2", r.addr, "udp", query("www.example.com.", dns.TypeA))
		if err != nil || m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
			t.Fatalf("second client, query %d: %v, %v", i, m, err)
		}
	}
}

func TestTCPConnLimitPerClient(t *testing.T) {
	up := newFakeUpstream(t)
	r := startResolver(t, Config{Upstreams: []netip.AddrPort{up.addr}, MaxTCPPerClient: 3})
	dial := func(from string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 2 * time.Second}
		d.SetMultipathTCP(false)
		c, err := d.Dial("tcp", r.addr.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// exchange sends one query on c and reports whether it was answered.
	exchange := func(c net.Conn) error {
		b, _ := query("www.example.com.", dns.TypeA).Pack()
		out := binary.BigEndian.AppendUint16(nil, uint16(len(b)))
		if _, err := c.Write(append(out, b...)); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		var lb [2]byte
		if _, err := io.ReadFull(c, lb[:]); err != nil {
			return err
		}
		_, err := io.ReadFull(c, make([]byte, binary.BigEndian.Uint16(lb[:])))
		return err
	}
	var held []net.Conn
	for i := range 3 {
		c := dial("127.0.0.1")
		if err := exchange(c); err != nil {
			t.Fatalf("connection %d within the limit: %v", i, err)
		}
		held = append(held, c)
	}
	extra := dial("127.0.0.1")
	if err := exchange(extra); err == nil {
		t.Fatal("a fourth connection of one client was served")
	} else if errors.Is(err, errTimeout) {
		t.Fatalf("a fourth connection was held open, not closed at once: %v", err)
	}
	if err := exchange(dial("127.0.0.2")); err != nil {
		t.Fatalf("another client's connection: %v", err)
	}
	waitFor(t, "refused counted", func() bool { return r.Stats().RefusedTCP == 1 })
	// a closed connection frees its slot
	held[0].Close()
	waitFor(t, "slot freed", func() bool {
		c := dial("127.0.0.1")
		defer c.Close()
		return exchange(c) == nil
	})
}

// errTimeout matches a net timeout.
var errTimeout = timeoutErr{}

type timeoutErr struct{}

func (timeoutErr) Error() string { return "timeout" }
func (timeoutErr) Is(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestTCPRateLimitRefuses(t *testing.T) {
	up := newFakeUpstream(t)
	r := startResolver(t, Config{Upstreams: []netip.AddrPort{up.addr}, QueriesPerSecondPerClient: 5, QueryBurst: 5})
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}}
	d.SetMultipathTCP(false)
	nc, err := d.Dial("tcp", r.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := &dns.Conn{Conn: nc}
	rcodes := map[int]int{}
	for i := range 30 {
		q := query("www.example.com.", dns.TypeA)
		q.Id = uint16(i + 1)
		if err := c.WriteMsg(q); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		m, err := c.ReadMsg()
		if err != nil {
			t.Fatalf("query %d: no answer: %v", i, err)
		}
		if m.Id != q.Id || len(m.Question) != 1 {
			t.Fatalf("query %d: answer %v", i, m)
		}
		rcodes[m.Rcode]++
	}
	if rcodes[dns.RcodeSuccess] > 8 || rcodes[dns.RcodeRefused] < 22 {
		t.Fatalf("rcodes %v: want at most the burst (plus refill) answered, the rest REFUSED", rcodes)
	}
	if st := r.Stats(); st.RateLimited != uint64(rcodes[dns.RcodeRefused]) {
		t.Fatalf("RateLimited = %d, want %d", st.RateLimited, rcodes[dns.RcodeRefused])
	}
	m, err := askFrom(t, "127.0.0.2", r.addr, "tcp", query("www.example.com.", dns.TypeA))
	if err != nil || m.Rcode != dns.RcodeSuccess {
		t.Fatalf("another client over tcp: %v, %v", m, err)
	}
}

func TestClientKey(t *testing.T) {
	tests := []struct{ in, want string }{
		{"192.0.2.7", "192.0.2.7"},
		{"::ffff:192.0.2.7", "192.0.2.7"},
		{"2001:db8:1:2:aaaa::1", "2001:db8:1:2::"},
		{"2001:db8:1:2:bbbb::9", "2001:db8:1:2::"},
		{"2001:db8:1:3::1", "2001:db8:1:3::"},
	}
	for _, tt := range tests {
		if got := clientKey(netip.MustParseAddr(tt.in)); got.String() != tt.want {
			t.Errorf("clientKey(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestRateLimiterBounded(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newRateLimiter(10, 2, 8, func() time.Time { return now })
	a := netip.MustParseAddr("192.0.2.1")
	if !l.allow(a) || !l.allow(a) || l.allow(a) {
		t.Fatal("burst of 2 not enforced")
	}
	now = now.Add(100 * time.Millisecond)
	if !l.allow(a) || l.allow(a) {
		t.Fatal("refill of 10/s not applied")
	}
	for i := range 100 {
		l.allow(netip.AddrFrom4([4]byte{198, 18, 0, byte(i)}))
		if n := l.len(); n > 8 {
			t.Fatalf("%d buckets, bound 8", n)
		}
	}
}

func TestLookupAddrs(t *testing.T) {
	up := newFakeUpstream(t)
	var sl snoopLog
	r, err := New(Config{Upstreams: []netip.AddrPort{up.addr}, Snoop: sl.snoop, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	want := []netip.Addr{netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("2001:db8:113::10")}
	for i := range 2 { // the second from the cache
		got, err := r.LookupAddrs(ctx, "WWW.example.com.")
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("lookup %d = %v, %v; want %v", i, got, err, want)
		}
		calls := sl.take()
		if len(calls) != 2 || calls[0].name != "www.example.com" || calls[1].name != "www.example.com" {
			t.Fatalf("lookup %d: snoop calls %+v, want two for www.example.com", i, calls)
		}
	}
	if n := up.count("www.example.com."); n != 2 {
		t.Fatalf("upstream asked %d times, want 2 (A and AAAA, then the cache)", n)
	}
	// through a CNAME chain: every owner name is snooped
	got, err := r.LookupAddrs(ctx, "alias.example.com")
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("alias = %v, %v", got, err)
	}
	names := map[string]bool{}
	for _, c := range sl.take() {
		names[c.name] = true
	}
	if !names["alias.example.com"] || !names["www.example.com"] {
		t.Fatalf("snooped %v, want the alias and its target", names)
	}
	if got, err := r.LookupAddrs(ctx, "nx.example.com"); err == nil {
		t.Fatalf("NXDOMAIN lookup = %v, want an error", got)
	}
	if got, err := r.LookupAddrs(ctx, "bad name..x"); err == nil {
		t.Fatalf("bad name lookup = %v, want an error", got)
	}
	if calls := sl.take(); len(calls) != 0 {
		t.Fatalf("failed lookups snooped %+v", calls)
	}
}

// FuzzRefusedReply: whatever a rate-limited TCP client sends, the answer
// is nothing (too short, or a response) or a well-formed REFUSED/FORMERR
// answer with the request's ID.
func FuzzRefusedReply(f *testing.F) {
	for _, q := range []*dns.Msg{query("www.example.com.", dns.TypeA), query(".", dns.TypeNS)} {
		b, _ := q.Pack()
		f.Add(b)
	}
	f.Add([]byte{0, 1, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0, 1, 2})
	f.Fuzz(func(t *testing.T, raw []byte) {
		out := refusedReply(raw)
		if out == nil {
			if len(raw) >= headerLen && raw[2]&0x80 == 0 {
				t.Fatalf("no answer to a query %x", raw)
			}
			return
		}
		if len(raw) < headerLen {
			t.Fatalf("answer to %d bytes", len(raw))
		}
		if out[0] != raw[0] || out[1] != raw[1] || out[2]&0x80 == 0 {
			t.Fatalf("answer %x: not a response with the request's ID", out)
		}
		rcode := int(out[3] & 0x0f)
		if rcode != dns.RcodeRefused && rcode != dns.RcodeFormatError {
			t.Fatalf("rcode %d", rcode)
		}
		if rcode == dns.RcodeRefused {
			if err := new(dns.Msg).Unpack(out); err != nil {
				t.Fatalf("REFUSED answer does not unpack: %v", err)
			}
		}
	})
}

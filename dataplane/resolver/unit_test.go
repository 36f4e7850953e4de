package resolver

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func answerOf(tb testing.TB, qname string, qtype uint16, rcode int, rrs ...string) *dns.Msg {
	m := new(dns.Msg).SetReply(query(qname, qtype))
	m.Rcode = rcode
	for _, s := range rrs {
		rr := mustRR(tb, s)
		if rr.Header().Rrtype == dns.TypeSOA {
			m.Ns = append(m.Ns, rr)
			continue
		}
		m.Answer = append(m.Answer, rr)
	}
	return m
}

func TestSnoopChains(t *testing.T) {
	a1 := netip.MustParseAddr("192.0.2.1")
	a2 := netip.MustParseAddr("192.0.2.2")
	tests := []struct {
		name string
		msg  *dns.Msg
		want []snoopCall
	}{
		{
			name: "two addresses, smallest TTL",
			msg:  answerOf(t, "A.example.", dns.TypeA, 0, "a.example. 50 IN A 192.0.2.1", "a.example. 40 IN A 192.0.2.2"),
			want: []snoopCall{{"a.example", []netip.Addr{a1, a2}, 40 * time.Second}},
		},
		{
			name: "chain TTL limited by a CNAME",
			msg: answerOf(t, "a.example.", dns.TypeA, 0,
				"a.example. 10 IN CNAME b.example.", "b.example. 900 IN CNAME c.example.", "c.example. 300 IN A 192.0.2.1"),
			want: []snoopCall{
				{"a.example", []netip.Addr{a1}, 10 * time.Second},
				{"b.example", []netip.Addr{a1}, 300 * time.Second},
				{"c.example", []netip.Addr{a1}, 300 * time.Second},
			},
		},
		{
			name: "CNAME loop ends without a call",
			msg:  answerOf(t, "a.example.", dns.TypeA, 0, "a.example. 10 IN CNAME b.example.", "b.example. 10 IN CNAME a.example."),
		},
		{
			name: "address of an unrelated name ignored",
			msg:  answerOf(t, "a.example.", dns.TypeA, 0, "other.example. 10 IN A 192.0.2.1"),
		},
		{
			name: "AAAA records in an A answer ignored",
			msg:  answerOf(t, "a.example.", dns.TypeA, 0, "a.example. 10 IN AAAA 2001:db8::1"),
		},
		{
			name: "NXDOMAIN after a CNAME",
			msg: answerOf(t, "a.example.", dns.TypeA, dns.RcodeNameError,
				"a.example. 10 IN CNAME b.example.", "example. 60 IN SOA ns. host. 1 2 3 4 5"),
		},
		{
			name: "MX question",
			msg:  answerOf(t, "a.example.", dns.TypeMX, 0, "a.example. 10 IN A 192.0.2.1"),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			log := &snoopLog{}
			r, err := New(Config{Upstreams: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53")}, Snoop: log.snoop})
			if err != nil {
				t.Fatal(err)
			}
			r.snoop(tc.msg)
			got := log.take()
			if len(got) != len(tc.want) {
				t.Fatalf("calls %v, want %v", got, tc.want)
			}
			for i := range got {
				g, w := got[i], tc.want[i]
				if g.name != w.name || g.ttl != w.ttl || !slices.Equal(g.addrs, w.addrs) {
					t.Errorf("call %d: %v, want %v", i, g, w)
				}
			}
		})
	}
}

func TestPrepareForCache(t *testing.T) {
	soa := "example. 3600 IN SOA ns. host. 1 2 3 4 300"
	tests := []struct {
		name     string
		msg      *dns.Msg
		min, max time.Duration
		want     time.Duration
	}{
		{name: "positive: smallest TTL", msg: answerOf(t, "a.example.", dns.TypeA, 0, "a.example. 50 IN A 192.0.2.1", "a.example. 40 IN A 192.0.2.2"), max: time.Hour, want: 40 * time.Second},
		{name: "clamped down to max", msg: answerOf(t, "a.example.", dns.TypeA, 0, "a.example. 86400 IN A 192.0.2.1"), max: time.Minute, want: time.Minute},
		{name: "clamped up to min", msg: answerOf(t, "a.example.", dns.TypeA, 0, "a.example. 1 IN A 192.0.2.1"), min: 30 * time.Second, max: time.Hour, want: 30 * time.Second},
		{name: "TTL 0 not cached", msg: answerOf(t, "a.example.", dns.TypeA, 0, "a.example. 0 IN A 192.0.2.1"), max: time.Hour, want: 0},
		{name: "NXDOMAIN: SOA minimum", msg: answerOf(t, "a.example.", dns.TypeA, dns.RcodeNameError, soa), max: time.Hour, want: 300 * time.Second},
		{name: "NXDOMAIN: SOA TTL below minimum", msg: answerOf(t, "a.example.", dns.TypeA, dns.RcodeNameError, "example. 20 IN SOA ns. host. 1 2 3 4 300"), max: time.Hour, want: 20 * time.Second},
		{name: "NXDOMAIN without SOA not cached", msg: answerOf(t, "a.example.", dns.TypeA, dns.RcodeNameError), max: time.Hour, want: 0},
		{name: "NODATA: SOA minimum", msg: answerOf(t, "a.example.", dns.TypeA, 0, soa), max: time.Hour, want: 300 * time.Second},
		{name: "NODATA without SOA not cached", msg: answerOf(t, "a.example.", dns.TypeA, 0), max: time.Hour, want: 0},
		{name: "SERVFAIL not cached", msg: answerOf(t, "a.example.", dns.TypeA, dns.RcodeServerFailure, soa), max: time.Hour, want: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := prepareForCache(tc.msg, tc.min, tc.max); got != tc.want {
				t.Errorf("cache for %s, want %s", got, tc.want)
			}
		})
	}
}

func TestCacheBounds(t *testing.T) {
	now := time.Now()
	small := answerOf(t, "a.example.", dns.TypeA, 0, "a.example. 50 IN A 192.0.2.1")
	key := func(i int) cacheKey {
		return cacheKey{name: string(rune('a'+i)) + ".example.", qtype: dns.TypeA, qclass: dns.ClassINET}
	}
	t.Run("entry count", func(t *testing.T) {
		c := newCache(3, 1<<20)
		for i := range 5 {
			c.put(key(i), small, time.Minute, now)
		}
		if c.len() != 3 {
			t.Fatalf("%d entries, want 3", c.len())
		}
		for i, want := range []bool{false, false, true, true, true} {
			if _, _, ok := c.get(key(i), now); ok != want {
				t.Errorf("entry %d present=%t, want %t", i, ok, want)
			}
		}
	})
	t.Run("bytes", func(t *testing.T) {
		c := newCache(100, 3*small.Len())
		for i := range 5 {
			c.put(key(i), small, time.Minute, now)
		}
		if c.len() != 3 {
			t.Fatalf("%d entries, want 3", c.len())
		}
	})
	t.Run("least recently used goes first", func(t *testing.T) {
		c := newCache(2, 1<<20)
		c.put(key(0), small, time.Minute, now)
		c.put(key(1), small, time.Minute, now)
		c.get(key(0), now)
		c.put(key(2), small, time.Minute, now)
		if _, _, ok := c.get(key(1), now); ok {
			t.Error("entry 1 survived; it was the least recently used")
		}
		if _, _, ok := c.get(key(0), now); !ok {
			t.Error("entry 0 evicted; it was used last")
		}
	})
}

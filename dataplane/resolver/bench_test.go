package resolver

import (
	"context"
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

// BenchmarkHandleCached measures the request path for a cache hit: unpack,
// cache lookup, copy with TTL decrement, snoop, pack.
func BenchmarkHandleCached(b *testing.B) {
	r, err := New(Config{
		Upstreams: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53")},
		Logger:    testLogger(b),
		Snoop:     checkSnoop(),
	})
	if err != nil {
		b.Fatal(err)
	}
	r.exchange = memExchange
	req, _ := query("alias.example.com.", dns.TypeA).Pack()
	client := netip.MustParseAddrPort("192.0.2.1:5353")
	r.handle(context.Background(), req, client, "udp")
	b.ReportAllocs()
	for b.Loop() {
		if r.handle(context.Background(), req, client, "udp") == nil {
			b.Fatal("no answer")
		}
	}
	if r.Stats().CacheHits == 0 {
		b.Fatal("no cache hits")
	}
}

// BenchmarkLoopbackUDP measures one cached query over a real loopback UDP
// socket, client to resolver and back.
func BenchmarkLoopbackUDP(b *testing.B) {
	up := newFakeUpstream(b)
	r := startResolver(b, Config{Upstreams: []netip.AddrPort{up.addr}})
	c := dns.Client{Net: "udp"}
	conn, err := c.Dial(r.addr.String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	q := query("www.example.com.", dns.TypeA)
	for b.Loop() {
		if _, _, err := c.ExchangeWithConn(q, conn); err != nil {
			b.Fatal(err)
		}
	}
}

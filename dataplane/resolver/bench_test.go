package resolver

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

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

// BenchmarkUDPParallel measures cached queries over loopback UDP from many
// concurrent clients (16 per GOMAXPROCS), each with its own socket and one
// query outstanding; ns/op is the inverse of the resolver's throughput and
// allocs/op counts the whole process (clients included).
func BenchmarkUDPParallel(b *testing.B) {
	up := newFakeUpstream(b)
	r := startResolver(b, Config{Upstreams: []netip.AddrPort{up.addr}, Snoop: checkSnoop()})
	q := query("alias.example.com.", dns.TypeA)
	q.SetEdns0(1232, false)
	ask(b, r.addr, "udp", q)
	req, err := q.Pack()
	if err != nil {
		b.Fatal(err)
	}
	var lost atomic.Int64
	b.SetParallelism(16)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(r.addr))
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		buf := make([]byte, 2048)
		for pb.Next() {
			for {
				if _, err := c.Write(req); err != nil {
					b.Error(err)
					return
				}
				c.SetReadDeadline(time.Now().Add(time.Second))
				n, err := c.Read(buf)
				if err != nil {
					lost.Add(1)
					continue
				}
				if n < headerLen || buf[0] != req[0] || buf[1] != req[1] {
					b.Errorf("bad answer %x", buf[:n])
					return
				}
				break
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "q/s")
	b.ReportMetric(float64(lost.Load()), "lost")
	if r.Stats().CacheHits == 0 {
		b.Fatal("no cache hits")
	}
}

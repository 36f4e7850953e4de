package resolver

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// A dead first resolver costs one failed exchange, not one per query;
// probes bring it back first once it has answered for RecoverAfter.
func TestUpstreamHealthSkipsDeadFirstAndComesBack(t *testing.T) {
	first := netip.MustParseAddrPort("192.0.2.1:53")
	second := netip.MustParseAddrPort("192.0.2.2:53")
	var mu sync.Mutex
	var switches [][2]string
	r, err := New(Config{
		Upstreams: []netip.AddrPort{first, second}, Logger: testLogger(t), RecoverAfter: 200 * time.Millisecond,
		OnUpstreamSwitch: func(from, to string) {
			mu.Lock()
			switches = append(switches, [2]string{from, to})
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	var dead atomic.Bool
	dead.Store(true)
	var asked sync.Map // addr → *atomic.Int64
	count := func(a netip.AddrPort) int64 {
		v, _ := asked.LoadOrStore(a, new(atomic.Int64))
		return v.(*atomic.Int64).Load()
	}
	r.exchange = func(ctx context.Context, addr netip.AddrPort, query []byte, tcp bool) ([]byte, error) {
		v, _ := asked.LoadOrStore(addr, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
		if addr == first && dead.Load() {
			return nil, errors.New("read udp: i/o timeout")
		}
		return memExchange(ctx, addr, query, tcp)
	}
	ask := func(name string) {
		t.Helper()
		k := cacheKey{name: dns.Fqdn(name), qtype: dns.TypeA, qclass: dns.ClassINET}
		if _, err := r.forward(context.Background(), k); err != nil {
			t.Fatalf("forward %s: %v", name, err)
		}
	}
	ask("www.example.com")
	for range 10 {
		ask("www.example.com")
	}
	if n := count(first); n != 1 {
		t.Fatalf("the dead first resolver was asked %d times for 11 queries; want once", n)
	}
	if st := r.UpstreamStates(); st[0].Up || !st[1].Active {
		t.Fatalf("states: %+v", st)
	}
	// It answers again: probes find it, and after RecoverAfter it is first.
	dead.Store(false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.RunHealth(ctx, 20*time.Millisecond)
	fixed := time.Now()
	deadline := time.Now().Add(3 * time.Second)
	for !r.UpstreamStates()[0].Active {
		if time.Now().After(deadline) {
			t.Fatal("the first resolver did not come back")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if took := time.Since(fixed); took < 200*time.Millisecond {
		t.Fatalf("back after %s; want RecoverAfter", took)
	}
	before := count(first)
	ask("news.example.com")
	if count(first) != before+1 {
		t.Fatal("a query after the recovery did not go to the first resolver")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(switches) != 2 || switches[0] != [2]string{first.String(), second.String()} || switches[1] != [2]string{second.String(), first.String()} {
		t.Fatalf("switches: %v", switches)
	}
	if r.Stats().UpstreamSwitches != 2 {
		t.Fatalf("UpstreamSwitches = %d", r.Stats().UpstreamSwitches)
	}
}

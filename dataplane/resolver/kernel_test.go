package resolver

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// kernelLog is a KernelCache that records the calls it gets.
type kernelLog struct {
	mu      sync.Mutex
	puts    []*dns.Msg
	ttls    []time.Duration
	deletes []string // "name type"
}

func (k *kernelLog) Put(wire []byte, ttl time.Duration) error {
	m := new(dns.Msg)
	if err := m.Unpack(wire); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.puts = append(k.puts, m)
	k.ttls = append(k.ttls, ttl)
	return nil
}

func (k *kernelLog) Delete(name string, qtype uint16) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.deletes = append(k.deletes, name+" "+dns.TypeToString[qtype])
	return nil
}

func (k *kernelLog) put(name string, qtype uint16) (*dns.Msg, time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for i, m := range k.puts {
		if m.Question[0].Name == name && m.Question[0].Qtype == qtype {
			return m, k.ttls[i]
		}
	}
	return nil, 0
}

func (k *kernelLog) deleted() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.deletes)
}

func TestKernelCacheHook(t *testing.T) {
	up := newFakeUpstream(t)
	kc := &kernelLog{}
	clock := newFakeClock()
	r := startResolver(t, Config{Upstreams: []netip.AddrPort{up.addr}, KernelCache: kc, Now: clock.Now, CacheSize: 4})

	tests := []struct {
		name    string
		q       *dns.Msg
		wantPut bool
		wantTTL time.Duration
	}{
		{name: "A answer", q: query("WWW.Example.com.", dns.TypeA), wantPut: true, wantTTL: 300 * time.Second},
		{name: "CNAME chain", q: query("alias.example.com.", dns.TypeAAAA), wantPut: true, wantTTL: 120 * time.Second},
		{name: "NXDOMAIN", q: query("nx.example.com.", dns.TypeA), wantPut: true, wantTTL: 60 * time.Second},
		{name: "sinkhole", q: query("blocked.example.com.", dns.TypeA)},
		{name: "DO bit", q: query("short.example.com.", dns.TypeA).SetEdns0(1232, true)},
		{name: "CD bit", q: func() *dns.Msg { m := query("short.example.com.", dns.TypeAAAA); m.CheckingDisabled = true; return m }()},
		{name: "not cached (SERVFAIL)", q: query("fail.example.com.", dns.TypeA)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ask(t, r.addr, "udp", tc.q)
			name := strings.ToLower(tc.q.Question[0].Name)
			m, ttl := kc.put(name, tc.q.Question[0].Qtype)
			if (m != nil) != tc.wantPut {
				t.Fatalf("kernel put: %v, want %v", m != nil, tc.wantPut)
			}
			if m == nil {
				return
			}
			if ttl != tc.wantTTL {
				t.Errorf("ttl %s, want %s", ttl, tc.wantTTL)
			}
			if m.Id != 0 || m.RecursionDesired || !m.Response || !m.RecursionAvailable || m.IsEdns0() != nil {
				t.Errorf("wire is not the bare cached answer: %s", m)
			}
		})
	}

	// CacheSize 4 (www A, alias AAAA, nx A, blocked A, short A DO ...):
	// the LRU evicted the first ones; each served one left the kernel too.
	del := kc.deleted()
	for _, want := range []string{"www.example.com. A", "alias.example.com. AAAA"} {
		if !slices.Contains(del, want) {
			t.Errorf("evicted %q not deleted from the kernel cache; deletes %q", want, del)
		}
	}
	for _, d := range del {
		if strings.HasPrefix(d, "blocked.") || strings.HasPrefix(d, "short.") {
			t.Errorf("deleted %q, which was never put", d)
		}
	}

	// An expired answer found by a lookup leaves the kernel cache too.
	ask(t, r.addr, "udp", query("nx.example.com.", dns.TypeA)) // still cached
	clock.Advance(61 * time.Second)
	ask(t, r.addr, "udp", query("NX.example.com.", dns.TypeA))
	if n := strings.Count(strings.Join(kc.deleted(), ","), "nx.example.com. A"); n != 1 {
		t.Errorf("nx.example.com deleted %d times, want 1: %q", n, kc.deleted())
	}
	if m, _ := kc.put("nx.example.com.", dns.TypeA); m == nil {
		t.Error("refreshed answer not put again")
	}
}

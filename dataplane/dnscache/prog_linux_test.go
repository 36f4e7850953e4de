package dnscache

import (
	"context"
	"encoding/binary"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/miekg/dns"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

// skbCtx is the start of struct __sk_buff padded past the kernel's size:
// BPF_PROG_TEST_RUN takes mark in.
type skbCtx struct {
	Len     uint32
	PktType uint32
	Mark    uint32
	_       [253]uint32
}

// tcxRedirect is TCX_REDIRECT (TC_ACT_REDIRECT), what bpf_redirect returns.
const (
	tcxNext     = ^uint32(0) // TCX_NEXT, -1
	tcxRedirect = 7
)

var (
	client4 = netip.MustParseAddr("10.10.0.10")
	server4 = netip.MustParseAddr("192.0.2.53")
	client6 = netip.MustParseAddr("fd00:10::10")
	server6 = netip.MustParseAddr("2001:db8:2::53")
)

// loadTestCache loads the program without attaching it and closes it when
// the test ends.
func loadTestCache(tb testing.TB, opts Options) *Cache {
	tb.Helper()
	privtest.RequireRoot(tb)
	c, err := Load(context.Background(), opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := c.Close(); err != nil {
			tb.Error(err)
		}
	})
	return c
}

// runFrame runs frame through the program with skb mark mark and returns
// the verdict and the packet as the program left it.
func runFrame(tb testing.TB, c *Cache, frame []byte, mark uint32) (uint32, []byte) {
	tb.Helper()
	out := make([]byte, len(frame)+DataMax+256)
	ret, err := c.Program().Run(&ebpf.RunOptions{Data: frame, DataOut: out, Context: skbCtx{Mark: mark}})
	if err != nil {
		tb.Fatalf("run program on %d-byte frame: %v", len(frame), err)
	}
	return ret, out
}

// tryFrame is runFrame returning the error (BPF_PROG_TEST_RUN refuses some
// short frames).
func tryFrame(c *Cache, frame []byte) (uint32, []byte, error) {
	out := make([]byte, len(frame)+DataMax+256)
	ret, err := c.Program().Run(&ebpf.RunOptions{Data: frame, DataOut: out})
	if err != nil {
		return 0, nil, err
	}
	return ret, out, nil
}

// cachedWire is an answer packed the way the Go resolver caches it: for
// the lowercase question, ID 0, RD clear, RA set, compressed.
func cachedWire(tb testing.TB, name string, qtype uint16, rcode int, answer, ns []string) []byte {
	tb.Helper()
	m := new(dns.Msg)
	m.Response = true
	m.RecursionAvailable = true
	m.Rcode = rcode
	m.Question = []dns.Question{{Name: strings.ToLower(dns.Fqdn(name)), Qtype: qtype, Qclass: dns.ClassINET}}
	for _, s := range answer {
		m.Answer = append(m.Answer, mustRR(tb, s))
	}
	for _, s := range ns {
		m.Ns = append(m.Ns, mustRR(tb, s))
	}
	m.Compress = true
	b, err := m.Pack()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func mustRR(tb testing.TB, s string) dns.RR {
	tb.Helper()
	rr, err := dns.NewRR(s)
	if err != nil {
		tb.Fatal(err)
	}
	return rr
}

// query packs a client query: name as given (case kept), RD set, an
// OPT record when udpSize > 0.
func query(tb testing.TB, id uint16, name string, qtype uint16, udpSize uint16, do bool) []byte {
	tb.Helper()
	m := new(dns.Msg)
	m.Id = id
	m.RecursionDesired = true
	m.Question = []dns.Question{{Name: dns.Fqdn(name), Qtype: qtype, Qclass: dns.ClassINET}}
	if udpSize > 0 {
		m.SetEdns0(udpSize, do)
	}
	b, err := m.Pack()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// trimmed cuts the program's output to the frame it holds (DataOut is
// sized generously; the frame's own lengths say where it ends).
func trimmed(out []byte) []byte {
	switch binary.BigEndian.Uint16(out[12:]) {
	case 0x0800:
		return out[:14+int(binary.BigEndian.Uint16(out[16:]))]
	case 0x86dd:
		return out[:14+40+int(binary.BigEndian.Uint16(out[18:]))]
	}
	return out
}

func TestProgramAnswers(t *testing.T) {
	c := loadTestCache(t, Options{})
	mustPut(t, c, cachedWire(t, "www.example.com", dns.TypeA, dns.RcodeSuccess,
		[]string{"www.example.com. 300 IN CNAME edge.example.net.", "edge.example.net. 60 IN A 203.0.113.10", "edge.example.net. 60 IN A 203.0.113.11"}, nil), time.Minute)
	mustPut(t, c, cachedWire(t, "www.example.com", dns.TypeAAAA, dns.RcodeSuccess,
		[]string{"www.example.com. 300 IN AAAA 2001:db8:113::10"}, nil), time.Minute)
	mustPut(t, c, cachedWire(t, "nope.example.com", dns.TypeA, dns.RcodeNameError, nil,
		[]string{"example.com. 30 IN SOA ns.example.com. admin.example.com. 1 2 3 4 30"}), 30*time.Second)
	// 28 records of 16 bytes after a 105-byte name: over 512 bytes in
	// all, though the records alone fit the map value.
	bigName := strings.Repeat("b", 60) + "." + strings.Repeat("c", 30) + ".example.com."
	var big []string
	for i := range 28 {
		big = append(big, bigName+" 60 IN A 198.51.100."+strconv.Itoa(i))
	}
	mustPut(t, c, cachedWire(t, bigName, dns.TypeA, dns.RcodeSuccess, big, nil), time.Minute)

	tests := []struct {
		name       string
		client     netip.Addr
		server     netip.Addr
		qname      string
		qtype      uint16
		udpSize    uint16
		do         bool
		noCsum     bool
		wantRet    uint32
		wantRcode  int
		wantAnswer int
		wantOPT    bool
	}{
		{name: "v4 A CNAME chain", client: client4, server: server4, qname: "www.example.com", qtype: dns.TypeA, wantRet: tcxRedirect, wantAnswer: 3},
		{name: "v4 0x20 case", client: client4, server: server4, qname: "wWw.ExAmPlE.cOm", qtype: dns.TypeA, wantRet: tcxRedirect, wantAnswer: 3},
		{name: "v4 no UDP checksum", client: client4, server: server4, qname: "www.example.com", qtype: dns.TypeA, noCsum: true, wantRet: tcxRedirect, wantAnswer: 3},
		{name: "v4 EDNS", client: client4, server: server4, qname: "WWW.example.com", qtype: dns.TypeA, udpSize: 1232, wantRet: tcxRedirect, wantAnswer: 3, wantOPT: true},
		{name: "v6 AAAA", client: client6, server: server6, qname: "www.example.com", qtype: dns.TypeAAAA, wantRet: tcxRedirect, wantAnswer: 1},
		{name: "v6 EDNS odd name", client: client6, server: server6, qname: "Www.Example.Com", qtype: dns.TypeA, udpSize: 4096, wantRet: tcxRedirect, wantAnswer: 3, wantOPT: true},
		{name: "v4 NXDOMAIN", client: client4, server: server4, qname: "nope.example.com", qtype: dns.TypeA, wantRet: tcxRedirect, wantRcode: dns.RcodeNameError},
		{name: "v6 NXDOMAIN EDNS", client: client6, server: server6, qname: "NOPE.example.com", qtype: dns.TypeA, udpSize: 1232, wantRet: tcxRedirect, wantRcode: dns.RcodeNameError, wantOPT: true},
		{name: "uncached qtype", client: client4, server: server4, qname: "www.example.com", qtype: dns.TypeMX, wantRet: tcxNext},
		{name: "uncached name", client: client6, server: server6, qname: "other.example.com", qtype: dns.TypeA, wantRet: tcxNext},
		{name: "DO bit", client: client4, server: server4, qname: "www.example.com", qtype: dns.TypeA, udpSize: 1232, do: true, wantRet: tcxNext},
		{name: "too big without EDNS", client: client4, server: server4, qname: bigName, qtype: dns.TypeA, wantRet: tcxNext},
		{name: "big with EDNS", client: client6, server: server6, qname: strings.ToUpper(bigName), qtype: dns.TypeA, udpSize: 1232, wantRet: tcxRedirect, wantAnswer: 28, wantOPT: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg := query(t, 0xbeef, tc.qname, tc.qtype, tc.udpSize, tc.do)
			in := frame(tc.client, tc.server, msg, tc.noCsum)
			ret, out := runFrame(t, c, in, 0)
			if ret != tc.wantRet {
				t.Fatalf("verdict %d, want %d", int32(ret), int32(tc.wantRet))
			}
			if ret != tcxRedirect {
				if string(out[:len(in)]) != string(in) {
					t.Fatal("packet changed although it fell through")
				}
				return
			}
			r, err := checkResponse(in, trimmed(out))
			if err != nil {
				t.Fatal(err)
			}
			if r.msg.Rcode != tc.wantRcode || len(r.msg.Answer) != tc.wantAnswer || (r.msg.IsEdns0() != nil) != tc.wantOPT {
				t.Fatalf("got rcode %d, %d answers, OPT %v:\n%s", r.msg.Rcode, len(r.msg.Answer), r.msg.IsEdns0() != nil, r.msg)
			}
			if !r.msg.RecursionAvailable || r.msg.Authoritative || r.msg.Truncated {
				t.Errorf("flags wrong: %s", r.msg)
			}
			if tc.wantRcode == dns.RcodeNameError && (len(r.msg.Ns) != 1 || r.msg.Ns[0].Header().Rrtype != dns.TypeSOA) {
				t.Errorf("negative answer without SOA: %s", r.msg)
			}
			if opt := r.msg.IsEdns0(); opt != nil && (opt.UDPSize() != ednsUDPSize || opt.Do()) {
				t.Errorf("OPT %s", opt)
			}
		})
	}
}

func TestProgramOtherHost(t *testing.T) {
	c := loadTestCache(t, Options{})
	mustPut(t, c, cachedWire(t, "www.example.com", dns.TypeA, 0, []string{"www.example.com. 60 IN A 203.0.113.10"}, nil), time.Minute)
	in := frame(client4, server4, query(t, 1, "www.example.com", dns.TypeA, 0, false), false)
	if ret, _ := runFrame(t, c, in, 0); ret != tcxRedirect {
		t.Fatalf("frame to this host: verdict %d, want redirect", int32(ret))
	}
	copy(in[0:6], otherMAC) // seen only because the interface is promiscuous
	if ret, _ := runFrame(t, c, in, 0); ret != tcxNext {
		t.Fatalf("frame to another host: verdict %d, want TCX_NEXT", int32(ret))
	}
}

func TestProgramMark(t *testing.T) {
	const mark = 0x0c570004
	c := loadTestCache(t, Options{Mark: mark})
	mustPut(t, c, cachedWire(t, "www.example.com", dns.TypeA, 0, []string{"www.example.com. 60 IN A 203.0.113.10"}, nil), time.Minute)
	in := frame(client4, server4, query(t, 1, "www.example.com", dns.TypeA, 0, false), false)
	if ret, _ := runFrame(t, c, in, 0); ret != tcxNext {
		t.Fatalf("unmarked packet: verdict %d, want TCX_NEXT", int32(ret))
	}
	if ret, _ := runFrame(t, c, in, mark); ret != tcxRedirect {
		t.Fatalf("marked packet: verdict %d, want redirect", int32(ret))
	}
	s := mustStats(t, c)
	if s.Unmarked != 1 || s.Hits != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestProgramExpiryAndStats(t *testing.T) {
	c := loadTestCache(t, Options{})
	mustPut(t, c, cachedWire(t, "short.example.com", dns.TypeA, 0, []string{"short.example.com. 1 IN A 203.0.113.10"}, nil), 300*time.Millisecond)
	in := frame(client4, server4, query(t, 7, "short.example.com", dns.TypeA, 0, false), false)
	if ret, _ := runFrame(t, c, in, 0); ret != tcxRedirect {
		t.Fatalf("fresh entry: verdict %d", int32(ret))
	}
	time.Sleep(400 * time.Millisecond)
	if ret, _ := runFrame(t, c, in, 0); ret != tcxNext {
		t.Fatalf("expired entry: verdict %d, want TCX_NEXT", int32(ret))
	}
	miss := frame(client6, server6, query(t, 8, "nothing.example", dns.TypeA, 0, false), false)
	runFrame(t, c, miss, 0)
	long := frame(client4, server4, query(t, 9, strings.Repeat("a", 63)+"."+strings.Repeat("b", 63)+".example", dns.TypeA, 0, false), false)
	runFrame(t, c, long, 0)
	s := mustStats(t, c)
	want := Stats{Hits: 1, Expired: 1, Misses: 1, Name: 1, Entries: 1, HitRcodes: [16]uint64{dns.RcodeSuccess: 1}}
	if s != want {
		t.Fatalf("stats %+v, want %+v", s, want)
	}
}

func TestTTLDecay(t *testing.T) {
	c := loadTestCache(t, Options{Refresh: 50 * time.Millisecond})
	before := time.Now()
	mustPut(t, c, cachedWire(t, "decay.example.com", dns.TypeA, 0, []string{"decay.example.com. 100 IN A 203.0.113.10"}, nil), 100*time.Second)
	after := time.Now()
	in := frame(client4, server4, query(t, 7, "decay.example.com", dns.TypeA, 0, false), false)
	// The Go resolver gives 100 minus the whole seconds since it stored
	// the answer (between before and after). Whenever the program
	// answers, its TTL is that or one less; when the refresher is late it
	// does not answer at all.
	var seen []uint32
	for time.Since(before) < 2500*time.Millisecond {
		t0 := time.Now()
		ret, out := runFrame(t, c, in, 0)
		t1 := time.Now()
		time.Sleep(20 * time.Millisecond)
		if ret != tcxRedirect {
			continue
		}
		r, err := checkResponse(in, trimmed(out))
		if err != nil {
			t.Fatal(err)
		}
		ttl := r.msg.Answer[0].Header().Ttl
		if most := 100 - uint32(t0.Sub(after)/time.Second); ttl > most {
			t.Fatalf("TTL %d above the Go resolver's %d", ttl, most)
		}
		if least := 100 - uint32(t1.Sub(before)/time.Second) - 1; ttl < least {
			t.Fatalf("TTL %d more than a second below the Go resolver's %d", ttl, least+1)
		}
		if len(seen) == 0 || seen[len(seen)-1] != ttl {
			seen = append(seen, ttl)
		}
	}
	if len(seen) < 2 {
		t.Fatalf("TTLs seen %v: did not decay", seen)
	}
}

func TestStatsReasonsMatchProgram(t *testing.T) {
	if reasonCount != int(dnscacheReasonREASON_MAX) {
		t.Fatalf("reasonCount %d, program has %d", reasonCount, dnscacheReasonREASON_MAX)
	}
}

func mustPut(tb testing.TB, c *Cache, wire []byte, ttl time.Duration) {
	tb.Helper()
	if err := c.Put(wire, ttl); err != nil {
		tb.Fatal(err)
	}
}

func mustStats(tb testing.TB, c *Cache) Stats {
	tb.Helper()
	s, err := c.Stats()
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

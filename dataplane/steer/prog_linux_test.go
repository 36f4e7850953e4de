package steer

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cloudsteer/cloudsteer/internal/privtest"
	"golang.org/x/sys/unix"
)

// tcxNext is TCX_NEXT (-1) as prog.Run reports it.
const tcxNext = ^uint32(0)

// skbMarkSentinel is the mark a test packet carries in, so a verdict that
// must leave the mark alone is seen doing so.
const skbMarkSentinel = 0x00005a5a

// skbCtx is the start of struct __sk_buff (linux/bpf.h) padded to more
// than the kernel's size: BPF_PROG_TEST_RUN takes mark in and gives it back.
type skbCtx struct {
	Len     uint32
	PktType uint32
	Mark    uint32
	_       [253]uint32
}

// loadTestSteer loads the classifier without attaching it and closes it when
// the test ends.
func loadTestSteer(tb testing.TB) *Steer {
	tb.Helper()
	privtest.RequireRoot(tb)
	s, err := Load(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Error(err)
		}
	})
	return s
}

// runFrame runs frame through the classifier and returns its return value
// and the skb mark it left.
func runFrame(tb testing.TB, s *Steer, frame []byte) (ret, mark uint32) {
	tb.Helper()
	ret, mark, err := tryFrame(s, frame)
	if err != nil {
		tb.Fatalf("run classifier on %d-byte frame: %v", len(frame), err)
	}
	return ret, mark
}

// tryFrame is runFrame returning the error. BPF_PROG_TEST_RUN refuses
// (EINVAL) frames shorter than an Ethernet header and frames whose
// EtherType is IPv4 or IPv6 but that hold less than a whole IP header; a
// VLAN tag hides the EtherType from that check.
func tryFrame(s *Steer, frame []byte) (ret, mark uint32, err error) {
	in := skbCtx{Mark: skbMarkSentinel}
	var out skbCtx
	ret, err = s.Program().Run(&ebpf.RunOptions{Data: frame, Context: in, ContextOut: &out})
	return ret, out.Mark, err
}

// forgetFlows empties the untracked-flow memory, so a frame's mark does
// not depend on the frames before it.
func forgetFlows(tb testing.TB, s *Steer) {
	tb.Helper()
	var k steerFlowKey
	var keys []steerFlowKey
	var v uint32
	it := s.objs.UntrackedFlows.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, k)
	}
	if err := it.Err(); err != nil {
		tb.Fatal(err)
	}
	for _, k := range keys {
		if err := s.objs.UntrackedFlows.Delete(k); err != nil {
			tb.Fatal(err)
		}
	}
}

func counters(tb testing.TB, s *Steer) map[Verdict]Counter {
	tb.Helper()
	c, err := s.Counters()
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

var testBypass = []netip.Prefix{
	netip.MustParsePrefix("203.0.113.40/32"),
	netip.MustParsePrefix("198.18.0.0/16"),
	netip.MustParsePrefix("2001:db8:113::40/128"),
	netip.MustParsePrefix("2001:db8:beef::/48"),
	netip.MustParsePrefix("::ffff:192.0.2.0/120"), // stored as 192.0.2.0/24
}

func TestClassifier(t *testing.T) {
	s := loadTestSteer(t)
	for _, p := range testBypass {
		if err := s.AddBypass(p); err != nil {
			t.Fatal(err)
		}
	}

	const v4, v6 = "203.0.113.10", "2001:db8:113::10"
	tests := []struct {
		name   string
		frame  []byte
		paused bool
		want   Verdict
	}{
		{"v4 tcp 80", pkt{dst: v4, proto: protoTCP, dport: 80}.bytes(), false, VerdictHTTP},
		{"v4 tcp 443", pkt{dst: v4, proto: protoTCP, dport: 443}.bytes(), false, VerdictTLS},
		{"v4 tcp 53", pkt{dst: v4, proto: protoTCP, dport: 53}.bytes(), false, VerdictDNS},
		{"v4 tcp 22", pkt{dst: v4, proto: protoTCP, dport: 22}.bytes(), false, VerdictOther},
		{"v4 udp 53", pkt{dst: v4, proto: protoUDP, dport: 53}.bytes(), false, VerdictDNS},
		{"v4 udp 443", pkt{dst: v4, proto: protoUDP, dport: 443}.bytes(), false, VerdictQUICReject},
		{"v4 udp 123", pkt{dst: v4, proto: protoUDP, dport: 123}.bytes(), false, VerdictOther},
		{"v4 tcp 853", pkt{dst: v4, proto: protoTCP, dport: 853}.bytes(), false, VerdictDoTReject},
		{"v4 udp 853", pkt{dst: v4, proto: protoUDP, dport: 853}.bytes(), false, VerdictDoTReject},
		{"v4 tcp 854", pkt{dst: v4, proto: protoTCP, dport: 854}.bytes(), false, VerdictOther},
		{"v4 udp 80", pkt{dst: v4, proto: protoUDP, dport: 80}.bytes(), false, VerdictOther},
		{"v4 icmp", pkt{dst: v4, proto: protoICMP}.bytes(), false, VerdictOther},
		{"v4 options ihl 6", pkt{dst: v4, proto: protoTCP, dport: 443, ihl: 6}.bytes(), false, VerdictTLS},
		{"v4 options ihl 15", pkt{dst: v4, proto: protoUDP, dport: 53, ihl: 15}.bytes(), false, VerdictDNS},
		{"v4 ihl 4 invalid", pkt{dst: v4, proto: protoTCP, dport: 80, ihl: 4}.bytes(), false, VerdictOther},
		{"v4 802.1Q tag", pkt{dst: v4, proto: protoTCP, dport: 80, vlan: true}.bytes(), false, VerdictHTTP},
		{"v4 first fragment", pkt{dst: v4, proto: protoUDP, dport: 53, moreFr: true}.bytes(), false, VerdictDNS},
		{"v4 later fragment", pkt{dst: v4, proto: protoUDP, dport: 53, fragOff: 185}.bytes(), false, VerdictOther},

		{"v6 tcp 80", pkt{dst: v6, proto: protoTCP, dport: 80}.bytes(), false, VerdictHTTP},
		{"v6 tcp 443", pkt{dst: v6, proto: protoTCP, dport: 443}.bytes(), false, VerdictTLS},
		{"v6 tcp 53", pkt{dst: v6, proto: protoTCP, dport: 53}.bytes(), false, VerdictDNS},
		{"v6 tcp 22", pkt{dst: v6, proto: protoTCP, dport: 22}.bytes(), false, VerdictOther},
		{"v6 udp 53", pkt{dst: v6, proto: protoUDP, dport: 53}.bytes(), false, VerdictDNS},
		{"v6 udp 443", pkt{dst: v6, proto: protoUDP, dport: 443}.bytes(), false, VerdictQUICReject},
		{"v6 udp 123", pkt{dst: v6, proto: protoUDP, dport: 123}.bytes(), false, VerdictOther},
		{"v6 tcp 853", pkt{dst: v6, proto: protoTCP, dport: 853}.bytes(), false, VerdictDoTReject},
		{"v6 udp 853", pkt{dst: v6, proto: protoUDP, dport: 853}.bytes(), false, VerdictDoTReject},
		{"v6 802.1Q tag", pkt{dst: v6, proto: protoUDP, dport: 443, vlan: true}.bytes(), false, VerdictQUICReject},
		{"v6 hop-by-hop", pkt{dst: v6, proto: protoTCP, dport: 443, ext: []uint8{protoHopOpts}}.bytes(), false, VerdictTLS},
		{"v6 hop routing dstopts", pkt{dst: v6, proto: protoTCP, dport: 80, ext: []uint8{protoHopOpts, protoRouting, protoDstOpts}}.bytes(), false, VerdictHTTP},
		{"v6 first fragment", pkt{dst: v6, proto: protoUDP, dport: 53, moreFr: true}.bytes(), false, VerdictDNS},
		{"v6 later fragment", pkt{dst: v6, proto: protoUDP, dport: 53, fragOff: 100}.bytes(), false, VerdictOther},
		{"v6 six ext headers", pkt{dst: v6, proto: protoTCP, dport: 443, ext: []uint8{0, 60, 43, 60, 60, 60}}.bytes(), false, VerdictTLS},
		{"v6 seven ext headers", pkt{dst: v6, proto: protoTCP, dport: 443, ext: []uint8{0, 60, 43, 60, 60, 60, 60}}.bytes(), false, VerdictOther},

		{"truncated v4 tcp ports", pkt{dst: v4, proto: protoTCP, dport: 80, cut: 18}.bytes(), false, VerdictOther},
		{"truncated v4 options", pkt{dst: v4, proto: protoUDP, dport: 53, ihl: 15, cut: 40 + 8 + 4}.bytes(), false, VerdictOther},
		{"truncated v4 header behind 802.1Q", pkt{dst: v4, proto: protoUDP, dport: 53, vlan: true, cut: 8 + 4 + 10}.bytes(), false, VerdictOther},
		{"truncated v6 header behind 802.1Q", pkt{dst: v6, proto: protoUDP, dport: 53, vlan: true, cut: 8 + 4 + 1}.bytes(), false, VerdictOther},
		{"truncated v6 ext header", pkt{dst: v6, proto: protoTCP, dport: 443, ext: []uint8{protoHopOpts}, cut: 20 + 8}.bytes(), false, VerdictOther},
		{"truncated 802.1Q tag", append(ethernet(etherVLAN, false), 0, 42), false, VerdictOther},
		{"ethernet header only", ethernet(0x88b5, false), false, VerdictOther},
		{"arp", arpRequest(), false, VerdictOther},

		{"bypass v4 /32 hit", pkt{dst: "203.0.113.40", proto: protoTCP, dport: 443}.bytes(), false, VerdictBypass},
		{"bypass v4 /32 miss", pkt{dst: "203.0.113.41", proto: protoTCP, dport: 443}.bytes(), false, VerdictTLS},
		{"bypass v4 /16 hit", pkt{dst: "198.18.200.1", proto: protoUDP, dport: 53}.bytes(), false, VerdictBypass},
		{"bypass v4 /16 miss", pkt{dst: "198.19.0.1", proto: protoUDP, dport: 53}.bytes(), false, VerdictDNS},
		{"bypass v4 from mapped v6 prefix", pkt{dst: "192.0.2.7", proto: protoUDP, dport: 443}.bytes(), false, VerdictBypass},
		{"bypass v6 /128 hit", pkt{dst: "2001:db8:113::40", proto: protoTCP, dport: 80}.bytes(), false, VerdictBypass},
		{"bypass v6 /128 miss", pkt{dst: "2001:db8:113::41", proto: protoTCP, dport: 80}.bytes(), false, VerdictHTTP},
		{"bypass v6 /48 hit", pkt{dst: "2001:db8:beef:1::1", proto: protoUDP, dport: 443}.bytes(), false, VerdictBypass},
		{"bypass v6 /48 miss", pkt{dst: "2001:db8:bef0::1", proto: protoUDP, dport: 443}.bytes(), false, VerdictQUICReject},
		{"bypass v4 /32 dot", pkt{dst: "203.0.113.40", proto: protoTCP, dport: 853}.bytes(), false, VerdictBypass},
		{"bypass v6 /48 dot", pkt{dst: "2001:db8:beef:1::1", proto: protoTCP, dport: 853}.bytes(), false, VerdictBypass},
		{"bypass ignores other traffic", pkt{dst: "203.0.113.40", proto: protoTCP, dport: 22}.bytes(), false, VerdictOther},

		{"paused v4 tcp 80", pkt{dst: v4, proto: protoTCP, dport: 80}.bytes(), true, VerdictPaused},
		{"paused v6 udp 443", pkt{dst: v6, proto: protoUDP, dport: 443}.bytes(), true, VerdictPaused},
		{"paused v6 udp 53 stays dns", pkt{dst: v6, proto: protoUDP, dport: 53}.bytes(), true, VerdictDNS},
		{"paused bypass wins", pkt{dst: "203.0.113.40", proto: protoTCP, dport: 443}.bytes(), true, VerdictBypass},
		{"paused other", pkt{dst: v4, proto: protoTCP, dport: 22}.bytes(), true, VerdictOther},
		{"paused v4 tcp 853 stays rejected", pkt{dst: v4, proto: protoTCP, dport: 853}.bytes(), true, VerdictDoTReject},
		{"paused bypass dot", pkt{dst: "203.0.113.40", proto: protoTCP, dport: 853}.bytes(), true, VerdictBypass},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.SetPaused(tc.paused); err != nil {
				t.Fatal(err)
			}
			m := model{bypass: testBypass, paused: tc.paused}
			if got := m.verdict(tc.frame); got != tc.want {
				t.Fatalf("test model says %s, case wants %s", got, tc.want)
			}
			forgetFlows(t, s)
			before := counters(t, s)
			ret, mark := runFrame(t, s, tc.frame)
			after := counters(t, s)

			if ret != tcxNext {
				t.Errorf("return %#x, want TCX_NEXT %#x", ret, tcxNext)
			}
			if wantMark := m.mark(tc.frame); mark != wantMark {
				t.Errorf("skb mark %#08x, want %#08x (%s)", mark, wantMark, tc.want)
			}
			for _, v := range Verdicts() {
				want := before[v]
				if v == tc.want {
					want.Packets++
					want.Bytes += uint64(len(tc.frame))
				}
				if after[v] != want {
					t.Errorf("counter %s: %+v, want %+v", v, after[v], want)
				}
			}
		})
	}
}

// TestFlowMemory checks that a web TCP flow keeps the treatment it started
// with: untracked when its SYN was bypassed or paused, tracked (its
// verdict's mark) when its SYN was steered, whatever happens later.
func TestFlowMemory(t *testing.T) {
	s := loadTestSteer(t)
	const tcpACK, tcpSYNACK = 0x10, 0x12
	bypass := func(p string) {
		t.Helper()
		if err := s.AddBypass(netip.MustParsePrefix(p)); err != nil {
			t.Fatal(err)
		}
	}
	unbypass := func(p string) {
		t.Helper()
		if err := s.DeleteBypass(netip.MustParsePrefix(p)); err != nil {
			t.Fatal(err)
		}
	}
	pause := func(on bool) {
		t.Helper()
		if err := s.SetPaused(on); err != nil {
			t.Fatal(err)
		}
	}
	type step struct {
		what    string
		do      func()
		frame   []byte
		mark    uint32
		counted Verdict
	}
	for _, fam := range []struct{ name, dst, prefix string }{
		{"v4", "203.0.113.40", "203.0.113.40/32"},
		{"v6", "2001:db8:113::40", "2001:db8:113::40/128"},
	} {
		syn := pkt{dst: fam.dst, proto: protoTCP, dport: 443}.bytes()
		ack := pkt{dst: fam.dst, proto: protoTCP, dport: 443, flags: tcpACK}.bytes()
		synack := pkt{dst: fam.dst, proto: protoTCP, dport: 443, flags: tcpSYNACK}.bytes()
		http := pkt{dst: fam.dst, proto: protoTCP, dport: 80, flags: tcpACK}.bytes()
		quic := pkt{dst: fam.dst, proto: protoUDP, dport: 443}.bytes()
		steps := []step{
			{"unknown flow, not bypassed", nil, ack, MarkTLS, VerdictTLS},
			{"bypassed SYN starts an untracked flow", func() { bypass(fam.prefix) }, syn, MarkUntrack, VerdictBypass},
			{"its next packet", nil, ack, MarkUntrack, VerdictBypass},
			{"a SYN-ACK is not a start", nil, synack, MarkUntrack, VerdictBypass},
			{"other port, same hosts: not that flow", nil, http, MarkBypass, VerdictBypass},
			{"udp is never untracked", nil, quic, MarkBypass, VerdictBypass},
			{"still untracked once the bypass ends", func() { unbypass(fam.prefix) }, ack, MarkUntrack, VerdictBypass},
			{"the tuple reused by a steered SYN", nil, syn, MarkTLS, VerdictTLS},
			{"that flow is tracked", nil, ack, MarkTLS, VerdictTLS},
			{"and stays tracked when bypassed later", func() { bypass(fam.prefix) }, ack, MarkBypass, VerdictBypass},
			{"paused SYN starts an untracked flow", func() { unbypass(fam.prefix); pause(true) }, syn, MarkUntrack, VerdictPaused},
			{"still untracked after resume", func() { pause(false) }, ack, MarkUntrack, VerdictPaused},
		}
		t.Run(fam.name, func(t *testing.T) {
			forgetFlows(t, s)
			for _, st := range steps {
				if st.do != nil {
					st.do()
				}
				before := counters(t, s)[st.counted]
				_, mark := runFrame(t, s, st.frame)
				if mark != st.mark {
					t.Errorf("%s: mark %#08x, want %#08x", st.what, mark, st.mark)
				}
				if got := counters(t, s)[st.counted].Packets - before.Packets; got != 1 {
					t.Errorf("%s: counter %s moved by %d, want 1", st.what, st.counted, got)
				}
			}
		})
	}
}

// TestMarksMatchDesign pins the marks and counter indexes to the table in
// docs/design.md, which nftables rules elsewhere rely on.
func TestMarksMatchDesign(t *testing.T) {
	tests := []struct {
		v     Verdict
		name  string
		index uint32
		mark  uint32
	}{
		{VerdictOther, "other", 0, 0},
		{VerdictBypass, "bypass", 1, 0x0c570001},
		{VerdictHTTP, "http", 2, 0x0c570002},
		{VerdictTLS, "tls", 3, 0x0c570003},
		{VerdictDNS, "dns", 4, 0x0c570004},
		{VerdictQUICReject, "quic_reject", 5, 0x0c570005},
		{VerdictPaused, "paused", 6, 0},
		{VerdictDoTReject, "dot_reject", 7, 0x0c570007},
	}
	if len(tests) != len(Verdicts()) {
		t.Fatalf("%d verdicts, design has %d", len(Verdicts()), len(tests))
	}
	if MarkUntrack != 0x0c570006 {
		t.Errorf("MarkUntrack = %#08x, design has 0x0c570006", MarkUntrack)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.v.String() != tc.name {
				t.Errorf("String() = %q", tc.v.String())
			}
			if uint32(tc.v) != tc.index {
				t.Errorf("index %d, want %d", uint32(tc.v), tc.index)
			}
			m, ok := tc.v.Mark()
			if ok != (tc.mark != 0) || m != tc.mark {
				t.Errorf("Mark() = %#x, %v; want %#x", m, ok, tc.mark)
			}
		})
	}
}

func FuzzClassifier(f *testing.F) {
	s := loadTestSteer(f)
	for _, p := range testBypass {
		if err := s.AddBypass(p); err != nil {
			f.Fatal(err)
		}
	}
	seeds := []pkt{
		{dst: "203.0.113.10", proto: protoTCP, dport: 80},
		{dst: "203.0.113.40", proto: protoTCP, dport: 443},
		{dst: "203.0.113.10", proto: protoUDP, dport: 53, ihl: 7, vlan: true},
		{dst: "203.0.113.10", proto: protoUDP, dport: 53, fragOff: 3},
		{dst: "2001:db8:113::10", proto: protoUDP, dport: 443, ext: []uint8{0, 43}},
		{dst: "2001:db8:beef::1", proto: protoTCP, dport: 53, moreFr: true},
		{dst: "2001:db8:113::10", proto: protoTCP, dport: 80, ext: []uint8{0, 60, 43, 60, 60, 60}},
	}
	for _, p := range seeds {
		f.Add(p.bytes(), false)
		f.Add(p.bytes(), true)
	}
	f.Add(arpRequest(), false)
	f.Fuzz(func(t *testing.T, frame []byte, paused bool) {
		// BPF_PROG_TEST_RUN needs a frame that fits one page.
		if len(frame) > 2048 {
			return
		}
		if err := s.SetPaused(paused); err != nil {
			t.Fatal(err)
		}
		m := model{bypass: testBypass, paused: paused}
		want := m.verdict(frame)
		forgetFlows(t, s)
		before := counters(t, s)
		ret, mark, err := tryFrame(s, frame)
		if errors.Is(err, unix.EINVAL) {
			return // the test harness refused the frame; see tryFrame
		}
		if err != nil {
			t.Fatal(err)
		}
		after := counters(t, s)
		if ret != tcxNext {
			t.Errorf("return %#x, want TCX_NEXT", ret)
		}
		if wantMark := m.mark(frame); mark != wantMark {
			t.Errorf("mark %#x, want %#x (model: %s)", mark, wantMark, want)
		}
		if d := after[want].Packets - before[want].Packets; d != 1 {
			t.Errorf("counter %s moved by %d packets, want 1", want, d)
		}
	})
}

// BenchmarkClassifier reports the classifier's cost per packet, measured by
// the kernel (BPF_PROG_TEST_RUN with repeat), for a few packet shapes.
func BenchmarkClassifier(b *testing.B) {
	s := loadTestSteer(b)
	for i := range 1000 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), 32)
		if err := s.AddBypass(p); err != nil {
			b.Fatal(err)
		}
	}
	frames := []struct {
		name  string
		frame []byte
	}{
		{"v4 tcp 443", pkt{dst: "203.0.113.10", proto: protoTCP, dport: 443}.bytes()},
		{"v4 tcp 443 ack, flow started bypassed", pkt{dst: "198.51.1.7", proto: protoTCP, dport: 443, flags: 0x10}.bytes()},
		{"v4 tcp 22", pkt{dst: "203.0.113.10", proto: protoTCP, dport: 22}.bytes()},
		{"v4 bypass", pkt{dst: "198.51.1.7", proto: protoUDP, dport: 53}.bytes()},
		{"v6 3 ext headers", pkt{dst: "2001:db8::1", proto: protoTCP, dport: 80, ext: []uint8{0, 43, 60}}.bytes()},
		{"arp", arpRequest()},
	}
	// The bypassed SYN that puts the flow above in the flow memory.
	runFrame(b, s, pkt{dst: "198.51.1.7", proto: protoTCP, dport: 443}.bytes())
	for _, f := range frames {
		b.Run(f.name, func(b *testing.B) {
			const repeat = 10000
			var total time.Duration
			for b.Loop() {
				_, d, err := s.Program().Benchmark(f.frame, repeat, nil)
				if err != nil {
					b.Fatal(err)
				}
				total += d
			}
			b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "kernel-ns/pkt")
		})
	}
}

package quicgate

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/cloudsteer/cloudsteer/dataplane/nfqueue"
)

// firstFlight returns the datagrams a real quic-go client sends first when
// dialing a silent UDP socket on loopback: n of them, or fewer if the
// client stops.
func firstFlight(t *testing.T, sni string, n int) [][]byte {
	t.Helper()
	ln, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		quic.DialAddr(ctx, ln.LocalAddr().String(), &tls.Config{ServerName: sni, InsecureSkipVerify: sni == "", NextProtos: []string{"h3"}}, &quic.Config{})
	}()
	defer func() { cancel(); <-done }()
	var out [][]byte
	buf := make([]byte, 2048)
	for len(out) < n {
		ln.SetReadDeadline(time.Now().Add(3 * time.Second))
		m, _, err := ln.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", len(out)+1, err)
		}
		out = append(out, slices.Clone(buf[:m]))
	}
	return out
}

func udpHeader(src, dst netip.AddrPort, payload []byte) []byte {
	u := binary.BigEndian.AppendUint16(nil, src.Port())
	u = binary.BigEndian.AppendUint16(u, dst.Port())
	u = binary.BigEndian.AppendUint16(u, uint16(8+len(payload)))
	u = append(u, 0, 0)
	return append(u, payload...)
}

// l3 wraps payload in UDP and IPv4, or IPv6 with a hop-by-hop header.
func l3(src, dst netip.AddrPort, payload []byte) []byte {
	u := udpHeader(src, dst, payload)
	if src.Addr().Is4() {
		h := []byte{0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0}
		binary.BigEndian.PutUint16(h[2:4], uint16(20+len(u)))
		h = append(h, src.Addr().AsSlice()...)
		h = append(h, dst.Addr().AsSlice()...)
		return append(h, u...)
	}
	hbh := []byte{17, 0, 1, 4, 0, 0, 0, 0} // next UDP, 8 bytes, PadN
	h := []byte{0x60, 0, 0, 0, 0, 0, 0, 64}
	binary.BigEndian.PutUint16(h[4:6], uint16(len(hbh)+len(u)))
	h = append(h, src.Addr().AsSlice()...)
	h = append(h, dst.Addr().AsSlice()...)
	h = append(h, hbh...)
	return append(h, u...)
}

type fakeQueue struct {
	mu       sync.Mutex
	verdicts []string // "id:verdict:mark"
}

func (q *fakeQueue) Verdict(id, v uint32, mark *uint32) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	m := "-"
	if mark != nil {
		m = fmt.Sprint(*mark)
	}
	q.verdicts = append(q.verdicts, fmt.Sprintf("%d:%d:%s", id, v, m))
	return nil
}

func (q *fakeQueue) got() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.verdicts)
}

// fakePolicy: bypass names and the addresses the "resolver" holds.
type fakePolicy struct {
	names map[string][]netip.Addr
	asked []string
}

func (p *fakePolicy) BypassName(name string) bool { _, ok := p.names[name]; return ok }

func (p *fakePolicy) BypassTarget(_ context.Context, name string, dst netip.AddrPort) (netip.AddrPort, error) {
	p.asked = append(p.asked, name)
	addrs := p.names[name]
	if len(addrs) == 0 {
		return netip.AddrPort{}, errors.New("no address")
	}
	if slices.Contains(addrs, dst.Addr()) {
		return dst, nil
	}
	return netip.AddrPortFrom(addrs[0], dst.Port()), nil
}

const markOK, markNo = 0x0c570011, 0x0c570012

func repeat(mark uint32, ids ...uint32) []string {
	var out []string
	for _, id := range ids {
		out = append(out, fmt.Sprintf("%d:%d:%d", id, nfqueue.Repeat, mark))
	}
	return out
}

func newGate(t *testing.T, p *fakePolicy, cfg Config) (*Gate, *fakeQueue, *[]Decision) {
	q := &fakeQueue{}
	var mu sync.Mutex
	var ds []Decision
	cfg.Policy, cfg.Queue, cfg.MarkOK, cfg.MarkNo = p, q, markOK, markNo
	cfg.Decided = func(d Decision) { mu.Lock(); ds = append(ds, d); mu.Unlock() }
	g := New(context.Background(), cfg)
	t.Cleanup(g.Wait)
	return g, q, &ds
}

var (
	client4 = netip.MustParseAddrPort("10.10.0.20:50000")
	bank4   = netip.MustParseAddrPort("192.0.2.10:443")
	client6 = netip.MustParseAddrPort("[2001:db8:10::20]:50000")
	bank6   = netip.MustParseAddrPort("[2001:db8:2::10]:443")
)

// TestDecisions feeds real quic-go first flights (a post-quantum hello over
// two Initials) through the gate, IPv4 and IPv6.
func TestDecisions(t *testing.T) {
	bank := firstFlight(t, "bank.example", 2)
	news := firstFlight(t, "news.example", 2)
	policy := func() *fakePolicy {
		return &fakePolicy{names: map[string][]netip.Addr{
			"bank.example":  {bank4.Addr(), bank6.Addr()},
			"gone.example":  nil,
			"other.example": {netip.MustParseAddr("198.51.100.7")},
		}}
	}
	gone := firstFlight(t, "gone.example", 2)
	other := firstFlight(t, "other.example", 2)
	tests := []struct {
		name       string
		flight     [][]byte
		src, dst   netip.AddrPort
		wantAccept bool
		wantReason string
	}{
		{"bypass name to its address", bank, client4, bank4, true, ReasonBypass},
		{"bypass name to its address, ipv6", bank, client6, bank6, true, ReasonBypass},
		{"bypass name to another address", bank, client4, netip.MustParseAddrPort("203.0.113.9:443"), false, ReasonOtherAddress},
		{"inspected name", news, client4, bank4, false, ReasonNotBypass},
		{"inspected name, ipv6", news, client6, bank6, false, ReasonNotBypass},
		{"bypass name without address", gone, client4, bank4, false, ReasonNoAddress},
		{"bypass name, address of another", other, client4, bank4, false, ReasonOtherAddress},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, q, ds := newGate(t, policy(), Config{})
			g.Handle(1, l3(tc.src, tc.dst, tc.flight[0]))
			if len(q.got()) != 0 || g.Pending() != 1 {
				t.Fatalf("after the first Initial: verdicts %v, pending %d", q.got(), g.Pending())
			}
			g.Handle(2, l3(tc.src, tc.dst, tc.flight[1]))
			g.Wait()
			mark := uint32(markNo)
			if tc.wantAccept {
				mark = markOK
			}
			if got, want := q.got(), repeat(mark, 1, 2); !slices.Equal(got, want) {
				t.Fatalf("verdicts %v, want %v", got, want)
			}
			d := (*ds)[0]
			if len(*ds) != 1 || d.Accept != tc.wantAccept || d.Reason != tc.wantReason || d.Client != tc.src || d.Dst != tc.dst || d.Packets != 2 {
				t.Fatalf("decisions %+v", *ds)
			}
			// A straggler queued before the kernel had the verdict.
			g.Handle(3, l3(tc.src, tc.dst, tc.flight[1]))
			if got := q.got(); len(got) != 3 || got[2] != repeat(mark, 3)[0] || g.Pending() != 0 {
				t.Fatalf("straggler: %v, pending %d", got, g.Pending())
			}
		})
	}
}

func TestRejects(t *testing.T) {
	flight := firstFlight(t, "bank.example", 2)
	noSNI := firstFlight(t, "", 2)
	p := &fakePolicy{names: map[string][]netip.Addr{"bank.example": {bank4.Addr()}}}
	t.Run("no sni", func(t *testing.T) {
		g, q, ds := newGate(t, p, Config{})
		g.Handle(1, l3(client4, bank4, noSNI[0]))
		g.Handle(2, l3(client4, bank4, noSNI[1]))
		g.Wait()
		if got := q.got(); !slices.Equal(got, repeat(markNo, 1, 2)) || len(*ds) != 1 || (*ds)[0].Reason != ReasonNoSNI {
			t.Fatalf("%v %+v", got, *ds)
		}
	})
	t.Run("short header", func(t *testing.T) {
		g, q, ds := newGate(t, p, Config{})
		g.Handle(1, l3(client4, bank4, []byte{0x40, 1, 2, 3, 4, 5, 6, 7, 8}))
		if got := q.got(); !slices.Equal(got, repeat(markNo, 1)) || (*ds)[0].Reason != ReasonBadInitial || g.Pending() != 0 {
			t.Fatalf("%v %+v", got, *ds)
		}
	})
	t.Run("not udp", func(t *testing.T) {
		g, q, ds := newGate(t, p, Config{})
		pkt := l3(client4, bank4, flight[0])
		pkt[9] = 6
		g.Handle(1, pkt)
		if got := q.got(); !slices.Equal(got, repeat(markNo, 1)) || (*ds)[0].Reason != ReasonBadInitial {
			t.Fatalf("%v %+v", got, *ds)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		g, q, ds := newGate(t, p, Config{PendingTimeout: time.Second})
		now := time.Unix(1000, 0)
		g.now = func() time.Time { return now }
		g.Handle(1, l3(client4, bank4, flight[0]))
		now = now.Add(999 * time.Millisecond)
		g.Sweep()
		if len(q.got()) != 0 {
			t.Fatalf("swept early: %v", q.got())
		}
		now = now.Add(time.Millisecond)
		g.Sweep()
		if got := q.got(); !slices.Equal(got, repeat(markNo, 1)) || (*ds)[0].Reason != ReasonTimeout || g.Pending() != 0 {
			t.Fatalf("%v %+v", got, *ds)
		}
		// The rest of the hello arrives late: same verdict, no new flow.
		g.Handle(2, l3(client4, bank4, flight[1]))
		if got := q.got(); !slices.Equal(got, repeat(markNo, 1, 2)) || len(*ds) != 1 {
			t.Fatalf("late packet: %v %+v", got, *ds)
		}
	})
	t.Run("overflow", func(t *testing.T) {
		g, q, ds := newGate(t, p, Config{MaxPending: 1})
		g.Handle(1, l3(client4, bank4, flight[0]))
		other := netip.AddrPortFrom(client4.Addr(), 50001)
		g.Handle(2, l3(other, bank4, flight[0]))
		if got := q.got(); !slices.Equal(got, repeat(markNo, 2)) || (*ds)[0].Reason != ReasonOverflow {
			t.Fatalf("%v %+v", got, *ds)
		}
		g.Handle(3, l3(client4, bank4, flight[1]))
		g.Wait()
		if got := q.got(); !slices.Equal(got, append(repeat(markNo, 2), repeat(markOK, 1, 3)...)) {
			t.Fatalf("first flow: %v", got)
		}
	})
}

func TestParseUDP(t *testing.T) {
	for _, tc := range []struct{ src, dst netip.AddrPort }{{client4, bank4}, {client6, bank6}} {
		src, dst, payload, err := parseUDP(l3(tc.src, tc.dst, []byte("quic")))
		if err != nil || src != tc.src || dst != tc.dst || string(payload) != "quic" {
			t.Fatalf("%v %v %q %v", src, dst, payload, err)
		}
	}
	frag := l3(client4, bank4, []byte("x"))
	frag[7] = 1 // fragment offset
	bad := [][]byte{nil, {0x45}, frag, l3(client6, bank6, nil)[:45]}
	v6frag := l3(client6, bank6, []byte("x"))
	v6frag[6] = 44
	bad = append(bad, v6frag)
	for i, b := range bad {
		if _, _, _, err := parseUDP(b); !errors.Is(err, errPacket) {
			t.Fatalf("bad packet %d: %v", i, err)
		}
	}
}

// FuzzParseUDP: no panic on any packet.
func FuzzParseUDP(f *testing.F) {
	f.Add(l3(client4, bank4, []byte("q")))
	f.Add(l3(client6, bank6, []byte("q")))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, p, err := parseUDP(b)
		if err == nil && len(p) > len(b) {
			t.Fatal("payload longer than the packet")
		}
	})
}

// TestDecidedBounded: a flood of new flows does not grow the verdict memory
// past its cap, and every packet still gets a verdict.
func TestDecidedBounded(t *testing.T) {
	g, q, _ := newGate(t, &fakePolicy{}, Config{})
	junk := []byte{0x40, 1, 2, 3, 4, 5, 6, 7, 8}
	n := maxDecided + 100
	for i := range n {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), uint16(1000+i%50000))
		g.Handle(uint32(i), l3(src, bank4, junk))
	}
	if len(g.decided) > maxDecided || len(q.got()) != n || g.Pending() != 0 {
		t.Fatalf("decided %d, verdicts %d, pending %d", len(g.decided), len(q.got()), g.Pending())
	}
}

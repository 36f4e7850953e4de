package nfqueue

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

// testRules are shaped like the QUIC gate's: an accept verdict lives in
// the conntrack mark; a drop verdict cannot (a dropped packet never
// confirms its conntrack entry), so it lives in a set with a timeout.
// The queue rule is appended from Go (see TestQueueVerdicts).
const testRules = `table inet nfqtest {
 set no4 { type ipv4_addr . inet_service; flags timeout; timeout 30s; }
 set no6 { type ipv6_addr . inet_service; flags timeout; timeout 30s; }
 chain out { type filter hook output priority filter; policy accept;
  udp dport 19443 ct mark 0x7 counter accept
  udp dport 19443 ip saddr . udp sport @no4 counter drop
  udp dport 19443 ip6 saddr . udp sport @no6 counter drop
  udp dport 19443 meta mark 0x7 ct mark set 0x7 counter accept
  udp dport 19443 meta mark 0x8 meta nfproto ipv4 add @no4 { ip saddr . udp sport } counter drop
  udp dport 19443 meta mark 0x8 meta nfproto ipv6 add @no6 { ip6 saddr . udp sport } counter drop
 }
}
`

// TestQueueVerdicts binds a queue in a fresh namespace behind a ruleset
// shaped like the QUIC gate's and checks what each verdict does: Repeat
// with a mark re-runs the chain, which stores an accept in conntrack and a
// drop in a set, so the flow's later packets are decided by the kernel
// without the queue;
// a plain Accept lets one packet through and the next is queued again;
// Drop drops. IPv4 and IPv6.
func TestQueueVerdicts(t *testing.T) {
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "nft")
	ns := privtest.NewNetNS(t)
	rules := filepath.Join(t.TempDir(), "rules.nft")
	if err := os.WriteFile(rules, []byte(testRules), 0o644); err != nil {
		t.Fatal(err)
	}
	privtest.Run(t, ns, "nft", "-f", rules)
	// The queue rule is added from Go: nft's queue statement, or the xt
	// NFQUEUE target through nft_compat where the kernel lacks nft_queue.
	// (t.Fatal must not run on the namespace's goroutine: errors come back.)
	inNS(t, ns, func() error {
		compat := !Available(false)
		if compat && !Available(true) {
			return errors.New("kernel takes neither nft's queue statement nor the xt NFQUEUE target")
		}
		t.Logf("queue rule: compat %v", compat)
		c, err := nftables.New()
		if err != nil {
			return err
		}
		tab := &nftables.Table{Name: "nfqtest", Family: nftables.TableFamilyINet}
		exprs := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(19443)},
			&expr.Counter{},
		}
		c.AddRule(&nftables.Rule{Table: tab, Chain: &nftables.Chain{Name: "out", Table: tab}, Exprs: append(exprs, Exprs(77, compat)...)})
		if err := c.Flush(); err != nil {
			return fmt.Errorf("add queue rule: %w", err)
		}
		return nil
	})

	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			var q *Queue
			var srv *net.UDPConn
			var clients [3]*net.UDPConn
			t.Cleanup(func() {
				if q != nil {
					q.Close()
				}
				if srv != nil {
					srv.Close()
				}
				for _, c := range clients {
					if c != nil {
						c.Close()
					}
				}
			})
			inNS(t, ns, func() (err error) {
				if q, err = Open(77, 64); err != nil {
					return err
				}
				if srv, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(host), Port: 19443}); err != nil {
					return err
				}
				for i := range clients {
					if clients[i], err = net.DialUDP("udp", nil, srv.LocalAddr().(*net.UDPAddr)); err != nil {
						return err
					}
				}
				return nil
			})
			queued := func(want string) *Packet {
				t.Helper()
				q.SetReadDeadline(time.Now().Add(2 * time.Second))
				ps, err := q.Receive()
				if err != nil {
					t.Fatalf("waiting for %q in the queue: %v", want, err)
				}
				p := ps[0]
				if len(ps) != 1 || string(p.Payload[len(p.Payload)-len(want):]) != want {
					t.Fatalf("queued %d packets, first ends %q, want %q", len(ps), p.Payload, want)
				}
				ver := p.Payload[0] >> 4
				if host == "::1" && (ver != 6 || p.HWProto != 0x86dd) || host != "::1" && (ver != 4 || p.HWProto != 0x0800) {
					t.Fatalf("payload IP version %d, hw proto %#x", ver, p.HWProto)
				}
				return &p
			}
			notQueued := func() {
				t.Helper()
				q.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				if ps, err := q.Receive(); err == nil {
					t.Fatalf("queued %d more packets", len(ps))
				}
			}
			received := func(want string) {
				t.Helper()
				buf := make([]byte, 100)
				srv.SetReadDeadline(time.Now().Add(2 * time.Second))
				n, _, err := srv.ReadFromUDP(buf)
				if err != nil || string(buf[:n]) != want {
					t.Fatalf("server got %q, %v; want %q", buf[:n], err, want)
				}
			}
			nothingReceived := func() {
				t.Helper()
				buf := make([]byte, 100)
				srv.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				if n, _, err := srv.ReadFromUDP(buf); err == nil {
					t.Fatalf("server got %q", buf[:n])
				} else if !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatal(err)
				}
			}
			ok, no := uint32(7), uint32(8)

			// Flow 0: Repeat with the accept mark; then the kernel alone.
			clients[0].Write([]byte("first"))
			p := queued("first")
			if err := q.Verdict(p.ID, Repeat, &ok); err != nil {
				t.Fatal(err)
			}
			received("first")
			clients[0].Write([]byte("second"))
			received("second")
			notQueued()

			// Flow 1: Repeat with the drop mark; later packets dropped by
			// the kernel (the set), not queued.
			clients[1].Write([]byte("refused"))
			p = queued("refused")
			if err := q.Verdict(p.ID, Repeat, &no); err != nil {
				t.Fatal(err)
			}
			clients[1].Write([]byte("refused again"))
			nothingReceived()
			notQueued()

			// Flow 2: a plain Accept decides one packet only.
			clients[2].Write([]byte("once"))
			p = queued("once")
			if err := q.Verdict(p.ID, Accept, nil); err != nil {
				t.Fatal(err)
			}
			received("once")
			clients[2].Write([]byte("dropped"))
			p = queued("dropped")
			if err := q.Verdict(p.ID, Drop, nil); err != nil {
				t.Fatal(err)
			}
			nothingReceived()
		})
	}
}

// inNS runs fn in namespace ns and fails the test if it returns an error.
func inNS(t *testing.T, ns string, fn func() error) {
	t.Helper()
	if err := privtest.Do(ns, fn); err != nil {
		t.Fatal(err)
	}
}

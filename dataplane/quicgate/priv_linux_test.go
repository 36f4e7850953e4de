package quicgate

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/quic-go/quic-go"
	"golang.org/x/sys/unix"

	"github.com/cloudsteer/cloudsteer/dataplane/nfqueue"
	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

const (
	testMarkQUIC = 0x0c570005
	testQueue    = 15443
	testCtMask   = 0x20000000
)

// countingQueue counts the verdicts the gate gives.
type countingQueue struct {
	q *nfqueue.Queue
	n atomic.Int64
}

func (c *countingQueue) Verdict(id, v uint32, mark *uint32) error {
	c.n.Add(1)
	return c.q.Verdict(id, v, mark)
}

// lab builds client ⇄ gateway ⇄ server namespaces (IPv4 and IPv6, the
// gateway routing), the gate's rules in the gateway (a prerouting rule
// marks LAN UDP 443 M_QUIC, standing in for the classifier), and runs the
// gate there with a policy that holds the server's addresses for
// bank.example.
func lab(t *testing.T) (lan, gw, srv string, q *countingQueue, decisions func() []Decision) {
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "ip", "sysctl")
	lan, gw, srv = privtest.NewNetNS(t), privtest.NewNetNS(t), privtest.NewNetNS(t)
	a, b := privtest.Unique("qa"), privtest.Unique("qb")
	privtest.Run(t, "", "ip", "link", "add", a, "netns", lan, "type", "veth", "peer", "name", "lan0", "netns", gw)
	privtest.Run(t, "", "ip", "link", "add", b, "netns", srv, "type", "veth", "peer", "name", "wan0", "netns", gw)
	for _, c := range [][]string{
		{lan, "ip", "addr", "add", "10.77.0.2/24", "dev", a},
		{lan, "ip", "addr", "add", "fd77::2/64", "dev", a, "nodad"},
		{lan, "ip", "link", "set", a, "up"},
		{lan, "ip", "route", "add", "default", "via", "10.77.0.1"},
		{lan, "ip", "-6", "route", "add", "default", "via", "fd77::1"},
		{gw, "ip", "addr", "add", "10.77.0.1/24", "dev", "lan0"},
		{gw, "ip", "addr", "add", "fd77::1/64", "dev", "lan0", "nodad"},
		{gw, "ip", "addr", "add", "10.78.0.1/24", "dev", "wan0"},
		{gw, "ip", "addr", "add", "fd78::1/64", "dev", "wan0", "nodad"},
		{gw, "ip", "link", "set", "lan0", "up"},
		{gw, "ip", "link", "set", "wan0", "up"},
		{gw, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{gw, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"},
		{srv, "ip", "addr", "add", "10.78.0.2/24", "dev", b},
		{srv, "ip", "addr", "add", "fd78::2/64", "dev", b, "nodad"},
		{srv, "ip", "link", "set", b, "up"},
		{srv, "ip", "route", "add", "default", "via", "10.78.0.1"},
		{srv, "ip", "-6", "route", "add", "default", "via", "fd78::1"},
	} {
		privtest.Run(t, c[0], c[1:]...)
	}

	policy := &fakePolicy{names: map[string][]netip.Addr{
		"bank.example": {netip.MustParseAddr("10.78.0.2"), netip.MustParseAddr("fd78::2")},
	}}
	var mu sync.Mutex
	var ds []Decision
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	// t.Fatal must not run on the namespace's goroutine (it would never
	// return to privtest.Do): errors come back instead.
	var nq *nfqueue.Queue
	inNS(t, gw, func() error {
		compat := !nfqueue.Available(false)
		if compat && !nfqueue.Available(true) {
			return errors.New("kernel takes neither nft's queue statement nor the xt NFQUEUE target")
		}
		c, err := nftables.New()
		if err != nil {
			return err
		}
		tab := c.AddTable(&nftables.Table{Name: "quicgate_test", Family: nftables.TableFamilyINet})
		accept := nftables.ChainPolicyAccept
		pre := c.AddChain(&nftables.Chain{Name: "pre", Table: tab, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle, Policy: &accept})
		c.AddRule(&nftables.Rule{Table: tab, Chain: pre, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte("lan0\x00")},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(443)},
			&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint32(testMarkQUIC)},
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1, SourceRegister: true},
		}})
		fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: tab, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
		if err := AddRules(c, tab, fwd, RuleConfig{MarkQUIC: testMarkQUIC, MarkOK: markOK, MarkNo: markNo,
			CtMask: testCtMask, CtOK: testCtMask, Queue: testQueue, Compat: compat}); err != nil {
			return err
		}
		if err := c.Flush(); err != nil {
			return fmt.Errorf("install rules (compat %v): %w", compat, err)
		}
		nq, err = nfqueue.Open(testQueue, 256)
		return err
	})
	{
		q = &countingQueue{q: nq}
		g := New(ctx, Config{Policy: policy, Queue: q, MarkOK: markOK, MarkNo: markNo,
			Decided: func(d Decision) { mu.Lock(); ds = append(ds, d); mu.Unlock() }})
		go func() { done <- Run(ctx, nq, g) }()
		t.Cleanup(func() {
			cancel()
			waitOrDump(t, "the gate's Run", func() { <-done })
			nq.Close()
		})
	}
	return lan, gw, srv, q, func() []Decision { mu.Lock(); defer mu.Unlock(); return append([]Decision(nil), ds...) }
}

func serverCert(t *testing.T) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "lab"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestGateInLab: a real quic-go client in the LAN namespace and a real
// quic-go server behind the gateway. A bypass name to its address completes
// the handshake and an echo; only the first datagrams reach Go, the rest of
// the flow is accepted by the kernel (ct mark). An inspected name is
// rejected: the client never reaches the server, and its retransmitted
// Initials are rejected by the kernel (the set) without reaching Go.
// IPv4 and IPv6.
func TestGateInLab(t *testing.T) {
	lan, gw, srv, q, decisions := lab(t)
	var accepted atomic.Int64
	var ln *quic.Listener
	cert := serverCert(t)
	inNS(t, srv, func() (err error) {
		ln, err = quic.ListenAddr("[::]:443", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"echo"}}, &quic.Config{})
		return err
	})
	sctx, scancel := context.WithCancel(context.Background())
	var swg sync.WaitGroup
	swg.Add(1)
	go func() {
		defer swg.Done()
		for {
			conn, err := ln.Accept(sctx)
			if err != nil {
				return
			}
			accepted.Add(1)
			swg.Add(1)
			go func() {
				defer swg.Done()
				s, err := conn.AcceptStream(sctx)
				if err != nil {
					return
				}
				io.Copy(s, s)
				s.Close()
			}()
		}
	}()
	t.Cleanup(func() { scancel(); ln.Close(); waitOrDump(t, "the echo server", swg.Wait) })

	dial := func(addr, sni string, timeout time.Duration) (string, time.Duration, error) {
		var got string
		var took time.Duration
		var derr error
		inNS(t, lan, func() error {
			udp, err := net.ListenUDP("udp", nil)
			if err != nil {
				return err
			}
			defer udp.Close()
			tr := &quic.Transport{Conn: udp}
			defer tr.Close()
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			start := time.Now()
			conn, err := tr.Dial(ctx, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)),
				&tls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: []string{"echo"}}, &quic.Config{})
			took = time.Since(start)
			if err != nil {
				derr = err
				return nil
			}
			defer conn.CloseWithError(0, "")
			s, err := conn.OpenStream()
			if err != nil {
				derr = err
				return nil
			}
			msg := strings.Repeat("through the gate ", 2000) // many packets after the handshake
			s.SetDeadline(time.Now().Add(10 * time.Second))
			s.Write([]byte(msg))
			s.Close()
			b, err := io.ReadAll(s)
			if err != nil || string(b) != msg {
				derr = err
				got = string(b)
				return nil
			}
			got = "echoed"
			return nil
		})
		return got, took, derr
	}

	news := firstFlight(t, "news.example", 2)
	for _, addr := range []string{"10.78.0.2:443", "[fd78::2]:443"} {
		t.Run(addr, func(t *testing.T) {
			before := q.n.Load()
			got, took, err := dial(addr, "bank.example", 10*time.Second)
			if err != nil || got != "echoed" {
				t.Fatalf("bypass name: %q, %v", got, err)
			}
			verdicts := q.n.Load() - before
			ds := decisions()
			d := ds[len(ds)-1]
			if !d.Accept || d.Name != "bank.example" || d.Dst.String() != addr {
				t.Fatalf("decision %+v", d)
			}
			// The echo of 34 KB took dozens of packets; Go saw the first flight only.
			if verdicts < 1 || verdicts > 4 {
				t.Fatalf("%d packets of the accepted flow reached Go", verdicts)
			}
			t.Logf("bypass name: handshake and echo in %v, %d packets through Go", took, verdicts)

			// A connected UDP socket (as Chrome uses) learns of the
			// reject at once: ICMP port unreachable, ECONNREFUSED. First,
			// while the kernel's ICMP rate limit for this client is full
			// (the rejected retransmissions below each cost an ICMP error,
			// and a run where 8 went out left none for this check).
			inNS(t, lan, func() error {
				c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
				if err != nil {
					return err
				}
				defer c.Close()
				start := time.Now()
				for _, d := range news {
					c.Write(d)
				}
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				_, err = c.Read(make([]byte, 2048))
				if !errors.Is(err, unix.ECONNREFUSED) {
					return fmt.Errorf("connected socket after a rejected hello: %v, want ECONNREFUSED", err)
				}
				t.Logf("connected socket: ECONNREFUSED %v after the first flight", time.Since(start))
				return nil
			})

			before, acc := q.n.Load(), accepted.Load()
			_, took, err = dial(addr, "news.example", 3*time.Second)
			if err == nil {
				t.Fatal("inspected name: QUIC handshake completed")
			}
			verdicts = q.n.Load() - before
			ds = decisions()
			d = ds[len(ds)-1]
			if d.Accept || d.Reason != ReasonNotBypass || d.Name != "news.example" {
				t.Fatalf("decision %+v", d)
			}
			if accepted.Load() != acc {
				t.Fatal("the server accepted the inspected flow")
			}
			// quic-go retransmits its Initials for 3 s; the set rejects them in the kernel.
			if verdicts > 4 {
				t.Fatalf("%d packets of the rejected flow reached Go", verdicts)
			}
			// The kernel rejected the retransmissions by the set.
			set, lookups := SetReject4, "@"+SetReject4
			if strings.HasPrefix(addr, "[") {
				set, lookups = SetReject6, "@"+SetReject6
			}
			if out := privtest.Run(t, gw, "nft", "list", "set", "inet", "quicgate_test", set); !strings.Contains(out, strings.Trim(strings.TrimSuffix(addr, ":443"), "[]")) {
				t.Fatalf("reject set without the flow:\n%s", out)
			}
			n := ruleCounter(t, gw, lookups)
			if n == 0 {
				t.Fatal("no retransmission was rejected by the set")
			}
			t.Logf("inspected name: dial failed after %v (%v); %d packets through Go, %d rejected by the kernel's set so far", took, err, verdicts, n)

		})
	}
}

// ruleCounter returns the packet counter of the gateway's forward rule
// whose text contains what.
func ruleCounter(t *testing.T, ns, what string) int {
	t.Helper()
	for _, line := range strings.Split(privtest.Run(t, ns, "nft", "list", "chain", "inet", "quicgate_test", "forward"), "\n") {
		if !strings.Contains(line, what) || strings.Contains(line, "add "+what) {
			continue
		}
		f := strings.Fields(line[strings.Index(line, "counter packets"):])
		n, err := strconv.Atoi(f[2])
		if err != nil {
			t.Fatalf("counter in %q: %v", line, err)
		}
		return n
	}
	t.Fatalf("no rule with %q", what)
	return 0
}

// waitOrDump runs wait, and if it has not returned within 15 s fails the
// test with every goroutine's stack instead of hanging until the test
// binary's timeout.
func waitOrDump(t *testing.T, what string, wait func()) {
	t.Helper()
	ch := make(chan struct{})
	go func() { wait(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(15 * time.Second):
		var b strings.Builder
		pprof.Lookup("goroutine").WriteTo(&b, 2)
		t.Errorf("%s did not stop within 15 s; goroutines:\n%s", what, b.String())
	}
}

// inNS runs fn in namespace ns and fails the test if it returns an error.
func inNS(t *testing.T, ns string, fn func() error) {
	t.Helper()
	if err := privtest.Do(ns, fn); err != nil {
		t.Fatal(err)
	}
}

package quicsni

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

func testCert(t *testing.T, name string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// relay forwards UDP between clients and a server on loopback, and feeds
// each client's datagrams to a Reassembler of its own before forwarding
// them, as the gateway would see them.
type relay struct {
	t    *testing.T
	ln   *net.UDPConn
	srv  *net.UDPAddr
	mu   sync.Mutex
	byC  map[string]*relayFlow
	wg   sync.WaitGroup
	done chan struct{}
}

type relayFlow struct {
	up     *net.UDPConn
	r      *Reassembler
	hello  *Hello
	err    error
	zeroRT int      // datagrams holding a 0-RTT packet
	sent   [][]byte // the client's first datagrams
}

func newRelay(t *testing.T, srv *net.UDPAddr) *relay {
	ln, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	rl := &relay{t: t, ln: ln, srv: srv, byC: map[string]*relayFlow{}, done: make(chan struct{})}
	rl.wg.Add(1)
	go rl.run()
	t.Cleanup(func() {
		close(rl.done)
		ln.Close()
		rl.mu.Lock()
		for _, f := range rl.byC {
			f.up.Close()
		}
		rl.mu.Unlock()
		rl.wg.Wait()
	})
	return rl
}

func (rl *relay) run() {
	defer rl.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, c, err := rl.ln.ReadFromUDP(buf)
		if err != nil {
			return
		}
		rl.mu.Lock()
		f := rl.byC[c.String()]
		if f == nil {
			up, err := net.DialUDP("udp4", nil, rl.srv)
			if err != nil {
				rl.mu.Unlock()
				rl.t.Errorf("dial server: %v", err)
				return
			}
			f = &relayFlow{up: up, r: NewReassembler(Limits{})}
			rl.byC[c.String()] = f
			rl.wg.Add(1)
			go func() {
				defer rl.wg.Done()
				b := make([]byte, 65536)
				for {
					n, err := up.Read(b)
					if err != nil {
						return
					}
					rl.ln.WriteToUDP(b[:n], c)
				}
			}()
		}
		if has0RTT(buf[:n]) {
			f.zeroRT++
		}
		if len(f.sent) < 10 {
			f.sent = append(f.sent, bytes.Clone(buf[:n]))
		}
		if f.hello == nil && f.err == nil {
			h, err := f.r.Feed(buf[:n])
			if !errors.Is(err, ErrIncomplete) {
				f.hello, f.err = h, err
			}
		}
		rl.mu.Unlock()
		f.up.Write(buf[:n])
	}
}

// has0RTT reports whether a datagram holds a v1 0-RTT long-header packet.
func has0RTT(b []byte) bool {
	for len(b) > 0 {
		h, err := parseLongHeader(b)
		if err != nil || h.typ == typeRetry {
			return false
		}
		if h.typ == type0RTT {
			return true
		}
		b = b[h.end:]
	}
	return false
}

func (rl *relay) flows() []*relayFlow {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	var out []*relayFlow
	for _, f := range rl.byC {
		out = append(out, f)
	}
	return out
}

// TestQUICGoResumption0RTT runs real quic-go connections through a relay
// that reads each client's Initials: a full handshake, then a resumed one
// whose hello carries the session ticket (a pre_shared_key) and whose first
// datagrams carry 0-RTT data coalesced with or after the Initials. Both
// names are read and both handshakes complete through the relay.
func TestQUICGoResumption0RTT(t *testing.T) {
	const name = "resume.example"
	cert, pool := testCert(t, name)
	ln, err := quic.ListenAddrEarly("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"echo"}},
		&quic.Config{Allow0RTT: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() {
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			go func() {
				s, err := conn.AcceptStream(ctx)
				if err != nil {
					return
				}
				io.Copy(s, s)
				s.Close()
			}()
		}
	}()
	rl := newRelay(t, ln.Addr().(*net.UDPAddr))
	cache := tls.NewLRUClientSessionCache(4)
	tlsConf := &tls.Config{ServerName: name, RootCAs: pool, NextProtos: []string{"echo"}, ClientSessionCache: cache}

	echo := func(early bool) *quic.Conn {
		var conn *quic.Conn
		var err error
		if early {
			conn, err = quic.DialAddrEarly(ctx, rl.ln.LocalAddr().String(), tlsConf, &quic.Config{})
		} else {
			conn, err = quic.DialAddr(ctx, rl.ln.LocalAddr().String(), tlsConf, &quic.Config{})
		}
		if err != nil {
			t.Fatalf("dial (early %v): %v", early, err)
		}
		s, err := conn.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write([]byte("hello through the relay")); err != nil {
			t.Fatal(err)
		}
		s.Close()
		got, err := io.ReadAll(s)
		if err != nil || string(got) != "hello through the relay" {
			t.Fatalf("echo: %q, %v", got, err)
		}
		return conn
	}
	first := echo(false)
	// The session ticket comes after the handshake; give it a moment.
	time.Sleep(200 * time.Millisecond)
	first.CloseWithError(0, "")
	second := echo(true)
	defer second.CloseWithError(0, "")
	st := second.ConnectionState()
	if !st.TLS.DidResume || !st.Used0RTT {
		t.Fatalf("second connection: resumed %v, 0-RTT %v", st.TLS.DidResume, st.Used0RTT)
	}
	fl := rl.flows()
	if len(fl) != 2 {
		t.Fatalf("%d flows through the relay", len(fl))
	}
	var resumed *relayFlow
	for _, f := range fl {
		if f.err != nil || f.hello == nil || f.hello.ServerName != name {
			t.Fatalf("flow: %+v, %v", f.hello, f.err)
		}
		t.Logf("hello of %d bytes in %d datagrams; %d datagrams with 0-RTT", f.hello.Length, f.hello.Datagrams, f.zeroRT)
		if f.zeroRT > 0 {
			resumed = f
		}
	}
	if resumed == nil {
		t.Fatal("no flow sent 0-RTT packets")
	}
	// quic-go sends its 0-RTT packets right after the last Initial, in
	// its datagram or in the next. Put them, as captured, between the
	// Initials: alone in a datagram, and coalesced after the first one.
	var initials, zeroRTT [][]byte
	for _, d := range resumed.sent {
		for len(d) > 0 {
			h, err := parseLongHeader(d)
			if err != nil || h.typ == typeRetry {
				break
			}
			switch h.typ {
			case typeInitial:
				initials = append(initials, d[:h.end])
			case type0RTT:
				zeroRTT = append(zeroRTT, d[:h.end])
			}
			d = d[h.end:]
		}
	}
	if len(initials) < 2 || len(zeroRTT) == 0 {
		t.Fatalf("%d initials, %d 0-RTT packets captured", len(initials), len(zeroRTT))
	}
	z := bytes.Join(zeroRTT, nil)
	for _, order := range [][][]byte{
		append([][]byte{initials[0], z}, initials[1:]...),
		append([][]byte{append(bytes.Clone(initials[0]), z...)}, initials[1:]...),
	} {
		r := NewReassembler(Limits{})
		var h *Hello
		var err error
		for _, d := range order {
			if h, err = r.Feed(d); !errors.Is(err, ErrIncomplete) {
				break
			}
		}
		if err != nil || h.ServerName != name || h.Length != resumed.hello.Length {
			t.Fatalf("with %d 0-RTT packets between the Initials: %+v, %v", len(zeroRTT), h, err)
		}
	}
}

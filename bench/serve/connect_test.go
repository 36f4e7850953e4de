package serve

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseConnect(t *testing.T) {
	auth := "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("code:x")) + "\r\n"
	tests := []struct {
		name    string
		head    string
		want    connectReq
		wantErr bool
	}{
		{name: "name with auth and xff", head: "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n" + auth + "X-Forwarded-For: 10.10.0.10\r\n\r\n",
			want: connectReq{Host: "a.example", Port: 443, User: "code", XFF: "10.10.0.10"}},
		{name: "ipv6 literal, no auth", head: "CONNECT [2001:db8::1]:443 HTTP/1.0\r\n\r\n", want: connectReq{Host: "2001:db8::1", Port: 443}},
		{name: "get is refused", head: "GET http://a/ HTTP/1.1\r\n\r\n", wantErr: true},
		{name: "no port", head: "CONNECT a.example HTTP/1.1\r\n\r\n", wantErr: true},
		{name: "port zero", head: "CONNECT a.example:0 HTTP/1.1\r\n\r\n", wantErr: true},
		{name: "port too big", head: "CONNECT a.example:70000 HTTP/1.1\r\n\r\n", wantErr: true},
		{name: "bad base64", head: "CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: Basic !!!\r\n\r\n", wantErr: true},
		{name: "header without colon", head: "CONNECT a:1 HTTP/1.1\r\nbroken\r\n\r\n", wantErr: true},
		{name: "not http", head: "CONNECT a:1 SPDY/3\r\n\r\n", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseConnect([]byte(tc.head))
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseConnect err = %v, wantErr %v", err, tc.wantErr)
			}
			if err == nil && got != tc.want {
				t.Fatalf("parseConnect = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func FuzzParseConnect(f *testing.F) {
	f.Add([]byte("CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n"))
	f.Add([]byte("CONNECT [::1]:443 HTTP/1.1\r\nProxy-Authorization: Basic Y29kZTo=\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n"))
	f.Add([]byte("\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseConnect(b)
		if err == nil && (r.Host == "" || r.Port == 0) {
			t.Fatalf("accepted %q without host or port: %+v", b, r)
		}
		if n := headEnd(b); n > len(b) {
			t.Fatalf("headEnd %d beyond %d", n, len(b))
		}
	})
}

// startProxy runs a Server with only the cloud proxy, on loopback, and
// closes it when the test ends.
func startProxy(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	cfg.Dir = tb.TempDir()
	cfg.Proxy = netip.MustParseAddrPort("127.0.0.1:0")
	cfg.Code = "code"
	cfg.StreamBytes = 1
	s, err := Start(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// connectMany opens n tunnels through the proxy at proxyAddr to target,
// from the loopback address from, each sending first behind its CONNECT
// head, and returns the client connections (closed when the test ends).
func connectMany(tb testing.TB, proxyAddr netip.AddrPort, from netip.Addr, target string, first []byte, n int) []net.Conn {
	tb.Helper()
	auth := base64.StdEncoding.EncodeToString([]byte("code:x"))
	req := []byte("CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\nProxy-Authorization: Basic " + auth + "\r\nX-Forwarded-For: 10.10.0.10\r\n\r\n")
	req = append(req, first...)
	conns := make([]net.Conn, n)
	tb.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	var next atomic.Int64
	errs := make(chan error, 16)
	for range 16 {
		go func() {
			d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, 0))}
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					errs <- nil
					return
				}
				c, err := d.Dial("tcp", proxyAddr.String())
				if err != nil {
					errs <- err
					return
				}
				conns[i] = c
				if _, err := c.Write(req); err != nil {
					errs <- err
					return
				}
				const ok = "HTTP/1.1 200 Connection established\r\n\r\n"
				got := make([]byte, len(ok))
				if _, err := io.ReadFull(c, got); err != nil || string(got) != ok {
					errs <- fmt.Errorf("tunnel %d: answer %q, err %v", i, got, err)
					return
				}
			}
		}()
	}
	for range 16 {
		if err := <-errs; err != nil {
			tb.Fatal(err)
		}
	}
	return conns
}

// waitFor polls cond until it holds or 30 s pass; it returns whether it
// held.
func waitFor(cond func() bool) bool {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

func openFDs(tb testing.TB) int {
	tb.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Fatal(err)
	}
	return len(ents)
}

// TestHeldTunnels holds 2000 idle tunnels to a Config.Hold target: the
// proxy answers them itself with one descriptor each (no origin is
// listening there), counts every tunnel and the client address, and
// counts the bytes and frees everything when the clients go.
func TestHeldTunnels(t *testing.T) {
	const n = 2000
	hold := netip.MustParseAddrPort("127.0.0.2:443") // nothing listens here
	s := startProxy(t, Config{
		Names: map[string]netip.Addr{"sink.bench.example": hold.Addr()},
		Hold:  []netip.AddrPort{hold},
	})
	hello := []byte("\x16\x03\x01\x00\x05hello")
	base := openFDs(t)
	conns := connectMany(t, s.ProxyAddr(), netip.MustParseAddr("127.0.0.3"), "sink.bench.example:443", hello, n)
	if !waitFor(func() bool { return s.Stats().TunnelActive == n }) {
		t.Fatalf("proxy holds %d tunnels, want %d", s.Stats().TunnelActive, n)
	}
	st := s.Stats()
	want := map[string]int64{"127.0.0.3": n}
	if st.Tunnels != n || st.WithXFF != n || st.Refused != 0 || st.OriginConns != 0 || !maps.Equal(st.ProxyClients, want) {
		t.Errorf("stats %+v, want %d tunnels with X-Forwarded-For from %v and no origin connection", st, n, want)
	}
	// The test holds the n client sockets; the proxy one per tunnel.
	if got := openFDs(t) - base - n; got > n+32 {
		t.Errorf("proxy holds %d descriptors for %d tunnels, want about one per tunnel", got, n)
	}
	for _, c := range conns {
		c.Close()
	}
	if !waitFor(func() bool { return s.Stats().TunnelActive == 0 }) {
		t.Fatalf("%d tunnels still held after the clients went", s.Stats().TunnelActive)
	}
	if got, want := s.Stats().ProxyUp, int64(n*len(hello)); got != want {
		t.Errorf("proxy counted %d bytes up, want %d", got, want)
	}
	if !waitFor(func() bool { return openFDs(t) <= base+n }) { // client sockets are closed by now
		t.Errorf("%d descriptors open after the tunnels ended, %d before", openFDs(t)-n, base)
	}
}

// TestSplicedTunnels holds idle tunnels to a real origin: each holds its
// two sockets and no goroutine in the proxy. A tunnel then carries bytes
// both ways and counts them.
func TestSplicedTunnels(t *testing.T) {
	const n = 500
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	origin := make(chan net.Conn, n+1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(origin)
				return
			}
			origin <- c
		}
	}()
	var accepted []net.Conn
	t.Cleanup(func() {
		for _, c := range accepted {
			c.Close()
		}
	})
	port := ln.Addr().(*net.TCPAddr).Port
	s := startProxy(t, Config{Names: map[string]netip.Addr{"stream.bench.example": netip.MustParseAddr("127.0.0.1")}})
	target := fmt.Sprintf("stream.bench.example:%d", port)
	runtime.GC()
	baseFDs, baseG := openFDs(t), runtime.NumGoroutine()

	conns := connectMany(t, s.ProxyAddr(), netip.MustParseAddr("127.0.0.4"), target, nil, n)
	for len(accepted) < n {
		accepted = append(accepted, <-origin)
	}
	if !waitFor(func() bool { return s.Stats().TunnelActive == n && runtime.NumGoroutine() <= baseG+16 }) {
		t.Errorf("%d tunnels active, %d goroutines more than before; want %d tunnels parked with no goroutine", s.Stats().TunnelActive, runtime.NumGoroutine()-baseG, n)
	}
	// n client sockets and n origin sockets here, two per tunnel in the proxy.
	if got := openFDs(t) - baseFDs; got > 4*n+32 {
		t.Errorf("%d idle tunnels: %d more descriptors, want at most %d", n, got, 4*n+32)
	}

	// Any tunnel still carries bytes both ways after it parked.
	c := conns[n/2]
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	// Which origin connection is c's: the one that reads the ping.
	found := make(chan net.Conn, len(accepted))
	for _, a := range accepted {
		go func() {
			a.SetReadDeadline(time.Now().Add(time.Second))
			b := make([]byte, 4)
			if _, err := io.ReadFull(a, b); err == nil && string(b) == "ping" {
				found <- a
				return
			}
			found <- nil
		}()
	}
	var o net.Conn
	for range accepted {
		if a := <-found; a != nil {
			o = a
		}
	}
	if o == nil {
		t.Fatal("no origin connection got the ping")
	}
	o.SetReadDeadline(time.Time{})
	if _, err := o.Write([]byte("pong!")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "pong!" {
		t.Fatalf("client got %q, err %v", got, err)
	}
	for _, c := range conns {
		c.Close()
	}
	for _, a := range accepted {
		a.Close()
	}
	if !waitFor(func() bool { return s.Stats().TunnelActive == 0 }) {
		t.Fatalf("%d tunnels still active", s.Stats().TunnelActive)
	}
	if st := s.Stats(); st.Tunnels != n || st.ProxyUp != 4 || st.ProxyDown != 5 || st.ProxyClients["127.0.0.4"] != n {
		t.Errorf("stats %+v: want %d tunnels from 127.0.0.4, 4 bytes up and 5 down", st, n)
	}
}

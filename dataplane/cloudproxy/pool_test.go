package cloudproxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy"
	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy/cloudproxytest"
)

// How the test proxy treats a request on one of its connections.
const (
	answerOK     = "ok"      // 200, then echo the tunnel
	dropSilently = "drop"    // close without a byte
	resetIt      = "reset"   // close with RST
	halfAnswer   = "partial" // a few bytes of a status line, then close
)

// proxyConn is what the test proxy saw of one connection.
type proxyConn struct {
	remote   string
	accepted time.Time
	ready    time.Time // TLS handshake done (accept time for plain TCP)
	closed   time.Time // when the proxy closed it, after the peer's EOF or its idle limit
	byPeer   bool      // the client closed it (EOF) before any request
}

// connectSeen is one CONNECT the test proxy read.
type connectSeen struct {
	conn   int // index into the proxy's connections
	target string
	at     time.Time
}

// countingProxy is a loopback CONNECT proxy that records every
// connection it accepts and every request on it.
type countingProxy struct {
	URL *url.URL

	idleClose time.Duration        // close a connection without a request after this; 0: never
	behave    func(req int) string // what to do with the req'th request (from 0); nil: answerOK
	tlsConfig *tls.Config          // nil: plain TCP
	mu        sync.Mutex
	conns     []proxyConn
	connects  []connectSeen
}

// startCounting runs a countingProxy until the test ends.
func startCounting(tb testing.TB, p *countingProxy) *countingProxy {
	tb.Helper()
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	scheme := "http"
	if p.tlsConfig != nil {
		scheme = "https"
	}
	p.URL = &url.URL{Scheme: scheme, Host: ln.Addr().String()}
	var wg sync.WaitGroup
	var live sync.Map // net.Conn -> struct{}: closed at cleanup
	tb.Cleanup(func() {
		ln.Close()
		live.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			idx := len(p.conns)
			p.conns = append(p.conns, proxyConn{remote: c.RemoteAddr().String(), accepted: time.Now()})
			p.mu.Unlock()
			live.Store(c, struct{}{})
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer live.Delete(c)
				p.serve(idx, c)
			}()
		}
	}()
	return p
}

func (p *countingProxy) serve(idx int, c net.Conn) {
	byPeer := false
	defer func() {
		c.Close()
		p.mu.Lock()
		p.conns[idx].closed = time.Now()
		p.conns[idx].byPeer = byPeer
		p.mu.Unlock()
	}()
	if p.tlsConfig != nil {
		tc := tls.Server(c, p.tlsConfig)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			return
		}
		c.SetDeadline(time.Time{})
		c = tc
	}
	p.mu.Lock()
	p.conns[idx].ready = time.Now()
	p.mu.Unlock()
	br := bufio.NewReader(c)
	if p.idleClose > 0 {
		c.SetReadDeadline(time.Now().Add(p.idleClose))
	}
	if _, err := br.Peek(1); err != nil {
		byPeer = err == io.EOF
		return
	}
	c.SetReadDeadline(time.Time{})
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	p.mu.Lock()
	n := len(p.connects)
	p.connects = append(p.connects, connectSeen{conn: idx, target: req.Host, at: time.Now()})
	p.mu.Unlock()
	what := answerOK
	if p.behave != nil {
		what = p.behave(n)
	}
	switch what {
	case dropSilently:
		return
	case resetIt:
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		return
	case halfAnswer:
		io.WriteString(c, "HTTP/1.1 2")
		return
	}
	io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	io.Copy(c, br) // echo until the client closes
}

func (p *countingProxy) snapshot() ([]proxyConn, []connectSeen) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]proxyConn(nil), p.conns...), append([]connectSeen(nil), p.connects...)
}

func (p *countingProxy) accepted() []proxyConn {
	conns, _ := p.snapshot()
	return conns
}

// warmConn waits until the proxy has exactly one connection that carried
// no request besides those that did (a refill raced with the first dial,
// so either may have been accepted first) and returns its index.
func (p *countingProxy) warmConn(tb testing.TB) int {
	tb.Helper()
	warm := -1
	waitUntil(tb, "one connection without a request", func() bool {
		conns, connects := p.snapshot()
		used := map[int]bool{}
		for _, c := range connects {
			used[c.conn] = true
		}
		warm = -1
		for i := range conns {
			if !used[i] {
				if warm >= 0 {
					tb.Fatalf("more than one connection without a request: %+v %+v", conns, connects)
				}
				warm = i
			}
		}
		return warm >= 0
	})
	return warm
}

// waitUntil polls cond until it holds, failing the test after 10 s.
func waitUntil(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// newPooled returns a Client for p's URL that is closed when the test ends.
func newPooled(tb testing.TB, u *url.URL, roots *cloudproxytest.CA, mod func(*cloudproxy.Config)) *cloudproxy.Client {
	tb.Helper()
	cfg := cloudproxy.Config{URL: u, Username: "tenant", Password: entitlement, DialTimeout: 5 * time.Second, PoolMaxAge: time.Minute}
	if roots != nil {
		cfg.RootCAs = roots.Pool
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := cloudproxy.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// tunnelEcho checks conn carries bytes both ways through the echoing proxy.
func tunnelEcho(tb testing.TB, conn net.Conn) {
	tb.Helper()
	msg := "ping through the tunnel"
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, msg); err != nil {
		tb.Fatalf("write tunnel: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != msg {
		tb.Fatalf("tunnel echo = %q, %v", got, err)
	}
	conn.SetDeadline(time.Time{})
}

// tlsProxyConfig returns a server TLS config for 127.0.0.1 and its CA.
func tlsProxyConfig(tb testing.TB) (*tls.Config, *cloudproxytest.CA) {
	ca := cloudproxytest.NewCA(tb)
	cert := ca.Issue(tb, "127.0.0.1")
	return &tls.Config{Certificates: []tls.Certificate{cert}}, ca
}

func TestPoolSecondConnectIsWarm(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		name := "http proxy"
		if useTLS {
			name = "https proxy"
		}
		t.Run(name, func(t *testing.T) {
			p := &countingProxy{}
			var ca *cloudproxytest.CA
			if useTLS {
				p.tlsConfig, ca = tlsProxyConfig(t)
			}
			startCounting(t, p)
			c := newPooled(t, p.URL, ca, nil)

			// No demand yet: the pool dials nothing.
			time.Sleep(50 * time.Millisecond)
			if conns, _ := p.snapshot(); len(conns) != 0 || c.Stats().Idle != 0 {
				t.Fatalf("before any Connect the proxy saw %d connections, pool holds %d", len(conns), c.Stats().Idle)
			}

			first, err := c.Connect(context.Background(), "www.example.com:443", netip.MustParseAddr("10.10.0.10"))
			if err != nil {
				t.Fatalf("first Connect: %v", err)
			}
			defer first.Close()
			tunnelEcho(t, first)
			// The refill: a second connection, ready (handshake done) and idle.
			waitUntil(t, "a warm connection in the pool", func() bool { return c.Stats().Idle == 1 })
			warm := p.warmConn(t)
			waitUntil(t, "the proxy's side of the warm connection ready", func() bool {
				conns, _ := p.snapshot()
				return !conns[warm].ready.IsZero()
			})
			conns, _ := p.snapshot()
			if len(conns) != 2 {
				t.Fatalf("proxy saw %d connections (%+v), want the first and one ready warm one", len(conns), conns)
			}

			called := time.Now()
			second, err := c.Connect(context.Background(), "news.example.com:443", netip.Addr{})
			if err != nil {
				t.Fatalf("second Connect: %v", err)
			}
			defer second.Close()
			tunnelEcho(t, second)
			conns, connects := p.snapshot()
			if len(connects) != 2 {
				t.Fatalf("proxy saw %d CONNECTs, want 2: %+v", len(connects), connects)
			}
			got := connects[1]
			if got.target != "news.example.com:443" || got.conn != warm {
				t.Fatalf("second CONNECT %+v, want news.example.com:443 on connection %d (the warm one)", got, warm)
			}
			if !conns[warm].ready.Before(called) {
				t.Errorf("warm connection ready at %v, not before the Connect call at %v", conns[warm].ready, called)
			}
			st := c.Stats()
			if st.TakenWarm != 1 || st.DialedCold != 1 || st.DiscardedStale != 0 || st.Retries != 0 {
				t.Errorf("stats %+v, want 1 warm, 1 cold, nothing stale or retried", st)
			}
		})
	}
}

func TestPoolStaleConnNotUsed(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		name := "http proxy"
		if useTLS {
			name = "https proxy"
		}
		t.Run(name, func(t *testing.T) {
			p := &countingProxy{idleClose: 100 * time.Millisecond}
			var ca *cloudproxytest.CA
			if useTLS {
				p.tlsConfig, ca = tlsProxyConfig(t)
			}
			startCounting(t, p)
			c := newPooled(t, p.URL, ca, nil)
			first, err := c.Connect(context.Background(), "www.example.com:443", netip.Addr{})
			if err != nil {
				t.Fatalf("first Connect: %v", err)
			}
			first.Close()
			// The proxy closes the warm connection for idling.
			warm := p.warmConn(t)
			waitUntil(t, "the proxy closing the idle warm connection", func() bool {
				conns, _ := p.snapshot()
				return !conns[warm].closed.IsZero()
			})
			if c.Stats().Idle != 1 {
				t.Fatalf("pool holds %d, want the 1 closed connection it cannot know about yet", c.Stats().Idle)
			}
			second, err := c.Connect(context.Background(), "news.example.com:443", netip.Addr{})
			if err != nil {
				t.Fatalf("Connect after the proxy closed the warm connection: %v", err)
			}
			defer second.Close()
			tunnelEcho(t, second)
			_, connects := p.snapshot()
			if len(connects) != 2 {
				t.Fatalf("proxy saw %d CONNECTs, want exactly 2: %+v", len(connects), connects)
			}
			if connects[1].conn == warm {
				t.Errorf("second CONNECT went to the closed connection: %+v", connects[1])
			}
			st := c.Stats()
			if st.DiscardedStale != 1 || st.Retries != 0 || st.TakenWarm != 0 {
				t.Errorf("stats %+v, want 1 stale discarded, no retry, nothing warm taken", st)
			}
		})
	}
}

func TestPoolRetry(t *testing.T) {
	tests := []struct {
		name     string
		behave   string // for the second request (on the warm connection if pooled)
		poolOff  bool   // the connection is a fresh dial: never retried
		tls      bool   // an https proxy
		wantErr  string
		retries  uint64
		connects int
	}{
		{name: "warm conn closed on request", behave: dropSilently, retries: 1, connects: 3},
		{name: "warm conn reset on request", behave: resetIt, retries: 1, connects: 3},
		{name: "warm tls conn closed on request", behave: dropSilently, tls: true, retries: 1, connects: 3},
		{name: "tls answer byte then close", behave: halfAnswer, tls: true, wantErr: "read CONNECT answer", connects: 2},
		{name: "answer byte then close", behave: halfAnswer, wantErr: "read CONNECT answer", connects: 2},
		{name: "fresh dial closed on request", behave: dropSilently, poolOff: true, wantErr: "EOF", connects: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &countingProxy{behave: func(req int) string {
				if req == 1 {
					return tc.behave
				}
				return answerOK
			}}
			var ca *cloudproxytest.CA
			if tc.tls {
				p.tlsConfig, ca = tlsProxyConfig(t)
			}
			startCounting(t, p)
			c := newPooled(t, p.URL, ca, func(cfg *cloudproxy.Config) {
				if tc.poolOff {
					cfg.PoolMax = -1
				}
			})
			first, err := c.Connect(context.Background(), "www.example.com:443", netip.Addr{})
			if err != nil {
				t.Fatalf("first Connect: %v", err)
			}
			first.Close()
			if !tc.poolOff {
				waitUntil(t, "a warm connection", func() bool { return c.Stats().Idle == 1 })
			}
			second, err := c.Connect(context.Background(), "news.example.com:443", netip.Addr{})
			if tc.wantErr != "" {
				if err == nil {
					second.Close()
					t.Fatal("second Connect succeeded")
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("err = %v, want it to mention %q", err, tc.wantErr)
				}
			} else {
				if err != nil {
					t.Fatalf("second Connect: %v", err)
				}
				tunnelEcho(t, second)
				second.Close()
			}
			_, connects := p.snapshot()
			if len(connects) != tc.connects {
				t.Errorf("proxy saw %d CONNECTs, want %d: %+v", len(connects), tc.connects, connects)
			}
			if tc.wantErr == "" && connects[len(connects)-1].target != "news.example.com:443" {
				t.Errorf("last CONNECT %+v, want the retried one", connects[len(connects)-1])
			}
			if st := c.Stats(); st.Retries != tc.retries {
				t.Errorf("stats %+v, want %d retries", st, tc.retries)
			}
		})
	}
}

func TestPoolMaxAge(t *testing.T) {
	const maxAge = 150 * time.Millisecond
	p := startCounting(t, &countingProxy{})
	c := newPooled(t, p.URL, nil, func(cfg *cloudproxy.Config) { cfg.PoolMaxAge = maxAge })
	conn, err := c.Connect(context.Background(), "www.example.com:443", netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	idx := p.warmConn(t)
	waitUntil(t, "the client closing the warm connection", func() bool {
		conns, _ := p.snapshot()
		return !conns[idx].closed.IsZero()
	})
	conns, connects := p.snapshot()
	warm := conns[idx]
	if !warm.byPeer {
		t.Errorf("the warm connection ended other than by the client's close: %+v", warm)
	}
	if lived := warm.closed.Sub(warm.accepted); lived < maxAge {
		t.Errorf("warm connection closed after %v, before the max age %v", lived, maxAge)
	}
	if len(connects) != 1 {
		t.Errorf("proxy saw %d CONNECTs, want 1", len(connects))
	}
	// No demand since: the expired connection is not replaced.
	time.Sleep(3 * maxAge)
	if conns, _ := p.snapshot(); len(conns) != 2 {
		t.Errorf("proxy saw %d connections, want 2: an expired warm connection was replaced without demand", len(conns))
	}
	if st := c.Stats(); st.Expired != 1 || st.Idle != 0 {
		t.Errorf("stats %+v, want 1 expired and nothing idle", st)
	}
}

// openSockets counts this process's open socket descriptors. (Other
// descriptors come and go with the runtime: splice pipes are cached and
// freed by the garbage collector.)
func openSockets(tb testing.TB) int {
	tb.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

func TestCloseLeavesNothing(t *testing.T) {
	tlsConf, ca := tlsProxyConfig(t)
	plain := startCounting(t, &countingProxy{})
	secure := startCounting(t, &countingProxy{tlsConfig: tlsConf})
	// A TLS proxy that accepts and never handshakes: refills hang until Close.
	stuck := startSilent(t)
	// No garbage collection: its finalizers would close leaked sockets.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	fds, goroutines := openSockets(t), runtime.NumGoroutine()

	tests := []struct {
		name string
		url  *url.URL
		ca   *cloudproxytest.CA
		ok   bool // Connect succeeds
	}{
		{"http proxy", plain.URL, nil, true},
		{"https proxy", secure.URL, ca, true},
		{"refill stuck in handshake", stuck, ca, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := cloudproxy.New(cloudproxy.Config{URL: tc.url, RootCAs: ca.Pool, DialTimeout: 30 * time.Second, PoolMaxAge: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			if tc.ok {
				for range 5 {
					conn, err := c.Connect(context.Background(), "www.example.com:443", netip.Addr{})
					if err != nil {
						t.Fatal(err)
					}
					conn.Close()
				}
				pc, err := c.DialProxy(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				pc.Close()
				waitUntil(t, "a warm connection", func() bool { return c.Stats().Idle >= 1 })
			} else {
				ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
				if conn, err := c.DialProxy(ctx); err == nil {
					conn.Close()
					t.Fatal("DialProxy to a silent proxy succeeded")
				}
				cancel()
			}
			// Close ends refill dials in flight (the stuck one would
			// otherwise wait out the 30 s dial timeout).
			closed := make(chan struct{})
			go func() { c.Close(); close(closed) }()
			waitUntil(t, "Close to return", func() bool {
				select {
				case <-closed:
					return true
				default:
					return false
				}
			})
			c.Close() // twice is fine
			if st := c.Stats(); st.Idle != 0 {
				t.Errorf("pool holds %d after Close", st.Idle)
			}
			// Still usable without the pool.
			if tc.ok {
				conn, err := c.Connect(context.Background(), "www.example.com:443", netip.Addr{})
				if err != nil {
					t.Fatalf("Connect after Close: %v", err)
				}
				conn.Close()
				if st := c.Stats(); st.Idle != 0 {
					t.Errorf("pool refilled after Close: %+v", st)
				}
			}
		})
	}
	waitUntil(t, "descriptors and goroutines back to where they were", func() bool {
		return openSockets(t) <= fds && runtime.NumGoroutine() <= goroutines
	})
}

// startSilent runs a loopback listener that accepts connections and never
// says anything, as a proxy stuck before its TLS handshake.
func startSilent(tb testing.TB) *url.URL {
	tb.Helper()
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// Read until the client gives up, so its close frees the socket.
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return &url.URL{Scheme: "https", Host: ln.Addr().String()}
}

func TestPoolNeverAboveMax(t *testing.T) {
	const poolMax = 3
	p := startCounting(t, &countingProxy{})
	c := newPooled(t, p.URL, nil, func(cfg *cloudproxy.Config) { cfg.PoolMax = poolMax })
	var tunnels []net.Conn
	defer func() { closeAll(tunnels) }()
	for range 30 {
		conn, err := c.Connect(context.Background(), "www.example.com:443", netip.Addr{})
		if err != nil {
			t.Fatal(err)
		}
		tunnels = append(tunnels, conn)
		if st := c.Stats(); st.Idle > poolMax {
			t.Fatalf("pool holds %d, above its max %d", st.Idle, poolMax)
		}
	}
	waitUntil(t, "the refills to land", func() bool {
		st := c.Stats()
		return st.Idle >= 1 && int(st.RefillDials+st.RefillErrors) == len(p.accepted())-int(st.DialedCold)
	})
	unused := 0
	conns, connects := p.snapshot()
	used := map[int]bool{}
	for _, r := range connects {
		used[r.conn] = true
	}
	for i := range conns {
		if !used[i] {
			unused++
		}
	}
	if unused < 1 || unused > poolMax {
		t.Errorf("proxy holds %d connections without a request, want 1 to %d", unused, poolMax)
	}
	if st := c.Stats(); st.TakenWarm+st.DialedCold != 30 || st.Retries != 0 {
		t.Errorf("stats %+v, want 30 connections taken or dialed", st)
	}
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

// A Client nobody closes (one that only probed, say) lets go of its warm
// connections and goroutines once demand has stopped for the max age.
func TestPoolDrainsWithoutDemand(t *testing.T) {
	p := startCounting(t, &countingProxy{})
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	fds, goroutines := openSockets(t), runtime.NumGoroutine()
	c, err := cloudproxy.New(cloudproxy.Config{URL: p.URL, PoolMaxAge: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := c.Connect(context.Background(), "www.example.com:443", netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	waitUntil(t, "a warm connection", func() bool { return c.Stats().Idle == 1 })
	waitUntil(t, "descriptors and goroutines back to where they were without Close", func() bool {
		return openSockets(t) <= fds && runtime.NumGoroutine() <= goroutines
	})
	if st := c.Stats(); st.Expired != 1 || st.Idle != 0 {
		t.Errorf("stats %+v, want the warm connection expired", st)
	}
}

// TestPoolWarmWithHealth: a client with health checks (what the daemon
// always makes, even for one proxy) keeps a warm pool too, and its Stats
// show it.
func TestPoolWarmWithHealth(t *testing.T) {
	p := &countingProxy{}
	startCounting(t, p)
	c := newPooled(t, p.URL, nil, func(cfg *cloudproxy.Config) {
		cfg.Health = &cloudproxy.HealthConfig{ProbeTarget: "www.example.com:443", ProbeInterval: time.Hour, ProbeTimeout: time.Second}
	})
	first, err := c.Connect(context.Background(), "www.example.com:443", netip.MustParseAddr("10.10.0.10"))
	if err != nil {
		t.Fatalf("first Connect: %v", err)
	}
	defer first.Close()
	tunnelEcho(t, first)
	// Stats adds the members' pools (Stats.Add leaves Idle out).
	waitUntil(t, "a warm connection in the pool", func() bool { return c.Stats().Idle >= 1 })
}

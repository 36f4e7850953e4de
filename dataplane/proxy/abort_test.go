package proxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy"
	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy/cloudproxytest"
	"github.com/cloudsteer/cloudsteer/dataplane/proxy"
)

// Tests that a client going away closes the upstream side at once, for
// each kind of flow: the upstream (a fake cloud proxy or origin) streams
// a large body, or says nothing, and records when its connection closed
// and how many bytes it managed to send.

// abortBound is the test's bound for the upstream close after the
// client's; the requirement is 100 ms and the measured delay is logged.
const abortBound = time.Second

// upConn is what the test upstream saw on one connection.
type upConn struct {
	sent     atomic.Int64  // body bytes written
	closed   chan struct{} // closed when the connection was closed or reset by the proxy
	closedAt time.Time     // set before closed is closed
	sentThen int64         // sent when closed
	once     sync.Once
	// stopped is closed when the streaming writer got its write error;
	// nil when the connection does not stream.
	stopped chan struct{}
}

func (u *upConn) markClosed() {
	u.once.Do(func() {
		u.closedAt = time.Now()
		u.sentThen = u.sent.Load()
		close(u.closed)
	})
}

// streamer is a loopback upstream with one behaviour for every connection:
//   - "http-stream": answers each request with a 10 GB body it streams
//   - "http-hang": reads the request and never answers
//   - "http-small": answers each request with a 2-byte body, keep-alive
//   - "http-upgrade": answers 101, then streams
//   - "connect-stream": answers a CONNECT with 200, then streams
//   - "raw-stream": streams as soon as the first bytes came (a bypassed TLS origin)
type streamer struct {
	addr netip.AddrPort
	mode string
	reqs chan upReq
}

// upReq is a request the streamer read: its line ("raw" for raw bytes).
type upReq struct {
	u    *upConn
	head string
}

func startStreamer(tb testing.TB, mode string, cert *tls.Certificate) *streamer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	s := &streamer{addr: ln.Addr().(*net.TCPAddr).AddrPort(), mode: mode, reqs: make(chan upReq, 64)}
	if cert != nil {
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{*cert}})
	}
	var wg sync.WaitGroup
	tb.Cleanup(wg.Wait)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u := &upConn{closed: make(chan struct{})}
			if strings.HasSuffix(mode, "stream") || mode == "http-upgrade" {
				u.stopped = make(chan struct{})
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				s.serve(c, u)
			}()
		}
	}()
	tb.Cleanup(func() { ln.Close() })
	return s
}

// next returns the next request the streamer read, and its connection.
func (s *streamer) next(tb testing.TB) (*upConn, string) {
	tb.Helper()
	select {
	case r := <-s.reqs:
		return r.u, r.head
	case <-time.After(10 * time.Second):
		tb.Fatal("the upstream got no request")
		return nil, ""
	}
}

func (s *streamer) serve(c net.Conn, u *upConn) {
	c.SetDeadline(time.Now().Add(time.Minute))
	br := bufio.NewReader(c)
	stream := func() {
		// Watch for the proxy's close while writing.
		go func() {
			io.Copy(io.Discard, br)
			u.markClosed()
		}()
		defer close(u.stopped)
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Write(buf)
			u.sent.Add(int64(n))
			if err != nil {
				u.markClosed()
				return
			}
		}
	}
	switch s.mode {
	case "raw-stream":
		if _, err := br.Peek(1); err != nil {
			u.markClosed()
			return
		}
		s.reqs <- upReq{u, "raw"}
		stream()
	case "connect-stream":
		req, err := http.ReadRequest(br)
		if err != nil {
			u.markClosed()
			return
		}
		s.reqs <- upReq{u, req.Method + " " + req.RequestURI}
		io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
		stream()
	default:
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				u.markClosed()
				return
			}
			s.reqs <- upReq{u, req.Method + " " + req.RequestURI}
			switch s.mode {
			case "http-small":
				io.Copy(io.Discard, req.Body)
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				continue
			case "http-close-kept", "http-reset-kept":
				// Answer as if keeping the conn, then close it (as a
				// server's idle close does).
				io.Copy(io.Discard, req.Body)
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				if s.mode == "http-reset-kept" {
					c.(*net.TCPConn).SetLinger(0)
				}
			case "http-drop-second":
				// Answer the first request; read the second and close
				// without an answer.
				if u.sent.Add(1) == 1 {
					io.Copy(io.Discard, req.Body)
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
					continue
				}
				io.Copy(io.Discard, req.Body)
			case "http-hang":
				io.Copy(io.Discard, br)
				u.markClosed()
			case "http-stream":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 10000000000\r\n\r\n")
				stream()
			case "http-upgrade":
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
				stream()
			}
			return
		}
	}
}

// pxOpts configure a proxy under test for startProxy.
type pxOpts struct {
	tls     bool
	cloud   *url.URL
	rootCAs *x509.CertPool
	dst     netip.AddrPort // every flow's original destination
	bypass  []string
	poolMax int  // -1: no warm pool
	strict  bool // no loopback exemption: loopback is refused as for real clients
	cfg     func(*proxy.Config)
	wrapLn  func(net.Listener) net.Listener
}

type pxEnv struct {
	pol   *policy
	proxy *proxy.Proxy
	cloud *cloudproxy.Client
	addr  string
	mu    sync.Mutex
	evs   []proxy.Event
}

// policy returns the proxy's policy, to set targets before the first flow.
func (e *pxEnv) policy() *policy { return e.pol }

func (e *pxEnv) Events() []proxy.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]proxy.Event(nil), e.evs...)
}

func startProxy(t *testing.T, o pxOpts) *pxEnv {
	t.Helper()
	if o.cloud == nil {
		o.cloud = cloudproxytest.Start(t, cloudproxytest.Options{}).URL
	}
	cc, err := cloudproxy.New(cloudproxy.Config{URL: o.cloud, RootCAs: o.rootCAs, PoolMax: o.poolMax, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	e := &pxEnv{cloud: cc, pol: &policy{names: o.bypass}}
	cfg := proxy.Config{
		Cloud:       cc,
		Policy:      e.pol,
		OriginalDst: func(*net.TCPConn) (netip.AddrPort, error) { return o.dst, nil },
		OnEvent: func(ev proxy.Event) {
			e.mu.Lock()
			e.evs = append(e.evs, ev)
			e.mu.Unlock()
		},
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	e.proxy, err = proxy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !o.strict {
		proxy.AllowLoopback(e.proxy)
	}
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	if o.wrapLn != nil {
		ln = o.wrapLn(ln)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		if o.tls {
			done <- e.proxy.ServeTLS(ctx, ln)
		} else {
			done <- e.proxy.ServePlainHTTP(ctx, ln)
		}
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve returned %v", err)
		}
	})
	return e
}

// abortClient is a LAN client connection to the proxy.
type abortClient struct {
	*net.TCPConn
	br *bufio.Reader
}

func dialAbort(t *testing.T, addr string) *abortClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return &abortClient{TCPConn: c.(*net.TCPConn), br: bufio.NewReader(c)}
}

// readSome reads n bytes of whatever the proxy sends.
func (c *abortClient) readSome(t *testing.T, n int64) {
	t.Helper()
	if got, err := io.CopyN(io.Discard, c.br, n); err != nil {
		t.Fatalf("read %d of %d bytes: %v", got, n, err)
	}
}

// abort closes the client connection, with a reset when rst, and returns
// when.
func (c *abortClient) abort(rst bool) time.Time {
	if rst {
		c.SetLinger(0)
	}
	now := time.Now()
	c.Close()
	return now
}

// maxInFlight bounds the bytes a streaming upstream may still get
// accepted by its own kernel after the proxy closed the connection: the
// write in progress and what fits in the socket buffers until the reset
// answering them comes back. A proxy that went on reading would take
// gigabytes.
const maxInFlight = 4 << 20

// assertClosed checks that the upstream saw u closed within abortBound of
// at, and that a streaming upstream could send nothing more soon after.
func assertClosed(t *testing.T, u *upConn, at time.Time) {
	t.Helper()
	select {
	case <-u.closed:
	case <-time.After(abortBound):
		t.Fatalf("the upstream connection is still open %v after the client went away (it sent %d bytes so far)", abortBound, u.sent.Load())
	}
	if u.stopped == nil {
		t.Logf("upstream closed %v after the client", u.closedAt.Sub(at))
		return
	}
	select {
	case <-u.stopped:
	case <-time.After(abortBound):
		t.Fatalf("the upstream can still write %v after the client went away (it sent %d bytes so far)", abortBound, u.sent.Load())
	}
	extra := u.sent.Load() - u.sentThen
	t.Logf("upstream closed %v after the client, having sent %d bytes; %d more bytes were accepted by its kernel before the reset", u.closedAt.Sub(at), u.sentThen, extra)
	if extra > maxInFlight {
		t.Errorf("the upstream sent %d bytes after its connection closed", extra)
	}
}

func forBoth(t *testing.T, f func(t *testing.T, rst bool)) {
	for _, rst := range []bool{false, true} {
		name := "close"
		if rst {
			name = "reset"
		}
		t.Run(name, func(t *testing.T) { f(t, rst) })
	}
}

func cloudURL(s *streamer, https bool) *url.URL {
	scheme := "http"
	if https {
		scheme = "https"
	}
	return &url.URL{Scheme: scheme, Host: s.addr.String()}
}

// TestAbortHTTPDuringBody aborts a large download. With a pipelined
// request behind it the client watch ends at that request's first byte,
// so only the failed write to the client shows the abort.
func TestAbortHTTPDuringBody(t *testing.T) {
	for _, kind := range []string{"cloud", "bypass", "cloud pipelined", "bypass pipelined"} {
		t.Run(kind, func(t *testing.T) {
			forBoth(t, func(t *testing.T, rst bool) {
				up := startStreamer(t, "http-stream", nil)
				o := pxOpts{cloud: cloudURL(up, false), dst: up.addr, poolMax: -1}
				host := "news.example.com"
				if strings.HasPrefix(kind, "bypass") {
					o.bypass, host = []string{"bank.example"}, "bank.example"
				}
				e := startProxy(t, o)
				c := dialAbort(t, e.addr)
				req := fmt.Sprintf("GET /bytes?n=10000000000 HTTP/1.1\r\nHost: %s\r\n\r\n", host)
				if strings.HasSuffix(kind, "pipelined") {
					req += req
				}
				io.WriteString(c, req)
				u, _ := up.next(t)
				c.readSome(t, 4<<20)
				assertClosed(t, u, c.abort(rst))
			})
		})
	}
}

func TestAbortHTTPWaitingForHead(t *testing.T) {
	for _, kind := range []string{"cloud", "bypass"} {
		t.Run(kind, func(t *testing.T) {
			forBoth(t, func(t *testing.T, rst bool) {
				up := startStreamer(t, "http-hang", nil)
				o := pxOpts{cloud: cloudURL(up, false), dst: up.addr, poolMax: -1}
				host := "news.example.com"
				if kind == "bypass" {
					o.bypass, host = []string{"bank.example"}, "bank.example"
				}
				e := startProxy(t, o)
				c := dialAbort(t, e.addr)
				fmt.Fprintf(c, "GET /poll HTTP/1.1\r\nHost: %s\r\n\r\n", host)
				u, _ := up.next(t)
				time.Sleep(50 * time.Millisecond) // the proxy waits for the answer now
				assertClosed(t, u, c.abort(rst))
			})
		})
	}
}

func TestAbortHTTPKeepAlive(t *testing.T) {
	forBoth(t, func(t *testing.T, rst bool) {
		up := startStreamer(t, "http-small", nil)
		e := startProxy(t, pxOpts{cloud: cloudURL(up, false), dst: up.addr, poolMax: -1})
		c := dialAbort(t, e.addr)
		var u *upConn
		for i := range 2 {
			fmt.Fprintf(c, "GET /%d HTTP/1.1\r\nHost: news.example.com\r\n\r\n", i)
			got, _ := up.next(t)
			if u != nil && got != u {
				t.Fatal("the second request came on another upstream connection")
			}
			u = got
			resp, err := http.ReadResponse(c.br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
		}
		// The upstream conn is kept for the next request; the client leaves.
		assertClosed(t, u, c.abort(rst))
	})
}

func TestAbortHTTPUpgrade(t *testing.T) {
	forBoth(t, func(t *testing.T, rst bool) {
		up := startStreamer(t, "http-upgrade", nil)
		e := startProxy(t, pxOpts{cloud: cloudURL(up, false), dst: up.addr, poolMax: -1})
		c := dialAbort(t, e.addr)
		io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: news.example.com\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		u, _ := up.next(t)
		c.readSome(t, 4<<20)
		assertClosed(t, u, c.abort(rst))
	})
}

// TestAbortTunnels covers the TLS flows: a CONNECT tunnel through a plain
// (splice) and an https (userspace copy) cloud proxy, a warm pool
// connection, and a bypass splice.
func TestAbortTunnels(t *testing.T) {
	ca := cloudproxytest.NewCA(t)
	cert := ca.Issue(t, "127.0.0.1")
	tests := []struct {
		name  string
		https bool
		warm  bool
		sni   string
	}{
		{name: "connect splice", sni: "www.example.com"},
		{name: "connect userspace copy", https: true, sni: "www.example.com"},
		{name: "warm pool connection", warm: true, sni: "www.example.com"},
		{name: "warm pool connection https", warm: true, https: true, sni: "www.example.com"},
		{name: "bypass splice", sni: "bank.example"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			forBoth(t, func(t *testing.T, rst bool) {
				mode, dstMode := "connect-stream", "raw-stream"
				var c *tls.Certificate
				if tc.https {
					c = &cert
				}
				cloud := startStreamer(t, mode, c)
				origin := startStreamer(t, dstMode, nil)
				o := pxOpts{tls: true, cloud: cloudURL(cloud, tc.https), rootCAs: ca.Pool, dst: origin.addr, bypass: []string{"bank.example"}, poolMax: -1}
				if tc.warm {
					o.poolMax = 4
				}
				e := startProxy(t, o)
				hello := clientHello(t, tc.sni)
				if tc.warm {
					// A first flow makes demand; the pool then holds a
					// warm connection for the next.
					first := dialAbort(t, e.addr)
					first.Write(hello)
					cloud.next(t)
					first.readSome(t, 1<<20)
					first.abort(true)
					deadline := time.Now().Add(5 * time.Second)
					for e.cloud.Stats().Idle == 0 && time.Now().Before(deadline) {
						time.Sleep(5 * time.Millisecond)
					}
					if e.cloud.Stats().Idle == 0 {
						t.Fatal("the pool holds no warm connection")
					}
				}
				taken := e.cloud.Stats().TakenWarm
				cl := dialAbort(t, e.addr)
				cl.Write(hello)
				src := cloud
				if tc.sni == "bank.example" {
					src = origin
				}
				u, h := src.next(t)
				if !strings.HasPrefix(h, "CONNECT") && h != "raw" {
					t.Fatalf("upstream got %q", h)
				}
				if tc.warm && e.cloud.Stats().TakenWarm != taken+1 {
					t.Fatalf("the flow did not take a warm connection: %+v", e.cloud.Stats())
				}
				cl.readSome(t, 4<<20)
				assertClosed(t, u, cl.abort(rst))
			})
		})
	}
}

// TestAbortHTTPUpload aborts in the middle of a request body.
func TestAbortHTTPUpload(t *testing.T) {
	forBoth(t, func(t *testing.T, rst bool) {
		up := startStreamer(t, "http-hang", nil)
		e := startProxy(t, pxOpts{cloud: cloudURL(up, false), dst: up.addr, poolMax: -1})
		c := dialAbort(t, e.addr)
		io.WriteString(c, "PUT /up HTTP/1.1\r\nHost: news.example.com\r\nContent-Length: 1000000000\r\n\r\n")
		u, _ := up.next(t)
		c.Write(make([]byte, 64<<10))
		time.Sleep(50 * time.Millisecond)
		assertClosed(t, u, c.abort(rst))
	})
}

// TestHTTPPipelinedKept: the client watch keeps the bytes it reads ahead,
// so pipelined requests are all answered, in order.
func TestHTTPPipelinedKept(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := dialHTTP(t, e)
	var reqs string
	for _, p := range []string{"/a", "/b", "/c"} {
		reqs += "GET " + p + " HTTP/1.1\r\nHost: news.example.com\r\n\r\n"
	}
	io.WriteString(c, reqs)
	for _, p := range []string{"/a", "/b", "/c"} {
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatalf("response for %s: %v", p, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(body), "path="+p) {
			t.Errorf("response for %s: %q", p, body)
		}
	}
}

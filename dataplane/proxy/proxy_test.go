package proxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy"
	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy/cloudproxytest"
	"github.com/cloudsteer/cloudsteer/dataplane/proxy"
)

const entitlement = "3315471d-b831-48ed-a621-17042a74a8e3"

var goodAuth = "Basic " + base64.StdEncoding.EncodeToString([]byte("tenant:"+entitlement))

// policy is a Policy with a fixed bypass list. BypassTarget answers from
// targets (name to address; a name mapped to the zero value has no
// address) and else with the destination itself, and records the calls.
type policy struct {
	names   []string
	targets map[string]netip.AddrPort
	mu      sync.Mutex
	asked   []string // "name dst"
}

func (p *policy) BypassName(name string) bool { return slices.Contains(p.names, name) }

func (p *policy) BypassTarget(_ context.Context, name string, dst netip.AddrPort) (netip.AddrPort, error) {
	p.mu.Lock()
	p.asked = append(p.asked, name+" "+dst.String())
	p.mu.Unlock()
	if t, ok := p.targets[name]; ok {
		if !t.IsValid() {
			return netip.AddrPort{}, fmt.Errorf("no address known for %s", name)
		}
		return t, nil
	}
	return dst, nil
}

func (p *policy) Asked() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.asked)
}

// origin is a loopback web server (TLS or plain) that counts connections.
type origin struct {
	addr  netip.AddrPort
	mu    sync.Mutex
	conns int
}

func (o *origin) Conns() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.conns
}

func startOrigin(tb testing.TB, network, addr string, cert *tls.Certificate) *origin {
	tb.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		tb.Fatalf("listen %s: %v", addr, err)
	}
	o := &origin{addr: ln.Addr().(*net.TCPAddr).AddrPort()}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		sni := ""
		if r.TLS != nil {
			sni = r.TLS.ServerName
		}
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "origin: host=%s path=%s sni=%s xff=%s body=%q", r.Host, r.URL.Path, sni, r.Header.Get("X-Forwarded-For"), body)
	})
	mux.HandleFunc("/hdr", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "forwarded=%q x-real-ip=%q xff=%q auth=%q", r.Header.Get("Forwarded"), r.Header.Get("X-Real-Ip"), r.Header.Get("X-Forwarded-For"), r.Header.Get("Proxy-Authorization"))
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		for i := range 3 {
			fmt.Fprintf(w, "part%d;", i)
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want upgrade", 400)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		io.Copy(c, brw)
	})
	srv := &http.Server{Handler: mux, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			o.mu.Lock()
			o.conns++
			o.mu.Unlock()
		}
	}}
	if cert != nil {
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{*cert}})
	}
	go srv.Serve(ln)
	tb.Cleanup(func() { srv.Close() })
	return o
}

// env is a proxy under test with its cloud proxy, origin and policy.
type env struct {
	ca     *cloudproxytest.CA
	cloud  *cloudproxytest.Proxy
	origin *origin
	policy *policy
	proxy  *proxy.Proxy
	addr   string // the proxy listener

	mu     sync.Mutex
	events []proxy.Event
}

// waitActive waits until the proxy serves exactly n flows (or the test
// times out): flows end a little after the client has its answer.
func (e *env) waitActive(t *testing.T, n int64) {
	t.Helper()
	for e.proxy.Stats().Active != n {
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *env) Events() []proxy.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.events)
}

type envOpts struct {
	tls         bool   // TLS listener and TLS origin; else plain HTTP
	httpsCloud  bool   // reach the cloud proxy over https
	password    string // "" means the right one
	originAddr  string // "" means 127.0.0.1:0
	peekTimeout time.Duration
	idleTimeout time.Duration
	maxHeader   int
	failureMode string // "" leaves the cloud proxy unchecked (no failure mode)
	refuse      func(string) bool
}

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	e := &env{ca: cloudproxytest.NewCA(t), policy: &policy{names: []string{"bank.example"}}}
	originCert := e.ca.Issue(t, "www.example.com", "bank.example", "scores.sports.example", "127.0.0.1", "::1")
	addr := o.originAddr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	if o.tls {
		e.origin = startOrigin(t, "tcp", addr, &originCert)
	} else {
		e.origin = startOrigin(t, "tcp", addr, nil)
	}
	copts := cloudproxytest.Options{
		Auth:  goodAuth,
		Block: map[string]string{"scores.sports.example": "Sports"},
		// Every name the cloud proxy is asked for lives at the origin.
		Dial: func(authority string) string {
			_, port, _ := net.SplitHostPort(authority)
			if port == "" {
				port = "80"
			}
			return net.JoinHostPort(e.origin.addr.Addr().String(), port)
		},
	}
	if o.httpsCloud {
		cert := e.ca.Issue(t, "127.0.0.1")
		copts.TLS = &cert
	}
	e.cloud = cloudproxytest.Start(t, copts)
	pw := o.password
	if pw == "" {
		pw = entitlement
	}
	ccfg := cloudproxy.Config{URL: e.cloud.URL, RootCAs: e.ca.Pool, Username: "tenant", Password: pw, DialTimeout: 10 * time.Second}
	if o.failureMode != "" {
		ccfg.Health = &cloudproxy.HealthConfig{ProbeTarget: "www.example.com:443", ProbeInterval: 20 * time.Millisecond}
	}
	cc, err := cloudproxy.New(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	if ccfg.Health != nil {
		t.Cleanup(func() { cc.Close() }) // stops the probes
	}
	peek := o.peekTimeout
	if peek == 0 {
		peek = time.Minute
	}
	e.proxy, err = proxy.New(proxy.Config{
		Cloud:  cc,
		Policy: e.policy,
		OriginalDst: func(*net.TCPConn) (netip.AddrPort, error) {
			return e.origin.addr, nil
		},
		OnEvent: func(ev proxy.Event) {
			e.mu.Lock()
			e.events = append(e.events, ev)
			e.mu.Unlock()
		},
		PeekTimeout:    peek,
		IdleTimeout:    o.idleTimeout,
		MaxHeaderBytes: o.maxHeader,
		FailureMode:    o.failureMode,
		RefuseName:     o.refuse,
		Logger:         slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	proxy.AllowLoopback(e.proxy)
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
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
		if a := e.proxy.Stats().Active; a != 0 {
			t.Errorf("%d flows still active after serve returned", a)
		}
	})
	return e
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// tlsGet does one HTTPS request through the proxy listener.
func (e *env) tlsGet(t *testing.T, serverName string) (string, error) {
	t.Helper()
	cfg := &tls.Config{ServerName: serverName, RootCAs: e.ca.Pool}
	if serverName == "" {
		cfg.InsecureSkipVerify = true
	}
	c, err := tls.Dial("tcp", e.addr, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /x HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", serverName)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

func TestTLSThroughCloud(t *testing.T) {
	for _, https := range []bool{false, true} {
		t.Run(fmt.Sprintf("https cloud proxy %v", https), func(t *testing.T) {
			e := newEnv(t, envOpts{tls: true, httpsCloud: https})
			body, err := e.tlsGet(t, "www.example.com")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(body, "sni=www.example.com") {
				t.Errorf("body = %q", body)
			}
			recs := e.cloud.Records()
			want := fmt.Sprintf("www.example.com:%d", e.origin.addr.Port())
			if len(recs) != 1 || recs[0].Method != "CONNECT" || recs[0].Target != want || recs[0].Auth != goodAuth || recs[0].XFF != "127.0.0.1" {
				t.Errorf("cloud proxy saw %+v, want one CONNECT %s with auth and XFF", recs, want)
			}
			if l := e.policy.Asked(); len(l) != 0 {
				t.Errorf("bypass targets asked for %v", l)
			}
			e.waitActive(t, 0)
			st := e.proxy.Stats()
			if st.Proxied != 1 || st.Bypassed != 0 || st.BytesUp == 0 || st.BytesDown == 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func TestTLSBypass(t *testing.T) {
	e := newEnv(t, envOpts{tls: true})
	body, err := e.tlsGet(t, "Bank.Example")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(body, "sni=Bank.Example") {
		t.Errorf("body = %q", body)
	}
	if recs := e.cloud.Records(); len(recs) != 0 {
		t.Errorf("cloud proxy saw %+v", recs)
	}
	if l, want := e.policy.Asked(), []string{"bank.example " + e.origin.addr.String()}; !slices.Equal(l, want) {
		t.Errorf("bypass targets asked %v, want %v", l, want)
	}
	if st := e.proxy.Stats(); st.Bypassed != 1 || st.Proxied != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestTLSRefuseName: a TLS flow naming a refused DoH host gets an
// access-denied alert and reaches neither the cloud proxy nor the origin;
// a bypass name is never refused; other names go through the cloud proxy.
func TestTLSRefuseName(t *testing.T) {
	refuse := func(name string) bool { return name == "www.example.com" || name == "bank.example" }
	e := newEnv(t, envOpts{tls: true, refuse: refuse})
	_, err := e.tlsGet(t, "www.example.com")
	if err == nil || !strings.Contains(err.Error(), "access denied") {
		t.Fatalf("refused name: err = %v, want an access-denied alert", err)
	}
	if recs := e.cloud.Records(); len(recs) != 0 {
		t.Errorf("the cloud proxy saw %+v for a refused name", recs)
	}
	if _, err := e.tlsGet(t, "bank.example"); err != nil {
		t.Fatalf("a bypass name on the refused list: %v", err)
	}
	if _, err := e.tlsGet(t, "scores.sports.example"); err == nil || !strings.Contains(err.Error(), "access denied") {
		t.Fatalf("blocked by the cloud: err = %v", err)
	}
	recs := e.cloud.Records()
	if len(recs) != 1 || !strings.HasPrefix(recs[0].Target, "scores.sports.example:") {
		t.Errorf("the cloud proxy saw %+v, want only scores.sports.example", recs)
	}
	e.waitActive(t, 0)
	if st := e.proxy.Stats(); st.DoHRefused != 1 || st.Bypassed != 1 {
		t.Errorf("stats %+v, want DoHRefused 1, Bypassed 1", st)
	}
}

func TestTLSNoSNI(t *testing.T) {
	tests := []struct {
		name, origin string
	}{
		{"ipv4", "127.0.0.1:0"},
		{"ipv6", "[::1]:0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOpts{tls: true, originAddr: tc.origin})
			if _, err := e.tlsGet(t, ""); err != nil {
				t.Fatal(err)
			}
			recs := e.cloud.Records()
			if len(recs) != 1 || recs[0].Target != e.origin.addr.String() {
				t.Errorf("cloud proxy saw %+v, want CONNECT %s", recs, e.origin.addr)
			}
		})
	}
}

func TestTLSRefused(t *testing.T) {
	tests := []struct {
		name     string
		password string
		sni      string
		kind     string
		status   int
		category string
		alert    string
	}{
		{"blocked", "", "scores.sports.example", proxy.KindBlocked, 403, "Sports", "access denied"},
		{"bad credentials", "wrong", "www.example.com", proxy.KindAuthFailed, 407, "", "internal error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOpts{tls: true, password: tc.password})
			_, err := e.tlsGet(t, tc.sni)
			if err == nil || !strings.Contains(err.Error(), tc.alert) {
				t.Fatalf("client err = %v, want alert %q", err, tc.alert)
			}
			evs := e.Events()
			if len(evs) != 1 {
				t.Fatalf("events %+v", evs)
			}
			ev := evs[0]
			if ev.Kind != tc.kind || ev.Status != tc.status || ev.Category != tc.category || ev.Name != tc.sni || ev.Proto != "tls" || ev.Client != netip.MustParseAddr("127.0.0.1") || ev.Target != e.origin.addr {
				t.Errorf("event %+v", ev)
			}
			if e.origin.Conns() != 0 {
				t.Errorf("origin got %d connections", e.origin.Conns())
			}
		})
	}
}

func TestTLSBadClients(t *testing.T) {
	e := newEnv(t, envOpts{tls: true, peekTimeout: 300 * time.Millisecond})
	t.Run("garbage", func(t *testing.T) {
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if n, err := c.Read(make([]byte, 10)); err == nil {
			t.Fatalf("read %d bytes, want the connection closed", n)
		}
	})
	t.Run("half hello times out", func(t *testing.T) {
		hello := clientHello(t, "www.example.com")
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(hello[:len(hello)/2])
		if _, err := c.Read(make([]byte, 10)); err == nil {
			t.Fatal("read succeeded, want the connection closed")
		}
	})
	evs := e.Events()
	if len(evs) != 2 || evs[0].Kind != proxy.KindBadClient || evs[1].Kind != proxy.KindBadClient {
		t.Errorf("events %+v", evs)
	}
	if len(e.cloud.Records()) != 0 || e.origin.Conns() != 0 {
		t.Error("a bad client reached upstream")
	}
}

func TestTLSStalledClientDoesNotBlockOthers(t *testing.T) {
	e := newEnv(t, envOpts{tls: true}) // PeekTimeout one minute
	hello := clientHello(t, "www.example.com")
	stalled, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	stalled.Write(hello[:len(hello)/2])
	for range 3 {
		if _, err := e.tlsGet(t, "www.example.com"); err != nil {
			t.Fatalf("client behind a stalled one: %v", err)
		}
	}
	e.waitActive(t, 1) // the stalled one is still there
}

// clientHello returns the first bytes a crypto/tls client sends.
func clientHello(t *testing.T, name string) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go tls.Client(a, &tls.Config{ServerName: name, InsecureSkipVerify: name == ""}).Handshake()
	buf := make([]byte, 16<<10)
	b.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := b.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

// httpConn is a raw client connection to the proxy's HTTP port.
type httpConn struct {
	net.Conn
	br      *bufio.Reader
	interim []int // 1xx status codes seen
}

func dialHTTP(t *testing.T, e *env) *httpConn {
	t.Helper()
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return &httpConn{Conn: c, br: bufio.NewReader(c)}
}

func (c *httpConn) do(t *testing.T, raw, method string) (*http.Response, string) {
	t.Helper()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	var resp *http.Response
	for {
		var err error
		resp, err = http.ReadResponse(c.br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("read response: %v", err)
		}
		if resp.StatusCode >= 200 {
			break
		}
		c.interim = append(c.interim, resp.StatusCode)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, string(body)
}

func TestHTTPKeepAliveTwoHosts(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := dialHTTP(t, e)
	port := e.origin.addr.Port()
	_, body := c.do(t, "GET /a HTTP/1.1\r\nHost: news.example.com\r\nProxy-Authorization: Basic ZXZpbDpldmls\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n", "GET")
	if !strings.Contains(body, fmt.Sprintf("host=news.example.com:%d path=/a", port)) || strings.Contains(body, "6.6.6.6") {
		t.Errorf("first body = %q", body)
	}
	_, body = c.do(t, "GET /b HTTP/1.1\r\nHost: WWW.example.com\r\n\r\n", "GET")
	if !strings.Contains(body, fmt.Sprintf("host=www.example.com:%d path=/b", port)) {
		t.Errorf("second body = %q", body)
	}
	recs := e.cloud.Records()
	if len(recs) != 2 {
		t.Fatalf("cloud proxy saw %+v", recs)
	}
	wantURL := []string{fmt.Sprintf("http://news.example.com:%d/a", port), fmt.Sprintf("http://www.example.com:%d/b", port)}
	for i, r := range recs {
		if r.Method != "GET" || r.Target != wantURL[i] || r.Auth != goodAuth || r.XFF != "127.0.0.1" {
			t.Errorf("request %d: cloud proxy saw %+v, want %s with our auth and XFF", i, r, wantURL[i])
		}
	}
	if recs[0].Conn != recs[1].Conn {
		t.Errorf("requests came on two upstream connections: %s, %s", recs[0].Conn, recs[1].Conn)
	}
	// HEAD keeps the connection usable.
	resp, body := c.do(t, "HEAD /c HTTP/1.1\r\nHost: news.example.com\r\n\r\n", "HEAD")
	if resp.StatusCode != 200 || body != "" {
		t.Errorf("HEAD: %d %q", resp.StatusCode, body)
	}
	resp, body = c.do(t, "GET /d HTTP/1.1\r\nHost: news.example.com\r\nConnection: close\r\n\r\n", "GET")
	if !resp.Close || !strings.Contains(body, "path=/d") {
		t.Errorf("last: close=%v body %q", resp.Close, body)
	}
	if _, err := c.br.ReadByte(); err != io.EOF {
		t.Errorf("after Connection: close, read err = %v, want EOF", err)
	}
}

func TestHTTPBypass(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := dialHTTP(t, e)
	for _, p := range []string{"/1", "/2"} {
		_, body := c.do(t, "GET "+p+" HTTP/1.1\r\nHost: bank.example\r\nProxy-Authorization: Basic x\r\n\r\n", "GET")
		if !strings.Contains(body, "host=bank.example path="+p) {
			t.Errorf("body = %q", body)
		}
	}
	if recs := e.cloud.Records(); len(recs) != 0 {
		t.Errorf("cloud proxy saw %+v", recs)
	}
	if n := e.origin.Conns(); n != 1 {
		t.Errorf("origin saw %d connections, want 1 reused", n)
	}
	if l := e.policy.Asked(); len(l) != 2 || l[0] != "bank.example "+e.origin.addr.String() {
		t.Errorf("bypass targets asked %v, want one per request", l)
	}
}

func TestHTTPChunkedAndStreaming(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := dialHTTP(t, e)
	_, body := c.do(t, "POST /up HTTP/1.1\r\nHost: news.example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "POST")
	if !strings.Contains(body, `body="hello world"`) {
		t.Errorf("chunked upload: %q", body)
	}
	resp, body := c.do(t, "GET /stream HTTP/1.1\r\nHost: news.example.com\r\n\r\n", "GET")
	if !slices.Equal(resp.TransferEncoding, []string{"chunked"}) || body != "part0;part1;part2;" {
		t.Errorf("chunked download: %v %q", resp.TransferEncoding, body)
	}
	_, body = c.do(t, "POST /len HTTP/1.1\r\nHost: news.example.com\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc", "POST")
	if !strings.Contains(body, `body="abc"`) || !slices.Equal(c.interim, []int{100}) {
		t.Errorf("content-length upload: %q, interim answers %v", body, c.interim)
	}
}

func TestHTTPBlockedAndAuth(t *testing.T) {
	t.Run("blocked page reaches the client", func(t *testing.T) {
		e := newEnv(t, envOpts{})
		c := dialHTTP(t, e)
		resp, body := c.do(t, "GET / HTTP/1.1\r\nHost: scores.sports.example\r\n\r\n", "GET")
		if resp.StatusCode != 403 || !strings.Contains(body, "Category: Sports") {
			t.Errorf("got %d %q", resp.StatusCode, body)
		}
		evs := e.Events()
		if len(evs) != 1 || evs[0].Kind != proxy.KindBlocked || evs[0].Category != "Sports" || evs[0].Name != "scores.sports.example" || evs[0].Proto != "http" {
			t.Errorf("events %+v", evs)
		}
		// The connection is still usable.
		if _, body := c.do(t, "GET /next HTTP/1.1\r\nHost: news.example.com\r\n\r\n", "GET"); !strings.Contains(body, "path=/next") {
			t.Errorf("after block: %q", body)
		}
	})
	t.Run("bad credentials", func(t *testing.T) {
		e := newEnv(t, envOpts{password: "wrong"})
		c := dialHTTP(t, e)
		resp, body := c.do(t, "GET / HTTP/1.1\r\nHost: news.example.com\r\n\r\n", "GET")
		if resp.StatusCode != 502 || !strings.Contains(body, "credentials") {
			t.Errorf("got %d %q", resp.StatusCode, body)
		}
		evs := e.Events()
		if len(evs) != 1 || evs[0].Kind != proxy.KindAuthFailed || evs[0].Status != 407 {
			t.Errorf("events %+v", evs)
		}
	})
}

func TestHTTPBadRequests(t *testing.T) {
	tests := []struct {
		name   string
		raw    string
		status int
	}{
		{"oversized head", "GET / HTTP/1.1\r\nHost: news.example.com\r\nX-Big: " + strings.Repeat("a", 8<<10) + "\r\n\r\n", 431},
		{"no host", "GET / HTTP/1.0\r\n\r\n", 400},
		{"bad host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"garbage", "\x16\x03\x01\x02\x00\x01\x00\r\n\r\n", 400},
		{"connect", "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", 405},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOpts{maxHeader: 4096})
			c := dialHTTP(t, e)
			resp, _ := c.do(t, tc.raw, "GET")
			if resp.StatusCode != tc.status || !resp.Close {
				t.Errorf("status %d close %v, want %d and close", resp.StatusCode, resp.Close, tc.status)
			}
			if len(e.cloud.Records()) != 0 {
				t.Error("bad request reached the cloud proxy")
			}
			evs := e.Events()
			if len(evs) != 1 || evs[0].Kind != proxy.KindBadClient || evs[0].Status != tc.status {
				t.Errorf("events %+v", evs)
			}
		})
	}
}

func TestHTTPUpgrade(t *testing.T) {
	for _, host := range []string{"news.example.com", "bank.example"} {
		t.Run(host, func(t *testing.T) {
			e := newEnv(t, envOpts{})
			c := dialHTTP(t, e)
			io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: "+host+"\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
			resp, err := http.ReadResponse(c.br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 101 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			for _, msg := range []string{"ping", "pong"} {
				io.WriteString(c, msg)
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(c.br, got); err != nil || string(got) != msg {
					t.Fatalf("echo %q, %v", got, err)
				}
			}
		})
	}
}

func TestNewValidation(t *testing.T) {
	cc, _ := cloudproxy.New(cloudproxy.Config{URL: cloudproxytest.Start(t, cloudproxytest.Options{}).URL})
	od := func(*net.TCPConn) (netip.AddrPort, error) { return netip.AddrPort{}, errors.New("x") }
	tests := []struct {
		name string
		cfg  proxy.Config
	}{
		{"no cloud", proxy.Config{Policy: &policy{}, OriginalDst: od}},
		{"no policy", proxy.Config{Cloud: cc, OriginalDst: od}},
		{"no original dst", proxy.Config{Cloud: cc, Policy: &policy{}}},
		{"tiny header limit", proxy.Config{Cloud: cc, Policy: &policy{}, OriginalDst: od, MaxHeaderBytes: 10}},
		{"negative timeout", proxy.Config{Cloud: cc, Policy: &policy{}, OriginalDst: od, IdleTimeout: -1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := proxy.New(tc.cfg); err == nil {
				t.Error("New succeeded")
			}
		})
	}
	if _, err := proxy.New(proxy.Config{Cloud: cc, Policy: &policy{}, OriginalDst: od}); err != nil {
		t.Errorf("New with defaults: %v", err)
	}
}

func TestIdleFlowsAreClosed(t *testing.T) {
	t.Run("tls tunnel", func(t *testing.T) {
		e := newEnv(t, envOpts{tls: true, idleTimeout: 200 * time.Millisecond})
		c, err := tls.Dial("tcp", e.addr, &tls.Config{ServerName: "www.example.com", RootCAs: e.ca.Pool})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// The handshake went through the tunnel; now say nothing.
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, err = c.Read(make([]byte, 1))
		var ne net.Error
		if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
			t.Fatalf("read err = %v, want the proxy to close the idle tunnel", err)
		}
		e.waitActive(t, 0)
	})
	t.Run("http keep-alive", func(t *testing.T) {
		e := newEnv(t, envOpts{idleTimeout: 200 * time.Millisecond})
		c := dialHTTP(t, e)
		c.do(t, "GET / HTTP/1.1\r\nHost: news.example.com\r\n\r\n", "GET")
		if _, err := c.br.ReadByte(); err != io.EOF {
			t.Fatalf("read err = %v, want EOF from the idle close", err)
		}
	})
}

func TestHTTPIPLiteralHost(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := dialHTTP(t, e)
	port := e.origin.addr.Port()
	_, body := c.do(t, "GET /ip HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "GET")
	if !strings.Contains(body, "path=/ip") {
		t.Errorf("body = %q", body)
	}
	recs := e.cloud.Records()
	if want := fmt.Sprintf("http://127.0.0.1:%d/ip", port); len(recs) != 1 || recs[0].Target != want {
		t.Errorf("cloud proxy saw %+v, want %s", recs, want)
	}
}

// BenchmarkTLSBypassThroughput pushes bytes through a bypassed TLS flow
// (ClientHello replay, then splice) into an origin that discards them.
func BenchmarkTLSBypassThroughput(b *testing.B) {
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	go func() {
		for {
			c, err := sink.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	cc, _ := cloudproxy.New(cloudproxy.Config{URL: cloudproxytest.Start(b, cloudproxytest.Options{}).URL})
	pol := &policy{names: []string{"bank.example"}}
	px, err := proxy.New(proxy.Config{Cloud: cc, Policy: pol, Logger: slog.New(slog.DiscardHandler),
		OriginalDst: func(*net.TCPConn) (netip.AddrPort, error) { return sink.Addr().(*net.TCPAddr).AddrPort(), nil }})
	if err != nil {
		b.Fatal(err)
	}
	proxy.AllowLoopback(px)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go px.ServeTLS(ctx, ln)

	rc := &recordConn{}
	tls.Client(rc, &tls.Config{ServerName: "bank.example"}).Handshake()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.Write(rc.buf)
	chunk := make([]byte, 1<<20)
	b.SetBytes(int64(len(chunk)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
}

// recordConn keeps what a tls.Client writes and fails its reads.
type recordConn struct {
	net.Conn
	buf []byte
}

func (c *recordConn) Write(b []byte) (int, error) { c.buf = append(c.buf, b...); return len(b), nil }
func (c *recordConn) Read([]byte) (int, error)    { return 0, io.EOF }
func (c *recordConn) Close() error                { return nil }
func (c *recordConn) SetDeadline(time.Time) error { return nil }
func (c *recordConn) SetReadDeadline(time.Time) error {
	return nil
}
func (c *recordConn) SetWriteDeadline(time.Time) error { return nil }

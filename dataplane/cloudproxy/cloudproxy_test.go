package cloudproxy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy"
	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy/cloudproxytest"
)

const entitlement = "3315471d-b831-48ed-a621-17042a74a8e3"

var goodAuth = "Basic " + base64.StdEncoding.EncodeToString([]byte("tenant:"+entitlement))

func mustURL(tb testing.TB, s string) *url.URL {
	tb.Helper()
	u, err := url.Parse(s)
	if err != nil {
		tb.Fatal(err)
	}
	return u
}

func TestNewValidation(t *testing.T) {
	tests := []struct {
		name    string
		url     string
		user    string
		wantErr string
		want    string
	}{
		{name: "http with port", url: "http://198.51.100.10:8080", want: "http://198.51.100.10:8080"},
		{name: "https default port", url: "https://proxy.example", want: "https://proxy.example:443"},
		{name: "http default port", url: "http://proxy.example/", want: "http://proxy.example:80"},
		{name: "ipv6", url: "http://[2001:db8:51::10]:8080", want: "http://[2001:db8:51::10]:8080"},
		{name: "socks scheme", url: "socks5://proxy.example:1080", wantErr: "scheme must be http or https"},
		{name: "no host", url: "http://:8080", wantErr: "host is missing"},
		{name: "credentials in url", url: "http://u:secret@proxy.example:8080", wantErr: "not in the url"},
		{name: "path", url: "http://proxy.example:8080/x", wantErr: "path or query"},
		{name: "bad port", url: "http://proxy.example:99999", wantErr: "bad port"},
		{name: "colon in username", url: "http://proxy.example:8080", user: "a:b", wantErr: "username"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := cloudproxy.New(cloudproxy.Config{URL: mustURL(t, tc.url), Username: tc.user})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Fatalf("error leaks the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if c.String() != tc.want {
				t.Errorf("String() = %q, want %q", c.String(), tc.want)
			}
		})
	}
	if _, err := cloudproxy.New(cloudproxy.Config{}); err == nil {
		t.Error("New without URL succeeded")
	}
}

func TestAuthHeader(t *testing.T) {
	c, err := cloudproxy.New(cloudproxy.Config{URL: mustURL(t, "http://127.0.0.1:1"), Username: "tenant", Password: entitlement})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.AuthHeader(); got != goodAuth {
		t.Errorf("AuthHeader() = %q, want %q", got, goodAuth)
	}
	c, _ = cloudproxy.New(cloudproxy.Config{URL: mustURL(t, "http://127.0.0.1:1")})
	if got := c.AuthHeader(); got != "" {
		t.Errorf("AuthHeader() without credentials = %q", got)
	}
}

// startEcho runs a loopback TCP server that echoes every byte.
func startEcho(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

// startScripted runs a loopback server that reads the request head and then
// calls answer with the connection, then closes it unless answer says to
// hold it open.
func startScripted(tb testing.TB, answer func(c net.Conn) (hold bool)) *url.URL {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	tb.Cleanup(func() { ln.Close(); close(done) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				if !answer(c) {
					return
				}
				select {
				case <-done:
				case <-time.After(5 * time.Second):
				}
			}()
		}
	}()
	return &url.URL{Scheme: "http", Host: ln.Addr().String()}
}

func TestConnectThroughProxy(t *testing.T) {
	echo := startEcho(t)
	ca := cloudproxytest.NewCA(t)
	cert := ca.Issue(t, "localhost", "127.0.0.1")
	tests := []struct {
		name  string
		tls   bool
		host  string // proxy host name to use in the URL
		ip    netip.Addr
		wantX string
	}{
		{name: "http proxy", ip: netip.MustParseAddr("10.10.0.10"), wantX: "10.10.0.10"},
		{name: "https proxy by name", tls: true, host: "localhost", ip: netip.MustParseAddr("fd00:10::10"), wantX: "fd00:10::10"},
		{name: "https proxy by ip, no client ip", tls: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := cloudproxytest.Options{Auth: goodAuth, Dial: func(string) string { return echo }}
			if tc.tls {
				opts.TLS = &cert
			}
			px := cloudproxytest.Start(t, opts)
			u := *px.URL
			if tc.host != "" {
				u.Host = net.JoinHostPort(tc.host, u.Port())
			}
			c, err := cloudproxy.New(cloudproxy.Config{URL: &u, RootCAs: ca.Pool, Username: "tenant", Password: entitlement, DialTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			conn, err := c.Connect(context.Background(), "www.example.com:443", tc.ip)
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			defer conn.Close()
			if _, isTCP := conn.(*net.TCPConn); isTCP == tc.tls {
				t.Errorf("conn is %T", conn)
			}
			msg := []byte("hello through the tunnel")
			conn.Write(msg)
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(conn, got); err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("echo = %q, %v", got, err)
			}
			recs := px.Records()
			if len(recs) != 1 {
				t.Fatalf("proxy saw %d requests, want 1", len(recs))
			}
			r := recs[0]
			if r.Method != "CONNECT" || r.Target != "www.example.com:443" || r.Auth != goodAuth || r.XFF != tc.wantX {
				t.Errorf("proxy saw %+v", r)
			}
		})
	}
}

func TestConnectRefused(t *testing.T) {
	px := cloudproxytest.Start(t, cloudproxytest.Options{Auth: goodAuth, Block: map[string]string{"scores.sports.example": "Sports"}})
	tests := []struct {
		name     string
		password string
		target   string
		status   int
		category string
		msg      string
	}{
		{"blocked", entitlement, "scores.sports.example:443", 403, "Sports", "blocked by cloud proxy policy (403, category Sports)"},
		{"wrong credentials", "wrong", "www.example.com:443", 407, "", "cloud proxy rejected the tenant credentials (407): check the entitlement code"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := cloudproxy.New(cloudproxy.Config{URL: px.URL, Username: "tenant", Password: tc.password})
			if err != nil {
				t.Fatal(err)
			}
			conn, err := c.Connect(context.Background(), tc.target, netip.Addr{})
			var re *cloudproxy.RefusedError
			if !errors.As(err, &re) {
				if conn != nil {
					conn.Close()
				}
				t.Fatalf("err = %v, want *RefusedError", err)
			}
			if re.StatusCode != tc.status || re.Category != tc.category || re.Error() != tc.msg {
				t.Errorf("refusal = %d %q category %q: %q", re.StatusCode, re.Status, re.Category, re.Error())
			}
			if tc.status == 403 && !bytes.Contains(re.Body, []byte("Blocked")) {
				t.Errorf("body = %q", re.Body)
			}
		})
	}
}

func TestConnectBadAnswers(t *testing.T) {
	squidPage := "<html><body><p>Access control configuration prevents your request from being allowed at this time.</p></body></html>"
	tests := []struct {
		name     string
		answer   string
		timeout  time.Duration
		status   int    // >0: want a RefusedError with this code
		category string // with this category
		errLike  string // else an error containing this
	}{
		{name: "garbage", answer: "SSH-2.0-OpenSSH_9.2\r\n\r\n", errLike: "malformed status line"},
		{name: "bad status code", answer: "HTTP/1.1 2000 OK\r\n\r\n", errLike: "malformed status code"},
		{name: "bad header", answer: "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", errLike: "header"},
		{name: "oversized head", answer: "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 20<<10) + "\r\n\r\n", errLike: "too large"},
		{name: "closed early", answer: "HTTP/1.1 200 OK\r\n", errLike: "EOF"},
		{name: "no answer", answer: "", timeout: 300 * time.Millisecond, errLike: "no answer within 300ms"},
		{name: "squid denial", answer: "HTTP/1.1 403 Forbidden\r\nServer: squid\r\nX-Squid-Error: ERR_ACCESS_DENIED 0\r\nContent-Length: " + strconv.Itoa(len(squidPage)) + "\r\n\r\n" + squidPage, status: 403},
		{name: "category in body only", answer: "HTTP/1.0 403 Forbidden\r\n\r\n<p>URL Category: Gambling</p>", status: 403, category: "Gambling"},
		{name: "chunked refusal", answer: "HTTP/1.1 502 Bad Gateway\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", status: 502},
		{name: "interim then refusal", answer: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n", status: 503},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := startScripted(t, func(c net.Conn) bool {
				io.WriteString(c, tc.answer)
				return tc.answer == ""
			})
			timeout := tc.timeout
			if timeout == 0 {
				timeout = 5 * time.Second
			}
			c, err := cloudproxy.New(cloudproxy.Config{URL: u, DialTimeout: timeout})
			if err != nil {
				t.Fatal(err)
			}
			conn, err := c.Connect(context.Background(), "www.example.com:443", netip.Addr{})
			if err == nil {
				conn.Close()
				t.Fatal("Connect succeeded")
			}
			var re *cloudproxy.RefusedError
			if tc.status > 0 {
				if !errors.As(err, &re) || re.StatusCode != tc.status || re.Category != tc.category {
					t.Fatalf("err = %v (%+v), want refusal %d category %q", err, re, tc.status, tc.category)
				}
				return
			}
			if errors.As(err, &re) || !strings.Contains(err.Error(), tc.errLike) {
				t.Fatalf("err = %v, want one containing %q", err, tc.errLike)
			}
		})
	}
}

func TestConnectBufferedBytes(t *testing.T) {
	// The proxy sends its head and the first tunnel bytes in one write.
	u := startScripted(t, func(c net.Conn) bool {
		io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\nEARLY")
		io.Copy(c, c)
		return false
	})
	c, err := cloudproxy.New(cloudproxy.Config{URL: u})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := c.Connect(context.Background(), "[2001:db8:113::10]:443", netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, isTCP := conn.(*net.TCPConn); isTCP {
		t.Fatal("want a buffered conn, got the bare TCP conn")
	}
	conn.Write([]byte("LATE"))
	conn.(interface{ CloseWrite() error }).CloseWrite()
	// io.Copy into a TCP conn goes through WriteTo and ReadFrom.
	a, b := tcpPair(t)
	go func() { io.Copy(a, conn); a.Close() }()
	got, err := io.ReadAll(b)
	if err != nil || string(got) != "EARLYLATE" {
		t.Fatalf("tunnel = %q, %v", got, err)
	}
}

func TestConnectBadTarget(t *testing.T) {
	c, _ := cloudproxy.New(cloudproxy.Config{URL: mustURL(t, "http://127.0.0.1:1")})
	for _, target := range []string{"www.example.com", "a b:443", "x\r\nEvil: 1:443", "2001:db8::1:443", ":443"} {
		if conn, err := c.Connect(context.Background(), target, netip.Addr{}); err == nil {
			conn.Close()
			t.Errorf("Connect(%q) succeeded", target)
		}
	}
}

func TestHTTPSProxyWrongCA(t *testing.T) {
	ca, other := cloudproxytest.NewCA(t), cloudproxytest.NewCA(t)
	cert := ca.Issue(t, "127.0.0.1")
	px := cloudproxytest.Start(t, cloudproxytest.Options{TLS: &cert})
	c, _ := cloudproxy.New(cloudproxy.Config{URL: px.URL, RootCAs: other.Pool})
	if conn, err := c.DialProxy(context.Background()); err == nil || !strings.Contains(err.Error(), "certificate") {
		if conn != nil {
			conn.Close()
		}
		t.Fatalf("DialProxy err = %v, want a certificate error", err)
	}
}

func TestDialProxyAbsoluteForm(t *testing.T) {
	origin := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "origin saw "+r.Host+r.URL.Path)
	})}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go origin.Serve(ln)
	t.Cleanup(func() { origin.Close() })
	ca := cloudproxytest.NewCA(t)
	cert := ca.Issue(t, "127.0.0.1")
	px := cloudproxytest.Start(t, cloudproxytest.Options{TLS: &cert, Dial: func(string) string { return ln.Addr().String() }})
	c, _ := cloudproxy.New(cloudproxy.Config{URL: px.URL, RootCAs: ca.Pool})
	conn, err := c.DialProxy(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req, _ := http.NewRequest("GET", "http://news.example.com/a", nil)
	req.WriteProxy(conn)
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "origin saw news.example.com/a" {
		t.Errorf("body = %q", body)
	}
}

func tcpPair(tb testing.TB) (net.Conn, net.Conn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestBlockCategory(t *testing.T) {
	tests := []struct {
		name   string
		header string
		body   string
		want   string
	}{
		{"header wins", "Sports", "Category: Other", "Sports"},
		{"body", "", "<p>Category: Gambling &amp; Betting</p>", "Gambling"},
		{"body with tags", "", "<td>Category</td>: <b>Adult</b>", "Adult"},
		{"category=", "", "blocked?category=Social_Networking&url=x", "Social_Networking"},
		{"nothing", "", "<p>Access denied</p>", ""},
		{"control chars in header", "Spo\x01rts", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.header != "" {
				h.Set("X-Block-Category", tc.header)
			}
			if got := cloudproxy.BlockCategory(h, []byte(tc.body)); got != tc.want {
				t.Errorf("BlockCategory = %q, want %q", got, tc.want)
			}
		})
	}
}

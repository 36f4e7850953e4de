package tlscert

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestRedirector(t *testing.T) {
	lan := func(a netip.Addr, n string) bool {
		return a == netip.MustParseAddr("10.10.0.1") || a == netip.MustParseAddr("fd00:10::1") || n == "cloudsteer.lan"
	}
	for _, tc := range []struct {
		name   string
		rd     Redirector
		host   string
		target string
		method string
		code   int
		loc    string
	}{
		{"ip, port replaced", Redirector{HTTPSPort: 8443}, "10.10.0.1:80", "/status?lang=ja", "GET", 308, "https://10.10.0.1:8443/status?lang=ja"},
		{"ip, no port", Redirector{HTTPSPort: 8443}, "10.10.0.1", "/", "GET", 308, "https://10.10.0.1:8443/"},
		{"443 omitted", Redirector{HTTPSPort: 443}, "10.10.0.1:80", "/a/b", "GET", 308, "https://10.10.0.1/a/b"},
		{"0 means 443", Redirector{}, "cloudsteer.lan:80", "/", "GET", 308, "https://cloudsteer.lan/"},
		{"name lowercased", Redirector{HTTPSPort: 8443}, "CloudSteer.LAN.", "/x", "GET", 308, "https://cloudsteer.lan:8443/x"},
		{"ipv6", Redirector{HTTPSPort: 8443}, "[fd00:10::1]:80", "/x?y=1", "GET", 308, "https://[fd00:10::1]:8443/x?y=1"},
		{"post keeps 308", Redirector{HTTPSPort: 8443}, "10.10.0.1", "/api/v1/pause", "POST", 308, "https://10.10.0.1:8443/api/v1/pause"},
		{"escaped path kept", Redirector{HTTPSPort: 8443}, "10.10.0.1", "/a%20b/%2e%2e/c", "GET", 308, "https://10.10.0.1:8443/a%20b/%2e%2e/c"},
		{"double slash path stays a path", Redirector{HTTPSPort: 8443}, "10.10.0.1", "//evil.com/x", "GET", 308, "https://10.10.0.1:8443//evil.com/x"},
		{"options star", Redirector{HTTPSPort: 8443}, "10.10.0.1", "*", "OPTIONS", 308, "https://10.10.0.1:8443/"},
		{"raw query bytes escaped", Redirector{HTTPSPort: 8443}, "10.10.0.1", "/q", "GET", 308, "https://10.10.0.1:8443/q?a=%7F%0D%0A%20b%23c&d=%41"},
		{"allowed by Allow", Redirector{HTTPSPort: 8443, Allow: lan}, "cloudsteer.lan", "/", "GET", 308, "https://cloudsteer.lan:8443/"},

		{"userinfo trick", Redirector{HTTPSPort: 8443}, "evil.com@10.10.0.1", "/", "GET", 400, ""},
		{"path in host", Redirector{HTTPSPort: 8443}, "10.10.0.1/..", "/", "GET", 400, ""},
		{"path in host to other site", Redirector{HTTPSPort: 8443}, "10.10.0.1/.evil.com", "/", "GET", 400, ""},
		{"CRLF", Redirector{HTTPSPort: 8443}, "10.10.0.1\r\nLocation: https://evil.com", "/", "GET", 400, ""},
		{"empty host", Redirector{HTTPSPort: 8443}, "", "/", "GET", 400, ""},
		{"unbracketed v6", Redirector{HTTPSPort: 8443}, "fd00::1", "/", "GET", 400, ""},
		{"name not allowed", Redirector{HTTPSPort: 8443, Allow: lan}, "evil.com", "/", "GET", 400, ""},
		{"wan address not allowed", Redirector{HTTPSPort: 8443, Allow: lan}, "192.0.2.1", "/", "GET", 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, "http://placeholder"+strings.TrimPrefix(tc.target, "*"), nil)
			if tc.target == "*" {
				r.URL = &url.URL{Path: "*"}
			} else if strings.HasPrefix(tc.target, "//") {
				r.URL = &url.URL{Path: tc.target}
			}
			r.Host = tc.host
			if strings.Contains(tc.name, "raw query") {
				r.URL.RawQuery = "a=\x7f\r\n b#c&d=%41"
			}
			w := httptest.NewRecorder()
			tc.rd.ServeHTTP(w, r)
			if w.Code != tc.code || w.Header().Get("Location") != tc.loc {
				t.Errorf("got %d %q, want %d %q", w.Code, w.Header().Get("Location"), tc.code, tc.loc)
			}
		})
	}
}

// TestRedirectorServer sends raw requests to a real http.Server on
// loopback, including request-targets net/http parses itself.
func TestRedirectorServer(t *testing.T) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lan := func(a netip.Addr, n string) bool {
		return a == netip.MustParseAddr("10.10.0.1") || n == "cloudsteer.lan"
	}
	srv := &http.Server{Handler: Redirector{HTTPSPort: 8443, Allow: lan}, ReadHeaderTimeout: 2 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	for _, tc := range []struct {
		req  string
		code int
		loc  string
	}{
		{"GET /status?lang=ja HTTP/1.1\r\nHost: 10.10.0.1\r\n\r\n", 308, "https://10.10.0.1:8443/status?lang=ja"},
		{"GET //evil.com/%2e%2e HTTP/1.1\r\nHost: cloudsteer.lan:80\r\n\r\n", 308, "https://cloudsteer.lan:8443//evil.com/%2e%2e"},
		// The absolute-form target's host wins over Host (RFC 9112 3.2.2),
		// and it is checked the same way.
		{"GET http://evil.com/x HTTP/1.1\r\nHost: 10.10.0.1\r\n\r\n", 400, ""},
		{"GET http://10.10.0.1/x?q=1 HTTP/1.1\r\nHost: 10.10.0.1\r\n\r\n", 308, "https://10.10.0.1:8443/x?q=1"},
		{"GET / HTTP/1.1\r\nHost: evil.com@10.10.0.1\r\n\r\n", 400, ""},
		{"GET / HTTP/1.1\r\nHost: 10.10.0.1/..\r\n\r\n", 400, ""},
		{"GET / HTTP/1.0\r\n\r\n", 400, ""},
	} {
		conn, err := net.DialTimeout("tcp", ln.Addr().String(), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		conn.Write([]byte(tc.req))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		conn.Close()
		if err != nil {
			t.Errorf("%q: %v", tc.req, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code || resp.Header.Get("Location") != tc.loc {
			t.Errorf("%q: got %d %q, want %d %q", tc.req, resp.StatusCode, resp.Header.Get("Location"), tc.code, tc.loc)
		}
	}
}

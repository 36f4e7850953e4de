package servers

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/cloudsteer/cloudsteer/lab"
)

func TestProxyAuth(t *testing.T) {
	tl := startTestLab(t)
	cases := []struct {
		name   string
		header string // Proxy-Authorization; "" sends none
		user   string
		want   int
	}{
		{"no credentials", "", "", http.StatusProxyAuthRequired},
		{"entitlement code, empty password", basic(lab.EntitlementCode, ""), lab.EntitlementCode, http.StatusOK},
		{"entitlement code, any password", basic(lab.EntitlementCode, "whatever"), lab.EntitlementCode, http.StatusOK},
		{"entitlement code, no colon", "Basic " + b64(lab.EntitlementCode), lab.EntitlementCode, http.StatusOK},
		{"chain user and password", basic(lab.ChainUser, lab.ChainPassword), lab.ChainUser, http.StatusOK},
		{"chain user, wrong password", basic(lab.ChainUser, "nope"), lab.ChainUser, http.StatusProxyAuthRequired},
		{"chain password as user", basic(lab.ChainPassword, lab.ChainUser), lab.ChainPassword, http.StatusProxyAuthRequired},
		{"wrong code", basic("00000000-0000-0000-0000-000000000000", ""), "00000000-0000-0000-0000-000000000000", http.StatusProxyAuthRequired},
		{"bearer scheme", "Bearer " + lab.EntitlementCode, "", http.StatusProxyAuthRequired},
		{"bad base64", "Basic !!!", "", http.StatusProxyAuthRequired},
	}
	for _, method := range []string{"GET", "CONNECT"} {
		for _, tc := range cases {
			t.Run(method+"/"+tc.name, func(t *testing.T) {
				c := tl.conn(t, lab.CloudProxyV4, lab.CloudProxyHTTPPort)
				br := bufio.NewReader(c)
				head := "GET http://www.example.com/ HTTP/1.1\r\nHost: www.example.com\r\n"
				if method == "CONNECT" {
					head = "CONNECT www.example.com:80 HTTP/1.1\r\nHost: www.example.com:80\r\n"
				}
				if tc.header != "" {
					head += "Proxy-Authorization: " + tc.header + "\r\n"
				}
				head += "X-Forwarded-For: 10.10.0.10\r\n\r\n"
				resp, body := roundTrip(t, c, br, head)
				if resp.StatusCode != tc.want {
					t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.want, body)
				}
				if tc.want == http.StatusProxyAuthRequired {
					if got := resp.Header.Get("Proxy-Authenticate"); got != `Basic realm="cloud"` {
						t.Errorf("Proxy-Authenticate %q", got)
					}
					return
				}
				if method == "CONNECT" {
					// The tunnel reaches the origin's plain HTTP port.
					resp, body = roundTrip(t, c, br, "GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n")
				}
				if want := "hello from www.example.com via http\n"; body != want {
					t.Errorf("body %q, want %q", body, want)
				}
				rec := lastProxyRecord(t, tl, c.LocalAddr().String())
				if rec.User != tc.user || rec.AuthOK != (tc.want == http.StatusOK) || rec.Status != tc.want {
					t.Errorf("record user=%q auth_ok=%v status=%d, want %q %v %d", rec.User, rec.AuthOK, rec.Status, tc.user, tc.want == http.StatusOK, tc.want)
				}
				if rec.XFF != "10.10.0.10" || rec.Method != method || rec.Target != "www.example.com:80" || rec.Proxy != "lab" {
					t.Errorf("record %+v", rec)
				}
			})
		}
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// lastProxyRecord returns the last proxy log record from client address remote.
func lastProxyRecord(tb testing.TB, tl *testLab, remote string) ProxyRecord {
	tb.Helper()
	recs, err := ReadProxyLog(tl.path(ProxyLogFile))
	if err != nil {
		tb.Fatal(err)
	}
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i].Remote == remote {
			return recs[i]
		}
	}
	tb.Fatalf("no proxy record from %s in %d records", remote, len(recs))
	return ProxyRecord{}
}

func TestProxyConnectTunnel(t *testing.T) {
	tl := startTestLab(t)
	cases := []struct {
		name      string
		proxy     netip.Addr
		port      uint16
		proxyTLS  bool
		target    string
		site      string
		earlyData bool // send the ClientHello together with the CONNECT head
	}{
		{"http proxy v4 to name", lab.CloudProxyV4, lab.CloudProxyHTTPPort, false, "www.example.com:443", "www.example.com", false},
		{"http proxy v6 to name", lab.CloudProxyV6, lab.CloudProxyHTTPPort, false, "news.example.com:443", "news.example.com", false},
		{"https proxy v4 to name", lab.CloudProxyV4, lab.CloudProxyHTTPSPort, true, "bank.example:443", "bank.example", false},
		{"https proxy v6 to v6 literal", lab.CloudProxyV6, lab.CloudProxyHTTPSPort, true, "[2001:db8:113::30]:443", "gw1.akaetp.net", false},
		{"http proxy, hello before 200", lab.CloudProxyV4, lab.CloudProxyHTTPPort, false, "203.0.113.10:443", "www.example.com", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := tl.conn(t, tc.proxy, tc.port)
			c := raw
			if tc.proxyTLS {
				tc := tls.Client(raw, &tls.Config{ServerName: ProxyName, RootCAs: tl.lab.CAPool()})
				if err := tc.Handshake(); err != nil {
					t.Fatalf("tls to proxy: %v", err)
				}
				c = tc
			}
			head := fmt.Sprintf("CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: %s\r\n\r\n", tc.target, tc.target, codeAuth)
			var origin *tls.Conn
			br := bufio.NewReader(c)
			if !tc.earlyData {
				if _, err := io.WriteString(c, head); err != nil {
					t.Fatal(err)
				}
				resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
				if err != nil || resp.StatusCode != http.StatusOK {
					t.Fatalf("CONNECT: %v %v", resp, err)
				}
				origin = tls.Client(c, &tls.Config{ServerName: tc.site, RootCAs: tl.lab.CAPool()})
			} else {
				// The 200 arrives before the ServerHello; strip it as the
				// TLS client reads.
				origin = tls.Client(&prefixConn{Conn: c, prefix: head, early: true, br: br}, &tls.Config{ServerName: tc.site, RootCAs: tl.lab.CAPool()})
			}
			if err := origin.Handshake(); err != nil {
				t.Fatalf("tls to origin through tunnel: %v", err)
			}
			obr := bufio.NewReader(origin)
			resp, body := roundTrip(t, origin, obr, "GET /echo HTTP/1.1\r\nHost: "+tc.site+"\r\nContent-Length: 5\r\n\r\nabcde")
			if resp.StatusCode != 200 || body != "abcde" {
				t.Fatalf("echo through tunnel: %d %q", resp.StatusCode, body)
			}
			_, body = roundTrip(t, origin, obr, "GET / HTTP/1.1\r\nHost: "+tc.site+"\r\n\r\n")
			if want := "hello from " + tc.site + " via https\n"; body != want {
				t.Fatalf("body %q, want %q", body, want)
			}
			rec := lastProxyRecord(t, tl, raw.LocalAddr().String())
			if rec.Method != "CONNECT" || rec.Status != 200 || rec.Target != tc.target || rec.URL != tc.target || !rec.AuthOK || rec.TLS != tc.proxyTLS {
				t.Errorf("proxy record %+v", rec)
			}
			origins, err := ReadOriginLog(tl.path(OriginLogFile))
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, o := range origins {
				if o.Proto == "https" && o.Site == tc.site && o.SNI == tc.site && o.Path == "/" && o.Status == 200 {
					found = true
					// The proxy dials origins from its own address.
					if src := netip.MustParseAddrPort(o.Remote).Addr(); src != lab.CloudProxyV4 && src != lab.CloudProxyV6 {
						t.Errorf("origin saw %s, want a cloud proxy address", src)
					}
				}
			}
			if !found {
				t.Errorf("no https origin record for %s in %+v", tc.site, origins)
			}
		})
	}
}

func TestProxyAbsoluteFormTwoHostsOneConnection(t *testing.T) {
	tl := startTestLab(t)
	c := tl.conn(t, lab.CloudProxyV6, lab.CloudProxyHTTPPort)
	br := bufio.NewReader(c)
	reqs := []struct{ url, host, want string }{
		{"http://www.example.com/", "www.example.com", "hello from www.example.com via http\n"},
		{"http://news.example.com/", "news.example.com", "hello from news.example.com via http\n"},
		{"https://bank.example/", "bank.example", "hello from bank.example via https\n"},
		{"http://news.example.com:80/bytes?n=70000", "news.example.com", strings.Repeat("x", 70000)},
	}
	for _, r := range reqs {
		resp, body := roundTrip(t, c, br, "GET "+r.url+" HTTP/1.1\r\nHost: "+r.host+"\r\nProxy-Authorization: "+codeAuth+"\r\n\r\n")
		if resp.StatusCode != 200 || body != r.want {
			t.Fatalf("%s: %d %.80q", r.url, resp.StatusCode, body)
		}
	}
	// POST with a body through the same connection.
	resp, body := roundTrip(t, c, br, "POST http://www.example.com/echo HTTP/1.1\r\nHost: www.example.com\r\nProxy-Authorization: "+codeAuth+"\r\nContent-Length: 3\r\n\r\nxyz")
	if resp.StatusCode != 200 || body != "xyz" {
		t.Fatalf("POST echo: %d %q", resp.StatusCode, body)
	}
	recs, err := ReadProxyLog(tl.path(ProxyLogFile))
	if err != nil {
		t.Fatal(err)
	}
	var targets []string
	for _, r := range recs {
		if r.Remote == c.LocalAddr().String() {
			targets = append(targets, r.Target)
		}
	}
	want := "www.example.com:80 news.example.com:80 bank.example:443 news.example.com:80 www.example.com:80"
	if got := strings.Join(targets, " "); got != want {
		t.Errorf("targets on one connection %q, want %q", got, want)
	}
}

func TestProxyBlocksSports(t *testing.T) {
	tl := startTestLab(t)
	cases := []struct {
		name string
		head string
	}{
		{"connect", "CONNECT scores.sports.example:443 HTTP/1.1\r\nHost: scores.sports.example:443\r\n"},
		{"connect by address", "CONNECT 203.0.113.20:443 HTTP/1.1\r\nHost: 203.0.113.20:443\r\n"},
		{"http", "GET http://scores.sports.example/ HTTP/1.1\r\nHost: scores.sports.example\r\n"},
		{"http upper case", "GET http://SCORES.Sports.Example/x HTTP/1.1\r\nHost: scores.sports.example\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tl.conn(t, lab.CloudProxyV4, lab.CloudProxyHTTPPort)
			resp, body := roundTrip(t, c, bufio.NewReader(c), tc.head+"Proxy-Authorization: "+codeAuth+"\r\n\r\n")
			if resp.StatusCode != http.StatusForbidden || resp.Header.Get(BlockCategoryHeader) != "Sports" {
				t.Fatalf("status %d, %s %q", resp.StatusCode, BlockCategoryHeader, resp.Header.Get(BlockCategoryHeader))
			}
			if !strings.HasPrefix(tc.head, "CONNECT") {
				for _, want := range []string{"Blocked by your organization's policy", "Category: Sports"} {
					if !strings.Contains(body, want) {
						t.Errorf("block page lacks %q:\n%s", want, body)
					}
				}
			}
			rec := lastProxyRecord(t, tl, c.LocalAddr().String())
			if rec.Status != 403 || rec.Category != "Sports" {
				t.Errorf("record %+v", rec)
			}
		})
	}
	origins, err := ReadOriginLog(tl.path(OriginLogFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range origins {
		if o.Site == "scores.sports.example" {
			t.Errorf("blocked site was reached: %+v", o)
		}
	}
}

func TestProxyRefuses(t *testing.T) {
	tl := startTestLab(t)
	cases := []struct {
		name string
		head string
		want int
	}{
		{"origin-form", "GET / HTTP/1.1\r\nHost: www.example.com\r\nProxy-Authorization: " + codeAuth + "\r\n\r\n", http.StatusBadRequest},
		{"origin-form without auth", "GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n", http.StatusBadRequest},
		{"unknown name connect", "CONNECT nope.example.org:443 HTTP/1.1\r\nHost: x\r\nProxy-Authorization: " + codeAuth + "\r\n\r\n", http.StatusBadGateway},
		{"unknown name http", "GET http://nope.example.org/ HTTP/1.1\r\nHost: nope.example.org\r\nProxy-Authorization: " + codeAuth + "\r\n\r\n", http.StatusBadGateway},
		{"address outside the lab", "CONNECT 192.0.2.1:443 HTTP/1.1\r\nHost: x\r\nProxy-Authorization: " + codeAuth + "\r\n\r\n", http.StatusBadGateway},
		{"connect without port", "CONNECT www.example.com HTTP/1.1\r\nHost: x\r\nProxy-Authorization: " + codeAuth + "\r\n\r\n", http.StatusBadRequest},
		{"ftp scheme", "GET ftp://www.example.com/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization: " + codeAuth + "\r\n\r\n", http.StatusBadRequest},
		{"closed port", "CONNECT www.example.com:8 HTTP/1.1\r\nHost: x\r\nProxy-Authorization: " + codeAuth + "\r\n\r\n", http.StatusBadGateway},
		{"huge head", "GET http://www.example.com/ HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 100<<10) + "\r\n\r\n", http.StatusRequestHeaderFieldsTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tl.conn(t, lab.CloudProxyV4, lab.CloudProxyHTTPPort)
			resp, body := roundTrip(t, c, bufio.NewReader(c), tc.head)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.want, body)
			}
		})
	}
}

// prefixConn, with early set, sends prefix (the CONNECT head) in the same
// write as the first TLS record, and skips the proxy's 200 response before
// handing reads to TLS.
type prefixConn struct {
	net.Conn
	prefix  string
	early   bool
	sent    bool
	br      *bufio.Reader
	skipped bool
}

func (p *prefixConn) Write(b []byte) (int, error) {
	if p.early && !p.sent {
		p.sent = true
		if _, err := p.Conn.Write(append([]byte(p.prefix), b...)); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	return p.Conn.Write(b)
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if p.br == nil {
		return p.Conn.Read(b)
	}
	if !p.skipped {
		p.skipped = true
		resp, err := http.ReadResponse(p.br, &http.Request{Method: "CONNECT"})
		if err != nil {
			return 0, err
		}
		if resp.StatusCode != 200 {
			return 0, fmt.Errorf("CONNECT status %d", resp.StatusCode)
		}
	}
	return p.br.Read(b)
}

func TestCloseEndsTunnels(t *testing.T) {
	tl := startTestLab(t)
	c := tl.conn(t, lab.CloudProxyV4, lab.CloudProxyHTTPPort)
	br := bufio.NewReader(c)
	resp, _ := roundTrip(t, c, br, "CONNECT www.example.com:80 HTTP/1.1\r\nHost: x\r\nProxy-Authorization: "+codeAuth+"\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %d", resp.StatusCode)
	}
	if err := tl.lab.Close(); err != nil {
		t.Fatal(err)
	}
	// The idle tunnel is torn down: the client reads EOF (or a reset), not
	// its deadline.
	_, err := br.ReadByte()
	if ne, ok := err.(net.Error); err == nil || (ok && ne.Timeout()) {
		t.Fatalf("tunnel still open after Close: %v", err)
	}
	if _, err := os.Stat(tl.path(ReadyFile)); !os.IsNotExist(err) {
		t.Errorf("ready file after Close: %v", err)
	}
}

package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/dataplane/proxy"
)

func TestHTTPUpstreamPortIsTheOriginalDestinations(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := dialHTTP(t, e)
	port := e.origin.addr.Port()
	for _, host := range []string{"news.example.com:8080", "news.example.com:22", "127.0.0.1:8080"} {
		c.do(t, "GET /p HTTP/1.1\r\nHost: "+host+"\r\n\r\n", "GET")
	}
	recs := e.cloud.Records()
	want := []string{
		fmt.Sprintf("http://news.example.com:%d/p", port),
		fmt.Sprintf("http://news.example.com:%d/p", port),
		fmt.Sprintf("http://127.0.0.1:%d/p", port),
	}
	var got []string
	for _, r := range recs {
		got = append(got, r.Target)
	}
	if !slices.Equal(got, want) {
		t.Errorf("cloud proxy fetched %v, want %v", got, want)
	}
}

func TestHTTPPort80IsOmitted(t *testing.T) {
	up := startStreamer(t, "http-small", nil)
	e := startProxy(t, pxOpts{cloud: cloudURL(up, false), dst: netip.MustParseAddrPort("192.0.2.10:80"), poolMax: -1})
	c := dialAbort(t, e.addr)
	io.WriteString(c, "GET /x HTTP/1.1\r\nHost: news.example.com:8080\r\n\r\n")
	if _, head := up.next(t); head != "GET http://news.example.com/x" {
		t.Errorf("cloud proxy got %q, want GET http://news.example.com/x", head)
	}
}

func TestHTTPClientIdentityHeadersDropped(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := dialHTTP(t, e)
	_, body := c.do(t, "GET /hdr HTTP/1.1\r\nHost: news.example.com\r\nForwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n", "GET")
	// The test cloud proxy passes headers on to the origin (without its
	// own Proxy-Authorization).
	if want := `forwarded="" x-real-ip="" xff="127.0.0.1" auth=""`; body != want {
		t.Errorf("origin saw %s, want %s", body, want)
	}
	// Bypassed: the request goes as the client sent it, with no tenant headers.
	_, body = c.do(t, "GET /hdr HTTP/1.1\r\nHost: bank.example\r\nX-Real-IP: 10.0.0.9\r\n\r\n", "GET")
	if want := `forwarded="" x-real-ip="10.0.0.9" xff="" auth=""`; body != want {
		t.Errorf("bypassed: origin saw %s, want %s", body, want)
	}
}

// TestHTTPRetry: a kept upstream conn that the upstream closed is not
// used; a request that reached the upstream is never sent again.
func TestHTTPRetry(t *testing.T) {
	tests := []struct {
		mode, method string
		ok           bool // the second request gets the answer
		conns        int  // upstream conns that carried a request
	}{
		{"http-close-kept", "GET", true, 2},
		{"http-close-kept", "POST", true, 2},
		{"http-reset-kept", "GET", true, 2},
		{"http-reset-kept", "POST", true, 2},
		{"http-drop-second", "GET", false, 1},
		{"http-drop-second", "POST", false, 1},
		{"http-drop-second", "PUT", false, 1},
	}
	for _, tc := range tests {
		t.Run(tc.mode+" "+tc.method, func(t *testing.T) {
			up := startStreamer(t, tc.mode, nil)
			e := startProxy(t, pxOpts{cloud: cloudURL(up, false), dst: up.addr, poolMax: -1})
			c := dialHTTP(t, &env{addr: e.addr})
			c.do(t, "GET /1 HTTP/1.1\r\nHost: news.example.com\r\n\r\n", "GET")
			first, _ := up.next(t)
			time.Sleep(50 * time.Millisecond) // the upstream's close arrives
			body := ""
			if tc.method != "GET" {
				body = "Content-Length: 3\r\n\r\nabc"
			} else {
				body = "\r\n"
			}
			resp, _ := c.do(t, tc.method+" /2 HTTP/1.1\r\nHost: news.example.com\r\n"+body, tc.method)
			if got := resp.StatusCode == 200; got != tc.ok {
				t.Errorf("second request: status %d", resp.StatusCode)
			}
			var seconds []*upConn
			for {
				select {
				case r := <-up.reqs:
					if !strings.HasSuffix(r.head, "/2") {
						t.Errorf("unexpected request %q", r.head)
					}
					seconds = append(seconds, r.u)
					continue
				case <-time.After(200 * time.Millisecond):
				}
				break
			}
			if len(seconds) != 1 {
				t.Fatalf("the upstream got the second request %d times, want once", len(seconds))
			}
			if onNew := seconds[0] != first; onNew != (tc.conns == 2) {
				t.Errorf("second request on a new conn: %v, want %v", onNew, tc.conns == 2)
			}
		})
	}
}

func TestBypassTarget(t *testing.T) {
	t.Run("tls goes to the policy's address, not the client's pick", func(t *testing.T) {
		picked := startStreamer(t, "raw-stream", nil)
		real := startStreamer(t, "raw-stream", nil)
		e := startProxy(t, pxOpts{tls: true, dst: picked.addr, bypass: []string{"bank.example"}, poolMax: -1})
		e.policy().targets = map[string]netip.AddrPort{"bank.example": real.addr}
		c := dialAbort(t, e.addr)
		c.Write(clientHello(t, "bank.example"))
		if _, h := real.next(t); h != "raw" {
			t.Errorf("got %q", h)
		}
		select {
		case <-picked.reqs:
			t.Error("the client's pick got the flow")
		case <-time.After(100 * time.Millisecond):
		}
		if st := e.proxy.Stats(); st.Bypassed != 1 {
			t.Errorf("stats %+v", st)
		}
	})
	t.Run("http per request, a direct conn reused only for its target", func(t *testing.T) {
		picked := startStreamer(t, "http-small", nil)
		a := startStreamer(t, "http-small", nil)
		b := startStreamer(t, "http-small", nil)
		e := startProxy(t, pxOpts{dst: picked.addr, bypass: []string{"a.example", "b.example"}, poolMax: -1})
		e.policy().targets = map[string]netip.AddrPort{"a.example": a.addr, "b.example": b.addr}
		c := dialHTTP(t, &env{addr: e.addr})
		var conns []*upConn
		for _, host := range []string{"a.example", "a.example", "b.example", "a.example"} {
			c.do(t, "GET / HTTP/1.1\r\nHost: "+host+"\r\n\r\n", "GET")
			s := a
			if host == "b.example" {
				s = b
			}
			u, _ := s.next(t)
			conns = append(conns, u)
		}
		if conns[0] != conns[1] || conns[3] == conns[0] {
			t.Errorf("direct conns: %p %p %p %p: want the first reused, a new one after b.example", conns[0], conns[1], conns[2], conns[3])
		}
		select {
		case <-picked.reqs:
			t.Error("the client's pick got a request")
		default:
		}
	})
	t.Run("no address: refused", func(t *testing.T) {
		for _, proto := range []string{"tls", "http"} {
			t.Run(proto, func(t *testing.T) {
				picked := startStreamer(t, "raw-stream", nil)
				e := startProxy(t, pxOpts{tls: proto == "tls", dst: picked.addr, bypass: []string{"bank.example"}, poolMax: -1})
				e.policy().targets = map[string]netip.AddrPort{"bank.example": {}}
				c := dialAbort(t, e.addr)
				if proto == "tls" {
					c.Write(clientHello(t, "bank.example"))
					got, _ := io.ReadAll(io.LimitReader(c, 64))
					if want := []byte{21, 3, 3, 0, 2, 2, 49}; !slices.Equal(got, want) {
						t.Errorf("client got %v, want the access denied alert %v", got, want)
					}
				} else {
					io.WriteString(c, "GET / HTTP/1.1\r\nHost: bank.example\r\n\r\n")
					resp, err := http.ReadResponse(bufio.NewReader(c), nil)
					if err != nil || resp.StatusCode != 403 {
						t.Fatalf("response %v, %v; want 403", resp, err)
					}
				}
				evs := e.Events()
				if len(evs) != 1 || evs[0].Kind != proxy.KindBypassRefused || evs[0].Name != "bank.example" || evs[0].Target != picked.addr ||
					evs[0].Client != netip.MustParseAddr("127.0.0.1") || !strings.Contains(evs[0].Detail, "no address") {
					t.Errorf("events %+v", evs)
				}
				if st := e.proxy.Stats(); st.BypassRefused != 1 || st.Bypassed != 0 {
					t.Errorf("stats %+v", st)
				}
				select {
				case <-picked.reqs:
					t.Error("the client's pick got the flow")
				case <-time.After(50 * time.Millisecond):
				}
			})
		}
	})
}

// TestNotDialed: destinations never dialed for a client, with the test's
// loopback exemption off.
func TestNotDialed(t *testing.T) {
	cloud := startStreamer(t, "connect-stream", nil)
	tests := []struct {
		name  string
		tls   bool
		dst   string
		sni   string // tls: hello for this name ("" none); http: Host
		kind  string
		local bool // dst is a gateway address
	}{
		{name: "tls no sni loopback", tls: true, dst: "127.0.0.1:443", kind: proxy.KindBadClient},
		{name: "tls no sni link-local", tls: true, dst: "[fe80::1]:443", kind: proxy.KindBadClient},
		{name: "tls no sni mapped loopback", tls: true, dst: "[::ffff:127.0.0.1]:443", kind: proxy.KindBadClient},
		{name: "tls no sni gateway address", tls: true, dst: "192.0.2.7:443", kind: proxy.KindBadClient, local: true},
		{name: "tls bypass to loopback", tls: true, dst: "127.0.0.1:443", sni: "bank.example", kind: proxy.KindBypassRefused},
		{name: "tls bypass to gateway address", tls: true, dst: "192.0.2.7:443", sni: "bank.example", kind: proxy.KindBypassRefused, local: true},
		{name: "http ip host loopback", dst: "192.0.2.1:80", sni: "127.0.0.1", kind: proxy.KindBadClient},
		{name: "http ip host broadcast", dst: "192.0.2.1:80", sni: "255.255.255.255", kind: proxy.KindBadClient},
		{name: "http ip host multicast v6", dst: "192.0.2.1:80", sni: "[ff02::1]", kind: proxy.KindBadClient},
		{name: "http ip host gateway address", dst: "192.0.2.1:80", sni: "192.0.2.7", kind: proxy.KindBadClient, local: true},
		{name: "http bypass to loopback", dst: "127.0.0.1:80", sni: "bank.example", kind: proxy.KindBypassRefused},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := startProxy(t, pxOpts{tls: tc.tls, cloud: cloudURL(cloud, false), dst: netip.MustParseAddrPort(tc.dst), bypass: []string{"bank.example"}, poolMax: -1, strict: true})
			if tc.local {
				proxy.SetLocalAddrs(e.proxy, "192.0.2.7", "2001:db8::7")
			}
			c := dialAbort(t, e.addr)
			if tc.tls {
				c.Write(clientHello(t, tc.sni))
				got, _ := io.ReadAll(io.LimitReader(c, 64))
				if want := []byte{21, 3, 3, 0, 2, 2, 49}; !slices.Equal(got, want) {
					t.Errorf("client got %v, want the access denied alert %v", got, want)
				}
			} else {
				io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+tc.sni+"\r\n\r\n")
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil || resp.StatusCode != 403 {
					t.Fatalf("response %v, %v; want 403", resp, err)
				}
			}
			evs := e.Events()
			if len(evs) != 1 || evs[0].Kind != tc.kind {
				t.Errorf("events %+v, want one %s", evs, tc.kind)
			} else {
				t.Logf("event: %s: %s", evs[0].Kind, evs[0].Detail)
			}
			select {
			case r := <-cloud.reqs:
				t.Errorf("the cloud proxy got %q", r.head)
			default:
			}
		})
	}
	// Reached, for contrast: a global address and a name.
	for _, tc := range []struct{ dst, sni string }{{"192.0.2.1:443", ""}, {"127.0.0.1:443", "www.example.com"}} {
		e := startProxy(t, pxOpts{tls: true, cloud: cloudURL(cloud, false), dst: netip.MustParseAddrPort(tc.dst), poolMax: -1, strict: true})
		c := dialAbort(t, e.addr)
		c.Write(clientHello(t, tc.sni))
		if _, h := cloud.next(t); !strings.HasPrefix(h, "CONNECT ") {
			t.Errorf("cloud got %q", h)
		}
	}
}

func TestDestAllowed(t *testing.T) {
	e := startProxy(t, pxOpts{dst: netip.MustParseAddrPort("192.0.2.1:80"), poolMax: -1, strict: true})
	proxy.SetLocalAddrs(e.proxy, "198.51.100.1", "2001:db8::1")
	for addr, want := range map[string]bool{
		"8.8.8.8": true, "10.1.2.3": true, "2001:db8::2": true, "198.51.100.2": true,
		"127.0.0.1": false, "127.1.2.3": false, "::1": false, "0.0.0.0": false, "::": false,
		"169.254.1.1": false, "fe80::1": false, "224.0.0.1": false, "239.1.1.1": false, "ff02::1": false, "ff0e::1": false,
		"255.255.255.255": false, "0.1.2.3": false, "::ffff:127.0.0.1": false, "::ffff:169.254.0.1": false, "::ffff:255.255.255.255": false,
		"198.51.100.1": false, "2001:db8::1": false, "::ffff:198.51.100.1": false,
	} {
		if got, why := proxy.DestAllowed(e.proxy, netip.MustParseAddr(addr)); got != want {
			t.Errorf("%s: allowed %v (%s), want %v", addr, got, why, want)
		}
	}
}

var _ = net.Dial

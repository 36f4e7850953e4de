package servers

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudsteer/cloudsteer/lab"
)

// BlockedCategory is the category the lab cloud proxy and cloud DNS block.
const BlockedCategory = "Sports"

// BlockCategoryHeader names the category on a block response.
const BlockCategoryHeader = "X-Block-Category"

// maxProxyHead caps a proxy request's head (request line plus headers).
const maxProxyHead = 32 << 10

// startProxy runs the cloud proxy: HTTP on :8080 and HTTPS on :8443 of
// every proxy address.
func (l *Lab) startProxy(ctx context.Context, leaf tls.Certificate, w *jsonlWriter) error {
	p := &cloudProxy{
		sites:     newSiteTable(l.cfg.Sites),
		dial:      l.cfg.Dial,
		sources:   l.cfg.ProxyAddrs,
		log:       w,
		tunnels:   map[net.Conn]struct{}{},
		name:      l.cfg.ProxyLabel,
		refuseAll: l.cfg.RefuseAll,
	}
	p.transport = &http.Transport{
		DialContext:           p.dialOrigin,
		TLSClientConfig:       &tls.Config{RootCAs: l.CA.Pool(), MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL = pr.In.URL
			pr.Out.Host = pr.In.URL.Host
			pr.Out.Header.Del("Proxy-Authorization")
			pr.Out.Header.Del("Proxy-Connection")
		},
		Transport:     p.transport,
		FlushInterval: -1,
		ErrorHandler: func(rw http.ResponseWriter, r *http.Request, err error) {
			http.Error(rw, "cloud proxy: origin unreachable: "+err.Error(), http.StatusBadGateway)
		},
	}
	l.onClose(func() error { p.closeTunnels(); p.transport.CloseIdleConnections(); return nil })
	for _, a := range l.cfg.ProxyAddrs {
		for _, port := range []uint16{lab.CloudProxyHTTPPort, lab.CloudProxyHTTPSPort} {
			ln, err := l.listenTCP(ctx, netip.AddrPortFrom(a, port))
			if err != nil {
				return err
			}
			srv := &http.Server{
				Handler:           p,
				ReadHeaderTimeout: 10 * time.Second,
				IdleTimeout:       120 * time.Second,
				MaxHeaderBytes:    maxProxyHead,
				// HTTP/1.1 only: CONNECT needs a hijackable connection.
				TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
			}
			l.onClose(srv.Close)
			if port == lab.CloudProxyHTTPSPort {
				srv.TLSConfig = tlsServerConfig(leaf, "http/1.1")
				l.goServe(func() { serveErr(l, srv.ServeTLS(ln, "", "")) })
			} else {
				l.goServe(func() { serveErr(l, srv.Serve(ln)) })
			}
		}
	}
	return nil
}

// cloudProxy is the lab cloud secure web gateway: an authenticating HTTP
// forward proxy that blocks category Sports.
type cloudProxy struct {
	sites     *siteTable
	dial      DialFunc
	sources   []netip.Addr
	log       *jsonlWriter
	transport *http.Transport
	rp        *httputil.ReverseProxy

	// name is ProxyRecord.Proxy ("lab" unless a standalone proxy names
	// itself); refuseAll, when set and true, makes every request a 407
	// (an expired code), see standalone.go.
	name      string
	refuseAll *atomic.Bool

	mu      sync.Mutex
	tunnels map[net.Conn]struct{}
	closed  bool
}

// proxyCredentials checks a Proxy-Authorization header value: Basic with
// the entitlement code as user (any password) or the chaining user and
// password. It returns the user name it carried.
func proxyCredentials(h string) (user string, ok bool) {
	scheme, rest, found := strings.Cut(strings.TrimSpace(h), " ")
	if !found || !strings.EqualFold(scheme, "Basic") {
		return "", false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(rest))
	if err != nil {
		return "", false
	}
	user, pass, _ := strings.Cut(string(raw), ":")
	switch {
	case user == lab.EntitlementCode:
		return user, true
	case user == lab.ChainUser && pass == lab.ChainPassword:
		return user, true
	}
	return user, false
}

// targetOf returns host and host:port (default port filled in) of a proxy
// request; an origin-form request or a bad target is an error (400).
func targetOf(r *http.Request) (host, hostport string, err error) {
	if r.Method == http.MethodConnect {
		h, port, err := net.SplitHostPort(r.RequestURI)
		if err != nil || h == "" {
			return "", "", fmt.Errorf("CONNECT target %q is not host:port", r.RequestURI)
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return "", "", fmt.Errorf("CONNECT target %q has a bad port", r.RequestURI)
		}
		return h, net.JoinHostPort(h, port), nil
	}
	if !r.URL.IsAbs() || r.URL.Host == "" {
		return "", "", errors.New("origin-form request: this is a proxy, send an absolute URL")
	}
	port := r.URL.Port()
	switch r.URL.Scheme {
	case "http":
		if port == "" {
			port = "80"
		}
	case "https":
		if port == "" {
			port = "443"
		}
	default:
		return "", "", fmt.Errorf("unsupported scheme %q", r.URL.Scheme)
	}
	h := r.URL.Hostname()
	if h == "" {
		return "", "", fmt.Errorf("absolute URL %q has no host", r.RequestURI)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", "", fmt.Errorf("absolute URL %q has a bad port", r.RequestURI)
	}
	return h, net.JoinHostPort(h, port), nil
}

func (p *cloudProxy) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	rec := ProxyRecord{
		Time:   time.Now().UTC(),
		Proxy:  cmp.Or(p.name, "lab"),
		Remote: r.RemoteAddr,
		Method: r.Method,
		URL:    r.RequestURI,
		XFF:    r.Header.Get("X-Forwarded-For"),
		TLS:    r.TLS != nil,
	}
	logged := false
	logStatus := func(code int) {
		if !logged {
			logged = true
			rec.Status = code
			p.log.write(rec)
		}
	}
	sw := &statusWriter{ResponseWriter: rw, onStatus: logStatus}
	// A hijacked connection that failed before its 200 still gets a line.
	defer func() { logStatus(sw.code()) }()

	host, hostport, err := targetOf(r)
	if err != nil {
		http.Error(sw, err.Error(), http.StatusBadRequest)
		return
	}
	rec.Target = hostport
	user, ok := proxyCredentials(r.Header.Get("Proxy-Authorization"))
	if p.refuseAll != nil && p.refuseAll.Load() {
		ok = false
	}
	rec.User, rec.AuthOK = user, ok
	if !ok {
		sw.Header().Set("Proxy-Authenticate", `Basic realm="cloud"`)
		http.Error(sw, "proxy authentication required", http.StatusProxyAuthRequired)
		return
	}
	site, known := p.sites.lookup(host)
	rec.Category = site.Category
	if known && site.Category == BlockedCategory {
		sw.Header().Set(BlockCategoryHeader, site.Category)
		if r.Method == http.MethodConnect {
			http.Error(sw, "blocked: category "+site.Category, http.StatusForbidden)
			return
		}
		sw.Header().Set("Content-Type", "text/html; charset=utf-8")
		sw.WriteHeader(http.StatusForbidden)
		fmt.Fprintf(sw, blockPage, html.EscapeString(host), html.EscapeString(site.Category))
		return
	}
	if !known {
		http.Error(sw, fmt.Sprintf("cloud proxy: cannot resolve %q", host), http.StatusBadGateway)
		return
	}
	if r.Method == http.MethodConnect {
		p.tunnel(sw, r, hostport, logStatus)
		return
	}
	p.rp.ServeHTTP(sw, r)
}

const blockPage = `<!DOCTYPE html>
<html><head><title>Access blocked</title></head>
<body><h1>Blocked by your organization's policy</h1>
<p>Site: %s</p>
<p>Category: %s</p>
</body></html>
`

// dialOrigin connects to a lab site, resolving names through the site table.
func (p *cloudProxy) dialOrigin(ctx context.Context, network, hostport string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, err
	}
	site, ok := p.sites.lookup(host)
	if !ok {
		return nil, fmt.Errorf("resolve %s: no such lab name", host)
	}
	addrs := []netip.Addr{site.V4, site.V6}
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	}
	var errs []error
	for _, a := range addrs {
		c, err := p.dial(ctx, "tcp", sourceFor(p.sources, a), net.JoinHostPort(a.String(), port))
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// tunnel answers CONNECT: dial the origin, send 200 and copy both ways
// until both sides are done.
func (p *cloudProxy) tunnel(sw *statusWriter, r *http.Request, hostport string, logStatus func(int)) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	up, err := p.dialOrigin(ctx, "tcp", hostport)
	cancel()
	if err != nil {
		http.Error(sw, "cloud proxy: "+err.Error(), http.StatusBadGateway)
		return
	}
	hj, ok := sw.ResponseWriter.(http.Hijacker)
	if !ok {
		up.Close()
		http.Error(sw, "cloud proxy: cannot tunnel on this connection", http.StatusInternalServerError)
		return
	}
	down, brw, err := hj.Hijack()
	if err != nil {
		up.Close()
		return
	}
	if !p.track(down, up) {
		down.Close()
		up.Close()
		return
	}
	defer p.untrack(down, up)
	_ = down.SetDeadline(time.Time{})
	sw.status = http.StatusOK
	logStatus(http.StatusOK)
	if _, err := io.WriteString(down, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		down.Close()
		up.Close()
		return
	}
	done := make(chan struct{}, 2)
	go func() {
		// brw.Reader holds bytes the client sent right after its CONNECT head.
		_, _ = io.Copy(up, brw.Reader)
		closeWrite(up)
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(down, up)
		closeWrite(down)
		done <- struct{}{}
	}()
	<-done
	<-done
	down.Close()
	up.Close()
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() == nil {
			return
		}
	}
	c.Close()
}

func (p *cloudProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	for _, c := range cs {
		p.tunnels[c] = struct{}{}
	}
	return true
}

func (p *cloudProxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.tunnels, c)
	}
}

// closeTunnels ends every open CONNECT tunnel (hijacked connections are not
// closed by http.Server.Close).
func (p *cloudProxy) closeTunnels() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for c := range p.tunnels {
		c.Close()
	}
}

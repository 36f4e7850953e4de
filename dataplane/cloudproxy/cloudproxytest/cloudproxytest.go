// Package cloudproxytest is a loopback forward proxy and test CA for tests
// of the cloud proxy path: it takes CONNECT and absolute-form requests,
// checks Proxy-Authorization, blocks names with a category, and records
// what it saw.
package cloudproxytest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// Record is one request the proxy received.
type Record struct {
	Method string // CONNECT, GET, ...
	Target string // CONNECT authority or absolute URL
	Auth   string // Proxy-Authorization as received
	XFF    string // X-Forwarded-For as received
	Conn   string // the client's address: equal for requests on one connection
}

// Options configure a Proxy.
type Options struct {
	// Auth is the Proxy-Authorization value required; "" requires none.
	Auth string
	// Block maps host names to the category they are blocked for.
	Block map[string]string
	// Dial maps the authority a request names (host:port) to the
	// loopback address to connect to; nil dials the authority itself.
	Dial func(authority string) string
	// TLS, when set, makes the proxy speak TLS with this certificate.
	TLS *tls.Certificate
	// Addr is the address to listen on; "" is any free port of 127.0.0.1
	// (a test restarting a proxy passes the first one's address).
	Addr string
}

// Proxy is a running loopback forward proxy.
type Proxy struct {
	URL  *url.URL
	opts Options
	srv  *http.Server

	mu      sync.Mutex
	records []Record
}

// Start runs a Proxy on 127.0.0.1 until the test ends.
func Start(tb testing.TB, opts Options) *Proxy {
	tb.Helper()
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	p := &Proxy{opts: opts}
	scheme := "http"
	if opts.TLS != nil {
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{*opts.TLS}})
		scheme = "https"
	}
	p.URL = &url.URL{Scheme: scheme, Host: ln.Addr().String()}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go p.srv.Serve(ln)
	tb.Cleanup(func() { p.srv.Close() })
	return p
}

// Close stops the proxy: its listener and the connections it serves
// (tunnels already handed over keep running).
func (p *Proxy) Close() { p.srv.Close() }

// Records returns what the proxy received so far.
func (p *Proxy) Records() []Record {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Record(nil), p.records...)
}

func (p *Proxy) dialAddr(authority string) string {
	if p.opts.Dial != nil {
		return p.opts.Dial(authority)
	}
	return authority
}

// ServeHTTP handles one proxied request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	target := r.Host
	if r.Method != http.MethodConnect {
		target = r.URL.String()
	}
	p.mu.Lock()
	p.records = append(p.records, Record{Method: r.Method, Target: target, Auth: r.Header.Get("Proxy-Authorization"), XFF: r.Header.Get("X-Forwarded-For"), Conn: r.RemoteAddr})
	p.mu.Unlock()

	if p.opts.Auth != "" && r.Header.Get("Proxy-Authorization") != p.opts.Auth {
		w.Header().Set("Proxy-Authenticate", `Basic realm="cloud"`)
		http.Error(w, "proxy authentication required", http.StatusProxyAuthRequired)
		return
	}
	host := r.URL.Hostname()
	if r.Method == http.MethodConnect {
		host, _, _ = net.SplitHostPort(r.Host)
	}
	if cat, ok := p.opts.Block[strings.ToLower(host)]; ok {
		w.Header().Set("X-Block-Category", cat)
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprintf(w, "<html><body><h1>Blocked</h1><p>Category: %s</p></body></html>\n", cat)
		return
	}
	if r.Method == http.MethodConnect {
		p.connect(w, r)
		return
	}
	p.forward(w, r)
}

func (p *Proxy) connect(w http.ResponseWriter, r *http.Request) {
	up, err := net.DialTimeout("tcp", p.dialAddr(r.Host), 5*time.Second)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		up.Close()
		return
	}
	io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		up.Write(b)
	}
	pipe(c, up)
}

func (p *Proxy) forward(w http.ResponseWriter, r *http.Request) {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, p.dialAddr(addr))
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.Header.Del("Proxy-Authorization")
	out.Header.Del("Proxy-Connection")
	if r.ContentLength == 0 {
		out.Body = nil
	}
	resp, err := tr.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		rwc, ok := resp.Body.(io.ReadWriteCloser)
		c, brw, err := http.NewResponseController(w).Hijack()
		if !ok || err != nil {
			return
		}
		resp.Body = nil // the head only: the body is the upgraded stream
		resp.Write(c)
		if n := brw.Reader.Buffered(); n > 0 {
			b, _ := brw.Reader.Peek(n)
			rwc.Write(b)
		}
		go func() { io.Copy(rwc, c); rwc.Close() }()
		io.Copy(c, rwc)
		c.Close()
		return
	}
	w.WriteHeader(resp.StatusCode)
	// Pass each piece on at once, so a streamed body stays chunked.
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			w.Write(buf[:n])
			rc.Flush()
		}
		if err != nil {
			return
		}
	}
}

// pipe copies both ways until both directions end.
func pipe(a, b net.Conn) {
	done := make(chan struct{})
	go func() {
		io.Copy(b, a)
		closeWrite(b)
		close(done)
	}()
	io.Copy(a, b)
	closeWrite(a)
	<-done
	a.Close()
	b.Close()
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

// CA is a throwaway certificate authority.
type CA struct {
	Pool *x509.CertPool
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewCA creates a self-signed CA.
func NewCA(tb testing.TB) *CA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "cloudsteer test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{Pool: pool, cert: cert, key: key}
}

// Issue returns a server certificate for the names (DNS names or IPs).
func (ca *CA) Issue(tb testing.TB, names ...string) tls.Certificate {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if a, err := netip.ParseAddr(n); err == nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, a.AsSlice())
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		tb.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

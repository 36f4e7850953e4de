// Package servers runs the lab's "internet": origin web servers (HTTP,
// HTTPS and QUIC on each lab site's addresses), a cloud proxy that behaves
// like the cloud secure web gateway (proxy auth, CONNECT, absolute-form
// HTTP, category blocking), a cloud DNS resolver (plain DNS on :53, and DNS
// over TLS, HTTPS and QUIC as dns.cloud.example: encdns.go) and an authoritative DNS
// server, all logging what they saw as JSON lines.
//
// Files in the serve directory: ca.pem and ca-key.pem (the lab CA, kept
// across starts), proxy.jsonl, origin.jsonl and dns.jsonl (one record per
// request: ProxyRecord, OriginRecord, DNSRecord; each written before the
// answer goes out), and ready (written when every listener is up, removed
// on Close).
//
// The cloud resolver blocks category Sports by answering 0.0.0.0 (A) and
// :: (AAAA) with NOERROR, and an empty NOERROR answer for other types; the
// cloud proxy answers 403 with X-Block-Category. Both resolve names through
// the site table; the proxy accepts address literals of lab sites only.
package servers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudsteer/cloudsteer/lab"
)

// DialFunc opens an outgoing connection (the proxy to origins, the cloud
// resolver to the authoritative server) from local address local (any
// address when local is the zero Addr) to address.
type DialFunc func(ctx context.Context, network string, local netip.Addr, address string) (net.Conn, error)

// Dial is the default DialFunc: a net.Dialer without MPTCP.
func Dial(ctx context.Context, network string, local netip.Addr, address string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	d.SetMultipathTCP(false)
	if local.IsValid() {
		switch network {
		case "tcp", "tcp4", "tcp6":
			d.LocalAddr = &net.TCPAddr{IP: local.AsSlice()}
		case "udp", "udp4", "udp6":
			d.LocalAddr = &net.UDPAddr{IP: local.AsSlice()}
		}
	}
	return d.DialContext(ctx, network, address)
}

// sourceFor returns the address of addrs in the family of dst, so the
// servers' outgoing connections come from their own service address.
func sourceFor(addrs []netip.Addr, dst netip.Addr) netip.Addr {
	for _, a := range addrs {
		if a.Is4() == dst.Unmap().Is4() {
			return a
		}
	}
	return netip.Addr{}
}

// Config says what to run and where; zero fields take the lab's values.
type Config struct {
	Dir             string       // CA, logs and the ready file; required
	Sites           []lab.Site   // default lab.Sites
	ProxyAddrs      []netip.Addr // default lab.CloudProxyV4, V6
	CloudDNSAddrs   []netip.Addr // default lab.CloudDNSV4, V6
	AuthDNSAddrs    []netip.Addr // default lab.AuthDNSV4, V6
	AuthDNSUpstream string       // the cloud resolver's upstream; default AuthDNSV4:53
	// Dial opens outgoing connections; default Dial. The cloud proxy dials
	// origins from its own address, the cloud resolver the authoritative
	// server from its own. Tests that run the servers in another network
	// namespace dial there.
	Dial DialFunc
	// BindTimeout is how long a listener retries an address that is not
	// (yet) assigned; default 3s.
	BindTimeout time.Duration
	Logger      *slog.Logger
	// ProxyLabel is the Proxy field of the cloud proxy's records (default
	// "lab"); RefuseAll, when set and true, makes it answer every request
	// 407. Both are for a standalone proxy (standalone.go).
	ProxyLabel string
	RefuseAll  *atomic.Bool
}

func (c *Config) fill() error {
	if c.Dir == "" {
		return errors.New("config: Dir is required")
	}
	if c.Sites == nil {
		c.Sites = lab.Sites
	}
	if c.ProxyAddrs == nil {
		c.ProxyAddrs = []netip.Addr{lab.CloudProxyV4, lab.CloudProxyV6}
	}
	if c.CloudDNSAddrs == nil {
		c.CloudDNSAddrs = []netip.Addr{lab.CloudDNSV4, lab.CloudDNSV6}
	}
	if c.AuthDNSAddrs == nil {
		c.AuthDNSAddrs = []netip.Addr{lab.AuthDNSV4, lab.AuthDNSV6}
	}
	if c.AuthDNSUpstream == "" {
		c.AuthDNSUpstream = netip.AddrPortFrom(lab.AuthDNSV4, 53).String()
	}
	if c.Dial == nil {
		c.Dial = Dial
	}
	if c.BindTimeout == 0 {
		c.BindTimeout = 3 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Addrs returns every address the servers of cfg listen on, for a check
// that they are assigned before starting.
func (c Config) Addrs() []netip.Addr {
	_ = c.fill()
	var out []netip.Addr
	for _, s := range c.Sites {
		out = append(out, s.V4, s.V6)
	}
	out = append(out, c.ProxyAddrs...)
	out = append(out, c.CloudDNSAddrs...)
	out = append(out, c.AuthDNSAddrs...)
	return out
}

// Lab is the set of running lab servers.
type Lab struct {
	cfg     Config
	log     *slog.Logger
	CA      *CA
	dnsLeaf tls.Certificate // the cloud resolver's, for DoT, DoH, DoQ
	closers []func() error
	logs    []*jsonlWriter
	wg      sync.WaitGroup
	once    sync.Once
	cancel  context.CancelFunc
}

// Start creates DIR, the CA and the logs, opens every listener and serves
// until Close; when all listen it writes DIR/ready. All sockets are opened
// before Start returns, in the caller's network namespace.
func Start(ctx context.Context, cfg Config) (_ *Lab, err error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create dir: %w", err)
	}
	readyPath := filepath.Join(cfg.Dir, ReadyFile)
	if err := os.Remove(readyPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale ready file: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	l := &Lab{cfg: cfg, log: cfg.Logger.With("component", "labservers"), cancel: cancel}
	defer func() {
		if err != nil {
			_ = l.Close()
		}
	}()
	if l.CA, err = LoadOrCreateCA(cfg.Dir); err != nil {
		return nil, err
	}
	names := []string{ProxyName}
	var ips []net.IP
	for _, s := range cfg.Sites {
		names = append(names, s.Name)
		ips = append(ips, s.V4.AsSlice(), s.V6.AsSlice())
	}
	for _, a := range cfg.ProxyAddrs {
		ips = append(ips, a.AsSlice())
	}
	leaf, err := l.CA.Issue(names, ips)
	if err != nil {
		return nil, err
	}
	var dnsIPs []net.IP
	for _, a := range cfg.CloudDNSAddrs {
		dnsIPs = append(dnsIPs, a.AsSlice())
	}
	if l.dnsLeaf, err = l.CA.Issue([]string{CloudDNSName}, dnsIPs); err != nil {
		return nil, err
	}
	logs := map[string]**jsonlWriter{}
	var proxyLog, originLog, dnsLog *jsonlWriter
	logs[ProxyLogFile], logs[OriginLogFile], logs[DNSLogFile] = &proxyLog, &originLog, &dnsLog
	for name, w := range logs {
		if *w, err = openJSONL(filepath.Join(cfg.Dir, name)); err != nil {
			return nil, err
		}
		l.logs = append(l.logs, *w)
	}

	if err := l.startOrigins(ctx, leaf, originLog); err != nil {
		return nil, err
	}
	if err := l.startProxy(ctx, leaf, proxyLog); err != nil {
		return nil, err
	}
	if err := l.startDNS(ctx, dnsLog); err != nil {
		return nil, err
	}
	if err := os.WriteFile(readyPath, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("write ready file: %w", err)
	}
	l.log.Info("lab servers ready", "dir", cfg.Dir, "sites", len(cfg.Sites))
	return l, nil
}

// CAPool returns a pool holding the lab CA, for clients.
func (l *Lab) CAPool() *x509.CertPool { return l.CA.Pool() }

// Close stops every server, waits for their goroutines, closes the logs and
// removes DIR/ready.
func (l *Lab) Close() error {
	var errs []error
	l.once.Do(func() {
		l.cancel()
		for i := len(l.closers) - 1; i >= 0; i-- {
			if err := l.closers[i](); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		}
		l.wg.Wait()
		for _, w := range l.logs {
			errs = append(errs, w.close())
		}
		if err := os.Remove(filepath.Join(l.cfg.Dir, ReadyFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	})
	return errors.Join(errs...)
}

// Run starts the servers and serves until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	l, err := Start(ctx, cfg)
	if err != nil {
		return err
	}
	<-ctx.Done()
	l.log.Info("lab servers stopping")
	return l.Close()
}

func (l *Lab) onClose(f func() error) { l.closers = append(l.closers, f) }

func (l *Lab) goServe(f func()) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		f()
	}()
}

// retryBind calls bind until it succeeds or fails with something other
// than "address not available" (an address just added may still be
// tentative), or BindTimeout passes.
func (l *Lab) retryBind(bind func() error) error {
	deadline := time.Now().Add(l.cfg.BindTimeout)
	for {
		err := bind()
		if err == nil || !errors.Is(err, syscall.EADDRNOTAVAIL) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (l *Lab) listenTCP(ctx context.Context, addr netip.AddrPort) (net.Listener, error) {
	lc := net.ListenConfig{}
	lc.SetMultipathTCP(false)
	var ln net.Listener
	err := l.retryBind(func() error {
		var err error
		ln, err = lc.Listen(ctx, "tcp", addr.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen tcp %s: %w", addr, err)
	}
	l.onClose(func() error { return ln.Close() })
	return ln, nil
}

func (l *Lab) listenUDP(ctx context.Context, addr netip.AddrPort) (net.PacketConn, error) {
	var lc net.ListenConfig
	var pc net.PacketConn
	err := l.retryBind(func() error {
		var err error
		pc, err = lc.ListenPacket(ctx, "udp", addr.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen udp %s: %w", addr, err)
	}
	l.onClose(func() error { return pc.Close() })
	return pc, nil
}

// tlsServerConfig returns a TLS config serving the lab leaf certificate.
func tlsServerConfig(leaf tls.Certificate, nextProtos ...string) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{leaf},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   nextProtos,
	}
}

// siteTable maps lab names and addresses to sites.
type siteTable struct {
	byName map[string]lab.Site
	byAddr map[netip.Addr]lab.Site
}

func newSiteTable(sites []lab.Site) *siteTable {
	t := &siteTable{byName: map[string]lab.Site{}, byAddr: map[netip.Addr]lab.Site{}}
	for _, s := range sites {
		t.byName[canonicalName(s.Name)] = s
		t.byAddr[s.V4] = s
		t.byAddr[s.V6] = s
	}
	return t
}

// lookup resolves a host (a name or an address literal) to its lab site.
func (t *siteTable) lookup(host string) (lab.Site, bool) {
	if a, err := netip.ParseAddr(host); err == nil {
		s, ok := t.byAddr[a.Unmap().WithZone("")]
		return s, ok
	}
	s, ok := t.byName[canonicalName(host)]
	return s, ok
}

func canonicalName(n string) string {
	b := []byte(n)
	for len(b) > 0 && b[len(b)-1] == '.' {
		b = b[:len(b)-1]
	}
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

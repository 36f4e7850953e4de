// Package daemon wires cloudsteer's gateway together for `cloudsteer run`:
// listeners first, then the nftables table, then the eBPF classifier, so no
// flow is ever steered to a socket that is not there yet; and the reverse on
// the way out.
package daemon

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/cloudsteer/cloudsteer/controlplane/bypass"
	"github.com/cloudsteer/cloudsteer/controlplane/config"
	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy"
	"github.com/cloudsteer/cloudsteer/dataplane/firewall"
	"github.com/cloudsteer/cloudsteer/dataplane/proxy"
	"github.com/cloudsteer/cloudsteer/dataplane/resolver"
	"github.com/cloudsteer/cloudsteer/dataplane/steer"
)

// Daemon is a running gateway.
type Daemon struct {
	cfg *config.Config
	log *slog.Logger

	cloud    *cloudproxy.Client
	proxy    *proxy.Proxy
	resolver *resolver.Resolver
	bypass   *bypass.Set
	fw       *firewall.Table
	steer    *steer.Steer

	closers []func() error // listeners, in opening order
	wg      sync.WaitGroup
	cancel  context.CancelFunc
}

// CheckEnvironment validates what the config names on this machine (the
// interfaces, the CA file) and returns a *config.Error for a problem there.
func CheckEnvironment(cfg *config.Config) error {
	for i, name := range cfg.LANInterfaces {
		if _, err := netlink.LinkByName(name); err != nil {
			return &config.Error{Key: fmt.Sprintf("lan_interfaces[%d]", i), Problem: fmt.Sprintf("no interface %q on this machine", name)}
		}
	}
	if cfg.CloudProxy.CAFile != "" {
		if _, err := loadCA(cfg.CloudProxy.CAFile); err != nil {
			return &config.Error{Key: "cloud_proxy.ca_file", Problem: err.Error()}
		}
	}
	return nil
}

func loadCA(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// Start brings the gateway up. On error everything already set up is undone.
func Start(ctx context.Context, cfg *config.Config, log *slog.Logger) (_ *Daemon, err error) {
	if err := CheckEnvironment(cfg); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	d := &Daemon{cfg: cfg, log: log.With("component", "daemon"), cancel: cancel}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()

	var roots *x509.CertPool
	if cfg.CloudProxy.CAFile != "" {
		if roots, err = loadCA(cfg.CloudProxy.CAFile); err != nil {
			return nil, fmt.Errorf("load cloud proxy CA: %w", err)
		}
	}
	user, pass := cfg.CloudProxy.Credentials()
	d.cloud, err = cloudproxy.New(cloudproxy.Config{
		URL:         cfg.CloudProxy.ProxyURL(),
		RootCAs:     roots,
		Username:    user,
		Password:    pass,
		DialTimeout: cfg.CloudProxy.ConnectTimeout.D(),
	})
	if err != nil {
		return nil, fmt.Errorf("set up cloud proxy client: %w", err)
	}

	// The bypass set needs the kernel map, which comes last; until then it
	// writes into a buffer that is replayed into the map.
	pending := &pendingMap{}
	d.bypass, err = bypass.NewSet(pending, cfg.Bypass.DomainPatterns(), cfg.Bypass.Prefixes(), nil, log)
	if err != nil {
		return nil, fmt.Errorf("build bypass set: %w", err)
	}

	d.resolver, err = resolver.New(resolver.Config{
		Upstreams: cfg.DNS.UpstreamAddrs(),
		Timeout:   cfg.DNS.Timeout.D(),
		CacheSize: cfg.DNS.CacheSize,
		Snoop:     d.bypass.Snoop,
		Logger:    log,
	})
	if err != nil {
		return nil, fmt.Errorf("set up resolver: %w", err)
	}
	d.proxy, err = proxy.New(proxy.Config{
		Cloud:          d.cloud,
		Policy:         d.bypass,
		OriginalDst:    firewall.OriginalDst,
		OnEvent:        d.onEvent,
		PeekTimeout:    cfg.Proxy.PeekTimeout.D(),
		IdleTimeout:    cfg.Proxy.IdleTimeout.D(),
		DialTimeout:    cfg.CloudProxy.ConnectTimeout.D(),
		MaxHeaderBytes: cfg.Proxy.MaxHeaderBytes,
		Logger:         log,
	})
	if err != nil {
		return nil, fmt.Errorf("set up proxy: %w", err)
	}

	// 1. Listeners.
	for _, fam := range []string{"4", "6"} {
		tlsLn, err := listenTCP(ctx, fam, cfg.Listen.TLSPort)
		if err != nil {
			return nil, err
		}
		httpLn, err := listenTCP(ctx, fam, cfg.Listen.HTTPPort)
		if err != nil {
			tlsLn.Close()
			return nil, err
		}
		dnsTCP, err := listenTCP(ctx, fam, cfg.Listen.DNSPort)
		if err != nil {
			tlsLn.Close()
			httpLn.Close()
			return nil, err
		}
		dnsUDP, err := listenUDP(ctx, fam, cfg.Listen.DNSPort)
		if err != nil {
			tlsLn.Close()
			httpLn.Close()
			dnsTCP.Close()
			return nil, err
		}
		d.closers = append(d.closers, tlsLn.Close, httpLn.Close, dnsTCP.Close, dnsUDP.Close)
		d.goServe("tls"+fam, func() error { return d.proxy.ServeTLS(ctx, tlsLn) })
		d.goServe("http"+fam, func() error { return d.proxy.ServePlainHTTP(ctx, httpLn) })
		d.goServe("dns"+fam, func() error { return d.resolver.Serve(ctx, dnsUDP, dnsTCP) })
	}

	// 2. nftables.
	d.fw, err = firewall.New(ctx, firewall.Config{
		LANInterfaces: cfg.LANInterfaces,
		Marks:         firewall.Marks{HTTP: steer.MarkHTTP, TLS: steer.MarkTLS, DNS: steer.MarkDNS, QUIC: steer.MarkQUIC},
		HTTPPort:      cfg.Listen.HTTPPort,
		TLSPort:       cfg.Listen.TLSPort,
		DNSPort:       cfg.Listen.DNSPort,
	})
	if err != nil {
		return nil, fmt.Errorf("install nftables table: %w", err)
	}

	// 3. eBPF classifier.
	d.steer, err = steer.New(ctx, steer.Config{Interfaces: cfg.LANInterfaces})
	if err != nil {
		return nil, fmt.Errorf("attach eBPF classifier: %w", err)
	}
	if err := pending.attach(d.steer); err != nil {
		return nil, fmt.Errorf("fill bypass map: %w", err)
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.bypass.Run(ctx, time.Second)
	}()

	d.log.Info("steering",
		"lan", cfg.LANInterfaces,
		"cloud_proxy", cfg.CloudProxy.ProxyURL().Redacted(),
		"dns_upstreams", cfg.DNS.UpstreamAddrs(),
		"bypass_domains", len(bypass.SystemDomains)+len(cfg.Bypass.DomainPatterns()),
		"bypass_cidrs", len(cfg.Bypass.Prefixes()))
	return d, nil
}

func (d *Daemon) goServe(name string, serve func() error) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := serve(); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, context.Canceled) {
			d.log.Error("listener stopped", "listener", name, "err", err)
		}
	}()
}

func (d *Daemon) onEvent(ev proxy.Event) {
	switch ev.Kind {
	case "auth_failed":
		d.log.Error("cloud proxy rejected the tenant credentials: check the entitlement code",
			"client", ev.Client, "name", ev.Name, "status", ev.Status)
	case "blocked":
		d.log.Info("blocked by cloud proxy", "client", ev.Client, "name", ev.Name, "proto", ev.Proto, "category", ev.Category)
	default:
		d.log.Debug("proxy event", "kind", ev.Kind, "client", ev.Client, "name", ev.Name, "detail", ev.Detail)
	}
}

// Steer returns the eBPF classifier (for status and tests).
func (d *Daemon) Steer() *steer.Steer { return d.steer }

// Bypass returns the live bypass set.
func (d *Daemon) Bypass() *bypass.Set { return d.bypass }

// Close undoes Start in reverse: classifier, nftables table, listeners.
func (d *Daemon) Close() error {
	var errs []error
	if d.steer != nil {
		errs = append(errs, d.steer.Close())
	}
	if d.fw != nil {
		errs = append(errs, d.fw.Close())
	}
	if d.cancel != nil {
		d.cancel()
	}
	for i := len(d.closers) - 1; i >= 0; i-- {
		if err := d.closers[i](); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	d.wg.Wait()
	return errors.Join(errs...)
}

// Run starts the gateway and serves until ctx is done.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	d, err := Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	<-ctx.Done()
	d.log.Info("stopping")
	if err := d.Close(); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	d.log.Info("stopped; kernel state removed")
	return nil
}

func listenTCP(ctx context.Context, fam string, port uint16) (net.Listener, error) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	addr := fmt.Sprintf("0.0.0.0:%d", port)
	if fam == "6" {
		addr = fmt.Sprintf("[::]:%d", port)
	}
	ln, err := lc.Listen(ctx, "tcp"+fam, addr)
	if err != nil {
		return nil, fmt.Errorf("listen on tcp%s %s: %w", fam, addr, err)
	}
	return ln, nil
}

func listenUDP(ctx context.Context, fam string, port uint16) (net.PacketConn, error) {
	var lc net.ListenConfig
	addr := fmt.Sprintf("0.0.0.0:%d", port)
	if fam == "6" {
		addr = fmt.Sprintf("[::]:%d", port)
	}
	pc, err := lc.ListenPacket(ctx, "udp"+fam, addr)
	if err != nil {
		return nil, fmt.Errorf("listen on udp%s %s: %w", fam, addr, err)
	}
	return pc, nil
}

// pendingMap buffers bypass map writes until the kernel map exists.
type pendingMap struct {
	mu    sync.Mutex
	real  bypass.Map
	added map[netip.Prefix]bool
}

func (p *pendingMap) AddBypass(pr netip.Prefix) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.real != nil {
		return p.real.AddBypass(pr)
	}
	if p.added == nil {
		p.added = map[netip.Prefix]bool{}
	}
	p.added[pr] = true
	return nil
}

func (p *pendingMap) DeleteBypass(pr netip.Prefix) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.real != nil {
		return p.real.DeleteBypass(pr)
	}
	delete(p.added, pr)
	return nil
}

func (p *pendingMap) attach(m bypass.Map) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for pr := range p.added {
		errs = append(errs, m.AddBypass(pr))
	}
	p.real, p.added = m, nil
	return errors.Join(errs...)
}

package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/controlplane/config"
	"github.com/cloudsteer/cloudsteer/controlplane/console"
	"github.com/cloudsteer/cloudsteer/controlplane/console/tlscert"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// ConsoleCertDir is the directory, inside the state directory, that holds
// the console's self-made certificate and key.
const ConsoleCertDir = "console"

// consoleState is the daemon's web console once started.
type consoleState struct {
	c    *console.Console
	cert *tlscert.Cert
	// caConfig is console.inspection_ca read at start (DER), nil if unset.
	caConfig []byte
}

// consoleBackend is console.Backend over the daemon: the admin API's
// controller plus the console's own needs. (It is a type of its own
// because *Daemon has methods of the same names with other signatures.)
type consoleBackend struct {
	*controller
}

var (
	_ console.Backend  = consoleBackend{}
	_ api.ConsoleAdmin = (*controller)(nil)
)

// consoleGuardPorts are the console's ports for the firewall guard.
func consoleGuardPorts(cfg *config.Config) []uint16 {
	if !cfg.Console.On() {
		return nil
	}
	ports := []uint16{cfg.Console.Port}
	if p := cfg.Console.PlainHTTPPort(); p != 0 {
		ports = append(ports, p)
	}
	return ports
}

// startConsole loads or makes the console's certificate, builds the
// console and serves it over HTTPS on console.port, and the redirect (and
// CA download) on console.http_port, of each LAN interface, IPv4 and IPv6,
// each socket bound to its device (never lo, never the WAN; the nftables
// guard drops those ports from anywhere else too). With no admin set up
// yet it makes a setup token and logs the setup link.
func (d *Daemon) startConsole(ctx context.Context) error {
	cc := d.cfg.Console
	if !cc.On() {
		return nil
	}
	log := d.log.With("component", "console")
	st := &consoleState{}
	var err error
	if cc.CertFile != "" {
		st.cert, err = tlscert.LoadProvided(cc.CertFile, cc.KeyFile)
	} else {
		st.cert, err = tlscert.LoadOrCreate(filepath.Join(d.cfg.StateDir, ConsoleCertDir), d.cfg.Admin.Hostnames, d.consoleAddrs(), d.now)
	}
	if err != nil {
		return fmt.Errorf("console certificate: %w", err)
	}
	if cc.InspectionCA != "" {
		if st.caConfig, err = config.LoadInspectionCA(cc.InspectionCA); err != nil {
			return &config.Error{Key: "console.inspection_ca", Problem: err.Error()}
		}
	}
	d.consoleSt = st
	st.c, err = console.New(consoleBackend{d.ctrl}, console.Options{API: d.api, AllowHost: d.allowHost, Logger: d.log, Now: d.now})
	if err != nil {
		return fmt.Errorf("set up console: %w", err)
	}

	tlsCfg := st.cert.TLSConfig()
	tlsCfg.NextProtos = []string{"h2", "http/1.1"}
	// Plain HTTP: the CA install page and file (with its stylesheet and
	// language switch) for any LAN client, everything else redirected.
	ca, toHTTPS := st.c.CAHandler(), tlscert.Redirector{HTTPSPort: int(cc.Port), Allow: d.allowHost}
	redirect := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if console.CAPath(r.URL.Path) {
			ca.ServeHTTP(w, r)
			return
		}
		toHTTPS.ServeHTTP(w, r)
	})
	httpPort := cc.PlainHTTPPort()
	// Bound again when a LAN interface is made anew (lanbind.go).
	open := func(ctx context.Context, dev string) ([]func() error, error) {
		var closers []func() error
		for _, fam := range []string{"4", "6"} {
			ln, err := listenTCP(ctx, fam, dev, cc.Port, false)
			if err != nil {
				return closers, err
			}
			closers = append(closers, ln.Close,
				d.serveHTTP(ctx, "console"+fam+"@"+dev, tls.NewListener(ln, tlsCfg), st.c.Handler()))
			if httpPort == 0 {
				continue
			}
			hln, err := listenTCP(ctx, fam, dev, httpPort, false)
			if err != nil {
				return closers, err
			}
			closers = append(closers, hln.Close, d.serveHTTP(ctx, "console-http"+fam+"@"+dev, hln, redirect))
		}
		return closers, nil
	}
	for _, dev := range d.cfg.LANInterfaces {
		if err := d.lanLn.add(dev, open); err != nil {
			return err
		}
	}
	urls := d.consoleURLs()
	log.Info("console listening", "urls", urls, "http_port", httpPort, "fingerprint", st.cert.Fingerprint(),
		"certificate", certSource(cc), "expires", st.cert.NotAfter().UTC().Format(time.RFC3339))

	_, hasAdmin, err := d.store.Admin()
	if err != nil {
		return fmt.Errorf("read console admin: %w", err)
	}
	if !hasAdmin {
		link, err := d.ctrl.newSetupLink()
		if err != nil {
			return err
		}
		// The one place a setup token is logged, as the issue asks: the
		// daemon's log is root's (journal or the service's stderr), and
		// the link works once, until console.setup_link_ttl.
		log.Info("console setup link", "url", link.URL, "expires", link.Expires.UTC().Format(time.RFC3339))
	}
	return nil
}

func certSource(cc config.Console) string {
	if cc.CertFile != "" {
		return cc.CertFile
	}
	return "self-signed"
}

// serveHTTP serves h on ln with the admin API's timeouts until the
// returned function closes it.
func (d *Daemon) serveHTTP(ctx context.Context, name string, ln net.Listener, h http.Handler) func() error {
	srv := api.NewHTTPServer(h, d.log.With("component", "console"))
	srv.BaseContext = func(net.Listener) context.Context { return context.WithoutCancel(ctx) }
	d.goServe(name, func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	return srv.Close
}

// consoleAddrs are the LAN addresses the console's certificate names:
// every address of the LAN interfaces but link-local ones (a browser
// cannot use those without a zone).
func (d *Daemon) consoleAddrs() []netip.Addr {
	var out []netip.Addr
	for _, dev := range d.cfg.LANInterfaces {
		as, _ := lanAddrs([]string{dev})
		for _, a := range as {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			if ip.IsLinkLocalUnicast() || ip.IsLoopback() || slices.Contains(out, ip) {
				continue
			}
			out = append(out, ip)
		}
	}
	return out
}

// consoleURL is the console's https URL on host (an address or a name).
func (d *Daemon) consoleURL(host string) string {
	if a, err := netip.ParseAddr(host); err == nil && a.Is6() {
		host = "[" + host + "]"
	}
	if p := d.cfg.Console.Port; p != 443 {
		host += ":" + strconv.Itoa(int(p))
	}
	return "https://" + host + "/"
}

// consoleURLs are the console's URLs: one per LAN address (IPv4 first,
// in interface order), then admin.hostnames.
func (d *Daemon) consoleURLs() []string {
	addrs := d.consoleAddrs()
	slices.SortStableFunc(addrs, func(a, b netip.Addr) int {
		switch {
		case a.Is4() && !b.Is4():
			return -1
		case b.Is4() && !a.Is4():
			return 1
		}
		return 0
	})
	var out []string
	for _, a := range addrs {
		out = append(out, d.consoleURL(a.String()))
	}
	for _, h := range d.cfg.Admin.Hostnames {
		out = append(out, d.consoleURL(h))
	}
	return out
}

// setupLinkHost is the host of the setup link: the first LAN IPv4
// address, else the first other LAN address, else the first admin
// hostname.
func (d *Daemon) setupLinkHost() string {
	addrs := d.consoleAddrs()
	for _, a := range addrs {
		if a.Is4() {
			return a.String()
		}
	}
	if len(addrs) > 0 {
		return addrs[0].String()
	}
	if len(d.cfg.Admin.Hostnames) > 0 {
		return d.cfg.Admin.Hostnames[0]
	}
	return "localhost"
}

// newSetupLink makes a setup token (replacing any older one) and returns
// its link; ErrConflict (store.ErrAdminExists) once an admin exists.
func (c *controller) newSetupLink() (api.SetupLink, error) {
	ttl := c.d.cfg.Console.SetupLinkTTL.D()
	tok, err := c.d.store.CreateSetupToken(ttl)
	if err != nil {
		return api.SetupLink{}, err
	}
	u := c.d.consoleURL(c.d.setupLinkHost()) + "setup?token=" + url.QueryEscape(tok)
	return api.SetupLink{URL: u, Expires: c.d.now().Add(ttl).UTC()}, nil
}

func (c *controller) consoleOn() error {
	if c.d.consoleSt == nil {
		return model.Plain(model.ErrNotFound, "the web console is off (console.enabled: false)")
	}
	return nil
}

// ConsoleInfo is api.ConsoleAdmin.
func (c *controller) ConsoleInfo(ctx context.Context) (api.ConsoleInfo, error) {
	st := c.d.consoleSt
	if st == nil {
		return api.ConsoleInfo{Enabled: false, URLs: []string{}}, nil
	}
	a, ok, err := c.d.store.Admin()
	if err != nil {
		return api.ConsoleInfo{}, err
	}
	pending, err := c.d.store.SetupTokenPending()
	if err != nil {
		return api.ConsoleInfo{}, err
	}
	return api.ConsoleInfo{
		Enabled: true, URLs: c.d.consoleURLs(), Fingerprint: st.cert.Fingerprint(),
		CertificateExpires: st.cert.NotAfter().UTC(), AdminSetUp: ok, User: a.User, SetupLinkPending: pending,
	}, nil
}

// ConsoleSetupLink is api.ConsoleAdmin.
func (c *controller) ConsoleSetupLink(ctx context.Context) (api.SetupLink, error) {
	if err := c.consoleOn(); err != nil {
		return api.SetupLink{}, err
	}
	return c.newSetupLink()
}

// ConsoleResetAdmin is api.ConsoleAdmin: the admin goes, every session
// ends, and a new setup link is made.
func (c *controller) ConsoleResetAdmin(ctx context.Context) (api.SetupLink, error) {
	if err := c.consoleOn(); err != nil {
		return api.SetupLink{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.d.store.DeleteAdmin(); err != nil {
		return api.SetupLink{}, err
	}
	if c.d.consoleSt.c != nil {
		c.d.consoleSt.c.EndAllSessions()
	}
	return c.newSetupLink()
}

// Admin is console.Backend.
func (b consoleBackend) Admin(ctx context.Context) (model.AdminAccount, bool, error) {
	return b.d.store.Admin()
}

// PutAdmin is console.Backend.
func (b consoleBackend) PutAdmin(ctx context.Context, a model.AdminAccount) error {
	return b.d.store.PutAdmin(a)
}

// CheckSetupToken is console.Backend.
func (b consoleBackend) CheckSetupToken(ctx context.Context, token string) error {
	return b.d.store.CheckSetupToken(token)
}

// SetupAdmin is console.Backend.
func (b consoleBackend) SetupAdmin(ctx context.Context, token string, a model.AdminAccount) error {
	return b.d.store.SetupAdmin(token, a)
}

// ClientNames is console.Backend.
func (b consoleBackend) ClientNames(ctx context.Context) (map[string]string, error) {
	return b.d.store.ClientNames()
}

// SetClientName is console.Backend.
func (b consoleBackend) SetClientName(ctx context.Context, client, name string) error {
	return b.d.store.SetClientName(client, name)
}

// LastHour is console.Backend: the flows steered, bypassed and blocked
// within the last hour (per-minute samples).
func (b consoleBackend) LastHour(ctx context.Context) console.Counters {
	s, by, bl, from := b.d.flows.since(b.d.flowCounters())
	return console.Counters{Steered: s, Bypassed: by, Blocked: bl, Since: from}
}

// LastReport is console.Backend: the last quick test by anyone.
func (b consoleBackend) LastReport(ctx context.Context) (model.Report, bool) {
	r := b.d.lastReport.Load()
	if r == nil {
		return model.Report{}, false
	}
	return *r, true
}

// InspectionCA is console.Backend: console.inspection_ca, else the
// uploaded one.
func (b consoleBackend) InspectionCA(ctx context.Context) ([]byte, string, bool) {
	if st := b.d.consoleSt; st != nil && st.caConfig != nil {
		return slices.Clone(st.caConfig), "config", true
	}
	der, ok, err := b.d.store.InspectionCA()
	if err != nil {
		b.d.log.Warn("read inspection CA", "component", "console", "err", err)
		return nil, "", false
	}
	if !ok {
		return nil, "", false
	}
	return der, "upload", true
}

// SetInspectionCA is console.Backend.
func (b consoleBackend) SetInspectionCA(ctx context.Context, certPEMOrDER []byte) error {
	if b.d.cfg.Console.InspectionCA != "" {
		return model.Plain(model.ErrConflict, "the config file names the inspection CA (console.inspection_ca): change it there")
	}
	if _, err := b.d.store.PutInspectionCA(certPEMOrDER); err != nil {
		return err
	}
	b.d.log.Info("inspection CA uploaded", "component", "console")
	return nil
}

// Info is console.Backend.
func (b consoleBackend) Info(ctx context.Context) console.Info {
	ups := b.d.cfg.DNS.UpstreamNames()
	i := console.Info{CloudProxy: b.d.cfg.CloudProxy.ProxyURL().Host, DNSUpstreams: ups, Version: Version}
	if st := b.d.consoleSt; st != nil {
		i.ConsoleFingerprint = st.cert.Fingerprint()
	}
	return i
}

// RecordEvent is console.Backend: the event goes into the event log.
func (b consoleBackend) RecordEvent(ctx context.Context, e model.Event) {
	if e.Time.IsZero() {
		e.Time = b.d.now()
	}
	b.d.events.offer(e)
}

// flowCounters are the cumulative counters behind LastHour now.
func (d *Daemon) flowCounters() flowSample {
	ps := d.ProxyStats()
	return flowSample{at: d.now(), steered: ps.Proxied, bypassed: ps.Bypassed, blocked: d.blocks.Load()}
}

// sampleFlows records the counters once a minute until ctx ends.
func (d *Daemon) sampleFlows(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.flows.add(d.flowCounters())
		}
	}
}

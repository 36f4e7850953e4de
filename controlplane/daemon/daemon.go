// Package daemon wires cloudsteer's gateway together for `cloudsteer run`:
// the nftables table first (its guard before any socket exists; its
// redirects match nothing until the classifier marks packets), then the
// listeners, each bound to a LAN interface (or lo) so that no packet from
// the WAN side can ever reach one (see limits.go), then the eBPF
// classifier, so no flow is ever steered to a socket that is not there
// yet. On the way out: classifier, listeners, table.
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
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/controlplane/bypass"
	"github.com/cloudsteer/cloudsteer/controlplane/config"
	"github.com/cloudsteer/cloudsteer/controlplane/dhcpnames"
	"github.com/cloudsteer/cloudsteer/controlplane/health"
	"github.com/cloudsteer/cloudsteer/controlplane/metrics"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
	"github.com/cloudsteer/cloudsteer/controlplane/store"
	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy"
	"github.com/cloudsteer/cloudsteer/dataplane/dnscache"
	"github.com/cloudsteer/cloudsteer/dataplane/firewall"
	"github.com/cloudsteer/cloudsteer/dataplane/nfqueue"
	"github.com/cloudsteer/cloudsteer/dataplane/proxy"
	"github.com/cloudsteer/cloudsteer/dataplane/resolver"
	"github.com/cloudsteer/cloudsteer/dataplane/steer"
	"github.com/cloudsteer/cloudsteer/dataplane/tcx"
	"github.com/cloudsteer/cloudsteer/internal/nameset"
	"github.com/cloudsteer/cloudsteer/internal/sdnotify"
)

// Version is the daemon's version, set by the main package.
var Version = "dev"

// Daemon is a running gateway.
type Daemon struct {
	cfg     *config.Config
	log     *slog.Logger
	now     func() time.Time
	started time.Time

	store    *store.Store
	roots    *x509.CertPool
	proxy    *proxy.Proxy
	resolver *resolver.Resolver
	bypass   *bypass.Set
	fw       *firewall.Table
	fwBlock  blockWatch // another firewall dropping the redirects (fwblock.go)
	steer    *steer.Steer
	kdns     kernelDNS                          // the eBPF DNS answerer, once attached
	pauser   interface{ SetPaused(bool) error } // the steer's pause switch
	prober   *health.Prober
	metrics  *metrics.Metrics
	ctrl     *controller
	events   *events
	api      *api.Server
	hosts    hostCheck          // Host headers the network API answers
	hostname string             // the machine's host name, resolved locally (ownname.go)
	lanNames *dhcpnames.Watcher // the LAN's DHCP host names (ownname.go); nil when off
	authLog  logLimiter         // one refused-credentials line per cause per minute

	consoleSt  *consoleState                // the web console; nil when off
	flows      flowRing                     // per-minute flow counters for the console
	blocks     atomic.Uint64                // block events (proxy and DNS) since start
	lastReport atomic.Pointer[model.Report] // the last quick test, by anyone

	servingMu  sync.Mutex
	servingNow map[string]int // listener name → serve loops running
	lanLn      *lanListeners  // the listeners bound to each LAN interface
	links      *linkWatch     // follows LAN and WAN interfaces; nil until started

	cloudMu      sync.Mutex
	retiredCloud cloudproxy.Stats // warm-pool counters of cloud clients swapped out

	fds fdPlan // descriptor limit, reserve and the effective flows limit

	failover failoverState // the cloud proxies' switches (failover.go)
	image    imageState    // the appliance image's slots (upgrade.go)

	closers []func() error // listeners, in opening order

	quicQueue *nfqueue.Queue // the QUIC gate's queue (quic.go); nil while QUIC by name is off
	quicMu    sync.Mutex
	quicFlows map[string]uint64 // the gate's verdicts by reason
	quicOff   string            // why quic_by_name is on but the gate is not running (quic.go)
	wg        sync.WaitGroup
	cancel    context.CancelFunc
}

// Options are optional knobs for Start (tests inject a clock).
type Options struct {
	Now func() time.Time
	// PauseCheck is how often pause expiry is checked (default 1s).
	PauseCheck time.Duration
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
func Start(ctx context.Context, cfg *config.Config, log *slog.Logger, opts ...Options) (_ *Daemon, err error) {
	if err := tcx.CheckKernel(tcx.Release()); err != nil {
		return nil, err
	}
	if err := CheckEnvironment(cfg); err != nil {
		return nil, err
	}
	if err := checkCapabilities(cfg); err != nil {
		return nil, err
	}
	attach, err := chooseAttach(cfg, log)
	if err != nil {
		return nil, err
	}
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.PauseCheck == 0 {
		o.PauseCheck = time.Second
	}
	ctx, cancel := context.WithCancel(ctx)
	d := &Daemon{cfg: cfg, log: log.With("component", "daemon"), cancel: cancel, now: o.Now, started: o.Now(), hostname: systemHostname()}
	if *cfg.DNS.DHCPHostNames {
		d.lanNames = &dhcpnames.Watcher{
			Dir: cfg.DNS.DHCPLeasesDir, Domain: cfg.DNS.LocalDomain, Reserved: d.ownNames,
			Log: log.With("component", "dhcpnames"), Now: o.Now,
		}
	}
	d.authLog = logLimiter{every: authLogEvery, now: o.Now}
	d.ctrl = &controller{d: d}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()

	// State first: it holds the code, the bypass entries and the pause.
	if d.store, err = store.Open(ctx, cfg.StateDir, store.WithLogger(log)); err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	d.closers = append(d.closers, d.store.Close)
	if err := d.seedState(); err != nil {
		return nil, err
	}

	d.image = newImageState(log)

	if cfg.CloudProxy.CAFile != "" {
		if d.roots, err = loadCA(cfg.CloudProxy.CAFile); err != nil {
			return nil, fmt.Errorf("load cloud proxy CA: %w", err)
		}
	}
	if err := d.planLimits(); err != nil {
		return nil, err
	}
	d.metrics = metrics.New(d)
	code, err := d.store.Code()
	if err != nil {
		return nil, fmt.Errorf("read entitlement code: %w", err)
	}
	cloud, err := d.newCloudClient(code)
	if err != nil {
		return nil, fmt.Errorf("set up cloud proxy client: %w", err)
	}
	d.failover.current.Store(cloud)

	// The bypass set needs the kernel map, which comes last; until then it
	// writes into a buffer that is replayed into the map.
	pending := &pendingMap{}
	d.bypass, err = bypass.NewSet(pending, nil, nil, d.now, log)
	if err != nil {
		return nil, fmt.Errorf("build bypass set: %w", err)
	}
	if err := d.applyBypass(); err != nil {
		return nil, err
	}
	d.events = newEvents(d)
	d.events.onDrop = d.metrics.EventsDropped
	d.failoverEventsReady(d.events)

	rcfg := resolver.Config{
		Servers:   cfg.DNS.Servers(),
		RootCAs:   cfg.DNS.RootCAs(),
		Timeout:   cfg.DNS.Timeout.D(),
		CacheSize: cfg.DNS.CacheSize,
		Snoop:     d.bypass.Snoop,
		OnQuery:   d.dnsQuery,
		// A dead first resolver costs one timeout, then probes (failover.go).
		OnUpstreamSwitch: d.dnsSwitch,
		// Firefox's canary and the DoH services' names (dns.block_doh).
		NXDomain: cfg.DNS.LocalNXDomain(),
		Split:    splitZones(cfg),
		// The gateway's own names and the LAN's DHCP host names (ownname.go).
		LocalAddrs: d.ownName,
		LocalPTR:   d.lanPTR,
		Logger:     log,
		// Per-client limits (0 is off); the kernel enforces the same
		// numbers in front of the listeners.
		MaxTCPPerClient:           config.Value(cfg.Limits.DNSTCPPerClient),
		QueriesPerSecondPerClient: float64(config.Value(cfg.Limits.DNSQueriesPerSecondPerClient)),
		QueryBurst:                config.Burst(config.Value(cfg.Limits.DNSQueriesPerSecondPerClient)),
	}
	if *cfg.DNS.KernelCache {
		rcfg.KernelCache = &d.kdns
	}
	d.resolver, err = resolver.New(rcfg)
	if err != nil {
		return nil, fmt.Errorf("set up resolver: %w", err)
	}
	// A flow naming a bypass name at an address cloudsteer's resolver
	// did not give asks the resolver now (its answer is snooped too).
	d.bypass.SetLookup(d.resolver.LookupAddrs)
	d.proxy, err = proxy.New(proxy.Config{
		Cloud:          cloud,
		Policy:         d.bypass,
		RefuseName:     refuseNames(cfg.DNS.RefusedDoHNames()),
		OriginalDst:    firewall.OriginalDst,
		OnEvent:        d.proxyEvent,
		PeekTimeout:    cfg.Proxy.PeekTimeout.D(),
		IdleTimeout:    cfg.Proxy.IdleTimeout.D(),
		DialTimeout:    cfg.CloudProxy.ConnectTimeout.D(),
		MaxHeaderBytes: cfg.Proxy.MaxHeaderBytes,
		Logger:         log,
		// The kernel resets SYNs over the per-client count first; the
		// proxy holds the same line and the overall one.
		MaxFlows:          d.EffectiveMaxFlows(),
		MaxFlowsPerClient: config.Value(cfg.Limits.FlowsPerClient),
		FailureMode:       cfg.CloudProxy.FailureMode,
	})
	if err != nil {
		return nil, fmt.Errorf("set up proxy: %w", err)
	}
	d.failover.proxy.Store(d.proxy)
	d.prober = health.NewProber(health.ProberConfig{
		Cloud:       d.proxy.Cloud,
		ProbeTarget: cfg.Health.ProbeTarget,
		Resolver:    d.resolver,
		Interval:    cfg.Health.Interval.D(),
		Now:         d.now,
		Logger:      log,
	})

	// 1. nftables: the guard before any socket. No packet carries a mark
	// before the classifier is attached (3.), so the redirects and limits
	// see nothing until then.
	var guard []uint16
	if cfg.Admin.Port != 0 {
		guard = append(guard, cfg.Admin.Port)
	}
	guard = append(guard, consoleGuardPorts(cfg)...)
	quicGate := d.openQUICGate(cfg)
	d.fw, err = firewall.New(ctx, firewall.Config{
		LANInterfaces: cfg.LANInterfaces,
		Marks: firewall.Marks{HTTP: steer.MarkHTTP, TLS: steer.MarkTLS, DNS: steer.MarkDNS, QUIC: steer.MarkQUIC,
			Untrack: steer.MarkUntrack, DoT: dotMark(cfg)},
		HTTPPort:      cfg.Listen.HTTPPort,
		TLSPort:       cfg.Listen.TLSPort,
		DNSPort:       cfg.Listen.DNSPort,
		GuardTCPPorts: guard,
		// Only while nothing else in the namespace needs conntrack.
		UntrackUnsteered: *cfg.Firewall.UntrackUnsteered,
		Limits:           firewallLimits(cfg.Limits),
		QUICGate:         quicGate,
	})
	if err != nil {
		return nil, fmt.Errorf("install nftables table: %w", err)
	}

	// 2. Listeners, each bound to one LAN interface (and bound again when
	// that interface is made anew: see lanbind.go).
	d.lanLn = newLANListeners(ctx)
	d.closers = append(d.closers, d.lanLn.closeAll)
	for _, dev := range cfg.LANInterfaces {
		if err := d.lanLn.add(dev, d.openSteered); err != nil {
			return nil, err
		}
	}
	if err := d.startAPI(ctx); err != nil {
		return nil, err
	}
	d.flows.add(d.flowCounters())
	if err := d.startConsole(ctx); err != nil {
		return nil, err
	}
	if err := d.startPprof(ctx); err != nil {
		return nil, err
	}

	// 3. eBPF classifier, paused first when protection is paused or there
	// is no code yet.
	removeStale(log)
	d.steer, err = steer.New(ctx, steer.Config{Interfaces: cfg.LANInterfaces, Attach: attach})
	if err != nil {
		return nil, fmt.Errorf("attach eBPF classifier: %w", err)
	}
	d.pauser = d.steer
	if err := d.applyPause(); err != nil {
		return nil, fmt.Errorf("set pause switch: %w", err)
	}
	if err := pending.attach(d.steer); err != nil {
		return nil, fmt.Errorf("fill bypass map: %w", err)
	}
	d.links = newLinkWatch()
	if d.fastPathConfigured() {
		d.startFastPath()
	}
	// 4. The eBPF DNS answerer, after the classifier so that it answers
	// only the queries the classifier marked for the resolver. Without it
	// every query still reaches the resolver, so a failure only warns.
	if *cfg.DNS.KernelCache {
		dc, err := dnscache.New(ctx, cfg.LANInterfaces, dnscache.Options{Mark: steer.MarkDNS, After: d.steer.Program(), Logger: log, Attach: attach})
		if err != nil {
			d.log.Warn("kernel DNS cache off: every query goes to the resolver", "err", err)
		} else {
			d.kdns.c.Store(dc)
		}
	}
	d.goRun(func() { d.bypass.Run(ctx, time.Second) })
	d.goRun(func() { d.watchPause(ctx, o.PauseCheck) })
	d.goRun(func() { d.watchBlocks(ctx) })
	d.goRun(func() { d.events.run(ctx) })
	d.goRun(func() { d.prober.Run(ctx) })
	d.goRun(func() { d.resolver.RunHealth(ctx, 0) })
	d.goRun(func() { d.sampleFlows(ctx) })
	if d.lanNames != nil {
		d.goRun(func() { d.lanNames.Run(ctx) })
	}
	d.startQUICGate(ctx)
	if err := d.startLinkWatch(ctx); err != nil {
		return nil, fmt.Errorf("follow interface changes: %w", err)
	}

	d.log.Info("steering",
		"lan", cfg.LANInterfaces,
		"attach", attach,
		"cloud_proxy", cfg.CloudProxy.ProxyURL().Redacted(),
		"cloud_proxy_backups", len(cfg.CloudProxy.ProxyURLs())-1,
		"failure_mode", cfg.CloudProxy.FailureMode,
		"dns_upstreams", cfg.DNS.UpstreamNames(),
		"activated", d.hasCredentials(),
		"admin_socket", cfg.Admin.Socket,
		"admin_port", cfg.Admin.Port)
	return d, nil
}

func (d *Daemon) goRun(fn func()) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		fn()
	}()
}

// hasCredentials reports whether the gateway can authenticate to the cloud
// proxy: proxy-chaining credentials in the config or an entitlement code.
func (d *Daemon) hasCredentials() bool {
	if d.cfg.CloudProxy.Username != "" {
		return true
	}
	code, _ := d.store.Code()
	return code != ""
}

// newCloudClient builds the cloud proxy client for the config's URL with
// the config's user/password, or else code as the user name.
func (d *Daemon) newCloudClient(code string) (*cloudproxy.Client, error) {
	user, pass := d.cfg.CloudProxy.Username, d.cfg.CloudProxy.Password
	if user == "" {
		user = strings.ToLower(code)
	}
	urls := d.cfg.CloudProxy.ProxyURLs()
	var self atomic.Pointer[cloudproxy.Client]
	c, err := cloudproxy.New(cloudproxy.Config{
		URL:         urls[0],
		Backups:     urls[1:],
		Health:      d.cloudHealth(&self),
		RootCAs:     d.roots,
		Username:    user,
		Password:    pass,
		DialTimeout: d.cfg.CloudProxy.ConnectTimeout.D(),
		OnConnect:   d.metrics.ObserveConnect,
		PoolMax:     poolMax(*d.cfg.CloudProxy.WarmConnections),
		PoolMaxAge:  d.cfg.CloudProxy.WarmMaxAge.D(),
	})
	self.Store(c)
	return c, err
}

// deferAcceptSeconds is how long the kernel holds a connection that has
// sent nothing before handing it over anyway (the proxy's peek timeout
// then applies as before).
const deferAcceptSeconds = 5

// kernelDNS hands the resolver's cached answers to the eBPF DNS answerer
// once it is attached (it comes last in Start, after the resolver exists).
type kernelDNS struct {
	c atomic.Pointer[dnscache.Cache]
}

// Put offers a packed answer to the kernel cache.
func (k *kernelDNS) Put(wire []byte, ttl time.Duration) error {
	if c := k.c.Load(); c != nil {
		return c.Put(wire, ttl)
	}
	return nil
}

// Delete withdraws an answer from the kernel cache.
func (k *kernelDNS) Delete(name string, qtype uint16) error {
	if c := k.c.Load(); c != nil {
		return c.Delete(name, qtype)
	}
	return nil
}

// flush empties the kernel cache, so that answers are seen (and their
// addresses learned) by the resolver again.
func (k *kernelDNS) flush() {
	if c := k.c.Load(); c != nil {
		c.Flush()
	}
}

// poolMax turns cloud_proxy.warm_connections (0 is off) into
// cloudproxy.Config.PoolMax (negative is off).
func poolMax(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

// setCloud makes client the proxy's way to the cloud proxy and closes the
// one it replaces, keeping that one's warm-pool counters for the metrics.
func (d *Daemon) setCloud(client *cloudproxy.Client) {
	d.cloudMu.Lock()
	defer d.cloudMu.Unlock()
	old := d.proxy.Cloud()
	d.proxy.SetCloud(client)
	d.failover.current.Store(client)
	if old != nil && old != client {
		old.Close()
		d.retiredCloud = d.retiredCloud.Add(old.Stats())
	}
}

func (d *Daemon) goServe(name string, serve func() error) {
	d.servingMu.Lock()
	if d.servingNow == nil {
		d.servingNow = map[string]int{}
	}
	d.servingNow[name]++
	d.servingMu.Unlock()
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer func() {
			d.servingMu.Lock()
			d.servingNow[name]--
			d.servingMu.Unlock()
		}()
		if err := serve(); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, context.Canceled) {
			d.log.Error("listener stopped", "listener", name, "err", err)
		}
	}()
}

func (d *Daemon) onEvent(ev proxy.Event) {
	switch ev.Kind {
	case "auth_failed":
		// One line per cause per minute, not one per flow: the event log
		// keeps each one.
		d.logAuthFailed(ev.Client, ev.Name, ev.Status)
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

// Close undoes Start in reverse: classifier, listeners and state, then
// the nftables table (the listeners never take WAN packets anyway).
func (d *Daemon) Close() error {
	var errs []error
	d.stopLinkWatch() // it attaches programs and opens listeners
	if dc := d.kdns.c.Swap(nil); dc != nil {
		errs = append(errs, dc.Close())
	}
	if d.fw != nil {
		d.fw.OnUntrackChange(nil) // the steer below goes first
	}
	if d.steer != nil {
		errs = append(errs, d.steer.Close())
	}
	if d.proxy != nil {
		if c := d.proxy.Cloud(); c != nil {
			c.Close()
		}
	}
	if d.cancel != nil {
		d.cancel()
	}
	for i := len(d.closers) - 1; i >= 0; i-- {
		if err := d.closers[i](); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if d.fw != nil {
		errs = append(errs, d.fw.Close())
	}
	d.wg.Wait()
	if d.resolver != nil {
		// The encrypted upstreams' connections, once nothing queries.
		errs = append(errs, d.resolver.Close())
	}
	return errors.Join(errs...)
}

// Run starts the gateway and serves until ctx is done. On SIGHUP it calls
// load (when set) to re-read and validate the config file and applies it
// (Reload); a config that does not load is logged as one line and changes
// nothing.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger, load func() (*config.Config, error)) error {
	// Caught from before Start, so that a SIGHUP during start-up is applied
	// once it is done instead of killing the daemon.
	hup := make(chan os.Signal, 1)
	if load != nil {
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	}
	d, err := Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	// systemd (Type=notify): serving now, everything attached.
	d.notify(sdnotify.Ready("steering"))
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case <-hup:
			d.notify(sdnotify.Reloading())
			_ = d.reloadFrom(ctx, load) // logged
			d.notify(sdnotify.Ready("steering"))
		}
	}
	d.notify(sdnotify.Stopping)
	d.log.Info("stopping")
	if err := d.Close(); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	d.log.Info("stopped; kernel state removed")
	return nil
}

// notify tells systemd the daemon's state when it runs as a Type=notify
// service; a failure only warns.
func (d *Daemon) notify(state string) {
	if _, err := sdnotify.Notify(state); err != nil {
		d.log.Warn("cannot notify systemd", "err", err)
	}
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

// refuseNames is the proxy's RefuseName for names (nil when there are none).
func refuseNames(names []string) func(string) bool {
	if len(names) == 0 {
		return nil
	}
	s := nameset.New(names)
	return s.Match
}

// dotMark is the classifier's DNS-over-TLS/QUIC mark when dns.reject_dot
// is on, else 0 (the firewall then lets those flows through).
func dotMark(cfg *config.Config) uint32 {
	if cfg.DNS.RejectDoT != nil && *cfg.DNS.RejectDoT {
		return steer.MarkDoT
	}
	return 0
}

// splitZones is dns.split for the resolver.
func splitZones(cfg *config.Config) []resolver.SplitZone {
	domains, servers := cfg.DNS.SplitZones()
	zones := make([]resolver.SplitZone, len(domains))
	for i := range domains {
		zones[i] = resolver.SplitZone{Suffixes: domains[i], Servers: servers[i]}
	}
	return zones
}

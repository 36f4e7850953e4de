package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/controlplane/bypass"
	"github.com/cloudsteer/cloudsteer/controlplane/health"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy"
	"github.com/cloudsteer/cloudsteer/dataplane/dnscache"
	"github.com/cloudsteer/cloudsteer/dataplane/proxy"
	"github.com/cloudsteer/cloudsteer/dataplane/resolver"
	"github.com/cloudsteer/cloudsteer/dataplane/steer"
	"github.com/cloudsteer/cloudsteer/internal/destaddr"
)

// TokenFile is the admin token's file name inside the state directory.
const TokenFile = api.TokenFileName

// startAPI serves the admin API on the root-only unix socket and, with a
// token, on the admin port of the LAN interfaces and lo (its sockets are
// bound to those devices, and the nftables table guards the port too).
func (d *Daemon) startAPI(ctx context.Context) error {
	token, err := api.LoadOrCreateToken(filepath.Join(d.cfg.StateDir, TokenFile))
	if err != nil {
		return fmt.Errorf("admin token: %w", err)
	}
	lan := d.cfg.LANInterfaces
	d.hosts.lan = destaddr.Local{TTL: hostsRefresh, List: func() ([]net.Addr, error) { return lanAddrs(lan) }}
	d.setHostnames(d.cfg.Admin.Hostnames)
	d.api, err = api.NewServer(d.ctrl, api.Options{Token: token, Logger: d.log, Metrics: d.metrics.Handler(), Version: Version,
		AllowHost: d.allowHost})
	if err != nil {
		return fmt.Errorf("set up admin API: %w", err)
	}
	uln, err := api.ListenUnix(d.cfg.Admin.Socket)
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	sock := d.cfg.Admin.Socket
	d.closers = append(d.closers, func() error {
		uln.Close()
		if err := os.Remove(sock); err != nil && !os.IsNotExist(err) {
			return err
		}
		return nil
	})
	d.goServe("admin-unix", func() error { return d.api.ServeUnix(ctx, uln) })
	if d.cfg.Admin.Port == 0 {
		return nil
	}
	// lo's are never made anew; the LAN interfaces' are bound again when
	// their interface is (lanbind.go).
	closers, err := d.openAdmin(ctx, "lo")
	d.closers = append(d.closers, closers...)
	if err != nil {
		return err
	}
	for _, dev := range d.cfg.LANInterfaces {
		if err := d.lanLn.add(dev, d.openAdmin); err != nil {
			return err
		}
	}
	return nil
}

// openAdmin opens the admin API's network listeners on dev and serves them
// until ctx ends.
func (d *Daemon) openAdmin(ctx context.Context, dev string) ([]func() error, error) {
	var closers []func() error
	for _, fam := range []string{"4", "6"} {
		ln, err := listenTCP(ctx, fam, dev, d.cfg.Admin.Port, false)
		if err != nil {
			return closers, err
		}
		closers = append(closers, ln.Close)
		d.goServe("admin"+fam+"@"+dev, func() error { return d.api.ServeNetwork(ctx, ln) })
	}
	return closers, nil
}

// startPprof serves net/http/pprof on the configured loopback address.
func (d *Daemon) startPprof(ctx context.Context) error {
	if d.cfg.Debug.PprofListen == "" {
		return nil
	}
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(ctx, "tcp", d.cfg.Debug.PprofListen)
	if err != nil {
		return fmt.Errorf("listen for pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	d.closers = append(d.closers, srv.Close)
	d.goServe("pprof", func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	d.log.Warn("pprof enabled", "addr", ln.Addr())
	return nil
}

// The metrics.Source the Prometheus collector reads at scrape time.

// SteerCounters returns the eBPF per-verdict counters.
func (d *Daemon) SteerCounters() (map[steer.Verdict]steer.Counter, error) {
	if d.steer == nil {
		return nil, nil
	}
	return d.steer.Counters()
}

// ProxyStats returns the transparent proxy's counters.
func (d *Daemon) ProxyStats() proxy.Stats {
	if d.proxy == nil {
		return proxy.Stats{}
	}
	return d.proxy.Stats()
}

// CloudPoolStats returns the counters of the warm connections to the
// cloud proxy, over every cloud client the gateway has used.
func (d *Daemon) CloudPoolStats() cloudproxy.Stats {
	if d.proxy == nil {
		return cloudproxy.Stats{}
	}
	d.cloudMu.Lock()
	defer d.cloudMu.Unlock()
	var cur cloudproxy.Stats
	if c := d.proxy.Cloud(); c != nil {
		cur = c.Stats()
	}
	return cur.Add(d.retiredCloud)
}

// KernelDNSStats returns the eBPF DNS answerer's counters; ok is false
// when it is not running or its counters cannot be read.
func (d *Daemon) KernelDNSStats() (dnscache.Stats, bool) {
	dc := d.kdns.c.Load()
	if dc == nil {
		return dnscache.Stats{}, false
	}
	s, err := dc.Stats()
	if err != nil {
		d.log.Warn("read kernel DNS cache counters", "err", err)
		return dnscache.Stats{}, false
	}
	return s, true
}

// ResolverStats returns the resolver's counters.
func (d *Daemon) ResolverStats() resolver.Stats {
	if d.resolver == nil {
		return resolver.Stats{}
	}
	return d.resolver.Stats()
}

// BypassMapSize returns the number of prefixes in the kernel bypass map.
func (d *Daemon) BypassMapSize() int {
	if d.steer == nil {
		return 0
	}
	ps, err := d.steer.BypassPrefixes()
	if err != nil {
		return -1
	}
	return len(ps)
}

// BypassStats returns the bypass set's counters.
func (d *Daemon) BypassStats() bypass.Stats {
	if d.bypass == nil {
		return bypass.Stats{}
	}
	return d.bypass.Stats()
}

// FastPath reports whether the eBPF fast path is on and what it forwarded.
func (d *Daemon) FastPath() (on bool, fromLAN, fromWAN steer.Counter, ok bool) {
	if d.steer == nil {
		return false, steer.Counter{}, steer.Counter{}, false
	}
	on, err := d.steer.FastPath()
	if err != nil {
		return false, steer.Counter{}, steer.Counter{}, false
	}
	fromLAN, fromWAN, err = d.steer.Forwarded()
	return on, fromLAN, fromWAN, err == nil
}

// Untracking reports whether unsteered TCP skips connection tracking now.
func (d *Daemon) Untracking() bool { return d.fw != nil && d.fw.Untracking() }

// Paused reports whether protection is paused now.
func (d *Daemon) Paused() bool {
	if d.store == nil {
		return false
	}
	p, err := d.store.Pause()
	return err == nil && p.ActiveAt(d.now())
}

// serving checks that the named listeners' serve loops are running (the
// nftables table keeps direct connections from reaching them, so a dial
// would not tell).
func (d *Daemon) serving(names ...string) func(context.Context) error {
	return func(context.Context) error {
		d.servingMu.Lock()
		defer d.servingMu.Unlock()
		for _, n := range names {
			if d.servingNow[n] == 0 {
				return fmt.Errorf("%s listener is not serving", n)
			}
		}
		return nil
	}
}

func (d *Daemon) diagnoseInputs() health.DiagnoseInputs {
	return health.DiagnoseInputs{
		Interfaces: d.cfg.LANInterfaces,
		Attached:   d.steer.Attached,
		TablePresent: func() (bool, error) {
			return d.fw.Present()
		},
		Prober:         d.prober,
		BypassPrefixes: d.steer.BypassPrefixes,
		Components: map[string]func(context.Context) error{
			"proxy":    d.serving(d.listenerNames("tls", "http")...),
			"resolver": d.serving(d.listenerNames("dns")...),
			"bypass map": func(ctx context.Context) error {
				_, err := d.steer.BypassPrefixes()
				return err
			},
		},
		Code: func() string {
			c, _ := d.store.Code()
			return c
		},
		Bypass: func() []model.BypassEntry { return d.ctrl.Bypass(context.Background()) },
		Now:    d.now,
	}
}

package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy"
)

// Prober defaults for the zero values of ProberConfig.
const (
	DefaultInterval = 30 * time.Second
	DefaultTimeout  = 5 * time.Second
	// DefaultProbeTarget is CONNECTed when ProberConfig.ProbeTarget is
	// empty: a name the cloud service itself runs.
	DefaultProbeTarget = "www.akamai.com:443"
)

// DNSChecker is the part of the resolver the prober uses
// (*resolver.Resolver implements it).
type DNSChecker interface {
	// Healthy returns nil when a cloud resolver answers a probe query.
	Healthy(ctx context.Context) error
}

// ProberConfig is what a Prober needs.
type ProberConfig struct {
	// Cloud returns the cloud proxy client in use now (it is replaced
	// when the entitlement code changes); nil, or a func returning nil,
	// means no cloud proxy is configured.
	Cloud func() *cloudproxy.Client
	// ProbeTarget is the host:port CONNECTed through the cloud proxy to
	// prove it accepts the credentials, e.g. "www.akamai.com:443" (in the
	// lab "www.example.com:443"). The tunnel is closed at once.
	ProbeTarget string
	// Resolver checks the cloud DNS; nil skips the DNS probe.
	Resolver DNSChecker
	// Interval is the time between background probes (default 30s).
	Interval time.Duration
	// Timeout bounds one probe of the proxy and of DNS (default 5s).
	Timeout time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger is the parent logger (default slog.Default()).
	Logger *slog.Logger
}

// Result is the outcome of one probe of the cloud proxy and cloud DNS.
// The zero Result means "not probed yet".
type Result struct {
	// Time is when the probe started; zero when there was none yet.
	Time time.Time
	// ProxyErr is why the cloud proxy failed the probe; nil when it
	// tunnelled to the probe target or refused it by policy (403), which
	// proves the credentials were accepted.
	ProxyErr error
	// ProxyRefused is true when the proxy rejected the credentials (407).
	ProxyRefused bool
	// ProxyTook is the time the proxy took to answer (or fail).
	ProxyTook time.Duration
	// DNSErr is why the cloud DNS failed the probe; nil when it answered.
	DNSErr error
}

// OK reports whether the probe ran and both the proxy and DNS passed.
func (r Result) OK() bool { return !r.Time.IsZero() && r.ProxyErr == nil && r.DNSErr == nil }

// errNoCloudProxy is the ProxyErr when no cloud proxy client is configured.
var errNoCloudProxy = errors.New("no cloud proxy configured")

// Prober probes the cloud proxy and the cloud DNS, in the background with
// Run and on demand with ProbeNow, and keeps the latest Result.
type Prober struct {
	cfg ProberConfig
	log *slog.Logger

	mu   sync.Mutex
	last Result
}

// NewProber returns a Prober with cfg's defaults filled in.
func NewProber(cfg ProberConfig) *Prober {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ProbeTarget == "" {
		cfg.ProbeTarget = DefaultProbeTarget
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Prober{cfg: cfg, log: cfg.Logger.With("component", "health")}
}

// Run probes at once and then every Interval until ctx ends. It logs when
// the proxy or DNS changes between passing and failing.
func (p *Prober) Run(ctx context.Context) {
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	prev := p.Last()
	for {
		r := p.ProbeNow(ctx)
		if ctx.Err() != nil {
			return
		}
		p.logChange(prev, r)
		prev = r
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *Prober) logChange(prev, r Result) {
	first := prev.Time.IsZero()
	switch {
	case r.ProxyErr != nil && (first || prev.ProxyErr == nil):
		p.log.Warn("cloud proxy probe failing", "refused_code", r.ProxyRefused, "err", r.ProxyErr)
	case r.ProxyErr == nil && !first && prev.ProxyErr != nil:
		p.log.Info("cloud proxy probe passing again")
	}
	switch {
	case r.DNSErr != nil && (first || prev.DNSErr == nil):
		p.log.Warn("cloud dns probe failing", "err", r.DNSErr)
	case r.DNSErr == nil && !first && prev.DNSErr != nil:
		p.log.Info("cloud dns probe passing again")
	}
}

// Last returns the latest Result; the zero Result before the first probe.
func (p *Prober) Last() Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

// ProbeNow probes the cloud proxy and the cloud DNS concurrently, each
// within Timeout, records the Result as the latest and returns it. A probe
// cut short by ctx, or overtaken by one that started later, is returned but
// not recorded.
func (p *Prober) ProbeNow(ctx context.Context) Result {
	r := Result{Time: p.cfg.Now()}
	var wg sync.WaitGroup
	wg.Go(func() {
		start := time.Now()
		r.ProxyErr, r.ProxyRefused = p.probeProxy(ctx)
		r.ProxyTook = time.Since(start)
	})
	if p.cfg.Resolver != nil {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
			defer cancel()
			if err := p.cfg.Resolver.Healthy(ctx); err != nil {
				r.DNSErr = fmt.Errorf("cloud dns: %w", err)
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return r
	}
	p.mu.Lock()
	if !r.Time.Before(p.last.Time) {
		p.last = r
	}
	p.mu.Unlock()
	return r
}

// probeProxy CONNECTs to the probe target and closes the tunnel at once. A
// tunnel or a policy refusal (403) passes; a 407 fails with refused set.
func (p *Prober) probeProxy(ctx context.Context) (err error, refused bool) {
	var c *cloudproxy.Client
	if p.cfg.Cloud != nil {
		c = p.cfg.Cloud()
	}
	if c == nil {
		return errNoCloudProxy, false
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	conn, err := c.Connect(ctx, p.cfg.ProbeTarget, netip.Addr{})
	if err == nil {
		conn.Close()
		return nil, false
	}
	var re *cloudproxy.RefusedError
	if errors.As(err, &re) {
		switch re.StatusCode {
		case http.StatusForbidden:
			return nil, false // blocked by policy: the credentials were accepted
		case http.StatusProxyAuthRequired:
			return err, true
		}
	}
	return err, false
}

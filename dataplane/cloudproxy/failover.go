package cloudproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudsteer/cloudsteer/dataplane/upstream"
)

// Health-check defaults for the zero values of HealthConfig.
const (
	DefaultProbeInterval = time.Second
	DefaultProbeTimeout  = time.Second
)

// ErrUnavailable is (wrapped in) the error of a Connect or DialProxy when
// no cloud proxy is healthy: the caller applies its failure mode.
var ErrUnavailable = errors.New("no cloud proxy is healthy")

// HealthConfig is how a Client with several proxies (or one checked
// proxy) decides which are healthy.
//
// A proxy is down after Params.FailAfter failures in a row, with no
// success between, of probes and of real flows alike: a dial error, a
// TLS error, no answer in time, a 407 (the credentials refused), and for
// probes a 5xx. A 403 or any other answer of real flows proves the proxy
// works. Each proxy is probed every ProbeInterval with a fresh connection
// (not a warm one) and a CONNECT to ProbeTarget; a failed probe of an up
// proxy is repeated at once. A down proxy is up again after passing every
// check for Params.RecoverAfter (and Params.RiseAfter probes in a row).
//
// New flows go to the first up proxy in order (primary, then backups).
// A flow whose proxy fails before it carried anything is tried on the
// next up proxy; while another one is up, the TCP connect to a proxy is
// bounded by ProbeTimeout (a proxy that drops SYNs costs a flow that
// much, not the whole connect timeout). When a proxy goes down its
// connection attempts in flight are cancelled (they move on to the next
// proxy), its warm connections closed and the tunnels and connections
// it carries cut, so that their clients reconnect through the next one.
type HealthConfig struct {
	// ProbeTarget is the host:port CONNECTed by the probes (required).
	ProbeTarget string
	// ProbeInterval is the time between two probes of a proxy.
	ProbeInterval time.Duration
	// ProbeTimeout bounds a probe's TCP connect (and, while another proxy
	// is up, a real flow's); the CONNECT answer then has the
	// Config.DialTimeout.
	ProbeTimeout time.Duration
	// Params is the hysteresis (upstream.Params defaults for zeroes).
	Params upstream.Params
	// Now is the clock of the state machines (default time.Now).
	Now func() time.Time
	// OnSwitch, when set, is called when the proxy new flows use changes
	// (also to none, and back). It must not block.
	OnSwitch func(Switch)
	// OnState, when set, is called when a proxy goes down or up. It must
	// not block.
	OnState func(url string, up bool, err error)
	// Logger gets the transitions (default slog.Default()).
	Logger *slog.Logger
}

// Switch is a change of the proxy new flows use. From and To are proxy
// URLs, "" for none (every proxy down).
type Switch struct {
	From, To string
	// Cause is why: the failure that took From down, or nil when To came
	// up (back).
	Cause error
}

// ProxyState is one proxy's health, for status pages.
type ProxyState struct {
	URL     string
	Up      bool
	Active  bool // the proxy new flows use now
	Since   time.Time
	LastErr string
}

// synBoundKey carries the TCP connect bound of one dial in its context.
type synBoundKey struct{}

// failover is the health-checked set of proxies behind a Client.
type failover struct {
	cfg     HealthConfig
	log     *slog.Logger
	members []*member

	mu     sync.Mutex
	active int // index of the proxy new flows use; -1 when none is up

	switches atomic.Uint64
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// member is one proxy of a failover.
type member struct {
	fo  *failover
	idx int
	c   *Client
	h   *upstream.Health

	mu    sync.Mutex
	epoch context.Context // ends when the proxy goes down
	end   context.CancelCauseFunc
	live  map[net.Conn]struct{} // connections handed out (some closed since)
	sweep int                   // len(live) that triggers the next sweep
	// inflight are the start times of the attempts running on the proxy.
	inflight map[uint64]time.Time
	nextID   uint64
}

func newFailover(cfg Config) (*Client, error) {
	hc := HealthConfig{}
	if cfg.Health != nil {
		hc = *cfg.Health
	}
	if hc.ProbeTarget == "" {
		return nil, errors.New("cloud proxy health: probe target is missing")
	}
	if hc.ProbeInterval <= 0 {
		hc.ProbeInterval = DefaultProbeInterval
	}
	if hc.ProbeTimeout <= 0 {
		hc.ProbeTimeout = DefaultProbeTimeout
	}
	if hc.Now == nil {
		hc.Now = time.Now
	}
	if hc.Logger == nil {
		hc.Logger = slog.Default()
	}
	fo := &failover{cfg: hc, log: hc.Logger.With("component", "cloudproxy")}
	urls := append([]*url.URL{cfg.URL}, cfg.Backups...)
	for i, u := range urls {
		one := cfg
		one.URL, one.Backups, one.Health = u, nil, nil
		c, err := newSingle(one)
		if err != nil {
			fo.closeMembers()
			return nil, err
		}
		m := &member{fo: fo, idx: i, c: c, live: map[net.Conn]struct{}{}, sweep: 64, inflight: map[uint64]time.Time{}}
		m.epoch, m.end = context.WithCancelCause(context.Background())
		m.h = upstream.New(hc.Params, hc.Now(), func(up bool, err error) { fo.changed(m, up, err) })
		fo.members = append(fo.members, m)
	}
	// The Client's own fields describe the primary (AuthHeader, timeouts).
	first := fo.members[0].c
	parent := &Client{
		addr: first.addr, useTLS: first.useTLS, tlsConfig: first.tlsConfig, auth: first.auth,
		timeout: first.timeout, displayURL: first.displayURL, onConnect: first.onConnect, fo: fo,
	}
	ctx, cancel := context.WithCancel(context.Background())
	fo.cancel = cancel
	for _, m := range fo.members {
		fo.wg.Go(func() { m.probeLoop(ctx) })
	}
	return parent, nil
}

func (fo *failover) closeMembers() {
	for _, m := range fo.members {
		m.c.Close()
	}
}

func (fo *failover) close() {
	if fo.cancel != nil {
		fo.cancel()
	}
	fo.wg.Wait()
	fo.closeMembers()
}

// current returns the proxy new flows use, or the primary when none is up.
func (fo *failover) current() *member {
	fo.mu.Lock()
	defer fo.mu.Unlock()
	if fo.active < 0 {
		return fo.members[0]
	}
	return fo.members[fo.active]
}

// up returns the up proxies in order.
func (fo *failover) up() []*member {
	out := make([]*member, 0, len(fo.members))
	for _, m := range fo.members {
		if m.h.Up() {
			out = append(out, m)
		}
	}
	return out
}

// changed follows a proxy's transition: its epoch, its connections and
// the proxy new flows use.
func (fo *failover) changed(m *member, up bool, err error) {
	url := m.c.displayURL
	if up {
		m.mu.Lock()
		m.epoch, m.end = context.WithCancelCause(context.Background())
		m.mu.Unlock()
		fo.log.Info("cloud proxy healthy again", "proxy", url)
	} else {
		fo.log.Warn("cloud proxy down", "proxy", url, "err", err)
		m.cut(fmt.Errorf("cloud proxy %s is down: %w", url, err))
	}
	if fo.cfg.OnState != nil {
		fo.cfg.OnState(url, up, err)
	}
	fo.mu.Lock()
	from := fo.active
	to := -1
	for i, m := range fo.members {
		if m.h.Up() {
			to = i
			break
		}
	}
	fo.active = to
	fo.mu.Unlock()
	if from == to {
		return
	}
	fo.switches.Add(1)
	sw := Switch{}
	if from >= 0 {
		sw.From = fo.members[from].c.displayURL
	}
	if to >= 0 {
		sw.To = fo.members[to].c.displayURL
	}
	if !up {
		sw.Cause = err
	}
	fo.log.Warn("cloud proxy switch", "from", sw.From, "to", sw.To, "err", err)
	if fo.cfg.OnSwitch != nil {
		fo.cfg.OnSwitch(sw)
	}
}

// States returns each proxy's health, in configured order; nil for a
// Client without health checks.
func (c *Client) States() []ProxyState {
	if c.fo == nil {
		return nil
	}
	fo := c.fo
	fo.mu.Lock()
	active := fo.active
	fo.mu.Unlock()
	out := make([]ProxyState, len(fo.members))
	for i, m := range fo.members {
		st := m.h.State()
		out[i] = ProxyState{URL: m.c.displayURL, Up: st.Up, Active: i == active, Since: st.Since}
		if st.LastErr != nil {
			out[i].LastErr = st.LastErr.Error()
		}
	}
	return out
}

// DownCause returns the latest failure of the primary proxy (a
// *RefusedError for a 407), or nil.
func (c *Client) DownCause() error {
	if c.fo == nil {
		return nil
	}
	return c.fo.members[0].h.State().LastErr
}

// Switches returns how often the proxy new flows use has changed.
func (c *Client) Switches() uint64 {
	if c.fo == nil {
		return 0
	}
	return c.fo.switches.Load()
}

// Unavailable reports whether the Client health-checks its proxies and
// none is up now.
func (c *Client) Unavailable() bool {
	if c.fo == nil {
		return false
	}
	c.fo.mu.Lock()
	defer c.fo.mu.Unlock()
	return c.fo.active < 0
}

// connect opens a tunnel through the first up proxy that gives one.
func (fo *failover) connect(ctx context.Context, target string, clientIP netip.Addr) (net.Conn, error) {
	return fo.try(ctx, func(ctx context.Context, m *member) (net.Conn, error) {
		return m.c.Connect(ctx, target, clientIP)
	})
}

// dialProxy returns a connection to the first up proxy that takes one.
func (fo *failover) dialProxy(ctx context.Context) (net.Conn, error) {
	return fo.try(ctx, func(ctx context.Context, m *member) (net.Conn, error) {
		return m.c.DialProxy(ctx)
	})
}

func (fo *failover) try(ctx context.Context, open func(context.Context, *member) (net.Conn, error)) (net.Conn, error) {
	var errs []error
	ms := fo.up()
	for i, m := range ms {
		conn, err := m.attempt(ctx, i < len(ms)-1, open)
		if err == nil {
			return conn, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		if !passiveFailure(err) {
			return nil, err // the proxy answered (a block, say): no other proxy is asked
		}
		m.h.Failure(fo.cfg.Now(), err)
		errs = append(errs, err)
	}
	if len(fo.up()) == 0 {
		if len(errs) == 0 {
			for _, m := range fo.members {
				if st := m.h.State(); st.LastErr != nil {
					errs = append(errs, fmt.Errorf("%s: %w", m.c.displayURL, st.LastErr))
				}
			}
		}
		if len(errs) == 0 {
			return nil, ErrUnavailable
		}
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, errors.Join(errs...))
	}
	return nil, errors.Join(errs...)
}

// attempt runs open on m, cancelled when m goes down meanwhile, with the
// TCP connect bounded by ProbeTimeout when another proxy could take over.
func (m *member) attempt(ctx context.Context, more bool, open func(context.Context, *member) (net.Conn, error)) (net.Conn, error) {
	m.mu.Lock()
	epoch := m.epoch
	m.nextID++
	id := m.nextID
	m.inflight[id] = time.Now()
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.inflight, id)
		m.mu.Unlock()
	}()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(epoch, func() { cancel(context.Cause(epoch)) })
	defer stop()
	if more {
		ctx = context.WithValue(ctx, synBoundKey{}, m.fo.cfg.ProbeTimeout)
	}
	conn, err := open(ctx, m)
	if err != nil {
		return nil, err
	}
	if epoch.Err() != nil {
		conn.Close()
		return nil, context.Cause(epoch)
	}
	m.h.Success(m.fo.cfg.Now())
	m.track(conn)
	return conn, nil
}

// passiveFailure says whether a real flow's err counts against the proxy:
// anything but an answer, and the answer 407.
func passiveFailure(err error) bool {
	var re *RefusedError
	if errors.As(err, &re) {
		return re.StatusCode == http.StatusProxyAuthRequired
	}
	return true
}

// ReportRefused tells the Client that the proxy behind conn (from
// DialProxy) refused the credentials (407) on an absolute-form request.
func (c *Client) ReportRefused(conn net.Conn) {
	if c.fo == nil {
		return
	}
	for _, m := range c.fo.members {
		m.mu.Lock()
		_, ok := m.live[conn]
		m.mu.Unlock()
		if ok {
			m.h.Failure(c.fo.cfg.Now(), &RefusedError{StatusCode: http.StatusProxyAuthRequired, Status: "Proxy Authentication Required"})
			return
		}
	}
}

// track remembers conn to cut it when m goes down; closed ones are swept
// out as the set grows.
func (m *member) track(conn net.Conn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.live[conn] = struct{}{}
	if len(m.live) < m.sweep {
		return
	}
	for c := range m.live {
		if isClosed(c) {
			delete(m.live, c)
		}
	}
	m.sweep = max(64, 2*len(m.live))
}

// cut ends m's epoch (its attempts in flight fail with cause), closes its
// warm connections and every connection it handed out.
func (m *member) cut(cause error) {
	m.mu.Lock()
	m.end(cause)
	live := m.live
	m.live = map[net.Conn]struct{}{}
	m.sweep = 64
	m.mu.Unlock()
	if m.c.pool != nil {
		m.c.pool.flush()
	}
	for c := range live {
		shutdown(c)
	}
}

// shutdown ends both directions of conn's socket without closing it: a
// tunnel waiting on it (parked in epoll) wakes up, sees the end and
// closes its connections itself, which a close from here would not make
// it do.
func shutdown(conn net.Conn) {
	raw := conn
	for {
		nc, ok := raw.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		raw = nc.NetConn()
	}
	if sc, ok := raw.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			var serr error
			if err := rc.Control(func(fd uintptr) { serr = syscall.Shutdown(int(fd), syscall.SHUT_RDWR) }); err == nil && serr == nil {
				return
			}
		}
	}
	conn.Close()
}

// isClosed reports whether conn's socket was closed by its user.
func isClosed(conn net.Conn) bool {
	for {
		switch c := conn.(type) {
		case interface{ NetConn() net.Conn }:
			conn = c.NetConn()
			continue
		case syscall.Conn:
			rc, err := c.SyscallConn()
			if err != nil {
				return true
			}
			return rc.Control(func(uintptr) {}) != nil
		}
		return false
	}
}

// probeLoop probes m every ProbeInterval until ctx ends; a failed probe
// of an up proxy is repeated at once.
func (m *member) probeLoop(ctx context.Context) {
	for {
		err := m.probe(ctx)
		if ctx.Err() != nil {
			return
		}
		now := m.fo.cfg.Now()
		wait := m.fo.cfg.ProbeInterval
		if err == nil {
			m.h.Success(now)
		} else {
			m.h.Failure(now, err)
			if m.stalled(m.fo.cfg.ProbeTimeout) {
				// The probe failed and real flows wait for an answer
				// longer than a probe may: no need for a second probe.
				m.h.Down(now, err)
			}
			if m.h.State().Fails == 1 {
				wait = 0
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// stalled reports whether an attempt on m has been running longer than d.
func (m *member) stalled(d time.Duration) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, t := range m.inflight {
		if time.Since(t) > d {
			return true
		}
	}
	return false
}

// probe CONNECTs to the probe target on a fresh connection. A tunnel or
// an answer other than 407 and 5xx passes.
func (m *member) probe(ctx context.Context) error {
	c := m.c
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	conn, err := c.dial(context.WithValue(ctx, synBoundKey{}, m.fo.cfg.ProbeTimeout))
	if err != nil {
		return err
	}
	tunnel, _, _, err := c.connectOn(ctx, conn, connectRequest(m.fo.cfg.ProbeTarget, c.auth, netip.Addr{}))
	if err == nil {
		tunnel.Close()
		return nil
	}
	var re *RefusedError
	if errors.As(err, &re) && re.StatusCode != http.StatusProxyAuthRequired && re.StatusCode < 500 {
		return nil
	}
	return err
}

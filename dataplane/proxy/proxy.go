// Package proxy is the transparent proxy behind the kernel redirect: it
// takes LAN TCP 443 and 80 flows, reads the name the client wants (TLS SNI,
// HTTP Host) and chains each flow to the cloud proxy, or, for names on the
// bypass list, straight to the original destination.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy"
)

// Defaults for the zero values of Config.
const (
	DefaultPeekTimeout    = 10 * time.Second
	DefaultIdleTimeout    = 5 * time.Minute
	DefaultDialTimeout    = 10 * time.Second
	DefaultMaxHeaderBytes = 64 << 10
)

// Event kinds.
const (
	KindBlocked       = "blocked"        // the cloud proxy refused by policy (403)
	KindAuthFailed    = "auth_failed"    // the cloud proxy rejected our credentials (407)
	KindUpstreamError = "upstream_error" // the cloud proxy or origin could not be reached or refused otherwise
	KindBadClient     = "bad_client"     // the client sent no usable ClientHello or request
)

// Policy is the part of the bypass state the proxy consults.
type Policy interface {
	// BypassName reports whether name (lowercase, no trailing dot) is on
	// the bypass list.
	BypassName(name string) bool
	// LearnBypass is told that a flow to addr was bypassed by name, so
	// the kernel can bypass later flows to addr itself.
	LearnBypass(name string, addr netip.Addr)
}

// Event is a flow the proxy could not carry as asked, for the status page.
type Event struct {
	Time     time.Time
	Client   netip.Addr
	Name     string         // SNI or Host name; empty when unknown
	Target   netip.AddrPort // original destination
	Proto    string         // "http" or "tls"
	Kind     string         // KindBlocked, KindAuthFailed, KindUpstreamError or KindBadClient
	Status   int            // HTTP status from the cloud proxy, if any
	Category string         // block category, if the proxy named one
	Detail   string         // human-readable cause
}

// Config configures a Proxy.
type Config struct {
	// Cloud is the cloud proxy client (required).
	Cloud *cloudproxy.Client
	// Policy decides bypass by name (required).
	Policy Policy
	// OriginalDst returns the destination the client dialed before the
	// kernel redirected the flow (required).
	OriginalDst func(*net.TCPConn) (netip.AddrPort, error)
	// OnEvent, when set, is called for each Event; it must not block long.
	OnEvent func(Event)
	// PeekTimeout bounds the wait for a ClientHello or a request head.
	PeekTimeout time.Duration
	// IdleTimeout closes a flow that moved no bytes for this long.
	IdleTimeout time.Duration
	// DialTimeout bounds reaching the cloud proxy or an origin.
	DialTimeout time.Duration
	// MaxHeaderBytes caps an HTTP request head (and the ClientHello).
	MaxHeaderBytes int
	// Logger gets the proxy's logs; nil means slog.Default().
	Logger *slog.Logger
}

// Stats are the proxy's counters since New.
type Stats struct {
	Active         int64  // flows being served now
	Accepted       uint64 // flows accepted
	Proxied        uint64 // tunnels (TLS) and requests (HTTP) sent to the cloud proxy
	Bypassed       uint64 // tunnels and requests sent straight to the origin
	Blocked        uint64 // refusals by cloud proxy policy (403)
	AuthFailed     uint64 // refusals of our credentials (407)
	UpstreamErrors uint64 // other failures to reach the cloud proxy or origin
	BadClients     uint64 // clients that sent garbage or nothing in time
	BytesUp        uint64 // bytes from clients forwarded upstream (counted when a copy ends)
	BytesDown      uint64 // bytes from upstream forwarded to clients (counted when a copy ends)
}

// Proxy is the transparent HTTP and TLS proxy.
type Proxy struct {
	cfg    Config
	log    *slog.Logger
	dialer net.Dialer

	active                                   atomic.Int64
	accepted, proxied, bypassed              atomic.Uint64
	blocked, authFailed, upstreamErr, badCli atomic.Uint64
	bytesUp, bytesDown                       atomic.Uint64

	cloud atomic.Pointer[cloudproxy.Client] // swapped by SetCloud

	authLogMu   sync.Mutex
	authLogLast time.Time
	authLogSupp int
}

// New validates cfg, fills in defaults and returns a Proxy.
func New(cfg Config) (*Proxy, error) {
	switch {
	case cfg.Cloud == nil:
		return nil, errors.New("proxy config: cloud proxy client is missing")
	case cfg.Policy == nil:
		return nil, errors.New("proxy config: policy is missing")
	case cfg.OriginalDst == nil:
		return nil, errors.New("proxy config: original destination lookup is missing")
	case cfg.PeekTimeout < 0 || cfg.IdleTimeout < 0 || cfg.DialTimeout < 0 || cfg.MaxHeaderBytes < 0:
		return nil, errors.New("proxy config: timeouts and sizes must not be negative")
	}
	if cfg.PeekTimeout == 0 {
		cfg.PeekTimeout = DefaultPeekTimeout
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.MaxHeaderBytes == 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if cfg.MaxHeaderBytes < 1024 {
		return nil, fmt.Errorf("proxy config: max header bytes %d is below 1024", cfg.MaxHeaderBytes)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	p := &Proxy{cfg: cfg, log: log.With("component", "proxy")}
	p.cloud.Store(cfg.Cloud)
	p.dialer = net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	p.dialer.SetMultipathTCP(false)
	return p, nil
}

// SetCloud replaces the cloud proxy client (new credentials after an
// activation); flows that already run keep the client they started with.
func (p *Proxy) SetCloud(c *cloudproxy.Client) {
	if c != nil {
		p.cloud.Store(c)
	}
}

// Cloud returns the cloud proxy client new flows use.
func (p *Proxy) Cloud() *cloudproxy.Client { return p.cloud.Load() }

// Stats returns a snapshot of the counters.
func (p *Proxy) Stats() Stats {
	return Stats{
		Active:         p.active.Load(),
		Accepted:       p.accepted.Load(),
		Proxied:        p.proxied.Load(),
		Bypassed:       p.bypassed.Load(),
		Blocked:        p.blocked.Load(),
		AuthFailed:     p.authFailed.Load(),
		UpstreamErrors: p.upstreamErr.Load(),
		BadClients:     p.badCli.Load(),
		BytesUp:        p.bytesUp.Load(),
		BytesDown:      p.bytesDown.Load(),
	}
}

// ServeTLS serves redirected TLS flows from ln until ctx ends (then it
// returns nil) or ln fails (then it returns the accept error). It closes
// ln and every flow it started before it returns.
func (p *Proxy) ServeTLS(ctx context.Context, ln net.Listener) error {
	return p.serve(ctx, ln, "tls", p.handleTLS)
}

// ServePlainHTTP serves redirected plain HTTP flows from ln, like ServeTLS.
func (p *Proxy) ServePlainHTTP(ctx context.Context, ln net.Listener) error {
	return p.serve(ctx, ln, "http", p.handleHTTP)
}

func (p *Proxy) serve(ctx context.Context, ln net.Listener, proto string, handle func(context.Context, *flow)) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer ln.Close()

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("accept %s flows: %w", proto, err)
			}
			// Out of file descriptors and the like: wait and retry.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			p.log.Warn("accept failed", "proto", proto, "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		backoff = 0
		tc, ok := c.(*net.TCPConn)
		if !ok {
			c.Close()
			p.log.Error("listener returned a non-TCP connection", "proto", proto, "type", fmt.Sprintf("%T", c))
			continue
		}
		p.accepted.Add(1)
		p.active.Add(1)
		wg.Add(1)
		go func() {
			f := newFlow(ctx, tc, proto)
			f.release = func() {
				f.close()
				p.active.Add(-1)
				wg.Done()
			}
			handle(f.ctx, f)
			if !f.detached {
				f.release()
			}
		}()
	}
}

// flow is one client connection and the upstream connections it opened;
// closing it closes them all.
type flow struct {
	ctx    context.Context
	cancel context.CancelFunc
	client *net.TCPConn
	ip     netip.Addr
	proto  string

	// release ends the flow: it closes it and tells serve. The handler's
	// goroutine calls it on return, unless the flow was detached (handed
	// to a tunnel, whose last direction calls it).
	release  func()
	detached bool

	mu     sync.Mutex
	conns  []net.Conn
	closed bool
	tun    *tunnel // set once the flow is a tunnel
}

func newFlow(ctx context.Context, c *net.TCPConn, proto string) *flow {
	f := &flow{client: c, proto: proto, conns: []net.Conn{c}}
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		f.ip = a.AddrPort().Addr().Unmap()
	}
	f.ctx, f.cancel = context.WithCancel(ctx)
	context.AfterFunc(f.ctx, f.closeConns)
	return f
}

// add makes c part of the flow (closed with it).
func (f *flow) add(c net.Conn) {
	f.mu.Lock()
	closed := f.closed
	if !closed {
		f.conns = append(f.conns, c)
	}
	f.mu.Unlock()
	if closed {
		c.Close()
	}
}

func (f *flow) closeConns() {
	f.mu.Lock()
	conns, tun := f.conns, f.tun
	f.conns, f.closed = nil, true
	f.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	if tun != nil {
		tun.wake()
	}
}

func (f *flow) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

func (f *flow) close() { f.cancel() }

func (p *Proxy) event(f *flow, ev Event) {
	ev.Time = time.Now()
	ev.Client = f.ip
	ev.Proto = f.proto
	switch ev.Kind {
	case KindBlocked:
		p.blocked.Add(1)
	case KindAuthFailed:
		p.authFailed.Add(1)
	case KindUpstreamError:
		p.upstreamErr.Add(1)
	case KindBadClient:
		p.badCli.Add(1)
	}
	if p.cfg.OnEvent != nil {
		p.cfg.OnEvent(ev)
	}
}

// refused turns an upstream error into an Event and logs it.
func (p *Proxy) refused(f *flow, ev Event, err error) Event {
	ev.Kind, ev.Detail = KindUpstreamError, err.Error()
	var re *cloudproxy.RefusedError
	if errors.As(err, &re) {
		ev.Status, ev.Category = re.StatusCode, re.Category
		switch re.StatusCode {
		case 403:
			ev.Kind = KindBlocked
		case 407:
			ev.Kind = KindAuthFailed
		}
	}
	p.logEvent(ev)
	p.event(f, ev)
	return ev
}

func (p *Proxy) logEvent(ev Event) {
	attrs := []any{"proto", ev.Proto, "client", ev.Client, "name", ev.Name, "dst", ev.Target}
	switch ev.Kind {
	case KindBlocked:
		p.log.Info("blocked by cloud proxy policy", append(attrs, "category", ev.Category)...)
	case KindAuthFailed:
		// Every flow fails the same way: say it loudly, but not once per flow.
		p.authLogMu.Lock()
		now := time.Now()
		if now.Sub(p.authLogLast) < 10*time.Second {
			p.authLogSupp++
			p.authLogMu.Unlock()
			return
		}
		supp := p.authLogSupp
		p.authLogLast, p.authLogSupp = now, 0
		p.authLogMu.Unlock()
		p.log.Error("cloud proxy rejected the tenant credentials (407): check the entitlement code",
			append(attrs, "proxy", p.Cloud().String(), "suppressed_since_last", supp)...)
	default:
		p.log.Warn("upstream failed", append(attrs, "status", ev.Status, "err", ev.Detail)...)
	}
}

// pipe copies both ways between client and up until both directions have
// ended (see tunnel), and returns then.
func (p *Proxy) pipe(f *flow, client *net.TCPConn, up net.Conn) {
	done := make(chan struct{})
	p.startTunnel(f, client, up, func() { close(done) })
	<-done
}

// detach makes f a tunnel between client and up and returns at once; the
// tunnel releases f when both directions have ended.
func (p *Proxy) detach(f *flow, client *net.TCPConn, up net.Conn) {
	f.detached = true
	p.startTunnel(f, client, up, f.release)
}

// startTunnel starts copying both ways between client and up, half-closing
// each side when its source ends, closing the flow on an error or when no
// bytes moved either way for IdleTimeout, and calls release once both
// directions have ended. Between two TCP sockets the bytes move by
// splice(2) and an idle tunnel holds no goroutine (see copy.go).
func (p *Proxy) startTunnel(f *flow, client *net.TCPConn, up net.Conn, release func()) {
	client.SetDeadline(time.Time{})
	up.SetDeadline(time.Time{})
	t := &tunnel{p: p, f: f, release: release}
	t.touch()
	t.dirs[0] = newDirection(t, up, client, &p.bytesUp)
	t.dirs[1] = newDirection(t, client, up, &p.bytesDown)
	t.left.Store(2)
	t.timer = time.AfterFunc(math.MaxInt64, t.checkIdle)
	t.timer.Reset(p.cfg.IdleTimeout) // after the assignment checkIdle reads
	f.mu.Lock()
	f.tun = t
	f.mu.Unlock()
	go t.dirs[0].run()
	go t.dirs[1].run()
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

// Package proxy is the transparent proxy behind the kernel redirect: it
// takes LAN TCP 443 and 80 flows, reads the name the client wants (TLS SNI,
// HTTP Host) and chains each flow to the cloud proxy, or, for names on the
// bypass list, straight to an address of that name (Policy.BypassTarget:
// the original destination only when it is one).
//
// What a client cannot make it do: dial (or ask the cloud proxy for, by
// address) a destination that is not global unicast or is the gateway's
// own (destAllowed); teach the kernel's bypass map anything; make the cloud
// proxy fetch another port than the one the client dialed; pass its own
// X-Forwarded-For, Forwarded or X-Real-IP to the cloud proxy; hold more
// than MaxFlowsPerClient flows; keep an upstream transfer running after it
// went away (the upstream conn is closed as soon as the client's close or
// reset is seen, see exchange in http.go).
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy"
	"github.com/cloudsteer/cloudsteer/internal/destaddr"
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
	KindBadClient     = "bad_client"     // the client sent no usable ClientHello or request, or asked for a destination never dialed (see destAllowed)
	// KindBypassRefused is a flow that named a bypass name but could not go
	// direct: no address is known for the name, or the address is one the
	// proxy never dials for a client.
	KindBypassRefused = "bypass_refused"
)

// Policy is the part of the bypass state the proxy consults. The proxy
// never teaches the kernel anything: an SNI or a Host is client-asserted.
type Policy interface {
	// BypassName reports whether name (lowercase, no trailing dot) is on the bypass list.
	BypassName(name string) bool
	// BypassTarget says where a flow that names the bypass name name, sent by the
	// client to dst, goes direct: dst itself when dst's address is one that
	// cloudsteer's resolver holds (or now obtains) for name, otherwise one of
	// those addresses with dst's port. An error means no address is known for
	// name: the flow is refused.
	BypassTarget(ctx context.Context, name string, dst netip.AddrPort) (netip.AddrPort, error)
}

// Event is a flow the proxy could not carry as asked, for the status page.
type Event struct {
	Time     time.Time
	Client   netip.Addr
	Name     string         // SNI or Host name; empty when unknown
	Target   netip.AddrPort // original destination (for KindBypassRefused: the address refused, if any)
	Proto    string         // "http" or "tls"
	Kind     string         // KindBlocked, KindAuthFailed, KindUpstreamError, KindBadClient or KindBypassRefused
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
	// RefuseName, when set, names the TLS server names refused outright
	// (the DNS-over-HTTPS services of dns.block_doh): the client gets an
	// access-denied alert, nothing is dialed. A bypass name is never
	// refused.
	RefuseName func(name string) bool
	// OriginalDst returns the destination the client dialed before the
	// kernel redirected the flow (required).
	OriginalDst func(*net.TCPConn) (netip.AddrPort, error)
	// OnEvent, when set, is called for each Event; it must not block long.
	OnEvent func(Event)
	// PeekTimeout bounds the wait for a ClientHello or a request head.
	PeekTimeout time.Duration
	// IdleTimeout closes a flow that moved no bytes for this long (a
	// tunnel within a tenth of it more, at most 10 s more).
	IdleTimeout time.Duration
	// DialTimeout bounds reaching the cloud proxy or an origin.
	DialTimeout time.Duration
	// MaxHeaderBytes caps an HTTP request head (and the ClientHello).
	MaxHeaderBytes int
	// Logger gets the proxy's logs; nil means slog.Default().
	Logger *slog.Logger
	// MaxFlows caps the steered flows served at once (both listeners
	// together); a flow over it is reset at once after accept. Zero means
	// no limit (suggested for a small office: 8192).
	MaxFlows int
	// MaxFlowsPerClient caps the flows served at once for one client: an
	// IPv4 address, or an IPv6 /64 (a client may rotate privacy
	// addresses). Zero means no limit (suggested: 512).
	MaxFlowsPerClient int
	// FailureMode is what steered flows get while no cloud proxy is
	// healthy: FailOpen (also for "") or FailClosed; see failmode.go.
	FailureMode string
	// KeepFreedMemory leaves returning freed memory to the Go runtime;
	// by default the proxy returns it to the OS once a burst of flows has
	// gone idle (see trim.go).
	KeepFreedMemory bool
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
	BypassRefused  uint64 // flows naming a bypass name that could not go direct
	DoHRefused     uint64 // TLS flows naming a refused DNS-over-HTTPS host (Config.RefuseName)
	// RefusedFlows counts flows reset at accept because MaxFlows flows ran.
	RefusedFlows uint64
	// RefusedFlowsPerClient counts flows reset at accept because their
	// client had MaxFlowsPerClient flows running.
	RefusedFlowsPerClient uint64
	// FailedOpen counts tunnels and requests sent direct because no
	// cloud proxy was healthy (FailOpen); FailedClosed those refused for
	// it (FailClosed).
	FailedOpen, FailedClosed uint64
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
	bypassRefused, dohRefused                atomic.Uint64
	failedOpen, failedClosed                 atomic.Uint64
	openConns                                connSet // direct conns of FailOpen flows

	limits flowLimits
	local  destaddr.Local // the gateway's own addresses, never dialed for a client
	// allowLoopback lets tests dial loopback origins (export_test.go).
	allowLoopback bool

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
	case cfg.MaxFlows < 0 || cfg.MaxFlowsPerClient < 0:
		return nil, errors.New("proxy config: flow limits must not be negative")
	case cfg.FailureMode != "" && cfg.FailureMode != FailOpen && cfg.FailureMode != FailClosed:
		return nil, fmt.Errorf("proxy config: failure mode %q is not open or closed", cfg.FailureMode)
	}
	if cfg.FailureMode == "" {
		cfg.FailureMode = FailOpen
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
	p.limits.max, p.limits.perClient = cfg.MaxFlows, cfg.MaxFlowsPerClient
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
		BypassRefused:  p.bypassRefused.Load(),
		DoHRefused:     p.dohRefused.Load(),

		RefusedFlows:          p.limits.refused.Load(),
		RefusedFlowsPerClient: p.limits.refusedPerClient.Load(),
		FailedOpen:            p.failedOpen.Load(),
		FailedClosed:          p.failedClosed.Load(),
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
	ts := NewTunnels(TunnelConfig{IdleTimeout: p.cfg.IdleTimeout, TrimMemory: !p.cfg.KeepFreedMemory, Logger: p.log})
	defer ts.Close()
	// One end function for all of this listener's tunnels: nothing per flow.
	tunnelDone := func(client netip.Addr, up, down int64) {
		p.bytesUp.Add(uint64(up))
		p.bytesDown.Add(uint64(down))
		p.active.Add(-1)
		p.limits.release(client)
		wg.Done()
	}
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
			// Out of file descriptors and the like: wait and retry, 5 ms
			// doubling to 1 s, as net/http's Server does. One log line
			// per episode, not per retry.
			if backoff == 0 {
				p.log.Warn("accept failed, backing off", "proto", proto, "err", err)
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		if backoff != 0 {
			p.log.Info("accept works again", "proto", proto, "last_backoff", backoff)
			backoff = 0
		}
		tc, ok := c.(*net.TCPConn)
		if !ok {
			c.Close()
			p.log.Error("listener returned a non-TCP connection", "proto", proto, "type", fmt.Sprintf("%T", c))
			continue
		}
		p.accepted.Add(1)
		var client netip.Addr
		if a, ok := tc.RemoteAddr().(*net.TCPAddr); ok {
			client = a.AddrPort().Addr().Unmap()
		}
		key := clientKey(client)
		if !p.limits.take(key) {
			// Over a limit: reset at once, no goroutine, no state.
			tc.SetLinger(0)
			tc.Close()
			continue
		}
		p.active.Add(1)
		wg.Add(1)
		go func() {
			f := newFlow(ctx, tc, proto, ts, tunnelDone)
			f.key = key
			handle(f.ctx, f)
			f.closeConns()
			f.cancel()
			if !f.detached {
				p.active.Add(-1)
				p.limits.release(key)
				wg.Done()
			}
		}()
	}
}

// flow is one client connection and the upstream connections it opened
// while its handler runs; closing it closes them all. A detached flow
// (handed to a tunnel) is garbage: the tunnel holds the connections.
type flow struct {
	ctx    context.Context
	cancel context.CancelFunc
	stop   func() bool // stops closing the conns when ctx ends
	client *net.TCPConn
	ip     netip.Addr
	proto  string

	tunnels    *Tunnels
	tunnelDone func(key netip.Addr, up, down int64) // ends a detached flow
	detached   bool
	key        netip.Addr // the client's key in the flow limits

	mu     sync.Mutex
	conns  []net.Conn
	closed bool
	tun    *tunnel // a tunnel run by pipe
}

func newFlow(ctx context.Context, c *net.TCPConn, proto string, ts *Tunnels, done func(netip.Addr, int64, int64)) *flow {
	f := &flow{client: c, proto: proto, conns: make([]net.Conn, 1, 2), tunnels: ts, tunnelDone: done}
	f.conns[0] = c
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		f.ip = a.AddrPort().Addr().Unmap()
	}
	f.ctx, f.cancel = context.WithCancel(ctx)
	f.stop = context.AfterFunc(f.ctx, f.closeConns)
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
		tun.close()
	}
}

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
	case KindBypassRefused:
		p.bypassRefused.Add(1)
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
// ended, and returns then. The flow keeps its connections (closing it ends
// the tunnel).
func (p *Proxy) pipe(f *flow, client *net.TCPConn, up net.Conn) {
	done := make(chan struct{})
	t := f.tunnels.start(client, up, func(a, b int64) {
		p.bytesUp.Add(uint64(a))
		p.bytesDown.Add(uint64(b))
		close(done)
	})
	if t == nil {
		return
	}
	f.mu.Lock()
	closed := f.closed
	f.tun = t
	f.mu.Unlock()
	if closed {
		t.close()
	}
	<-done
}

// detach hands client and up, all the connections of f, to a tunnel and
// returns at once; the tunnel ends the flow when both directions have
// ended. When f was closed meanwhile it does nothing.
func (p *Proxy) detach(f *flow, client *net.TCPConn, up net.Conn) {
	if !f.stop() {
		return // f's context ended: its conns are being closed
	}
	f.mu.Lock()
	closed := f.closed
	f.conns, f.closed = nil, true
	f.mu.Unlock()
	if closed {
		return
	}
	f.detached = f.tunnels.startKeyed(client, up, f.key, f.tunnelDone) != nil
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

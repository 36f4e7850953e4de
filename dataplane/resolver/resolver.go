// Package resolver is the gateway's LAN DNS forwarder: it answers the
// queries that nftables redirects to it over UDP and TCP, forwards misses to
// the cloud resolvers (plain DNS: UDP, then TCP when the answer is
// truncated; or DNS over TLS, HTTPS or QUIC on one reused connection per
// resolver, never falling back to plain: package transport), caches
// positive and negative answers within their TTL, and reports every A/AAAA
// answer to a snooping hook that teaches the dataplane which addresses
// belong to which names.
package resolver

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/cloudsteer/cloudsteer/dataplane/resolver/transport"
	"github.com/cloudsteer/cloudsteer/internal/nameset"
)

// Defaults used when the matching Config field is zero.
const (
	DefaultTimeout       = 2 * time.Second
	DefaultCacheSize     = 10000
	DefaultCacheBytes    = 32 << 20
	DefaultMaxTTL        = 24 * time.Hour
	DefaultMaxConcurrent = 512
	DefaultMaxTCPConns   = 256
)

const (
	// upstreamUDPSize is the EDNS0 buffer size advertised to the upstreams
	// and to EDNS0 clients (the DNS flag day 2020 value).
	upstreamUDPSize = 1232
	// tcpIdleTimeout closes a client TCP connection that sends nothing.
	tcpIdleTimeout = 10 * time.Second
	// tcpWriteTimeout bounds one answer written to a TCP client.
	tcpWriteTimeout = 5 * time.Second
	// tcpPerConnInflight bounds the pipelined queries of one TCP client.
	tcpPerConnInflight = 16
)

// Config is what a Resolver needs; zero fields take the defaults above.
type Config struct {
	// Upstreams are plain DNS cloud resolvers, tried in order with
	// failover: a shorthand for Servers of Kind transport.Plain. Exactly
	// one of Upstreams and Servers is set.
	Upstreams []netip.AddrPort
	// Servers are the cloud resolvers of any transport (plain, DoT, DoH,
	// DoQ), tried in order with failover. An encrypted one's Addrs must be
	// set (the bootstrap): the resolver never looks a server name up, and
	// never sends plain DNS to an encrypted upstream.
	Servers []transport.Spec
	// RootCAs verify the encrypted upstreams; nil is the system roots.
	RootCAs *x509.CertPool
	// IdleTimeout closes an encrypted upstream's connection unused this
	// long (default transport.DefaultIdleTimeout).
	IdleTimeout time.Duration
	// Timeout bounds one attempt at one upstream (default 2s).
	Timeout time.Duration
	// CacheSize is the maximum number of cached answers (default 10000).
	CacheSize int
	// CacheBytes is the maximum total wire size of cached answers (default 32 MiB).
	CacheBytes int
	// MinTTL and MaxTTL clamp the TTLs of cached answers (defaults 0 and 1 day).
	MinTTL, MaxTTL time.Duration
	// MaxConcurrent bounds the queries handled at once; UDP queries beyond
	// it are dropped (the client retries), TCP queries wait (default 512).
	MaxConcurrent int
	// MaxTCPConns bounds open client TCP connections overall; more are
	// closed at once (default 256).
	MaxTCPConns int
	// MaxTCPPerClient bounds the open TCP connections of one client (an
	// IPv4 address or an IPv6 /64); more are closed at once. Zero is no
	// per-client bound (DefaultMaxTCPPerClient is the suggested value).
	MaxTCPPerClient int
	// QueriesPerSecondPerClient is the rate of queries one client (an
	// IPv4 address or an IPv6 /64) may send, with bursts of QueryBurst
	// (default twice the rate): a token bucket per client. A UDP query
	// over it is dropped unanswered (no reflection), a TCP query over it
	// is answered REFUSED; neither is queued. Zero is no limit
	// (DefaultQueriesPerSecondPerClient, DefaultQueryBurst suggested).
	QueriesPerSecondPerClient float64
	QueryBurst                int
	// Snoop is called for every A/AAAA answer forwarded to a client (from
	// cache or upstream), before the answer is sent: name (lowercase, no
	// trailing dot), its addresses and the TTL. For a CNAME chain it is
	// called for the query name and for every owner name along the chain.
	// It must not modify addrs, which cached answers share. It may be nil.
	Snoop func(name string, addrs []netip.Addr, ttl time.Duration)
	// OnQuery is called once per answered query. It may be nil.
	OnQuery func(QueryInfo)
	// KernelCache, when not nil, gets every cached answer that it can
	// serve without the resolver (see KernelCache) and is told when one
	// leaves the cache. Queries it answers never reach the resolver: they
	// are not in Stats, and Snoop and OnQuery are not called for them.
	KernelCache KernelCache
	// Logger is the parent logger (default slog.Default()).
	Logger *slog.Logger
	// Now is the clock of the cache (default time.Now).
	Now func() time.Time
	// RecoverAfter is how long a failed cloud resolver must answer every
	// probe before queries go to it first again (health.go); zero means
	// DefaultRecoverAfter.
	RecoverAfter time.Duration
	// NXDomain are names answered NXDOMAIN by the resolver itself, each
	// with every name under it (local.go): never forwarded, cached or
	// snooped. The daemon puts Firefox's canary domain and the well-known
	// DNS-over-HTTPS host names here.
	NXDomain []string
	// LocalAddrs, when set, answers the gateway's own names: for a name
	// (canonical) it reports true and the addresses to answer with (A or
	// AAAA by family; NODATA for other types). Such answers come before
	// everything else, are never forwarded, cached or snooped.
	LocalAddrs func(name string) ([]netip.Addr, bool)
	// LocalPTR, when set, answers PTR queries for local addresses (the
	// LAN's DHCP leases) with a name; like LocalAddrs, before everything
	// else (a private reverse zone's NXDOMAIN included) and never
	// forwarded, cached or snooped.
	LocalPTR func(addr netip.Addr) (string, bool)
	// Split are the internal zones and their resolvers (split.go): names
	// under them never go to the cloud resolvers. A split zone wins over
	// NXDomain (the LAN's reverse zones may be in both).
	Split []SplitZone
	// OnUpstreamSwitch, when set, is called when the resolver queries go
	// to first changes, with the upstreams' names (UpstreamState.Name; to
	// is "" when every one is down). It must not block.
	OnUpstreamSwitch func(from, to string)
}

// KernelCache is a second cache of answers that serves clients before
// their queries reach the resolver (dataplane/dnscache's eBPF map). The
// resolver offers it the answers its fast path serves, except sinkholes
// and answers to DO, CD or non-IN questions, and withdraws them when they
// leave its own cache. Calls are made without the resolver's locks held,
// from the goroutine that changed the cache; errors are only logged.
type KernelCache interface {
	// Put offers wire, the packed answer to a lowercase question with ID
	// 0, RD clear and no OPT record, valid for ttl from now.
	Put(wire []byte, ttl time.Duration) error
	// Delete withdraws the answer to name (lowercase, fully qualified)
	// and qtype.
	Delete(name string, qtype uint16) error
}

// QueryInfo describes one answered client query.
type QueryInfo struct {
	Client    netip.AddrPort
	Name      string // lowercase, no trailing dot ("." for the root)
	Type      uint16 // dns.TypeA, ...
	Rcode     int    // dns.RcodeSuccess, ...
	Cached    bool
	Duration  time.Duration
	Transport string // "udp" or "tcp"
	// Blocked is set when the answer is a sinkhole (A 0.0.0.0 or AAAA ::),
	// the way cloud resolvers answer for blocked names.
	Blocked bool
}

// Stats are the resolver's counters since New.
type Stats struct {
	Queries          uint64            // requests received with a full DNS header
	CacheHits        uint64            // answered from the cache
	CacheMisses      uint64            // sent upstream (or joined an identical in-flight query)
	Coalesced        uint64            // misses that shared one upstream exchange with another
	UpstreamErrors   uint64            // failed upstream attempts (each upstream tried counts)
	Malformed        uint64            // requests answered FORMERR or dropped as garbage
	Dropped          uint64            // requests dropped unanswered (garbage, responses, overload, rate)
	RefusedTCP       uint64            // client TCP connections closed at once: over MaxTCPConns or MaxTCPPerClient
	RefusedTCPClient uint64            // of RefusedTCP, those over MaxTCPPerClient
	RateLimited      uint64            // queries over their client's rate: UDP dropped (also in Dropped), TCP answered REFUSED
	Rcodes           map[string]uint64 // answers sent, by rcode name ("NOERROR", "NXDOMAIN", ...)
	CacheEntries     int               // answers in the cache now
	UpstreamSwitches uint64            // changes of the resolver queries go to first
	LocalNXDomain    uint64            // queries answered NXDOMAIN by Config.NXDomain
	LocalAnswers     uint64            // queries answered from Config.LocalAddrs
	SplitQueries     uint64            // exchanges answered by an internal resolver (Config.Split)
	SplitErrors      uint64            // failed attempts at an internal resolver
}

// Resolver is a caching DNS forwarder for the LAN.
type Resolver struct {
	cfg       Config
	log       *slog.Logger
	now       func() time.Time
	cache     *cache
	nxdomain  nameset.Set // Config.NXDomain
	split     splitZones  // Config.Split by suffix
	upstreams []*upstream
	sem       chan struct{}
	flights   flightGroup
	rate      *rateLimiter
	tcpConns  connCounter
	// exchange sends one packed query to one upstream and returns the raw
	// reply; tests and the fuzzer replace it.
	exchange func(ctx context.Context, addr netip.AddrPort, query []byte, tcp bool) ([]byte, error)

	queries, hits, misses, coalesced, upErrors, malformed, dropped atomic.Uint64
	refusedTCP, refusedTCPClient, rateLimited, localNX             atomic.Uint64
	splitQueries, splitErrors, localAnswers                        atomic.Uint64
	rcodes                                                         [25]atomic.Uint64 // 0-23 (BADCOOKIE), 24: other

	activeMu sync.Mutex
	active   int // index of the upstream queries go to first; -1 when all are down
	switches atomic.Uint64
}

// New validates cfg and returns a Resolver; it opens no sockets.
func New(cfg Config) (*Resolver, error) {
	if len(cfg.Upstreams) > 0 && len(cfg.Servers) > 0 {
		return nil, errors.New("new resolver: both upstreams and servers")
	}
	for _, u := range cfg.Upstreams {
		if !u.IsValid() || u.Port() == 0 {
			return nil, fmt.Errorf("new resolver: invalid upstream %q", u)
		}
		u = netip.AddrPortFrom(u.Addr().Unmap(), u.Port())
		cfg.Servers = append(cfg.Servers, transport.Spec{Kind: transport.Plain, Host: u.Addr().String(), Port: u.Port(), Addrs: []netip.Addr{u.Addr()}})
	}
	cfg.Upstreams = nil
	if len(cfg.Servers) == 0 {
		return nil, errors.New("new resolver: no upstreams")
	}
	if cfg.Timeout < 0 || cfg.CacheSize < 0 || cfg.CacheBytes < 0 || cfg.MinTTL < 0 || cfg.MaxTTL < 0 ||
		cfg.MaxConcurrent < 0 || cfg.MaxTCPConns < 0 || cfg.MaxTCPPerClient < 0 || cfg.QueriesPerSecondPerClient < 0 || cfg.QueryBurst < 0 {
		return nil, errors.New("new resolver: negative limit")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = DefaultCacheSize
	}
	if cfg.CacheBytes == 0 {
		cfg.CacheBytes = DefaultCacheBytes
	}
	if cfg.MaxTTL == 0 {
		cfg.MaxTTL = DefaultMaxTTL
	}
	if cfg.MinTTL > cfg.MaxTTL {
		return nil, fmt.Errorf("new resolver: min ttl %s above max ttl %s", cfg.MinTTL, cfg.MaxTTL)
	}
	if cfg.MaxConcurrent == 0 {
		cfg.MaxConcurrent = DefaultMaxConcurrent
	}
	if cfg.MaxTCPConns == 0 {
		cfg.MaxTCPConns = DefaultMaxTCPConns
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &Resolver{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "resolver"),
		now:      cfg.Now,
		cache:    newCache(cfg.CacheSize, cfg.CacheBytes),
		nxdomain: nameset.New(cfg.NXDomain),
		sem:      make(chan struct{}, cfg.MaxConcurrent),
	}
	if cfg.QueriesPerSecondPerClient > 0 {
		r.rate = newRateLimiter(cfg.QueriesPerSecondPerClient, cfg.QueryBurst, maxRateClients, time.Now)
	}
	split, err := newSplitZones(cfg.Split)
	if err != nil {
		return nil, fmt.Errorf("new resolver: %w", err)
	}
	r.split = split
	r.tcpConns.max = cfg.MaxTCPPerClient
	r.cache.kernel = cfg.KernelCache
	r.cache.log = r.log
	for _, s := range cfg.Servers {
		up, err := r.newUpstream(s)
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("new resolver: %w", err)
		}
		r.newHealth(up)
		r.upstreams = append(r.upstreams, up)
	}
	r.exchange = r.dialExchange
	return r, nil
}

// Serve answers queries on udp and tcp (either may be nil) until ctx is
// done, then closes both and returns nil once every query in progress has
// finished. It returns an error when a socket fails for another reason.
func (r *Resolver) Serve(ctx context.Context, udp net.PacketConn, tcp net.Listener) error {
	if udp == nil && tcp == nil {
		return errors.New("serve: no udp socket and no tcp listener")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		if udp != nil {
			udp.Close()
		}
		if tcp != nil {
			tcp.Close()
		}
	})
	defer stop()

	var wg sync.WaitGroup
	var errMu sync.Mutex
	var firstErr error
	fail := func(err error) {
		if err == nil || ctx.Err() != nil {
			return
		}
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
		cancel()
	}
	if udp != nil {
		wg.Go(func() { fail(r.serveUDP(ctx, udp, &wg)) })
	}
	if tcp != nil {
		wg.Go(func() { fail(r.serveTCP(ctx, tcp, &wg)) })
	}
	r.log.Debug("serving", "udp", addrString(udp), "tcp", listenerString(tcp))
	<-ctx.Done()
	wg.Wait()
	errMu.Lock()
	defer errMu.Unlock()
	return firstErr
}

// serveUDP reads queries from pc with one reader per GOMAXPROCS and
// returns once they all stopped.
func (r *Resolver) serveUDP(ctx context.Context, pc net.PacketConn, wg *sync.WaitGroup) error {
	n := max(1, runtime.GOMAXPROCS(0))
	errs := make([]error, n)
	var readers sync.WaitGroup
	for i := range n {
		readers.Go(func() { errs[i] = r.readUDP(ctx, pc, wg) })
	}
	readers.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// addrPortConn is the allocation-free datagram API of *net.UDPConn.
type addrPortConn interface {
	ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error)
	WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error)
}

// readUDP is one reader of pc: it answers cache hits itself and every
// other query in its own goroutine, dropping those when MaxConcurrent are
// already in progress.
func (r *Resolver) readUDP(ctx context.Context, pc net.PacketConn, wg *sync.WaitGroup) error {
	apc, _ := pc.(addrPortConn)
	buf := make([]byte, dns.MaxMsgSize)
	var out []byte
	for {
		var (
			n    int
			from net.Addr       // when pc is not an addrPortConn
			ap   netip.AddrPort // the sender as read, for the answer
			err  error
		)
		if apc != nil {
			n, ap, err = apc.ReadFromUDPAddrPort(buf)
		} else {
			n, from, err = pc.ReadFrom(buf)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("read udp: %w", err)
			}
			r.log.Debug("read udp", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		client := netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if apc == nil {
			client = toAddrPort(from)
		}
		if !r.rate.allow(client.Addr()) {
			r.rateLimited.Add(1)
			r.dropped.Add(1)
			continue
		}
		if resp, ok := r.fastAnswer(buf[:n], client, "udp", out[:0]); ok {
			out = resp
			r.writeUDP(ctx, pc, apc, resp, ap, from)
			continue
		}
		select {
		case r.sem <- struct{}{}:
		default:
			r.dropped.Add(1)
			continue
		}
		req := make([]byte, n)
		copy(req, buf[:n])
		wg.Go(func() {
			defer func() { <-r.sem }()
			if resp := r.handle(ctx, req, client, "udp"); resp != nil {
				r.writeUDP(ctx, pc, apc, resp, ap, from)
			}
		})
	}
}

// writeUDP sends one answer to ap through apc, or to from through pc when
// apc is nil.
func (r *Resolver) writeUDP(ctx context.Context, pc net.PacketConn, apc addrPortConn, resp []byte, ap netip.AddrPort, from net.Addr) {
	var err error
	if apc != nil {
		_, err = apc.WriteToUDPAddrPort(resp, ap)
	} else {
		_, err = pc.WriteTo(resp, from)
	}
	if err != nil && ctx.Err() == nil {
		client := ap.String()
		if apc == nil {
			client = from.String()
		}
		r.log.Debug("write udp answer", "client", client, "err", err)
	}
}

// serveTCP accepts client connections, closing those beyond MaxTCPConns.
func (r *Resolver) serveTCP(ctx context.Context, ln net.Listener, wg *sync.WaitGroup) error {
	conns := make(chan struct{}, r.cfg.MaxTCPConns)
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("accept tcp: %w", err)
			}
			r.log.Debug("accept tcp", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		select {
		case conns <- struct{}{}:
		default:
			r.dropped.Add(1)
			r.refusedTCP.Add(1)
			c.Close()
			continue
		}
		client := toAddrPort(c.RemoteAddr()).Addr()
		if !r.tcpConns.acquire(client) {
			<-conns
			r.refusedTCPClient.Add(1)
			c.Close()
			continue
		}
		wg.Go(func() {
			defer func() { <-conns; r.tcpConns.release(client) }()
			r.serveTCPConn(ctx, c)
		})
	}
}

// serveTCPConn answers the length-prefixed queries of one client
// connection, several at a time, until the client goes quiet or errs.
func (r *Resolver) serveTCPConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	client := toAddrPort(c.RemoteAddr())
	var (
		wmu      sync.Mutex
		inflight sync.WaitGroup
		perConn  = make(chan struct{}, tcpPerConnInflight)
		lenBuf   [2]byte
	)
	defer inflight.Wait()
	for {
		if err := c.SetReadDeadline(time.Now().Add(tcpIdleTimeout)); err != nil {
			return
		}
		if _, err := readFull(c, lenBuf[:]); err != nil {
			return
		}
		n := int(lenBuf[0])<<8 | int(lenBuf[1])
		if n < headerLen {
			r.malformed.Add(1)
			r.dropped.Add(1)
			r.log.Debug("tcp query shorter than a header", "client", client, "len", n)
			return
		}
		req := make([]byte, n)
		if _, err := readFull(c, req); err != nil {
			return
		}
		select {
		case perConn <- struct{}{}:
		case <-ctx.Done():
			return
		}
		select {
		case r.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		limited := !r.rate.allow(client.Addr())
		if limited {
			r.rateLimited.Add(1)
		}
		inflight.Go(func() {
			defer func() { <-r.sem; <-perConn }()
			var resp []byte
			if limited {
				resp = refusedReply(req)
			} else {
				resp = r.handle(ctx, req, client, "tcp")
			}
			if resp == nil {
				return
			}
			out := make([]byte, 2+len(resp))
			out[0], out[1] = byte(len(resp)>>8), byte(len(resp))
			copy(out[2:], resp)
			wmu.Lock()
			defer wmu.Unlock()
			c.SetWriteDeadline(time.Now().Add(tcpWriteTimeout))
			if _, err := c.Write(out); err != nil {
				r.log.Debug("write tcp answer", "client", client, "err", err)
				c.Close()
			}
		})
	}
}

// Stats returns a snapshot of the counters.
func (r *Resolver) Stats() Stats {
	s := Stats{
		Queries:          r.queries.Load(),
		CacheHits:        r.hits.Load(),
		CacheMisses:      r.misses.Load(),
		Coalesced:        r.coalesced.Load(),
		UpstreamErrors:   r.upErrors.Load(),
		Malformed:        r.malformed.Load(),
		Dropped:          r.dropped.Load(),
		RefusedTCP:       r.refusedTCP.Load() + r.refusedTCPClient.Load(),
		RefusedTCPClient: r.refusedTCPClient.Load(),
		RateLimited:      r.rateLimited.Load(),
		Rcodes:           map[string]uint64{},
		CacheEntries:     r.cache.len(),
		UpstreamSwitches: r.switches.Load(),
		LocalNXDomain:    r.localNX.Load(),
		LocalAnswers:     r.localAnswers.Load(),
		SplitQueries:     r.splitQueries.Load(),
		SplitErrors:      r.splitErrors.Load(),
	}
	for i := range r.rcodes {
		v := r.rcodes[i].Load()
		if v == 0 {
			continue
		}
		name := "OTHER"
		if i < len(r.rcodes)-1 {
			name = rcodeName(i)
		}
		s.Rcodes[name] += v
	}
	return s
}

func (r *Resolver) countRcode(rcode int) {
	if rcode < 0 || rcode >= len(r.rcodes)-1 {
		rcode = len(r.rcodes) - 1
	}
	r.rcodes[rcode].Add(1)
}

func rcodeName(rcode int) string {
	if s, ok := dns.RcodeToString[rcode]; ok {
		return s
	}
	return fmt.Sprintf("RCODE%d", rcode)
}

// Healthy sends one probe query (". NS") to the upstreams in order and
// returns nil as soon as one answers it.
func (r *Resolver) Healthy(ctx context.Context) error {
	q := new(dns.Msg)
	q.Id = dns.Id()
	q.RecursionDesired = true
	q.Question = []dns.Question{{Name: ".", Qtype: dns.TypeNS, Qclass: dns.ClassINET}}
	q.SetEdns0(upstreamUDPSize, false)
	var errs []error
	for _, u := range r.upstreams {
		if _, err := r.exchangeOne(ctx, u, q); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", u.name, err))
			continue
		}
		return nil
	}
	return fmt.Errorf("probe upstreams: %w", errors.Join(errs...))
}

func toAddrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.UDPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case *net.TCPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case nil:
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

func addrString(pc net.PacketConn) string {
	if pc == nil {
		return ""
	}
	return pc.LocalAddr().String()
}

func listenerString(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

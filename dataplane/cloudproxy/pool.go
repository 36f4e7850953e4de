package cloudproxy

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// DefaultPoolMax is the most warm connections a Client keeps when
	// Config.PoolMax is zero.
	DefaultPoolMax = 16
	// DefaultPoolMaxAge is how long a warm connection may wait unused when
	// Config.PoolMaxAge is zero. It is well under the idle limits proxies
	// put on a connection that has not sent its first request (Go servers
	// commonly use a 10 s ReadHeaderTimeout, Squid 5 min).
	DefaultPoolMaxAge = 5 * time.Second

	// demandWindow is one of the two buckets recent demand is counted in:
	// the pool aims to hold as many connections as were asked for in the
	// last one to two windows.
	demandWindow = 100 * time.Millisecond
	// refillBackoffMin and refillBackoffMax bound the pause in refilling
	// after refill dials failed in a row.
	refillBackoffMin = 100 * time.Millisecond
	refillBackoffMax = 10 * time.Second

	// tcpEstablished is TCP_ESTABLISHED from include/net/tcp_states.h.
	tcpEstablished = 1
)

// Stats counts what a Client's warm pool did.
type Stats struct {
	TakenWarm      uint64 // connections taken from the pool
	DialedCold     uint64 // connections a caller dialed itself (retries included)
	DiscardedStale uint64 // pooled connections found closed, reset or sent to when taken
	Retries        uint64 // CONNECTs sent again on a fresh dial after a pooled connection failed
	Expired        uint64 // pooled connections closed unused after the max age
	RefillDials    uint64 // background dials that filled the pool
	RefillErrors   uint64 // background dials that failed
	Idle           int    // connections in the pool now
}

// Add returns s with o's counters added, for totals over several Clients.
// Idle is a gauge: s's is kept.
func (s Stats) Add(o Stats) Stats {
	s.TakenWarm += o.TakenWarm
	s.DialedCold += o.DialedCold
	s.DiscardedStale += o.DiscardedStale
	s.Retries += o.Retries
	s.Expired += o.Expired
	s.RefillDials += o.RefillDials
	s.RefillErrors += o.RefillErrors
	return s
}

// counters are the atomic Stats fields Connect and the pool bump.
type counters struct {
	takenWarm, dialedCold, discardedStale, retries atomic.Uint64
	expired, refillDials, refillErrors             atomic.Uint64
}

// idleConn is a connection to the proxy that carries no request yet.
type idleConn struct {
	conn  net.Conn
	ready time.Time // when the dial (and TLS handshake) completed
}

// pool is a small set of established, unused connections to the cloud
// proxy, refilled in the background after each take and sized from recent
// demand. It holds nothing and runs nothing until the first demand, and
// nothing once demand has stopped for longer than maxAge.
type pool struct {
	dial   func(context.Context) (net.Conn, error)
	max    int
	maxAge time.Duration
	stats  *counters
	log    *slog.Logger

	ctx    context.Context // canceled by close: ends refill dials
	cancel context.CancelFunc
	wg     sync.WaitGroup // refill workers and expiry runs
	jobs   chan struct{}  // one token per refill dial handed to a waiting worker

	mu           sync.Mutex
	closed       bool
	idle         []idleConn // oldest first
	dialing      int        // refill dials in flight or handed to a worker
	waiting      int        // refill workers waiting for a job
	failures     int        // refill dials failed in a row
	proven       bool       // a refill dial has succeeded since the last failure
	backoffUntil time.Time  // no refill dials before this
	timer        *time.Timer
	// Demand: calls in the current and the previous window.
	winStart   time.Time
	cur, prev  int
	lastDemand time.Time
}

func newPool(dial func(context.Context) (net.Conn, error), max int, maxAge time.Duration, stats *counters) *pool {
	ctx, cancel := context.WithCancel(context.Background())
	return &pool{
		dial:   dial,
		max:    max,
		maxAge: maxAge,
		stats:  stats,
		log:    slog.With("component", "cloudproxy"),
		ctx:    ctx,
		cancel: cancel,
		jobs:   make(chan struct{}, max),
	}
}

// get notes one demand for a connection and returns a live pooled one, or
// nil when the pool has none. Either way it starts refilling.
func (p *pool) get() net.Conn {
	now := time.Now()
	var drop []net.Conn
	var conn net.Conn
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.noteDemandLocked(now)
	for len(p.idle) > 0 {
		ic := p.idle[0]
		p.idle[0] = idleConn{}
		p.idle = p.idle[1:]
		if now.Sub(ic.ready) >= p.maxAge {
			p.stats.expired.Add(1)
			drop = append(drop, ic.conn)
			continue
		}
		if !alive(ic.conn) {
			p.stats.discardedStale.Add(1)
			drop = append(drop, ic.conn)
			continue
		}
		conn = ic.conn
		break
	}
	p.fillLocked(now)
	p.armLocked()
	p.mu.Unlock()
	closeAll(drop)
	if conn != nil {
		p.stats.takenWarm.Add(1)
	}
	return conn
}

func (p *pool) noteDemandLocked(now time.Time) {
	p.rollLocked(now)
	p.cur++
	p.lastDemand = now
}

// rollLocked moves the demand windows forward to now.
func (p *pool) rollLocked(now time.Time) {
	switch age := now.Sub(p.winStart); {
	case age < demandWindow:
		return
	case age < 2*demandWindow:
		p.prev = p.cur
	default:
		p.prev = 0
	}
	p.cur = 0
	p.winStart = now
}

// targetLocked is how many connections the pool should hold (idle plus
// dialing): the demand of the last one to two windows, at least 1 while
// there was demand within maxAge, at most max; 0 without recent demand.
func (p *pool) targetLocked(now time.Time) int {
	if p.lastDemand.IsZero() || now.Sub(p.lastDemand) >= p.maxAge {
		return 0
	}
	p.rollLocked(now)
	return min(max(p.cur+p.prev, 1), p.max)
}

// fillLocked starts refill dials up to the target. Until a refill has
// succeeded (at first, and after a failure) only one dials at a time, so
// a proxy that is down or drops SYNs sees one probing dial, not max;
// after a failure it also waits out a growing backoff.
func (p *pool) fillLocked(now time.Time) {
	if p.closed || now.Before(p.backoffUntil) {
		return
	}
	want := p.targetLocked(now) - len(p.idle) - p.dialing
	if !p.proven {
		want = min(want, 1-p.dialing)
	}
	for ; want > 0; want-- {
		p.dialing++
		if p.waiting > 0 {
			p.waiting--
			p.jobs <- struct{}{} // never blocks: one slot per waiting worker
			continue
		}
		p.wg.Add(1)
		go p.worker()
	}
}

// worker makes refill dials, starting with one, then waiting up to a
// demand window for the next. (A worker that lives on keeps the stack
// its first dial grew: a goroutine per dial would grow one each time.)
// A worker is always counted either in dialing or in waiting, so there
// are never more workers than max.
func (p *pool) worker() {
	defer p.wg.Done()
	wait := time.NewTimer(demandWindow)
	defer wait.Stop()
	for {
		if !p.refill() {
			return
		}
		wait.Reset(demandWindow)
		select {
		case <-p.jobs:
			continue
		case <-p.ctx.Done():
			return
		case <-wait.C:
		}
		p.mu.Lock()
		select {
		case <-p.jobs: // handed a job as the wait ended
			p.mu.Unlock()
			continue
		default:
		}
		p.waiting--
		p.mu.Unlock()
		return
	}
}

// refill dials one connection into the pool and, unless the pool was
// closed meanwhile, moves the worker from dialing to waiting.
func (p *pool) refill() bool {
	conn, err := p.dial(p.ctx)
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dialing--
	if p.closed {
		if conn != nil {
			conn.Close()
		}
		return false
	}
	p.waiting++
	if err != nil {
		p.stats.refillErrors.Add(1)
		p.failures++
		p.proven = false
		backoff := refillBackoffMax
		if p.failures < 8 {
			backoff = min(refillBackoffMin<<(p.failures-1), refillBackoffMax)
		}
		p.backoffUntil = now.Add(backoff)
		if p.failures == 1 {
			p.log.Debug("refill dial to cloud proxy", "err", err, "backoff", backoff)
		}
		return true
	}
	p.stats.refillDials.Add(1)
	p.failures = 0
	p.proven = true
	p.backoffUntil = time.Time{}
	p.idle = append(p.idle, idleConn{conn: conn, ready: now})
	p.armLocked()
	return true
}

// armLocked sets the expiry timer for the oldest idle connection.
func (p *pool) armLocked() {
	if p.closed || len(p.idle) == 0 {
		return
	}
	d := time.Until(p.idle[0].ready.Add(p.maxAge))
	if p.timer == nil {
		p.timer = time.AfterFunc(d, p.expire)
		return
	}
	p.timer.Reset(d)
}

// expire closes the connections idle for maxAge or longer and replaces
// them only while there is demand.
func (p *pool) expire() {
	now := time.Now()
	var drop []net.Conn
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.wg.Add(1)
	defer p.wg.Done()
	for len(p.idle) > 0 && now.Sub(p.idle[0].ready) >= p.maxAge {
		drop = append(drop, p.idle[0].conn)
		p.idle[0] = idleConn{}
		p.idle = p.idle[1:]
		p.stats.expired.Add(1)
	}
	p.fillLocked(now)
	p.armLocked()
	p.mu.Unlock()
	closeAll(drop)
}

// len returns the number of idle connections.
func (p *pool) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// close closes the idle connections, stops refilling and waits for refill
// dials in flight to end. The pool gives out nothing afterwards.
func (p *pool) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	drop := make([]net.Conn, 0, len(p.idle))
	for _, ic := range p.idle {
		drop = append(drop, ic.conn)
	}
	p.idle = nil
	if p.timer != nil {
		p.timer.Stop()
	}
	p.cancel()
	p.mu.Unlock()
	closeAll(drop)
	p.wg.Wait()
}

// flush closes the idle connections (their proxy was found dead) and
// keeps the pool working.
func (p *pool) flush() {
	p.mu.Lock()
	drop := make([]net.Conn, 0, len(p.idle))
	for _, ic := range p.idle {
		drop = append(drop, ic.conn)
	}
	p.idle = nil
	p.mu.Unlock()
	closeAll(drop)
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

// alive reports, without blocking, whether an idle connection to the
// proxy can still carry a request: the peer has neither closed nor reset
// it and, on plain TCP, has sent nothing (a proxy says nothing before a
// request). A TLS connection may hold post-handshake messages (TLS 1.3
// session tickets) that only the TLS layer can read, so for TLS pending
// bytes are fine as long as the socket is still ESTABLISHED.
func alive(conn net.Conn) bool {
	raw, isTLS := conn, false
	if tc, ok := conn.(*tls.Conn); ok {
		raw, isTLS = tc.NetConn(), true
	}
	sc, ok := raw.(syscall.Conn)
	if !ok {
		return true // nothing to look at: let CONNECT find out
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	live := false
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, rerr := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case rerr == unix.EAGAIN:
			live = true // nothing to read: open and quiet
		case rerr != nil || n == 0:
			live = false // reset, or the peer's FIN
		case isTLS:
			info, ierr := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
			live = ierr == nil && info.State == tcpEstablished
		}
		return true // never wait for readiness
	})
	return err == nil && live
}

// Alive reports, without blocking, whether an idle connection to the
// proxy (from DialProxy, between requests) can still carry a request: the
// proxy has neither closed nor reset it and, on plain TCP, has sent
// nothing unasked. A request written on a connection Alive passed can
// still cross the proxy's idle close; one on a connection it failed would
// surely be lost.
func Alive(conn net.Conn) bool { return alive(conn) }

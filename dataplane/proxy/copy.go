package proxy

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The two-way copy of a tunnel. Between two TCP sockets each direction
// moves bytes with splice(2) through a kernel pipe, like io.Copy does, but
// it takes a pipe from a shared pool only while bytes are on their way
// (io.Copy holds a pipe, two more descriptors, per direction for as long
// as it runs, so idle tunnels ran the process out of descriptors). A new
// direction starts running, so a handshake's next flight does not wait for
// the parker to wake it; a direction that has had nothing to read for
// parkAfter parks: its socket goes to the parker's epoll set, its
// goroutine ends, and a new one runs it once bytes arrive. So an idle
// tunnel holds its two sockets, the tunnel struct and two
// parker map entries (about 1.5 KiB with the runtime's socket state), no
// goroutine stack, no timer: one sweep per Tunnels closes idle tunnels.

const (
	// spliceChunk is the most one splice(2) call moves, and the size asked
	// for the pool's pipes.
	spliceChunk = 1 << 20
	// maxFreePipes caps the pipes kept for reuse; more are closed.
	maxFreePipes = 64
	// copyBufSize is the buffer of the copy between non-TCP connections
	// (a TLS connection to an https cloud proxy): one TLS record.
	copyBufSize = 16 << 10
	// parkAfter is how long a direction waits for bytes in the Go
	// netpoller, goroutine and all, before it parks.
	parkAfter = 100 * time.Millisecond
)

// kpipe is a kernel pipe and the bytes it holds.
type kpipe struct {
	r, w int
	n    int64 // bytes in the pipe
}

// pipePool keeps empty pipes for reuse.
var pipePool struct {
	mu   sync.Mutex
	free []*kpipe
}

func getPipe() (*kpipe, error) {
	pipePool.mu.Lock()
	if n := len(pipePool.free); n > 0 {
		p := pipePool.free[n-1]
		pipePool.free = pipePool.free[:n-1]
		pipePool.mu.Unlock()
		return p, nil
	}
	pipePool.mu.Unlock()
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, fmt.Errorf("create splice pipe: %w", err)
	}
	// A larger pipe means fewer splice calls; a smaller one still works.
	unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, spliceChunk)
	return &kpipe{r: fds[0], w: fds[1]}, nil
}

// putPipe returns p to the pool, or closes it when it still holds bytes or
// the pool is full.
func putPipe(p *kpipe) {
	if p.n == 0 {
		pipePool.mu.Lock()
		if len(pipePool.free) < maxFreePipes {
			pipePool.free = append(pipePool.free, p)
			pipePool.mu.Unlock()
			return
		}
		pipePool.mu.Unlock()
	}
	unix.Close(p.r)
	unix.Close(p.w)
}

// TunnelConfig configures a Tunnels.
type TunnelConfig struct {
	// IdleTimeout closes a tunnel that moved no bytes either way for this
	// long (checked every IdleTimeout/10, at most every 10 s); zero means
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// TrimMemory returns freed memory to the OS once a burst of tunnels
	// has gone idle (see trim.go).
	TrimMemory bool
	// Logger gets the debug line of each idle close; nil means
	// slog.Default().
	Logger *slog.Logger
}

// Tunnels is a set of running tunnels (two-way copies between two
// connections) that closes idle ones and all of them on Close.
type Tunnels struct {
	idle  time.Duration
	trim  bool
	every time.Duration // idle sweep period
	log   *slog.Logger

	mu     sync.Mutex
	head   *tunnel // list of running tunnels
	n      int
	closed bool
	sweep  *time.Timer // runs while n > 0
}

// NewTunnels returns an empty set of tunnels.
func NewTunnels(cfg TunnelConfig) *Tunnels {
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default().With("component", "proxy")
	}
	ts := &Tunnels{idle: cfg.IdleTimeout, trim: cfg.TrimMemory, log: cfg.Logger}
	ts.every = min(max(cfg.IdleTimeout/10, 10*time.Millisecond), 10*time.Second)
	return ts
}

// Start copies both ways between a and b, each direction half-closing its
// destination when its source ends, until both directions have ended, an
// error or IdleTimeout without bytes closes the tunnel, or ts is closed.
// Start owns a and b from now on: it closes both once the tunnel has
// ended, then calls done (when not nil) with the bytes copied a to b and b
// to a. When ts is closed already Start closes a and b, does not call
// done, and returns false. Between two *net.TCPConn (or cloud proxy
// tunnels from cloudproxy.Client.Connect) the bytes move by splice(2) and
// an idle tunnel holds no goroutine.
func (ts *Tunnels) Start(a, b net.Conn, done func(aToB, bToA int64)) bool {
	return ts.start(a, b, done) != nil
}

// Len returns how many tunnels are running.
func (ts *Tunnels) Len() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.n
}

// Close closes every tunnel and makes Start refuse new ones. The tunnels'
// done functions run as they end, soon after, maybe after Close returns.
func (ts *Tunnels) Close() {
	ts.mu.Lock()
	ts.closed = true
	var all []*tunnel
	for t := ts.head; t != nil; t = t.next {
		all = append(all, t)
	}
	if ts.sweep != nil {
		ts.sweep.Stop()
	}
	ts.mu.Unlock()
	for _, t := range all {
		t.close()
	}
}

func (ts *Tunnels) start(a, b net.Conn, done func(int64, int64)) *tunnel {
	return ts.startTunnel(a, b, &tunnel{ts: ts, done: done})
}

// startKeyed is start with an end function that gets key too (the
// client's key in the flow limits), so one function serves all flows.
func (ts *Tunnels) startKeyed(a, b net.Conn, key netip.Addr, done func(netip.Addr, int64, int64)) *tunnel {
	return ts.startTunnel(a, b, &tunnel{ts: ts, key: key, doneKeyed: done})
}

func (ts *Tunnels) startTunnel(a, b net.Conn, t *tunnel) *tunnel {
	a.SetDeadline(time.Time{})
	b.SetDeadline(time.Time{})
	t.touch()
	t.dirs[0] = direction{t: t, src: a, dst: b}
	t.dirs[1] = direction{t: t, src: b, dst: a}
	t.left.Store(2)
	ts.mu.Lock()
	if ts.closed {
		ts.mu.Unlock()
		a.Close()
		b.Close()
		return nil
	}
	t.next = ts.head
	if ts.head != nil {
		ts.head.prev = t
	}
	ts.head = t
	ts.n++
	if ts.n == 1 {
		if ts.sweep == nil {
			ts.sweep = time.AfterFunc(ts.every, ts.closeIdle)
		} else {
			ts.sweep.Reset(ts.every)
		}
	}
	ts.mu.Unlock()
	t.dirs[0].start()
	t.dirs[1].start()
	return t
}

// remove takes the ended t out of the set.
func (ts *Tunnels) remove(t *tunnel) {
	ts.mu.Lock()
	if t.prev != nil {
		t.prev.next = t.next
	} else {
		ts.head = t.next
	}
	if t.next != nil {
		t.next.prev = t.prev
	}
	t.prev, t.next = nil, nil
	ts.n--
	ts.mu.Unlock()
}

// closeIdle closes the tunnels that moved no bytes for the idle timeout
// and runs again every sweep period while tunnels run.
func (ts *Tunnels) closeIdle() {
	cut := time.Now().Add(-ts.idle).UnixNano()
	var idle []*tunnel
	ts.mu.Lock()
	for t := ts.head; t != nil; t = t.next {
		if t.last.Load() <= cut && !t.closed.Load() {
			idle = append(idle, t)
		}
	}
	if ts.n > 0 && !ts.closed {
		ts.sweep.Reset(ts.every)
	}
	ts.mu.Unlock()
	for _, t := range idle {
		ts.log.Debug("closing idle tunnel", "src", t.dirs[0].src.RemoteAddr(), "dst", t.dirs[0].dst.RemoteAddr(), "idle", ts.idle)
		t.close()
	}
}

// tunnel is the two-way copy between two connections. A parked tunnel is
// this struct, its two connections and two parker map entries: nothing
// else stays per flow.
type tunnel struct {
	ts         *Tunnels
	prev, next *tunnel // in ts, guarded by ts.mu
	done       func(aToB, bToA int64)
	doneKeyed  func(key netip.Addr, aToB, bToA int64) // instead of done
	key        netip.Addr
	last       atomic.Int64 // unix nanoseconds of the last bytes moved
	left       atomic.Int32 // directions still running
	closed     atomic.Bool
	dirs       [2]direction // a to b, b to a
}

func (t *tunnel) touch() { t.last.Store(time.Now().UnixNano()) }

// close closes both connections (once) and resumes the parked directions
// so they see it and end.
func (t *tunnel) close() {
	if !t.closed.CompareAndSwap(false, true) {
		return
	}
	t.dirs[0].src.Close()
	t.dirs[1].src.Close()
	for i := range t.dirs {
		if d := &t.dirs[i]; idleParker.take(d) {
			go d.run()
		}
	}
}

// direction copies one way of a tunnel.
type direction struct {
	t        *tunnel
	src, dst net.Conn
	written  int64
	deadline int64  // unix nanoseconds when src's read deadline (parking) ends
	parkID   uint64 // guarded by idleParker.mu
	armed    bool   // src is in the parker's epoll set
}

// readAheadConn is a tunnel from cloudproxy.Client.Connect that holds bytes
// the proxy sent right behind its answer.
type readAheadConn interface {
	net.Conn
	TakeBuffered() []byte
	NetConn() net.Conn
}

// tcpConn returns the TCP socket under c: c itself, or the socket of a
// cloud proxy tunnel that read bytes ahead. (Only such tunnels are
// unwrapped: a *tls.Conn has a NetConn too, and must not be.)
func tcpConn(c net.Conn) *net.TCPConn {
	if b, ok := c.(readAheadConn); ok {
		c = b.NetConn()
	}
	tc, _ := c.(*net.TCPConn)
	return tc
}

// start runs d for the first time, in a goroutine of its own: a new
// tunnel's first bytes (a TLS handshake's next flight) are moved by a
// goroutine already waiting on the socket, without a wake-up of the parker
// first (BenchmarkFirstExchange: about half the latency). A direction with
// nothing to read for parkAfter parks (no goroutine) as always.
func (d *direction) start() {
	go d.run()
}

// run copies until src ends or the copy fails, or parks; once it has
// ended it half-closes dst (or closes the tunnel on error) and, as the
// last direction, ends the tunnel.
func (d *direction) run() {
	var err error
	st, dt := tcpConn(d.src), tcpConn(d.dst)
	if st != nil && dt != nil {
		var parked bool
		if parked, err = d.splice(st, dt); parked {
			return // the parker runs d again
		}
	} else {
		err = d.buffered()
	}
	t := d.t
	if err != nil {
		t.close()
	} else {
		closeWrite(d.dst)
	}
	if t.left.Add(-1) == 0 {
		t.close()
		t.ts.remove(t)
		if t.done != nil {
			t.done(t.dirs[0].written, t.dirs[1].written)
		} else if t.doneKeyed != nil {
			t.doneKeyed(t.key, t.dirs[0].written, t.dirs[1].written)
		}
	}
}

// splice moves src to dst through a pooled kernel pipe until src ends
// (nil), either side fails (the error) or src has had nothing to read for
// parkAfter and d is parked (true).
func (d *direction) splice(st, dt *net.TCPConn) (parked bool, err error) {
	srcRaw, err := st.SyscallConn()
	if err != nil {
		return false, err
	}
	dstRaw, err := dt.SyscallConn()
	if err != nil {
		return false, err
	}
	if b, ok := d.src.(readAheadConn); ok {
		if pending := b.TakeBuffered(); len(pending) > 0 {
			n, err := dt.Write(pending)
			d.written += int64(n)
			if err != nil {
				return false, err
			}
			d.t.touch()
		}
	}
	var p *kpipe
	defer func() {
		if p != nil {
			putPipe(p)
		}
	}()
	for {
		if now := time.Now(); d.deadline-now.UnixNano() < int64(parkAfter/2) {
			dl := now.Add(parkAfter)
			d.deadline = dl.UnixNano()
			st.SetReadDeadline(dl)
		}
		// Fill the pipe from src. While src has nothing to read, the pipe
		// goes back to the pool.
		var n int64
		var serr error
		err := srcRaw.Read(func(fd uintptr) bool {
			if p == nil {
				if p, serr = getPipe(); serr != nil {
					return true
				}
			}
			for {
				n, serr = unix.Splice(int(fd), nil, p.w, nil, spliceChunk, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
				if serr != unix.EINTR {
					break
				}
			}
			if serr == unix.EAGAIN {
				putPipe(p)
				p = nil
				return false
			}
			return true
		})
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if idleParker.park(d) {
					return true, nil
				}
				continue
			}
			return false, err
		}
		if serr != nil {
			return false, fmt.Errorf("splice from %s: %w", st.RemoteAddr(), serr)
		}
		if n == 0 {
			return false, nil // EOF
		}
		p.n += n
		d.t.touch()

		// Drain the pipe into dst. The idle timer closes the flow if dst
		// takes nothing for too long.
		for p.n > 0 {
			var m int64
			var werr error
			err := dstRaw.Write(func(fd uintptr) bool {
				for {
					m, werr = unix.Splice(p.r, nil, int(fd), nil, int(p.n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
					if werr != unix.EINTR {
						return werr != unix.EAGAIN
					}
				}
			})
			if err != nil {
				return false, err
			}
			if werr != nil {
				return false, fmt.Errorf("splice to %s: %w", dt.RemoteAddr(), werr)
			}
			p.n -= m
			d.written += m
			d.t.touch()
		}
	}
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// buffered copies src to dst through a pooled buffer, for connections that
// cannot splice.
func (d *direction) buffered() error {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		n, err := d.src.Read(buf)
		if n > 0 {
			d.t.touch()
			m, werr := d.dst.Write(buf[:n])
			d.written += int64(m)
			if werr != nil {
				return werr
			}
			d.t.touch()
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// parker waits, with an epoll set of its own and one goroutine for all,
// for the sockets of parked directions to become readable (or to end),
// and runs each such direction again in a new goroutine.
type parker struct {
	once   sync.Once
	epfd   int
	err    error
	dead   atomic.Bool
	mu     sync.Mutex
	next   uint64
	parked map[uint64]*direction
}

// idleParker serves the whole process; its goroutine runs for good once
// started.
var idleParker parker

// park puts d's src in the epoll set and reports true, after which the
// caller must not touch d. It reports false when d cannot park (the flow
// is closed, or epoll failed); the caller then waits on as before.
func (pk *parker) park(d *direction) bool {
	pk.once.Do(func() {
		pk.epfd, pk.err = unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if pk.err == nil {
			pk.parked = make(map[uint64]*direction)
			go pk.loop()
		}
	})
	if pk.err != nil || pk.dead.Load() {
		return false
	}
	op := unix.EPOLL_CTL_MOD
	if !d.armed {
		op = unix.EPOLL_CTL_ADD
		d.armed = true
	}
	pk.mu.Lock()
	pk.next++
	id := pk.next
	d.parkID = id
	pk.parked[id] = d
	pk.mu.Unlock()
	// From here d belongs to whoever takes it from the set. The flow may
	// have been closed before d was in the set: then nobody woke d, so it
	// must not sleep.
	if d.t.closed.Load() {
		if pk.take(d) {
			return false
		}
		return true // taken by the flow's close
	}
	var cerr error
	err := errors.New("not a TCP socket")
	if raw, rerr := tcpConn(d.src).SyscallConn(); rerr == nil {
		err = raw.Control(func(fd uintptr) {
			ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
			cerr = unix.EpollCtl(pk.epfd, op, int(fd), &ev)
		})
	}
	if err != nil || cerr != nil {
		// Not armed, so the parker cannot take d; the flow's close can.
		if pk.take(d) {
			if op == unix.EPOLL_CTL_ADD {
				d.armed = false
			}
			return false
		}
		return true
	}
	if d.t.ts.trim {
		memTrim.parked()
	}
	return true
}

// take removes d from the parked set and reports whether it was there:
// whoever takes d runs it.
func (pk *parker) take(d *direction) bool {
	pk.mu.Lock()
	defer pk.mu.Unlock()
	if d.parkID == 0 || pk.parked[d.parkID] != d {
		return false
	}
	delete(pk.parked, d.parkID)
	d.parkID = 0
	return true
}

func (pk *parker) loop() {
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(pk.epfd, events, -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			// Cannot happen with a valid epoll descriptor. New parks
			// fail from now on; parked directions still end with their
			// flow (idle timeout or shutdown).
			pk.dead.Store(true)
			slog.Error("parked flows cannot be woken any more", "component", "proxy", "err", err)
			return
		}
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			pk.mu.Lock()
			d := pk.parked[id]
			if d != nil {
				delete(pk.parked, id)
				d.parkID = 0
			}
			pk.mu.Unlock()
			if d != nil {
				go d.run()
			}
		}
	}
}

package proxy

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
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
// as it runs, so idle tunnels ran the process out of descriptors). A
// direction that has had nothing to read for parkAfter parks: its socket
// goes to the parker's epoll set and its goroutine ends, so an idle tunnel
// holds its two sockets and a few hundred bytes of heap, no goroutine
// stack. Idleness is one timer per tunnel, not a goroutine.

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

// tunnel is the two-way copy of one flow.
type tunnel struct {
	p       *Proxy
	f       *flow
	dirs    [2]*direction // up (client to upstream), down
	left    atomic.Int32  // directions still running
	last    atomic.Int64  // unix nanoseconds of the last bytes moved
	timer   *time.Timer   // the idle check
	release func()        // called once both directions have ended
}

func (t *tunnel) touch() { t.last.Store(time.Now().UnixNano()) }

// checkIdle closes the flow when it moved no bytes for IdleTimeout, else
// checks again when it could be.
func (t *tunnel) checkIdle() {
	end := time.Unix(0, t.last.Load()).Add(t.p.cfg.IdleTimeout)
	if d := time.Until(end); d > 0 {
		t.timer.Reset(d)
		return
	}
	t.p.log.Debug("closing idle flow", "proto", t.f.proto, "client", t.f.ip, "idle", t.p.cfg.IdleTimeout)
	t.f.closeConns()
}

// wake resumes the parked directions, after the flow's sockets were
// closed, so they see it and end.
func (t *tunnel) wake() {
	for _, d := range t.dirs {
		if idleParker.take(d) {
			go d.run()
		}
	}
}

// direction copies one way of a tunnel.
type direction struct {
	t        *tunnel
	dst, src net.Conn
	counter  *atomic.Uint64 // Stats counter the bytes go to at the end
	written  int64

	// Set when both ends are TCP sockets: the splice path.
	st, dt         *net.TCPConn
	srcRaw, dstRaw interface {
		Read(func(uintptr) bool) error
		Write(func(uintptr) bool) error
		Control(func(uintptr)) error
	}
	deadline time.Time // src's read deadline: when to park
	armed    bool      // src is in the parker's epoll set
	parkID   uint64    // guarded by idleParker.mu
}

func newDirection(t *tunnel, dst, src net.Conn, counter *atomic.Uint64) *direction {
	d := &direction{t: t, dst: dst, src: src, counter: counter}
	// A cloud proxy tunnel that read bytes ahead with the CONNECT answer
	// hands them over, then its socket splices. (Only such tunnels are
	// unwrapped: a *tls.Conn has a NetConn too, and must not be.)
	if b, ok := dst.(readAheadConn); ok {
		dst = b.NetConn()
	}
	if b, ok := src.(readAheadConn); ok {
		src = b.NetConn()
	}
	st, sok := src.(*net.TCPConn)
	dt, dok := dst.(*net.TCPConn)
	if !sok || !dok {
		return d
	}
	sr, err1 := st.SyscallConn()
	dr, err2 := dt.SyscallConn()
	if err1 != nil || err2 != nil {
		return d
	}
	d.st, d.dt, d.srcRaw, d.dstRaw = st, dt, sr, dr
	return d
}

// readAheadConn is a tunnel from cloudproxy.Client.Connect that holds bytes
// the proxy sent right behind its answer.
type readAheadConn interface {
	net.Conn
	TakeBuffered() []byte
	NetConn() net.Conn
}

// run copies until src ends or the copy fails, or parks; once it has
// ended it half-closes dst (or closes the flow on error) and, as the last
// direction, releases the flow.
func (d *direction) run() {
	var err error
	if d.st != nil {
		var parked bool
		if parked, err = d.splice(); parked {
			return // the parker runs d again
		}
	} else {
		err = d.buffered()
	}
	t := d.t
	d.counter.Add(uint64(d.written))
	if err != nil {
		t.f.closeConns()
	} else {
		closeWrite(d.dst)
	}
	if t.left.Add(-1) == 0 {
		t.timer.Stop()
		t.release()
	}
}

// splice moves src to dst through a pooled kernel pipe until src ends
// (nil), either side fails (the error) or src has had nothing to read for
// parkAfter and d is parked (true).
func (d *direction) splice() (parked bool, err error) {
	if b, ok := d.src.(readAheadConn); ok {
		if pending := b.TakeBuffered(); len(pending) > 0 {
			n, err := d.dt.Write(pending)
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
		if now := time.Now(); d.deadline.Sub(now) < parkAfter/2 {
			d.deadline = now.Add(parkAfter)
			d.st.SetReadDeadline(d.deadline)
		}
		// Fill the pipe from src. While src has nothing to read, the pipe
		// goes back to the pool.
		var n int64
		var serr error
		err := d.srcRaw.Read(func(fd uintptr) bool {
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
			return false, fmt.Errorf("splice from %s: %w", d.st.RemoteAddr(), serr)
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
			err := d.dstRaw.Write(func(fd uintptr) bool {
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
				return false, fmt.Errorf("splice to %s: %w", d.dt.RemoteAddr(), werr)
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
	if d.t.f.isClosed() {
		if pk.take(d) {
			return false
		}
		return true // taken by the flow's close
	}
	var cerr error
	err := d.srcRaw.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
		cerr = unix.EpollCtl(pk.epfd, op, int(fd), &ev)
	})
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

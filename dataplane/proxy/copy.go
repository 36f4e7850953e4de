package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The two-way copy of a tunnel. Between two TCP sockets it moves bytes with
// splice(2) through a kernel pipe, like io.Copy does, but it takes a pipe
// from a shared pool only while bytes are on their way: an idle tunnel
// waits for readability in the netpoller holding nothing but its two
// sockets (io.Copy holds a pipe, two more descriptors, per direction for
// as long as it runs, so idle tunnels ran the process out of descriptors).
// Idleness is watched with socket deadlines, not a goroutine per flow.

const (
	// spliceChunk is the most one splice(2) call moves, and the size asked
	// for the pool's pipes.
	spliceChunk = 1 << 20
	// maxFreePipes caps the pipes kept for reuse; more are closed.
	maxFreePipes = 64
	// copyBufSize is the buffer of the copy between non-TCP connections
	// (a TLS connection to an https cloud proxy): one TLS record.
	copyBufSize = 16 << 10
)

// errIdle ends a copy whose flow moved no bytes for the idle timeout.
var errIdle = errors.New("flow idle")

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

// idleClock is the time a flow last moved bytes, in either direction.
type idleClock struct {
	timeout time.Duration
	last    atomic.Int64 // unix nanoseconds
}

func (c *idleClock) touch() { c.last.Store(time.Now().UnixNano()) }

// expired reports whether the flow has been idle for the timeout; if not,
// it moves the deadline set by setDeadline to the new end of the idle
// period.
func (c *idleClock) expired(setDeadline func(time.Time) error) bool {
	end := time.Unix(0, c.last.Load()).Add(c.timeout)
	if !time.Now().Before(end) {
		return true
	}
	setDeadline(end)
	return false
}

// readAheadConn is a tunnel from cloudproxy.Client.Connect that holds bytes
// the proxy sent right behind its answer.
type readAheadConn interface {
	net.Conn
	TakeBuffered() []byte
	NetConn() net.Conn
}

// copyStream copies src to dst until src ends (nil error) or either side
// fails, or the flow stays idle for the clock's timeout (errIdle), and
// returns the bytes copied. It splices between two TCP connections.
func copyStream(dst, src net.Conn, clock *idleClock) (int64, error) {
	var written int64
	// Bytes a cloud proxy tunnel read ahead with the CONNECT answer go
	// first; then its socket splices. (Only such tunnels are unwrapped: a
	// *tls.Conn has a NetConn too, and must not be.)
	if b, ok := src.(readAheadConn); ok {
		if pending := b.TakeBuffered(); len(pending) > 0 {
			n, err := dst.Write(pending)
			written += int64(n)
			if err != nil {
				return written, err
			}
			clock.touch()
		}
		src = b.NetConn()
	}
	if b, ok := dst.(readAheadConn); ok {
		dst = b.NetConn()
	}
	st, sok := src.(*net.TCPConn)
	dt, dok := dst.(*net.TCPConn)
	if sok && dok {
		n, err := spliceStream(dt, st, clock)
		return written + n, err
	}
	n, err := bufferStream(dst, src, clock)
	return written + n, err
}

// spliceStream moves src to dst through a pooled kernel pipe.
func spliceStream(dst, src *net.TCPConn, clock *idleClock) (int64, error) {
	srcRaw, err := src.SyscallConn()
	if err != nil {
		return 0, err
	}
	dstRaw, err := dst.SyscallConn()
	if err != nil {
		return 0, err
	}
	src.SetReadDeadline(time.Now().Add(clock.timeout))
	dst.SetWriteDeadline(time.Now().Add(clock.timeout))
	defer src.SetReadDeadline(time.Time{})
	defer dst.SetWriteDeadline(time.Time{})

	var p *kpipe
	defer func() {
		if p != nil {
			putPipe(p)
		}
	}()
	var written int64
	for {
		// Fill the pipe from src. While src has nothing to read the pipe
		// goes back to the pool and the goroutine parks in the netpoller.
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
				if clock.expired(src.SetReadDeadline) {
					return written, errIdle
				}
				continue
			}
			return written, err
		}
		if serr != nil {
			return written, fmt.Errorf("splice from %s: %w", src.RemoteAddr(), serr)
		}
		if n == 0 {
			return written, nil // EOF
		}
		p.n += n
		clock.touch()

		// Drain the pipe into dst.
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
				if errors.Is(err, os.ErrDeadlineExceeded) {
					if clock.expired(dst.SetWriteDeadline) {
						return written, errIdle
					}
					continue
				}
				return written, err
			}
			if werr != nil {
				return written, fmt.Errorf("splice to %s: %w", dst.RemoteAddr(), werr)
			}
			p.n -= m
			written += m
			clock.touch()
		}
	}
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// bufferStream copies src to dst through a pooled buffer, for connections
// that cannot splice. It uses read deadlines only: a timed-out write
// leaves a TLS connection unusable.
func bufferStream(dst io.Writer, src net.Conn, clock *idleClock) (int64, error) {
	src.SetReadDeadline(time.Now().Add(clock.timeout))
	defer src.SetReadDeadline(time.Time{})
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var written int64
	for {
		n, err := src.Read(buf)
		if n > 0 {
			clock.touch()
			m, werr := dst.Write(buf[:n])
			written += int64(m)
			if werr != nil {
				return written, werr
			}
			clock.touch()
		}
		switch {
		case err == nil:
		case err == io.EOF:
			return written, nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			if clock.expired(src.SetReadDeadline) {
				return written, errIdle
			}
		default:
			return written, err
		}
	}
}

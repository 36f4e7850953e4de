package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"
)

// dot is DNS over TLS: one TLS connection, queries pipelined on it with
// a message ID unique among those in flight (RFC 7766 6.2.1.1), answers
// matched by ID in whatever order they come.
type dot struct {
	spec Spec
	addr []netip.AddrPort
	tc   *tls.Config
	idle time.Duration
	log  *slog.Logger

	mu     sync.Mutex
	cur    *dotConn
	first  int // address index that worked last
	closed bool
}

// newDoT offers no ALPN: RFC 7858 has none, and a server that knows
// other protocols but not "dot" would refuse the handshake.
func newDoT(s Spec, o Options, log *slog.Logger) *dot {
	return &dot{spec: s, addr: s.Dial(), tc: tlsConfig(s, o), idle: o.IdleTimeout, log: log}
}

// dotConn is one TLS connection and its queries in flight.
type dotConn struct {
	c    *tls.Conn
	idle time.Duration
	log  *slog.Logger

	wmu sync.Mutex // one frame written at a time

	mu       sync.Mutex
	pending  map[uint16]chan []byte
	nextID   uint16
	lastRead time.Time // when the last frame came
	err      error     // why the connection is done, once it is
	done     chan struct{}
}

func (d *dot) Exchange(ctx context.Context, query []byte) ([]byte, error) {
	if err := checkQuery(query); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		dc, fresh, err := d.conn(ctx)
		if err != nil {
			return nil, err
		}
		ans, err := dc.exchange(ctx, query)
		if err == nil {
			return ans, nil
		}
		// A reused connection the server closed (its idle timeout) while
		// the query was on its way: once more, on a new connection.
		if fresh || attempt > 0 || ctx.Err() != nil || !errors.Is(err, errConnLost) {
			return nil, err
		}
		d.log.Debug("dot connection lost, retrying on a new one", "err", err)
	}
}

// conn returns the open connection, or dials one; fresh says it is new.
func (d *dot) conn(ctx context.Context) (*dotConn, bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, false, errors.New("dot: transport closed")
	}
	if d.cur != nil && d.cur.alive() {
		return d.cur, false, nil
	}
	c, i, err := dialEach(ctx, d.addr, d.first, func(ctx context.Context, ap netip.AddrPort) (*tls.Conn, error) {
		td := tls.Dialer{NetDialer: netDialer(), Config: d.tc}
		c, err := td.DialContext(ctx, "tcp", ap.String())
		if err != nil {
			return nil, err
		}
		return c.(*tls.Conn), nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("dot: %w", err)
	}
	d.first = i
	dc := &dotConn{c: c, idle: d.idle, log: d.log, pending: map[uint16]chan []byte{}, nextID: uint16(rand.N(1 << 16)), done: make(chan struct{})}
	dc.mu.Lock()
	dc.armIdle()
	dc.mu.Unlock()
	go dc.readLoop()
	d.cur = dc
	d.log.Debug("dot connected", "addr", c.RemoteAddr().String(), "resumed", c.ConnectionState().DidResume)
	return dc, true, nil
}

func (d *dot) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	if d.cur != nil {
		d.cur.fail(errors.New("dot: transport closed"))
	}
	return nil
}

func (dc *dotConn) alive() bool {
	select {
	case <-dc.done:
		return false
	default:
		return true
	}
}

// armIdle sets the read deadline: IdleTimeout from now while no query is
// in flight, none otherwise. dc.mu is held.
func (dc *dotConn) armIdle() {
	if len(dc.pending) == 0 {
		dc.c.SetReadDeadline(time.Now().Add(dc.idle))
	} else {
		dc.c.SetReadDeadline(time.Time{})
	}
}

// fail ends the connection with err, failing every query in flight.
func (dc *dotConn) fail(err error) {
	dc.mu.Lock()
	if dc.err != nil {
		dc.mu.Unlock()
		return
	}
	dc.err = err
	close(dc.done)
	clear(dc.pending)
	dc.mu.Unlock()
	dc.c.Close()
}

// exchange registers the query under a free ID, writes it and waits.
func (dc *dotConn) exchange(ctx context.Context, query []byte) ([]byte, error) {
	ch := make(chan []byte, 1)
	dc.mu.Lock()
	if dc.err != nil {
		err := dc.err
		dc.mu.Unlock()
		return nil, fmt.Errorf("dot: %w: %w", errConnLost, err)
	}
	if len(dc.pending) >= 1<<16-1 {
		dc.mu.Unlock()
		return nil, errors.New("dot: every message id is in flight")
	}
	id := dc.nextID
	for dc.pending[id] != nil {
		id++
	}
	dc.nextID = id + 1
	dc.pending[id] = ch
	dc.armIdle()
	dc.mu.Unlock()
	sent := time.Now()
	defer func() {
		dc.mu.Lock()
		if dc.pending[id] == ch {
			delete(dc.pending, id)
			if dc.err == nil {
				dc.armIdle()
			}
		}
		dc.mu.Unlock()
	}()

	frame := appendFrame(make([]byte, 0, 2+len(query)), query)
	binary.BigEndian.PutUint16(frame[2:], id)
	dc.wmu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		dc.c.SetWriteDeadline(dl)
	} else {
		dc.c.SetWriteDeadline(time.Time{})
	}
	_, err := dc.c.Write(frame)
	dc.wmu.Unlock()
	if err != nil {
		dc.fail(err)
		return nil, fmt.Errorf("dot: write query: %w: %w", errConnLost, err)
	}
	select {
	case ans := <-ch:
		binary.BigEndian.PutUint16(ans, binary.BigEndian.Uint16(query))
		return ans, nil
	case <-dc.done:
		// An answer may have come just before the end.
		select {
		case ans := <-ch:
			binary.BigEndian.PutUint16(ans, binary.BigEndian.Uint16(query))
			return ans, nil
		default:
		}
		dc.mu.Lock()
		err := dc.err
		dc.mu.Unlock()
		return nil, fmt.Errorf("dot: %w: %w", errConnLost, err)
	case <-ctx.Done():
		// A connection that has been silent since this query went out is
		// stuck: drop it, so the next query dials again.
		dc.mu.Lock()
		stuck := dc.lastRead.Before(sent)
		dc.mu.Unlock()
		if stuck {
			dc.fail(errors.New("no answer on the connection"))
		}
		return nil, fmt.Errorf("dot: wait for answer: %w", ctx.Err())
	}
}

// readLoop hands each answer to the query of its ID; an answer of an ID
// not in flight (one whose query gave up) is dropped.
func (dc *dotConn) readLoop() {
	br := bufio.NewReaderSize(dc.c, 4096)
	for {
		msg, err := ReadFrame(br, nil)
		if err != nil {
			var ne net.Error
			dc.mu.Lock()
			idle := len(dc.pending) == 0
			if errors.As(err, &ne) && ne.Timeout() && !idle {
				// The idle deadline fired as a query was registered.
				dc.mu.Unlock()
				continue
			}
			dc.mu.Unlock()
			if idle && errors.As(err, &ne) && ne.Timeout() {
				err = errors.New("idle timeout")
			}
			dc.log.Debug("dot connection closed", "err", err)
			dc.fail(fmt.Errorf("read answer: %w", err))
			return
		}
		id := binary.BigEndian.Uint16(msg)
		dc.mu.Lock()
		dc.lastRead = time.Now()
		ch := dc.pending[id]
		if ch != nil {
			delete(dc.pending, id)
			dc.armIdle()
		}
		dc.mu.Unlock()
		if ch == nil {
			dc.log.Debug("dot answer for no query in flight", "id", id)
			continue
		}
		ch <- msg
	}
}

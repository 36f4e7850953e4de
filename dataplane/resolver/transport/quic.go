package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// quicConn keeps the one QUIC connection of a DoQ or DoH3 transport: it
// dials on demand (the bootstrap addresses in turn), hands the open one
// out while QUIC holds it open, and drops one that stopped answering.
type quicConn[X any] struct {
	addr []netip.AddrPort
	tc   *tls.Config
	qc   *quic.Config
	log  *slog.Logger
	// wrap makes the per-connection state (an HTTP/3 client) of a new
	// connection.
	wrap func(*quic.Conn) X

	mu         sync.Mutex
	cur        *quic.Conn
	x          X
	lastAnswer time.Time // of any query on any connection
	first      int
	closed     bool
}

func newQUICConn[X any](s Spec, o Options, log *slog.Logger, alpn string, incomingUni int64, wrap func(*quic.Conn) X) *quicConn[X] {
	tc := tlsConfig(s, o, alpn)
	tc.MinVersion = tls.VersionTLS13
	return &quicConn[X]{addr: s.Dial(), tc: tc, log: log, wrap: wrap, qc: &quic.Config{
		MaxIdleTimeout:       o.IdleTimeout,
		HandshakeIdleTimeout: 5 * time.Second,
		// Only the client opens request streams (RFC 9250 4.2, RFC 9114
		// 6.1); HTTP/3 needs the server's control streams.
		MaxIncomingStreams:    -1,
		MaxIncomingUniStreams: incomingUni,
	}}
}

// get returns the open connection, or dials one; fresh says it is new.
func (q *quicConn[X]) get(ctx context.Context) (*quic.Conn, X, bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var zero X
	if q.closed {
		return nil, zero, false, errors.New("transport closed")
	}
	if q.cur != nil && q.cur.Context().Err() == nil {
		return q.cur, q.x, false, nil
	}
	c, i, err := dialEach(ctx, q.addr, q.first, func(ctx context.Context, ap netip.AddrPort) (*quic.Conn, error) {
		return quic.DialAddr(ctx, ap.String(), q.tc, q.qc)
	})
	if err != nil {
		return nil, zero, false, err
	}
	q.first, q.cur, q.x = i, c, q.wrap(c)
	q.log.Debug("quic connected", "addr", c.RemoteAddr().String(), "alpn", c.ConnectionState().TLS.NegotiatedProtocol, "resumed", c.ConnectionState().TLS.DidResume)
	return c, q.x, true, nil
}

// answered records an answer.
func (q *quicConn[X]) answered() {
	q.mu.Lock()
	q.lastAnswer = time.Now()
	q.mu.Unlock()
}

// failed handles a query on c, sent at sent, that ended in err under ctx,
// and reports whether to try once more on a new connection: when c ended
// (idle timeout, a server close or stateless reset) under a query on a
// reused connection. A connection that gave no answer since a query that
// timed out went out, though QUIC still holds it open (a server that
// forgot it without a reset), is dropped, so the next query dials again.
func (q *quicConn[X]) failed(ctx context.Context, c *quic.Conn, err error, sent time.Time, fresh bool, attempt int) bool {
	if ctx.Err() != nil {
		q.mu.Lock()
		if q.cur == c && q.lastAnswer.Before(sent) {
			c.CloseWithError(0, "no answer")
			q.cur = nil
		}
		q.mu.Unlock()
		return false
	}
	var reset *quic.StatelessResetError
	var idle *quic.IdleTimeoutError
	var closed *quic.ApplicationError
	ended := c.Context().Err() != nil || errors.As(err, &reset) || errors.As(err, &idle) || errors.As(err, &closed)
	if ended {
		q.mu.Lock()
		if q.cur == c {
			q.cur = nil
		}
		q.mu.Unlock()
	}
	return ended && !fresh && attempt == 0
}

func (q *quicConn[X]) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	if q.cur != nil {
		q.cur.CloseWithError(0, "")
		q.cur = nil
	}
}

// errorf wraps err with the transport's name.
func errorf(kind string, err error) error { return fmt.Errorf("%s: %w", kind, err) }

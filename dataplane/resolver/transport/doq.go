package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// DoQ error codes (RFC 9250 4.3).
const (
	doqNoError       quic.ApplicationErrorCode = 0x0
	doqProtocolError quic.ApplicationErrorCode = 0x2
)

// DoQALPN is the DNS over QUIC ALPN (RFC 9250 4.1.1).
const DoQALPN = "doq"

// doq is DNS over QUIC: one QUIC connection, a bidirectional stream per
// query carrying one length-prefixed message each way, message ID 0 on
// the wire (RFC 9250 4.2.1).
type doq struct {
	spec Spec
	addr []netip.AddrPort
	tc   *tls.Config
	qc   *quic.Config
	log  *slog.Logger

	mu         sync.Mutex
	cur        *quic.Conn
	lastAnswer time.Time // of any query on any connection
	first      int
	closed     bool
}

func newDoQ(s Spec, o Options, log *slog.Logger) *doq {
	tc := tlsConfig(s, o, DoQALPN)
	tc.MinVersion = tls.VersionTLS13
	return &doq{spec: s, addr: s.Dial(), tc: tc, log: log, qc: &quic.Config{
		MaxIdleTimeout:       o.IdleTimeout,
		HandshakeIdleTimeout: 5 * time.Second,
		// Only the client opens streams (RFC 9250 4.2).
		MaxIncomingStreams:    -1,
		MaxIncomingUniStreams: -1,
	}}
}

func (d *doq) Exchange(ctx context.Context, query []byte) ([]byte, error) {
	if err := checkQuery(query); err != nil {
		return nil, err
	}
	frame := appendFrame(make([]byte, 0, 2+len(query)), query)
	binary.BigEndian.PutUint16(frame[2:], 0)
	for attempt := 0; ; attempt++ {
		c, fresh, err := d.conn(ctx)
		if err != nil {
			return nil, err
		}
		sent := time.Now()
		ans, err := d.exchange(ctx, c, frame)
		if err == nil {
			d.mu.Lock()
			d.lastAnswer = time.Now()
			d.mu.Unlock()
			binary.BigEndian.PutUint16(ans, binary.BigEndian.Uint16(query))
			return ans, nil
		}
		// A connection that gave no answer since this query went out,
		// though QUIC still holds it open (a server that forgot it without
		// a stateless reset): drop it, so the next query dials again.
		if ctx.Err() != nil {
			d.mu.Lock()
			if d.cur == c && d.lastAnswer.Before(sent) {
				c.CloseWithError(doqNoError, "no answer")
				d.cur = nil
			}
			d.mu.Unlock()
		}
		// A reused connection that ended (idle timeout, server close)
		// under the query: once more on a new one.
		if fresh || attempt > 0 || ctx.Err() != nil || c.Context().Err() == nil {
			return nil, err
		}
		d.log.Debug("doq connection lost, retrying on a new one", "err", err)
	}
}

func (d *doq) exchange(ctx context.Context, c *quic.Conn, frame []byte) ([]byte, error) {
	st, err := c.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("doq: open stream: %w", err)
	}
	stop := context.AfterFunc(ctx, func() {
		st.CancelRead(quic.StreamErrorCode(doqNoError))
		st.CancelWrite(quic.StreamErrorCode(doqNoError))
	})
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		st.SetDeadline(dl)
	}
	if _, err := st.Write(frame); err != nil {
		return nil, fmt.Errorf("doq: write query: %w", err)
	}
	// The query is all the client sends on the stream (RFC 9250 4.2).
	if err := st.Close(); err != nil {
		return nil, fmt.Errorf("doq: close stream: %w", err)
	}
	ans, err := ReadFrame(bufio.NewReaderSize(st, 2048), nil)
	if err != nil {
		if errors.Is(err, ErrShortMessage) {
			st.CancelRead(quic.StreamErrorCode(doqProtocolError))
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("doq: read answer: %w", ctx.Err())
		}
		return nil, fmt.Errorf("doq: read answer: %w", err)
	}
	// One answer per stream: the rest (the FIN) is not waited for.
	st.CancelRead(quic.StreamErrorCode(doqNoError))
	return ans, nil
}

// conn returns the open connection, or dials one; fresh says it is new.
func (d *doq) conn(ctx context.Context) (*quic.Conn, bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, false, errors.New("doq: transport closed")
	}
	if d.cur != nil && d.cur.Context().Err() == nil {
		return d.cur, false, nil
	}
	c, i, err := dialEach(ctx, d.addr, d.first, func(ctx context.Context, ap netip.AddrPort) (*quic.Conn, error) {
		return quic.DialAddr(ctx, ap.String(), d.tc, d.qc)
	})
	if err != nil {
		return nil, false, fmt.Errorf("doq: %w", err)
	}
	d.first = i
	d.cur = c
	d.log.Debug("doq connected", "addr", c.RemoteAddr().String(), "resumed", c.ConnectionState().TLS.DidResume)
	return c, true, nil
}

func (d *doq) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	if d.cur != nil {
		d.cur.CloseWithError(doqNoError, "")
		d.cur = nil
	}
	return nil
}

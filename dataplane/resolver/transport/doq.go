package transport

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/quic-go/quic-go"
)

// DoQ error codes (RFC 9250 4.3).
const (
	doqNoError       = 0x0
	doqProtocolError = 0x2
)

// DoQALPN is the DNS over QUIC ALPN (RFC 9250 4.1.1).
const DoQALPN = "doq"

// doq is DNS over QUIC: one QUIC connection, a bidirectional stream per
// query carrying one length-prefixed message each way, message ID 0 on
// the wire (RFC 9250 4.2.1).
type doq struct {
	q *quicConn[struct{}]
}

func newDoQ(s Spec, o Options, log *slog.Logger) *doq {
	return &doq{q: newQUICConn(s, o, log, DoQALPN, -1, func(*quic.Conn) struct{} { return struct{}{} })}
}

func (d *doq) Exchange(ctx context.Context, query []byte) ([]byte, error) {
	if err := checkQuery(query); err != nil {
		return nil, err
	}
	frame := appendFrame(make([]byte, 0, 2+len(query)), query)
	binary.BigEndian.PutUint16(frame[2:], 0)
	for attempt := 0; ; attempt++ {
		c, _, fresh, err := d.q.get(ctx)
		if err != nil {
			return nil, errorf("doq", err)
		}
		sent := time.Now()
		ans, err := d.exchange(ctx, c, frame)
		if err == nil {
			d.q.answered()
			binary.BigEndian.PutUint16(ans, binary.BigEndian.Uint16(query))
			return ans, nil
		}
		if !d.q.failed(ctx, c, err, sent, fresh, attempt) {
			return nil, err
		}
		d.q.log.Debug("doq connection lost, retrying on a new one", "err", err)
	}
}

func (d *doq) exchange(ctx context.Context, c *quic.Conn, frame []byte) ([]byte, error) {
	st, err := c.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("doq: open stream: %w", err)
	}
	stop := context.AfterFunc(ctx, func() {
		st.CancelRead(doqNoError)
		st.CancelWrite(doqNoError)
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
			st.CancelRead(doqProtocolError)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("doq: read answer: %w", ctx.Err())
		}
		return nil, fmt.Errorf("doq: read answer: %w", err)
	}
	// One answer per stream: the rest (the FIN) is not waited for.
	st.CancelRead(doqNoError)
	return ans, nil
}

func (d *doq) Close() error {
	d.q.close()
	return nil
}

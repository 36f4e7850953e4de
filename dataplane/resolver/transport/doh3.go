package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/quic-go/quic-go/http3"
)

// doh3 is DNS over HTTPS over HTTP/3 (RFC 8484 on RFC 9114, quic-go's
// http3): POST requests as request streams of one QUIC connection, which
// this transport owns as DoQ does.
type doh3 struct {
	url string
	q   *quicConn[*http3.ClientConn]
}

func newDoH3(s Spec, o Options, log *slog.Logger) *doh3 {
	tr := &http3.Transport{DisableCompression: true, MaxResponseHeaderBytes: 16 << 10, Logger: log}
	return &doh3{
		url: "https://" + net.JoinHostPort(s.Host, strconv.Itoa(int(s.Port))) + s.Path,
		// The server opens its control and QPACK streams.
		q: newQUICConn(s, o, log, http3.NextProtoH3, 16, tr.NewClientConn),
	}
}

func (d *doh3) Exchange(ctx context.Context, query []byte) ([]byte, error) {
	if err := checkQuery(query); err != nil {
		return nil, err
	}
	body := withID(query, 0)
	for attempt := 0; ; attempt++ {
		c, cc, fresh, err := d.q.get(ctx)
		if err != nil {
			return nil, errorf("doh3", err)
		}
		sent := time.Now()
		ans, err := dohRoundTrip(ctx, "doh3", cc, d.url, body)
		if err == nil {
			d.q.answered()
			binary.BigEndian.PutUint16(ans, binary.BigEndian.Uint16(query))
			return ans, nil
		}
		var ae *answerError
		if errors.As(err, &ae) || !d.q.failed(ctx, c, err, sent, fresh, attempt) {
			return nil, err
		}
		d.q.log.Debug("doh3 connection lost, retrying on a new one", "err", err)
	}
}

func (d *doh3) Close() error {
	d.q.close()
	return nil
}

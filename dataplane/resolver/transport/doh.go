package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// dohMediaType is the DoH message type (RFC 8484 6).
const dohMediaType = "application/dns-message"

// doh is DNS over HTTPS: POST requests (RFC 8484 4.1, message ID 0) as
// HTTP/2 streams on one connection, which this transport owns (it is not
// in a Transport's pool, so there is never a second one in parallel).
type doh struct {
	spec Spec
	url  string
	addr []netip.AddrPort
	tr   *http.Transport
	log  *slog.Logger

	mu         sync.Mutex
	cur        *http.ClientConn
	lastAnswer time.Time
	first      int
	closed     bool
}

func newDoH(s Spec, o Options, log *slog.Logger) *doh {
	d := &doh{spec: s, url: "https://" + net.JoinHostPort(s.Host, strconv.Itoa(int(s.Port))) + s.Path, addr: s.Dial(), log: log}
	var p http.Protocols
	p.SetHTTP2(true)
	d.tr = &http.Transport{
		Protocols:       &p,
		TLSClientConfig: tlsConfig(s, o, "h2"),
		// Dial the bootstrap addresses, never the name (no lookup).
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, i, err := dialEach(ctx, d.addr, d.first, func(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
				return netDialer().DialContext(ctx, "tcp", ap.String())
			})
			if err == nil {
				d.first = i // under d.mu: conn() dials
			}
			return c, err
		},
		Proxy:                  nil, // never an HTTP proxy from the environment
		IdleConnTimeout:        o.IdleTimeout,
		TLSHandshakeTimeout:    0, // the query's ctx bounds it
		DisableCompression:     true,
		MaxResponseHeaderBytes: 16 << 10,
		HTTP2:                  &http.HTTP2Config{SendPingTimeout: o.IdleTimeout, PingTimeout: 5 * time.Second},
	}
	return d
}

func (d *doh) Exchange(ctx context.Context, query []byte) ([]byte, error) {
	if err := checkQuery(query); err != nil {
		return nil, err
	}
	// RFC 8484 4.1: ID 0, so answers are cacheable by HTTP caches.
	body := withID(query, 0)
	for attempt := 0; ; attempt++ {
		cc, fresh, err := d.conn(ctx)
		if err != nil {
			return nil, err
		}
		sent := time.Now()
		ans, err := d.roundTrip(ctx, cc, body)
		if err != nil && ctx.Err() != nil {
			// No answer on the connection since this query went out: it
			// is stuck (HTTP/2 pings would find out too, later).
			d.mu.Lock()
			stuck := d.lastAnswer.Before(sent)
			d.mu.Unlock()
			if stuck {
				d.drop(cc)
			}
		}
		if err == nil {
			d.mu.Lock()
			d.lastAnswer = time.Now()
			d.mu.Unlock()
			binary.BigEndian.PutUint16(ans, binary.BigEndian.Uint16(query))
			return ans, nil
		}
		var ae *answerError
		if fresh || attempt > 0 || ctx.Err() != nil || errors.As(err, &ae) {
			return nil, err
		}
		// A reused connection that failed under the request (closed by
		// the server, GOAWAY): once more on a new one.
		d.drop(cc)
		d.log.Debug("doh connection lost, retrying on a new one", "err", err)
	}
}

// answerError is a response that came but is not a DNS answer: no retry.
type answerError struct{ err error }

func (e *answerError) Error() string { return e.err.Error() }
func (e *answerError) Unwrap() error { return e.err }

func (d *doh) roundTrip(ctx context.Context, cc *http.ClientConn, body []byte) ([]byte, error) {
	return dohRoundTrip(ctx, "doh", cc, d.url, body)
}

// dohRoundTrip POSTs a query to url over rt and reads the answer; an
// answer that came but is not DNS is an *answerError.
func dohRoundTrip(ctx context.Context, kind string, rt http.RoundTripper, url string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", kind, err)
	}
	req.Header.Set("Content-Type", dohMediaType)
	req.Header.Set("Accept", dohMediaType)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", kind, err)
	}
	defer resp.Body.Close()
	ans, err := ReadDoHAnswer(resp.StatusCode, resp.Header.Get("Content-Type"), resp.Body)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: %w", kind, err)
		}
		return nil, &answerError{fmt.Errorf("%s: %w", kind, err)}
	}
	return ans, nil
}

// ReadDoHAnswer checks a DoH response (status 200, type
// application/dns-message) and reads its body, a DNS message of at most
// MaxMessage bytes.
func ReadDoHAnswer(status int, contentType string, body io.Reader) ([]byte, error) {
	if status != http.StatusOK {
		return nil, fmt.Errorf("http status %d", status)
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil || mt != dohMediaType {
		return nil, fmt.Errorf("content type %q is not %s", contentType, dohMediaType)
	}
	b, err := io.ReadAll(io.LimitReader(body, MaxMessage+1))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	switch {
	case len(b) > MaxMessage:
		return nil, fmt.Errorf("body: %w", ErrTooLarge)
	case len(b) < headerLen:
		return nil, fmt.Errorf("body of %d bytes: %w", len(b), ErrShortMessage)
	}
	return b, nil
}

// conn returns the connection, or opens one; fresh says it is new.
func (d *doh) conn(ctx context.Context) (*http.ClientConn, bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, false, errors.New("doh: transport closed")
	}
	if d.cur != nil && d.cur.Err() == nil {
		return d.cur, false, nil
	}
	if d.cur != nil {
		d.cur.Close()
	}
	cc, err := d.tr.NewClientConn(ctx, "https", net.JoinHostPort(d.spec.Host, strconv.Itoa(int(d.spec.Port))))
	if err != nil {
		d.cur = nil
		return nil, false, fmt.Errorf("doh: %w", err)
	}
	d.cur = cc
	d.log.Debug("doh connected")
	return cc, true, nil
}

// drop forgets cc when it is the current connection.
func (d *doh) drop(cc *http.ClientConn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cur == cc {
		cc.Close()
		d.cur = nil
	}
}

func (d *doh) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	if d.cur != nil {
		d.cur.Close()
		d.cur = nil
	}
	d.tr.CloseIdleConnections()
	return nil
}

package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"time"
)

// DefaultIdleTimeout closes a connection with no query in flight for this
// long; the next query opens a new one.
const DefaultIdleTimeout = 30 * time.Second

const (
	// headerLen is a DNS header's size: no message is shorter.
	headerLen = 12
	// MaxMessage is the largest DNS message (the 2-byte length prefix's
	// limit, RFC 1035 4.2.2).
	MaxMessage = 65535
)

// Options are shared by the transports; zero fields take the defaults.
type Options struct {
	// RootCAs verify the servers' certificates; nil is the system roots.
	RootCAs *x509.CertPool
	// IdleTimeout is DefaultIdleTimeout when zero.
	IdleTimeout time.Duration
	// Logger is slog.Default() when nil.
	Logger *slog.Logger
}

// Transport sends queries to one upstream over one reused connection.
type Transport interface {
	// Exchange sends the packed query and returns the packed answer,
	// whose ID is the query's, or an error; ctx bounds it (dialling and
	// the handshake included). It is safe for concurrent use: concurrent
	// queries share the connection.
	Exchange(ctx context.Context, query []byte) ([]byte, error)
	// Close closes the connection; later Exchanges fail.
	Close() error
}

// New returns the Transport of s. It opens nothing: the first Exchange
// dials. A Spec with no Addrs, or of Kind Plain, is an error.
func New(s Spec, o Options) (Transport, error) {
	if len(s.Addrs) == 0 {
		return nil, fmt.Errorf("new transport %s: no addresses to dial (a name needs bootstrap addresses)", s)
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	log := o.Logger.With("component", "resolver", "upstream", s.String())
	switch s.Kind {
	case TLS:
		return newDoT(s, o, log), nil
	case HTTPS:
		return newDoH(s, o, log), nil
	case QUIC:
		return newDoQ(s, o, log), nil
	case HTTP3:
		return newDoH3(s, o, log), nil
	}
	return nil, fmt.Errorf("new transport %s: kind %s has no encrypted transport", s, s.Kind)
}

// tlsConfig verifies s.Host (a name, or an address in the certificate's
// IP SANs) against o.RootCAs.
func tlsConfig(s Spec, o Options, alpn ...string) *tls.Config {
	return &tls.Config{
		ServerName: s.Host,
		RootCAs:    o.RootCAs,
		MinVersion: tls.VersionTLS12,
		NextProtos: alpn,
		// One session ticket cache per transport: a reconnect resumes.
		ClientSessionCache: tls.NewLRUClientSessionCache(4),
	}
}

// Errors of the framing and answer checks.
var (
	// ErrShortMessage is a message shorter than a DNS header.
	ErrShortMessage = errors.New("message shorter than a dns header")
	// ErrTooLarge is a body beyond MaxMessage bytes.
	ErrTooLarge = errors.New("message larger than 65535 bytes")
	// errConnLost is a connection that closed before the answer came.
	errConnLost = errors.New("connection lost")
)

// ReadFrame reads one 2-byte-length-prefixed DNS message (RFC 1035 4.2.2,
// RFC 7858, RFC 9250 4.2) from r into buf (grown when needed) and returns
// it. A length below a DNS header is ErrShortMessage; a stream that ends
// inside a frame is io.ErrUnexpectedEOF, and one that ends between frames
// io.EOF.
func ReadFrame(r io.Reader, buf []byte) ([]byte, error) {
	var lb [2]byte
	if _, err := io.ReadFull(r, lb[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(lb[:]))
	if n < headerLen {
		return nil, fmt.Errorf("read frame: length %d: %w", n, ErrShortMessage)
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read frame of %d bytes: %w", n, err)
	}
	return buf, nil
}

// appendFrame appends msg with its 2-byte length prefix to b.
func appendFrame(b, msg []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	return append(b, msg...)
}

// checkQuery rejects what cannot be framed.
func checkQuery(q []byte) error {
	switch {
	case len(q) < headerLen:
		return fmt.Errorf("query: %w", ErrShortMessage)
	case len(q) > MaxMessage:
		return fmt.Errorf("query: %w", ErrTooLarge)
	}
	return nil
}

// withID returns a copy of msg with the message ID id.
func withID(msg []byte, id uint16) []byte {
	out := append([]byte(nil), msg...)
	binary.BigEndian.PutUint16(out, id)
	return out
}

// dialEach dials the addresses in order, from first, each within an even
// share of what is left of ctx's time, and returns the first connection
// with the index of its address.
func dialEach[C any](ctx context.Context, addrs []netip.AddrPort, first int, dial func(ctx context.Context, ap netip.AddrPort) (C, error)) (C, int, error) {
	var zero C
	var errs []error
	n := len(addrs)
	for k := range n {
		i := (first + k) % n
		dctx, cancel := ctx, context.CancelFunc(func() {})
		if dl, ok := ctx.Deadline(); ok && n-k > 1 {
			share := time.Until(dl) / time.Duration(n-k)
			dctx, cancel = context.WithTimeout(ctx, share)
		}
		c, err := dial(dctx, addrs[i])
		cancel()
		if err == nil {
			return c, i, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", addrs[i], err))
		if ctx.Err() != nil {
			break
		}
	}
	return zero, 0, fmt.Errorf("dial: %w", errors.Join(errs...))
}

// netDialer is a TCP dialer without MPTCP.
func netDialer() *net.Dialer {
	d := &net.Dialer{KeepAlive: -1}
	d.SetMultipathTCP(false)
	return d
}

package servers

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// Encrypted DNS of the lab cloud resolver: DNS over TLS (RFC 7858, served
// by miekg/dns), over HTTPS (RFC 8484: net/http with HTTP/2 on TCP, and
// quic-go's http3 on UDP of the same port) and over QUIC (RFC 9250,
// quic-go), each answering with the same handler as plain DNS.
const (
	// CloudDNSName is the cloud resolver's TLS name (in the lab leaf
	// certificate, with the cloud resolver's addresses).
	CloudDNSName = "dns.cloud.example"
	DoTPort      = 853
	DoHPort      = 443
	DoQPort      = 853
	DoHPath      = "/dns-query"
	doqALPN      = "doq"
)

// EncryptedDNSConfig says where to serve encrypted DNS. A port of 0 takes
// an ephemeral one; a negative port turns that transport off.
type EncryptedDNSConfig struct {
	Addr netip.Addr
	// DoH3Port is DoH over HTTP/3 (UDP, quic-go's http3).
	DoTPort, DoHPort, DoH3Port, DoQPort int
	Cert                                tls.Certificate
	Handler                             dns.Handler
	// IdleTimeout closes a client connection idle this long (default 30s).
	IdleTimeout time.Duration
	Logger      *slog.Logger
}

// EncryptedDNS is a running set of DoT, DoH and DoQ servers.
type EncryptedDNS struct {
	// DoT, DoH, DoH3 and DoQ are the bound addresses (invalid when off).
	DoT, DoH, DoH3, DoQ netip.AddrPort

	dotConns, dohConns, doh3Conns, doqConns atomic.Int64
	dotQ, dohQ, doh3Q, doqQ                 atomic.Int64
	log                                     *slog.Logger
	closers                                 []func() error
	wg                                      sync.WaitGroup
	cancel                                  context.CancelFunc
	once                                    sync.Once
}

// Conns returns the client connections accepted so far (each one a TLS
// or QUIC handshake) per transport.
func (e *EncryptedDNS) Conns() (dot, doh, doh3, doq int64) {
	return e.dotConns.Load(), e.dohConns.Load(), e.doh3Conns.Load(), e.doqConns.Load()
}

// Queries returns the queries answered so far per transport.
func (e *EncryptedDNS) Queries() (dot, doh, doh3, doq int64) {
	return e.dotQ.Load(), e.dohQ.Load(), e.doh3Q.Load(), e.doqQ.Load()
}

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// countingHandler counts the queries a dns.Handler answers.
func countingHandler(h dns.Handler, n *atomic.Int64) dns.Handler {
	return dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		n.Add(1)
		h.ServeDNS(w, r)
	})
}

// StartEncryptedDNS opens the listeners and serves until Close.
func StartEncryptedDNS(ctx context.Context, cfg EncryptedDNSConfig) (_ *EncryptedDNS, err error) {
	if cfg.Handler == nil || len(cfg.Cert.Certificate) == 0 || !cfg.Addr.IsValid() {
		return nil, errors.New("start encrypted dns: address, certificate and handler are required")
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(ctx)
	e := &EncryptedDNS{log: cfg.Logger.With("component", "labdns"), cancel: cancel}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	if cfg.DoTPort >= 0 {
		if err := e.startDoT(cfg); err != nil {
			return nil, err
		}
	}
	if cfg.DoHPort >= 0 {
		if err := e.startDoH(cfg); err != nil {
			return nil, err
		}
	}
	if cfg.DoH3Port >= 0 {
		if err := e.startDoH3(ctx, cfg); err != nil {
			return nil, err
		}
	}
	if cfg.DoQPort >= 0 {
		if err := e.startDoQ(ctx, cfg); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// Close stops the servers and waits for them.
func (e *EncryptedDNS) Close() error {
	var errs []error
	e.once.Do(func() {
		e.cancel()
		for i := len(e.closers) - 1; i >= 0; i-- {
			if err := e.closers[i](); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, http.ErrServerClosed) {
				errs = append(errs, err)
			}
		}
		e.wg.Wait()
	})
	return errors.Join(errs...)
}

func listenTCPAddr(a netip.Addr, port int) (net.Listener, error) {
	lc := net.ListenConfig{}
	lc.SetMultipathTCP(false)
	return lc.Listen(context.Background(), "tcp", netip.AddrPortFrom(a, uint16(port)).String())
}

func boundAddr(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

// startDoT serves DNS over TLS with miekg/dns: every query on a
// connection answered in turn, the connection kept until idle.
func (e *EncryptedDNS) startDoT(cfg EncryptedDNSConfig) error {
	ln, err := listenTCPAddr(cfg.Addr, cfg.DoTPort)
	if err != nil {
		return fmt.Errorf("listen dot: %w", err)
	}
	e.DoT = boundAddr(ln.Addr())
	tc := tlsServerConfig(cfg.Cert, "dot")
	srv := &dns.Server{
		Net:           "tcp-tls",
		Listener:      tls.NewListener(countingListener{ln, &e.dotConns}, tc),
		TLSConfig:     tc,
		Handler:       countingHandler(cfg.Handler, &e.dotQ),
		ReadTimeout:   10 * time.Second,
		IdleTimeout:   func() time.Duration { return cfg.IdleTimeout },
		MaxTCPQueries: -1,
	}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	errc := make(chan error, 1)
	e.wg.Go(func() { errc <- srv.ActivateAndServe() })
	select {
	case <-started:
	case err := <-errc:
		ln.Close()
		return fmt.Errorf("serve dot %s: %w", e.DoT, err)
	}
	e.closers = append(e.closers, func() error {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.ShutdownContext(sctx)
		return nil
	})
	return nil
}

// msgWriter is the dns.ResponseWriter of one DoH or DoQ query: it keeps
// the answer for the caller to send.
type msgWriter struct {
	local, remote net.Addr
	msg           *dns.Msg
}

func (w *msgWriter) LocalAddr() net.Addr       { return w.local }
func (w *msgWriter) RemoteAddr() net.Addr      { return w.remote }
func (w *msgWriter) WriteMsg(m *dns.Msg) error { w.msg = m; return nil }
func (w *msgWriter) Write(b []byte) (int, error) {
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		return 0, err
	}
	w.msg = m
	return len(b), nil
}
func (w *msgWriter) Close() error        { return nil }
func (w *msgWriter) TsigStatus() error   { return nil }
func (w *msgWriter) TsigTimersOnly(bool) {}
func (w *msgWriter) Hijack()             {}

// encNet is the network name of a DoH or DoQ client's address, so the
// handler's log says which transport a query came over.
type encNet struct {
	net.Addr
	network string
}

func (a encNet) Network() string { return a.network }

// serveMsg unpacks a query, runs h and packs its answer (nil when h
// wrote none, or the query does not unpack).
func serveMsg(h dns.Handler, q []byte, local, remote net.Addr) []byte {
	req := new(dns.Msg)
	if err := req.Unpack(q); err != nil {
		return nil
	}
	w := &msgWriter{local: local, remote: remote}
	h.ServeDNS(w, req)
	if w.msg == nil {
		return nil
	}
	out, err := w.msg.Pack()
	if err != nil {
		return nil
	}
	return out
}

// startDoH serves DNS over HTTPS (GET ?dns= and POST) on DoHPath over
// HTTP/2 (and HTTP/1.1).
func (e *EncryptedDNS) startDoH(cfg EncryptedDNSConfig) error {
	ln, err := listenTCPAddr(cfg.Addr, cfg.DoHPort)
	if err != nil {
		return fmt.Errorf("listen doh: %w", err)
	}
	e.DoH = boundAddr(ln.Addr())
	mux := dohMux(countingHandler(cfg.Handler, &e.dohQ), ln.Addr(), "https")
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetHTTP2(true)
	srv := &http.Server{
		Handler:           mux,
		TLSConfig:         tlsServerConfig(cfg.Cert, "h2", "http/1.1"),
		Protocols:         &protos,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       cfg.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(e.log.Handler(), slog.LevelDebug),
	}
	cl := countingListener{ln, &e.dohConns}
	e.wg.Go(func() { _ = srv.ServeTLS(cl, "", "") })
	e.closers = append(e.closers, func() error {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return srv.Close()
	})
	return nil
}

// dohMux serves RFC 8484 GET ?dns= and POST on DoHPath with h; network
// names the transport for the handler's log.
func dohMux(h dns.Handler, local net.Addr, network string) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc(DoHPath, func(rw http.ResponseWriter, r *http.Request) {
		var q []byte
		switch r.Method {
		case http.MethodGet:
			b, err := base64.RawURLEncoding.DecodeString(r.URL.Query().Get("dns"))
			if err != nil {
				http.Error(rw, "bad dns parameter", http.StatusBadRequest)
				return
			}
			q = b
		case http.MethodPost:
			if r.Header.Get("Content-Type") != "application/dns-message" {
				http.Error(rw, "unsupported media type", http.StatusUnsupportedMediaType)
				return
			}
			b, err := io.ReadAll(io.LimitReader(r.Body, 65536))
			if err != nil {
				return
			}
			q = b
		default:
			http.Error(rw, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		remote := encNet{tcpAddrOf(r.RemoteAddr), network}
		ans := serveMsg(h, q, local, remote)
		if ans == nil {
			http.Error(rw, "bad query", http.StatusBadRequest)
			return
		}
		rw.Header().Set("Content-Type", "application/dns-message")
		rw.Header().Set("Cache-Control", "max-age=0")
		_, _ = rw.Write(ans)
	})
	return mux
}

func tcpAddrOf(s string) net.Addr {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return &net.TCPAddr{}
	}
	return net.TCPAddrFromAddrPort(ap)
}

// startDoH3 serves DoH over HTTP/3 on UDP (quic-go's http3).
func (e *EncryptedDNS) startDoH3(ctx context.Context, cfg EncryptedDNSConfig) error {
	qt, pc, err := e.quicTransport(cfg.Addr, cfg.DoH3Port)
	if err != nil {
		return fmt.Errorf("listen doh3: %w", err)
	}
	e.DoH3 = boundAddr(pc.LocalAddr())
	srv := &http3.Server{Handler: dohMux(countingHandler(cfg.Handler, &e.doh3Q), pc.LocalAddr(), "h3"), IdleTimeout: cfg.IdleTimeout}
	tc := http3.ConfigureTLSConfig(tlsServerConfig(cfg.Cert))
	tc.MinVersion = tls.VersionTLS13
	ln, err := qt.ListenEarly(tc, &quic.Config{MaxIdleTimeout: cfg.IdleTimeout, MaxIncomingStreams: 1000})
	if err != nil {
		return fmt.Errorf("listen doh3 %s: %w", e.DoH3, err)
	}
	e.closers = append(e.closers, ln.Close, srv.Close)
	e.wg.Go(func() {
		for {
			c, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			e.doh3Conns.Add(1)
			e.wg.Go(func() { _ = srv.ServeQUICConn(c) })
		}
	})
	return nil
}

// quicTransport opens a UDP socket on addr:port with a QUIC transport
// that sends stateless resets: a client learns at once that the server
// forgot its connection (idle timeout), as from a real server.
func (e *EncryptedDNS) quicTransport(addr netip.Addr, port int) (*quic.Transport, *net.UDPConn, error) {
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, uint16(port))))
	if err != nil {
		return nil, nil, err
	}
	var key quic.StatelessResetKey
	if _, err := rand.Read(key[:]); err != nil {
		pc.Close()
		return nil, nil, fmt.Errorf("make stateless reset key: %w", err)
	}
	qt := &quic.Transport{Conn: pc, StatelessResetKey: &key}
	e.closers = append(e.closers, pc.Close, qt.Close)
	return qt, pc, nil
}

// startDoQ serves DNS over QUIC: one query per stream, answered on it
// with the length prefix, then FIN.
func (e *EncryptedDNS) startDoQ(ctx context.Context, cfg EncryptedDNSConfig) error {
	qt, pc, err := e.quicTransport(cfg.Addr, cfg.DoQPort)
	if err != nil {
		return fmt.Errorf("listen doq: %w", err)
	}
	e.DoQ = boundAddr(pc.LocalAddr())
	tc := tlsServerConfig(cfg.Cert, doqALPN)
	tc.MinVersion = tls.VersionTLS13
	ln, err := qt.Listen(tc, &quic.Config{MaxIdleTimeout: cfg.IdleTimeout, MaxIncomingStreams: 1000})
	if err != nil {
		return fmt.Errorf("listen doq %s: %w", e.DoQ, err)
	}
	e.closers = append(e.closers, ln.Close)
	h := countingHandler(cfg.Handler, &e.doqQ)
	e.wg.Go(func() {
		for {
			c, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			e.doqConns.Add(1)
			e.wg.Go(func() { e.serveDoQConn(ctx, c, h) })
		}
	})
	return nil
}

func (e *EncryptedDNS) serveDoQConn(ctx context.Context, c *quic.Conn, h dns.Handler) {
	defer c.CloseWithError(0, "")
	remote := encNet{c.RemoteAddr(), "quic"}
	for {
		st, err := c.AcceptStream(ctx)
		if err != nil {
			return
		}
		e.wg.Go(func() {
			defer st.Close()
			st.SetDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(st)
			var lb [2]byte
			if _, err := io.ReadFull(br, lb[:]); err != nil {
				st.CancelRead(0x2)
				return
			}
			q := make([]byte, binary.BigEndian.Uint16(lb[:]))
			if _, err := io.ReadFull(br, q); err != nil {
				st.CancelRead(0x2)
				return
			}
			ans := serveMsg(h, q, c.LocalAddr(), remote)
			if ans == nil {
				st.CancelWrite(0x2)
				return
			}
			out := binary.BigEndian.AppendUint16(nil, uint16(len(ans)))
			_, _ = st.Write(append(out, ans...))
		})
	}
}

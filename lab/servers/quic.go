package servers

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/quic-go/quic-go"
)

// QUICALPN is the ALPN the QUIC probe offers; the lab QUIC server accepts
// whatever ALPN a client offers first.
const QUICALPN = "cloudsteer-probe"

// maxQUICLine caps the line a QUIC client sends.
const maxQUICLine = 4096

func (l *Lab) startQUIC(ctx context.Context, site lab.Site, addr netip.AddrPort, leaf tls.Certificate, w *jsonlWriter) error {
	pc, err := l.listenUDP(ctx, addr)
	if err != nil {
		return err
	}
	base := tlsServerConfig(leaf, QUICALPN)
	base.MinVersion = tls.VersionTLS13
	tc := base.Clone()
	// Accept any ALPN: echo the client's first choice.
	tc.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		if len(hello.SupportedProtos) > 0 {
			c.NextProtos = []string{hello.SupportedProtos[0]}
		}
		return c, nil
	}
	ln, err := quic.Listen(pc, tc, &quic.Config{MaxIdleTimeout: 30 * time.Second})
	if err != nil {
		return fmt.Errorf("listen quic %s: %w", addr, err)
	}
	l.onClose(ln.Close)
	l.goServe(func() {
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			l.goServe(func() { serveQUICConn(ctx, site, conn, w) })
		}
	})
	return nil
}

func serveQUICConn(ctx context.Context, site lab.Site, conn *quic.Conn, w *jsonlWriter) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	rec := OriginRecord{
		Time:   time.Now().UTC(),
		Proto:  "quic",
		Site:   site.Name,
		Local:  conn.LocalAddr().String(),
		Remote: conn.RemoteAddr().String(),
		SNI:    conn.ConnectionState().TLS.ServerName,
		Method: "LINE",
	}
	rec.Host = rec.SNI
	logged := false
	defer func() {
		if !logged {
			w.write(rec)
		}
	}()
	st, err := conn.AcceptStream(ctx)
	if err != nil {
		_ = conn.CloseWithError(1, "no stream")
		return
	}
	_ = st.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := readLine(st, maxQUICLine)
	rec.Path = line
	if err != nil {
		st.CancelRead(1)
		st.CancelWrite(1)
		_ = conn.CloseWithError(1, "bad line")
		return
	}
	// Log before answering, so a client holding the answer finds the line.
	rec.Status = 200
	logged = true
	w.write(rec)
	if _, err := fmt.Fprintf(st, "hello from %s via quic\n", site.Name); err != nil {
		_ = conn.CloseWithError(1, "write")
		return
	}
	_ = st.Close()
	// Let the client read the answer and close; it is the one that hangs up.
	select {
	case <-conn.Context().Done():
	case <-ctx.Done():
		_ = conn.CloseWithError(0, "done")
	}
}

// readLine reads up to a newline (not included) or EOF, at most max bytes.
func readLine(r io.Reader, max int) (string, error) {
	br := bufio.NewReaderSize(io.LimitReader(r, int64(max)+1), 512)
	s, err := br.ReadString('\n')
	if err == nil {
		return strings.TrimRight(s, "\r\n"), nil
	}
	if errors.Is(err, io.EOF) {
		if len(s) > max {
			return s[:max], errors.New("read line: too long")
		}
		return s, nil
	}
	return s, fmt.Errorf("read line: %w", err)
}

// ProbeOptions says where and how a QUIC probe dials.
type ProbeOptions struct {
	Addr    string         // ip:port
	Name    string         // TLS server name (SNI)
	RootCAs *x509.CertPool // nil: skip certificate verification
	ALPN    string         // default QUICALPN
	Line    string         // default "hello from probe"
	// Conn, when set, is the UDP socket to dial from (e.g. opened in
	// another network namespace); Probe does not close it, but turns on
	// ICMP error reporting on it.
	Conn net.PacketConn
}

// ProbeQUIC dials a lab QUIC server, sends one line and returns the line it
// answers (without the newline). ctx bounds the whole exchange.
func ProbeQUIC(ctx context.Context, o ProbeOptions) (string, error) {
	if o.ALPN == "" {
		o.ALPN = QUICALPN
	}
	if o.Line == "" {
		o.Line = "hello from probe"
	}
	ap, err := netip.ParseAddrPort(o.Addr)
	if err != nil {
		return "", fmt.Errorf("parse address %q (want ip:port): %w", o.Addr, err)
	}
	tc := &tls.Config{
		ServerName:         o.Name,
		RootCAs:            o.RootCAs,
		InsecureSkipVerify: o.RootCAs == nil,
		NextProtos:         []string{o.ALPN},
		MinVersion:         tls.VersionTLS13,
	}
	qc := &quic.Config{HandshakeIdleTimeout: 10 * time.Second, MaxIdleTimeout: 10 * time.Second}
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d > 0 && d < qc.HandshakeIdleTimeout {
			qc.HandshakeIdleTimeout = d
		}
	}
	pc := o.Conn
	if pc == nil {
		pc, err = net.ListenUDP("udp", nil)
		if err != nil {
			return "", fmt.Errorf("open udp socket: %w", err)
		}
		defer pc.Close()
	}
	setRecvErr(pc)
	tr := &quic.Transport{Conn: pc}
	defer tr.Close()
	conn, err := tr.Dial(ctx, net.UDPAddrFromAddrPort(ap), tc, qc)
	if err != nil {
		return "", fmt.Errorf("quic handshake with %s: %w", o.Addr, err)
	}
	defer conn.CloseWithError(0, "probe done")
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return "", fmt.Errorf("open quic stream: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = st.SetDeadline(dl)
	}
	if _, err := io.WriteString(st, o.Line+"\n"); err != nil {
		return "", fmt.Errorf("send line: %w", err)
	}
	_ = st.Close()
	answer, err := readLine(st, maxQUICLine)
	if err != nil {
		return "", fmt.Errorf("read answer: %w", err)
	}
	if answer == "" {
		return "", errors.New("read answer: empty")
	}
	return answer, nil
}

package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy"
	"github.com/cloudsteer/cloudsteer/dataplane/sniff"
)

// idleConn sets a read or write deadline before each Read or Write: a fixed
// one when set, else IdleTimeout from now. It counts the bytes it writes.
type idleConn struct {
	net.Conn
	idle    time.Duration
	fixed   time.Time
	written *atomic.Uint64
}

func (c *idleConn) Read(b []byte) (int, error) {
	d := c.fixed
	if d.IsZero() {
		d = time.Now().Add(c.idle)
	}
	c.Conn.SetReadDeadline(d)
	return c.Conn.Read(b)
}

func (c *idleConn) Write(b []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.idle))
	n, err := c.Conn.Write(b)
	c.written.Add(uint64(n))
	return n, err
}

// upstream is a kept-alive connection to the cloud proxy or an origin.
type upstream struct {
	conn *idleConn
	br   *bufio.Reader
	used bool // carried a request before
}

// httpFlow is the state of one client connection on the HTTP port.
type httpFlow struct {
	p      *Proxy
	f      *flow
	dst    netip.AddrPort
	client *idleConn
	lr     *io.LimitedReader // caps the request head
	br     *bufio.Reader     // over lr
	cloud  *upstream
	direct *upstream
	// directTo is where direct goes: the bypass target of the request.
	directTo netip.AddrPort
}

// handleHTTP serves one redirected plain-HTTP connection: a loop over
// keep-alive requests, each sent to the cloud proxy or, for bypass names,
// to the original destination.
func (p *Proxy) handleHTTP(ctx context.Context, f *flow) {
	dst, err := p.cfg.OriginalDst(f.client)
	if err != nil {
		p.log.Warn("no original destination", "proto", "http", "client", f.ip, "err", err)
		return
	}
	h := &httpFlow{p: p, f: f, dst: netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())}
	h.client = &idleConn{Conn: f.client, idle: p.cfg.IdleTimeout, written: &p.bytesDown}
	h.lr = &io.LimitedReader{R: h.client, N: math.MaxInt64}
	h.br = bufio.NewReaderSize(h.lr, 4096)
	for first := true; ; first = false {
		if !h.serveOne(ctx, first) {
			return
		}
	}
}

// serveOne reads and answers one request; false means close the connection.
func (h *httpFlow) serveOne(ctx context.Context, first bool) bool {
	p := h.p
	// Wait for the next request: PeekTimeout for the first, IdleTimeout
	// between keep-alive requests. Then the whole head within PeekTimeout.
	h.client.fixed = time.Time{}
	if first {
		h.client.fixed = time.Now().Add(p.cfg.PeekTimeout)
	}
	if _, err := h.br.Peek(1); err != nil {
		if first && ctx.Err() == nil && !errors.Is(err, io.EOF) {
			p.event(h.f, Event{Target: h.dst, Kind: KindBadClient, Detail: "no request: " + err.Error()})
		}
		return false
	}
	h.client.fixed = time.Now().Add(p.cfg.PeekTimeout)
	h.lr.N = int64(p.cfg.MaxHeaderBytes)
	req, err := http.ReadRequest(h.br)
	exhausted := h.lr.N == 0
	h.lr.N = math.MaxInt64
	h.client.fixed = time.Time{}
	if err != nil {
		ev := Event{Target: h.dst, Kind: KindBadClient, Detail: "read request: " + err.Error()}
		msg := ""
		switch {
		case exhausted:
			ev.Status, msg = http.StatusRequestHeaderFieldsTooLarge, "request head too large\n"
		case isTimeout(err) || errors.Is(err, io.EOF) || ctx.Err() != nil:
			// The client went away or stalled mid-head: nothing to answer.
		default:
			ev.Status, msg = http.StatusBadRequest, "malformed request\n"
		}
		if ctx.Err() == nil {
			p.event(h.f, ev)
		}
		if msg != "" {
			h.reply(ev.Status, msg)
		}
		return false
	}
	return h.forward(ctx, req)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// reply writes a short text response and asks the client to close.
func (h *httpFlow) reply(code int, body string) {
	fmt.Fprintf(h.client, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		code, http.StatusText(code), len(body), body)
}

// hopHeaders are hop-by-hop fields of the client's request that go no further.
var hopHeaders = []string{"Proxy-Authorization", "Proxy-Connection", "Proxy-Authenticate"}

// forward sends req upstream and its response back; false means close.
func (h *httpFlow) forward(ctx context.Context, req *http.Request) bool {
	p := h.p
	ev := Event{Target: h.dst}
	if req.Method == http.MethodConnect {
		ev.Kind, ev.Status, ev.Detail = KindBadClient, http.StatusMethodNotAllowed, "CONNECT on the transparent http port"
		p.event(h.f, ev)
		h.discardBody(req)
		h.reply(ev.Status, "CONNECT is not served here\n")
		return false
	}
	host, port, ok := splitHost(req.Host, h.dst.Port())
	if !ok {
		ev.Kind, ev.Status, ev.Detail = KindBadClient, http.StatusBadRequest, fmt.Sprintf("missing or bad Host %q", req.Host)
		p.event(h.f, ev)
		h.reply(ev.Status, "missing or bad Host header\n")
		return false
	}
	name, isName := sniff.NormalizeHostname(host)
	ev.Name = name
	for _, k := range hopHeaders {
		req.Header.Del(k)
	}
	if _, has := req.Header["User-Agent"]; !has {
		req.Header["User-Agent"] = []string{""} // keep net/http from adding its own
	}

	bypass := isName && p.cfg.Policy.BypassName(name)
	if bypass {
		target, err := p.cfg.Policy.BypassTarget(ctx, name, h.dst)
		if err != nil {
			if ctx.Err() != nil {
				return false
			}
			ev.Status = http.StatusBadGateway
			p.noAddress(h.f, ev, err)
			h.discardBody(req)
			h.reply(http.StatusBadGateway, "cloudsteer: no address known for this bypass name\n")
			return false
		}
		if h.direct != nil && h.directTo != target {
			h.dropUpstream(h.direct)
		}
		h.directTo = target
	} else {
		authority := host
		if strings.Contains(host, ":") {
			authority = "[" + host + "]"
		}
		if isName {
			authority = name
		}
		if port != 80 {
			authority = net.JoinHostPort(strings.Trim(authority, "[]"), strconv.Itoa(int(port)))
		}
		// WriteProxy puts req.Host in both the absolute URI and Host.
		req.URL.Scheme, req.URL.Host, req.Host = "http", authority, authority
		if a := p.Cloud().AuthHeader(); a != "" {
			req.Header.Set("Proxy-Authorization", a)
		}
		req.Header.Set("X-Forwarded-For", h.f.ip.String())
	}

	resp, up, errc, err := h.roundTrip(ctx, req, bypass)
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		ev.Status = http.StatusBadGateway
		p.refused(h.f, ev, err)
		h.reply(http.StatusBadGateway, "cloudsteer could not reach the upstream server\n")
		return false
	}
	if bypass {
		p.bypassed.Add(1)
	} else {
		p.proxied.Add(1)
	}
	// finish ends the exchange: wait for the request writer and say
	// whether the client connection can carry another request.
	finish := func(keep bool) bool {
		if keep {
			if werr := <-errc; werr == nil {
				return true
			}
		}
		closeWrite(h.f.client)
		h.f.client.CloseRead() // a writer blocked on the client body gets EOF
		h.dropUpstream(up)
		<-errc
		return false
	}

	if !bypass {
		switch resp.StatusCode {
		case http.StatusForbidden:
			ev.Status, ev.Kind = resp.StatusCode, KindBlocked
			ev.Category = cloudproxy.BlockCategory(resp.Header, peekBody(resp))
			ev.Detail = "blocked by cloud proxy policy"
			p.logEvent(withProto(ev, h.f))
			p.event(h.f, ev)
		case http.StatusProxyAuthRequired:
			// The client never chose a proxy: a 407 would make no sense
			// to it. Tell it the gateway failed, and the admin why.
			ev.Status, ev.Kind = resp.StatusCode, KindAuthFailed
			ev.Detail = (&cloudproxy.RefusedError{StatusCode: resp.StatusCode}).Error()
			p.logEvent(withProto(ev, h.f))
			p.event(h.f, ev)
			resp.Body.Close()
			h.reply(http.StatusBadGateway, "cloudsteer: the cloud proxy rejected this gateway's credentials\n")
			return finish(false)
		}
	}

	if resp.StatusCode == http.StatusSwitchingProtocols {
		if werr := <-errc; werr != nil {
			return false
		}
		return h.upgrade(resp, up)
	}
	if err := h.writeResponse(resp, up); err != nil {
		return finish(false)
	}
	return finish(!req.Close && !resp.Close)
}

func withProto(ev Event, f *flow) Event {
	ev.Proto, ev.Client = f.proto, f.ip
	return ev
}

// splitHost splits a Host header into host (no brackets) and port
// (defaultPort when absent). IPv6 literals must be bracketed.
func splitHost(hostport string, defaultPort uint16) (string, uint16, bool) {
	if hostport == "" {
		return "", 0, false
	}
	host, portText := hostport, ""
	if h, pt, err := net.SplitHostPort(hostport); err == nil {
		host, portText = h, pt
	} else if strings.HasPrefix(hostport, "[") && strings.HasSuffix(hostport, "]") {
		host = hostport[1 : len(hostport)-1]
	} else if strings.Contains(hostport, ":") {
		return "", 0, false
	}
	port := defaultPort
	if portText != "" {
		n, err := strconv.ParseUint(portText, 10, 16)
		if err != nil || n == 0 {
			return "", 0, false
		}
		port = uint16(n)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return "", 0, false
		}
		return a.String(), port, true
	}
	if _, ok := sniff.NormalizeHostname(host); !ok {
		return "", 0, false
	}
	return host, port, true
}

// peekBody reads up to 4 KiB of resp's body for inspection and puts it back.
func peekBody(resp *http.Response) []byte {
	if resp.Body == http.NoBody {
		return nil
	}
	buf, _ := io.ReadAll(io.LimitReader(resp.Body, cloudproxy.MaxBodyBytes))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(buf), resp.Body), resp.Body}
	return buf
}

func (h *httpFlow) discardBody(req *http.Request) {
	io.Copy(io.Discard, io.LimitReader(req.Body, 64<<10))
}

// getUpstream returns the kept-alive upstream conn, dialing it if needed.
func (h *httpFlow) getUpstream(ctx context.Context, bypass bool) (*upstream, error) {
	slot := &h.cloud
	if bypass {
		slot = &h.direct
	}
	if *slot != nil {
		return *slot, nil
	}
	dctx, cancel := context.WithTimeout(ctx, h.p.cfg.DialTimeout)
	defer cancel()
	var c net.Conn
	var err error
	if bypass {
		c, err = h.p.dialer.DialContext(dctx, "tcp", h.directTo.String())
	} else {
		c, err = h.p.Cloud().DialProxy(dctx)
	}
	if err != nil {
		return nil, err
	}
	h.f.add(c)
	ic := &idleConn{Conn: c, idle: h.p.cfg.IdleTimeout, written: &h.p.bytesUp}
	*slot = &upstream{conn: ic, br: bufio.NewReaderSize(ic, 4096)}
	return *slot, nil
}

func (h *httpFlow) dropUpstream(up *upstream) {
	up.conn.Close()
	if h.cloud == up {
		h.cloud = nil
	}
	if h.direct == up {
		h.direct = nil
	}
}

// roundTrip sends req on the kept-alive upstream conn and returns the
// final (non-1xx, or 101) response; 1xx interim answers go straight to the
// client. The request is written concurrently, so a server can answer (100
// Continue, or early) before the body is sent: errc yields the writer's
// result. A bodiless request that finds a reused conn closed is retried
// once on a new conn.
func (h *httpFlow) roundTrip(ctx context.Context, req *http.Request, bypass bool) (*http.Response, *upstream, <-chan error, error) {
	for attempt := 0; ; attempt++ {
		up, err := h.getUpstream(ctx, bypass)
		if err != nil {
			return nil, nil, nil, err
		}
		reused := up.used
		up.used = true
		errc := make(chan error, 1)
		go func() { errc <- h.writeRequest(req, up, bypass) }()
		resp, err := h.readResponse(req, up)
		if err == nil {
			return resp, up, errc, nil
		}
		h.dropUpstream(up) // also ends the writer
		werr := <-errc
		if reused && attempt == 0 && req.Body == http.NoBody && ctx.Err() == nil {
			continue
		}
		if werr != nil && !errors.Is(werr, net.ErrClosed) {
			err = werr
		}
		return nil, nil, nil, err
	}
}

func (h *httpFlow) writeRequest(req *http.Request, up *upstream, bypass bool) error {
	bw := bufio.NewWriterSize(up.conn, 4096)
	if req.Body != http.NoBody {
		req.Body = &flushingBody{ReadCloser: req.Body, bw: bw, src: h.br}
	}
	var err error
	if bypass {
		err = req.Write(bufWriter{bw})
	} else {
		err = req.WriteProxy(bufWriter{bw})
	}
	if err == nil {
		err = bw.Flush()
	}
	return err
}

func (h *httpFlow) readResponse(req *http.Request, up *upstream) (*http.Response, error) {
	for {
		resp, err := http.ReadResponse(up.br, req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, nil
		}
		// An interim answer (100 Continue, 103 Early Hints) for the client.
		if err := resp.Write(h.client); err != nil {
			return nil, err
		}
	}
}

func (h *httpFlow) writeResponse(resp *http.Response, up *upstream) error {
	bw := bufio.NewWriterSize(h.client, 4096)
	if resp.Body != http.NoBody {
		resp.Body = &flushingBody{ReadCloser: resp.Body, bw: bw, src: up.br}
	}
	err := resp.Write(bufWriter{bw})
	if err == nil {
		err = bw.Flush()
	}
	resp.Body.Close()
	if err != nil || resp.Close {
		h.dropUpstream(up)
	}
	return err
}

// upgrade answers a 101 and turns the connection into a raw tunnel.
func (h *httpFlow) upgrade(resp *http.Response, up *upstream) bool {
	if err := resp.Write(h.client); err != nil {
		return false
	}
	// Bytes already buffered on either side go first.
	if n := h.br.Buffered(); n > 0 {
		b, _ := h.br.Peek(n)
		if _, err := up.conn.Write(b); err != nil {
			return false
		}
	}
	if n := up.br.Buffered(); n > 0 {
		b, _ := up.br.Peek(n)
		if _, err := h.client.Write(b); err != nil {
			return false
		}
	}
	h.p.pipe(h.f, h.f.client, up.conn.Conn)
	return false
}

// flushingBody flushes the writer a body is copied into before a read that
// may block, so streamed bodies (server-sent events, long uploads) move at
// once instead of waiting for a full buffer.
type flushingBody struct {
	io.ReadCloser
	bw  *bufio.Writer
	src *bufio.Reader
}

func (b *flushingBody) Read(p []byte) (int, error) {
	if b.src.Buffered() == 0 && b.bw.Buffered() > 0 {
		if err := b.bw.Flush(); err != nil {
			return 0, err
		}
	}
	return b.ReadCloser.Read(p)
}

// bufWriter is a bufio.Writer without ReadFrom: bufio.Writer.ReadFrom reads
// into its own buffer, which a flushingBody must not flush meanwhile. It
// keeps WriteByte so net/http adds no buffer of its own.
type bufWriter struct{ bw *bufio.Writer }

func (w bufWriter) Write(p []byte) (int, error)       { return w.bw.Write(p) }
func (w bufWriter) WriteByte(c byte) error            { return w.bw.WriteByte(c) }
func (w bufWriter) WriteString(s string) (int, error) { return w.bw.WriteString(s) }

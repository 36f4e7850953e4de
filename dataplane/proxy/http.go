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
	"os"
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
	n       atomic.Int64 // bytes written through this conn
	// stopRead makes Read fail at once: set it, then set a past read
	// deadline, and a Read in flight or to come ends (see stopWatch).
	stopRead atomic.Bool
}

func (c *idleConn) Read(b []byte) (int, error) {
	d := c.fixed
	if d.IsZero() {
		d = time.Now().Add(c.idle)
	}
	c.Conn.SetReadDeadline(d)
	if c.stopRead.Load() { // after the deadline: a stop cannot be missed
		return 0, os.ErrDeadlineExceeded
	}
	return c.Conn.Read(b)
}

func (c *idleConn) Write(b []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.idle))
	n, err := c.Conn.Write(b)
	c.written.Add(uint64(n))
	c.n.Add(int64(n))
	return n, err
}

// upstream is a kept-alive connection to the cloud proxy or an origin.
type upstream struct {
	conn   *idleConn
	br     *bufio.Reader
	used   bool           // carried a request before
	target netip.AddrPort // for a direct conn: where it goes
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
	// gone is set once the client closed or reset its connection while a
	// request was in flight; the upstream conn was closed then.
	gone atomic.Bool
}

// errClientGone ends an exchange whose client went away.
var errClientGone = errors.New("client went away")

// handleHTTP serves one redirected plain-HTTP connection: a loop over
// keep-alive requests, each sent to the cloud proxy or, for bypass names,
// to the policy's address of the name (a direct conn is kept for the next
// request to the same address only).
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
	// Wait for the next request: the first one's head must be complete
	// within PeekTimeout of the accept, whatever the pace of its bytes;
	// between keep-alive requests the wait is IdleTimeout, then the head
	// has PeekTimeout from its first byte.
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
	if !first {
		h.client.fixed = time.Now().Add(p.cfg.PeekTimeout)
	}
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

// clientIdentityHeaders are the client's claims of who it is; on the way to
// the cloud proxy they are dropped (X-Forwarded-For is replaced by the
// client's real address).
var clientIdentityHeaders = []string{"Forwarded", "X-Real-Ip", "X-Forwarded-For"}

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
	host, _, ok := splitHost(req.Host, h.dst.Port()) // the Host's port is checked, never used
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
	var target netip.AddrPort // where a bypassed request goes
	failOpen := false         // sent direct because no cloud proxy is healthy
	if !bypass && cloudDown(p.Cloud(), nil) {
		if p.cfg.FailureMode == FailClosed {
			h.discardBody(req)
			h.failClosedPage(req.Header.Get("Accept-Language"), &ev)
			return false
		}
		if ok, why := p.destAllowed(h.dst.Addr()); !ok {
			ev.Kind, ev.Status, ev.Detail = KindBadClient, http.StatusForbidden, "cloud proxy down (fail-open), and the destination is a "+why
			p.event(h.f, ev)
			h.reply(ev.Status, "cloudsteer: this address is not served\n")
			return false
		}
		bypass, target, failOpen = true, h.dst, true
	}
	switch {
	case failOpen: // target is set
	case bypass:
		t, ok := p.bypassTarget(ctx, h.f, ev)
		if !ok {
			if ctx.Err() == nil {
				h.reply(http.StatusForbidden, "cloudsteer: no known address of this bypass name\n")
			}
			return false
		}
		target = t
	default:
		// The cloud proxy fetches the port the client dialed, whatever
		// the Host header says: a Host naming another port must not make
		// it fetch that port with the tenant's credentials.
		authority := host
		if isName {
			authority = name
		} else if a, err := netip.ParseAddr(host); err == nil {
			if ok, why := p.destAllowed(a); !ok {
				ev.Kind, ev.Status, ev.Detail = KindBadClient, http.StatusForbidden, fmt.Sprintf("Host %s is a %s", host, why)
				p.log.Info("refused request", "proto", "http", "client", h.f.ip, "dst", h.dst, "why", ev.Detail)
				p.event(h.f, ev)
				h.reply(ev.Status, "cloudsteer: this address is not served\n")
				return false
			}
			if a.Is6() {
				authority = "[" + host + "]"
			}
		}
		if p := h.dst.Port(); p != 80 {
			authority = net.JoinHostPort(strings.Trim(authority, "[]"), strconv.Itoa(int(p)))
		}
		// WriteProxy puts req.Host in both the absolute URI and Host.
		req.URL.Scheme, req.URL.Host, req.Host = "http", authority, authority
		if a := p.Cloud().AuthHeader(); a != "" {
			req.Header.Set("Proxy-Authorization", a)
		}
		for _, k := range clientIdentityHeaders {
			req.Header.Del(k)
		}
		req.Header.Set("X-Forwarded-For", h.f.ip.String())
	}

	resp, up, x, err := h.roundTrip(ctx, req, bypass, target)
	if err != nil {
		if ctx.Err() != nil || errors.Is(err, errClientGone) {
			return false
		}
		if bypass {
			ev.Target = target
		}
		ev.Status = http.StatusBadGateway
		p.refused(h.f, ev, err)
		if !bypass && p.cfg.FailureMode == FailClosed && cloudDown(p.Cloud(), err) {
			h.failClosedPage(req.Header.Get("Accept-Language"), nil)
			return false
		}
		h.reply(http.StatusBadGateway, "cloudsteer could not reach the upstream server\n")
		return false
	}
	if failOpen {
		p.failedOpen.Add(1)
		p.openConns.add(up.conn.Conn) // cut when a cloud proxy is back
	} else if bypass {
		p.bypassed.Add(1)
	} else {
		p.proxied.Add(1)
	}
	// finish ends the exchange: wait for the request writer, stop
	// watching the client and say whether the client connection can
	// carry another request.
	finish := func(keep bool) bool {
		if keep && x.wait() == nil {
			x.stopWatch()
			if !h.gone.Load() {
				return true
			}
		}
		closeWrite(h.f.client)
		h.f.client.CloseRead() // a writer blocked on the client body gets EOF
		h.dropUpstream(up)
		x.wait()
		x.stopWatch()
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
			p.Cloud().ReportRefused(up.conn.Conn) // a passive failure of that proxy
			h.dropUpstream(up)                    // before Close, which would drain the body
			resp.Body.Close()
			h.reply(http.StatusBadGateway, "cloudsteer: the cloud proxy rejected this gateway's credentials\n")
			return finish(false)
		}
	}

	if resp.StatusCode == http.StatusSwitchingProtocols {
		if x.wait() != nil {
			return finish(false)
		}
		x.stopWatch()
		if h.gone.Load() {
			return finish(false)
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

// getUpstream returns the kept-alive upstream conn, dialing it if needed:
// the cloud proxy, or for bypass the direct conn to target (a kept direct
// conn to another target is closed first).
func (h *httpFlow) getUpstream(ctx context.Context, bypass bool, target netip.AddrPort) (*upstream, error) {
	slot := &h.cloud
	if bypass {
		slot = &h.direct
		if *slot != nil && (*slot).target != target {
			h.dropUpstream(*slot)
		}
	}
	if *slot != nil {
		return *slot, nil
	}
	dctx, cancel := context.WithTimeout(ctx, h.p.cfg.DialTimeout)
	defer cancel()
	var c net.Conn
	var err error
	if bypass {
		c, err = h.p.dialer.DialContext(dctx, "tcp", target.String())
	} else {
		c, err = h.p.Cloud().DialProxy(dctx)
	}
	if err != nil {
		return nil, err
	}
	h.f.add(c)
	ic := &idleConn{Conn: c, idle: h.p.cfg.IdleTimeout, written: &h.p.bytesUp}
	*slot = &upstream{conn: ic, br: bufio.NewReaderSize(ic, 4096), target: target}
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

// idempotent reports whether RFC 9110 section 9.2.2 calls method
// idempotent, so that it may be sent again.
func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// roundTrip sends req on the kept-alive upstream conn and returns the
// final (non-1xx, or 101) response; 1xx interim answers go straight to the
// client. The request is written concurrently, so a server can answer (100
// Continue, or early) before the body is sent; once it is written the
// client connection is watched (see exchange). A reused conn that is seen
// closed before the request is written is replaced by a new one. A
// request that failed is sent again on a new conn only when it is
// idempotent, has no body and none of it was written: never a POST.
func (h *httpFlow) roundTrip(ctx context.Context, req *http.Request, bypass bool, target netip.AddrPort) (*http.Response, *upstream, *exchange, error) {
	for attempt := 0; ; attempt++ {
		up, err := h.getUpstream(ctx, bypass, target)
		if err != nil {
			return nil, nil, nil, err
		}
		if up.used && !cloudproxy.Alive(up.conn.Conn) {
			// Closed (or talking unasked) while kept: nothing was sent
			// on it, so any request may go on a new conn.
			h.dropUpstream(up)
			if up, err = h.getUpstream(ctx, bypass, target); err != nil {
				return nil, nil, nil, err
			}
		}
		reused := up.used
		up.used = true
		before := up.conn.n.Load()
		hasBody := req.Body != http.NoBody
		x := h.startExchange(req, up, bypass)
		resp, err := h.readResponse(req, up)
		if err == nil {
			return resp, up, x, nil
		}
		h.dropUpstream(up) // also ends a writer blocked upstream
		retry := reused && attempt == 0 && idempotent(req.Method) && !hasBody && ctx.Err() == nil
		if hasBody {
			// A writer blocked on the client body gets EOF. Said first, so
			// that the writer and the watcher take that EOF for what it is
			// (ours), not for the client going away: the client still gets
			// its 502.
			h.client.stopRead.Store(true)
			h.f.client.CloseRead()
		}
		werr := x.wait()
		x.stopWatch()
		if h.gone.Load() {
			return nil, nil, nil, errClientGone
		}
		if retry && up.conn.n.Load() == before {
			continue
		}
		if werr != nil && !errors.Is(werr, net.ErrClosed) {
			err = werr
		}
		return nil, nil, nil, err
	}
}

// exchange is the request writer of one round trip and, once the request
// is written, the watcher of the client connection: like net/http's
// server, it reads ahead from the client so that the client's close or
// reset is seen at once, also while the upstream is silent (a slow origin,
// a long poll), and then closes the upstream conn. A byte it reads (the
// next pipelined request) stays in the flow's reader and ends the watch.
type exchange struct {
	h    *httpFlow
	errc chan error
	werr error
	got  bool          // werr is set
	done chan struct{} // closed when writer and watcher have ended
}

func (h *httpFlow) startExchange(req *http.Request, up *upstream, bypass bool) *exchange {
	x := &exchange{h: h, errc: make(chan error, 1), done: make(chan struct{})}
	bw := bufio.NewWriterSize(up.conn, 4096)
	if req.Body != http.NoBody {
		req.Body = &flushingBody{ReadCloser: req.Body, bw: bw, src: h.br}
	}
	go func() {
		defer close(x.done)
		clientFailed, err := h.writeRequest(req, bw, bypass)
		x.errc <- err
		switch {
		case clientFailed && !h.client.stopRead.Load():
			// The client broke off its request body: the upstream can
			// get no complete request.
			h.clientGone(up)
		case err == nil:
			h.watch(up)
		}
	}()
	return x
}

// wait returns the writer's result, waiting for it the first time.
func (x *exchange) wait() error {
	if !x.got {
		x.werr, x.got = <-x.errc, true
	}
	return x.werr
}

// stopWatch ends the writer (if it still runs it gets a read error from
// the client) and the watcher and waits for them.
func (x *exchange) stopWatch() {
	c := x.h.client
	c.stopRead.Store(true)
	c.Conn.SetReadDeadline(time.Unix(1, 0))
	<-x.done
	c.stopRead.Store(false)
	x.wait()
}

// watch reads ahead from the client until it sees a byte, the client's
// close or reset (then the upstream is closed) or stopWatch.
func (h *httpFlow) watch(up *upstream) {
	for {
		if h.br.Buffered() > 0 {
			return
		}
		_, err := h.br.Peek(1)
		switch {
		case err == nil, h.client.stopRead.Load():
			return
		case isTimeout(err):
			continue // a long wait for the upstream is no reason to give up
		}
		h.clientGone(up)
		return
	}
}

// clientGone notes that the client went away and closes the upstream
// conn, ending whatever waits on it or copies from it.
func (h *httpFlow) clientGone(up *upstream) {
	h.gone.Store(true)
	up.conn.Close()
}

// writeRequest writes req upstream; clientFailed says reading the
// client's request body failed (the client broke it off).
// The caller wraps a request body in a flushingBody over bw first.
func (h *httpFlow) writeRequest(req *http.Request, bw *bufio.Writer, bypass bool) (clientFailed bool, err error) {
	body, _ := req.Body.(*flushingBody)
	if bypass {
		err = req.Write(bufWriter{bw})
	} else {
		err = req.WriteProxy(bufWriter{bw})
	}
	if err == nil {
		err = bw.Flush()
	}
	return body != nil && body.readErr != nil, err
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
		resp.Body = &flushingBody{ReadCloser: resp.Body, bw: bw, src: up.br, closeFirst: up.conn}
	}
	err := resp.Write(bufWriter{bw})
	if err == nil {
		err = bw.Flush()
	}
	if err != nil || resp.Close {
		h.dropUpstream(up)
	}
	resp.Body.Close()
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
//
// A response body closed before its end closes closeFirst, the upstream
// conn, first: a body from http.ReadResponse drains the whole rest of
// itself from the conn on Close, and Response.Write closes the body when
// a write to the client fails.
type flushingBody struct {
	io.ReadCloser
	bw         *bufio.Writer
	src        *bufio.Reader
	readErr    error    // the body's read error other than EOF
	eof        bool     // the body was read to its end
	closeFirst net.Conn // closed by Close before the body, unless eof
}

func (b *flushingBody) Close() error {
	if !b.eof && b.closeFirst != nil {
		b.closeFirst.Close()
	}
	return b.ReadCloser.Close()
}

func (b *flushingBody) Read(p []byte) (int, error) {
	if b.src.Buffered() == 0 && b.bw.Buffered() > 0 {
		if err := b.bw.Flush(); err != nil {
			return 0, err
		}
	}
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.eof = true
	} else if err != nil {
		b.readErr = err
	}
	return n, err
}

// bufWriter is a bufio.Writer without ReadFrom: bufio.Writer.ReadFrom reads
// into its own buffer, which a flushingBody must not flush meanwhile. It
// keeps WriteByte so net/http adds no buffer of its own.
type bufWriter struct{ bw *bufio.Writer }

func (w bufWriter) Write(p []byte) (int, error)       { return w.bw.Write(p) }
func (w bufWriter) WriteByte(c byte) error            { return w.bw.WriteByte(c) }
func (w bufWriter) WriteString(s string) (int, error) { return w.bw.WriteString(s) }

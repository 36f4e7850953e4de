// Package load is the benchmark's load generator: it opens TLS-shaped
// streams (a real ClientHello, then raw bytes) for throughput, short HTTPS
// exchanges for new connections per second and time to first byte, and
// idle flows for memory, either transparently (dialing the origin, so a
// gateway may steer the flow) or through a cloud proxy with CONNECT.
package load

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Modes of a run.
const (
	ModeStream = "stream" // throughput: Flows flows read a stream for Duration
	ModeConns  = "conns"  // new HTTPS connections per second with Flows workers
	ModeTTFB   = "ttfb"   // Samples sequential new HTTPS connections, time to first byte
	ModeGet    = "get"    // throughput of real TLS GETs of /bytes (lab origins)
	ModeHold   = "hold"   // open Flows idle flows and hold them until stdin closes
)

// Spec says what one load run does.
type Spec struct {
	Mode     string
	Dst      netip.AddrPort // the origin address the flow is for
	Name     string         // SNI, Host and CONNECT name
	Proxy    netip.AddrPort // when valid: CONNECT through this proxy
	Auth     string         // Proxy-Authorization user, or user:password (Basic; no colon: empty password)
	CAFile   string         // roots for the HTTPS modes
	Flows    int
	Duration time.Duration
	Samples  int
	Path     string // request path for ModeConns, ModeTTFB and ModeGet
	// Within, when set, bounds a ModeTTFB run: no sample starts after it
	// and one under way is cut at it (and counted as failed).
	Within time.Duration
	// Every, when set, paces a ModeTTFB run: a sample starts at most once
	// per Every (a client opening connections at a human rate rather than
	// back to back).
	Every time.Duration
}

// Result is what a run measured.
type Result struct {
	Mode     string    `json:"mode"`
	Flows    int       `json:"flows"`
	Seconds  float64   `json:"seconds"`
	Bytes    int64     `json:"bytes"`               // payload bytes the client received
	Conns    int64     `json:"conns"`               // completed exchanges (conns, ttfb) or opened flows
	Errors   int64     `json:"errors"`              // failed flows or exchanges
	FirstErr string    `json:"first_err,omitempty"` // the first failure
	TTFBus   []float64 `json:"ttfb_us,omitempty"`   // per-sample time to first byte, µs
}

// Run runs spec and returns what it measured. hold is read in ModeHold:
// the flows stay open until it returns EOF.
func Run(ctx context.Context, spec Spec, hold io.Reader, ready io.Writer) (Result, error) {
	if spec.Flows <= 0 {
		spec.Flows = 1
	}
	if spec.Path == "" {
		spec.Path = "/"
	}
	g := &gen{spec: spec, res: Result{Mode: spec.Mode, Flows: spec.Flows}}
	g.dialer.SetMultipathTCP(false)
	g.dialer.Timeout = 5 * time.Second
	if spec.CAFile != "" {
		pem, err := os.ReadFile(spec.CAFile)
		if err != nil {
			return g.res, fmt.Errorf("read ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return g.res, errors.New("read ca: no certificate in file")
		}
		g.roots = pool
	}
	switch spec.Mode {
	case ModeStream:
		return g.stream(ctx)
	case ModeConns:
		return g.conns(ctx)
	case ModeTTFB:
		return g.ttfb(ctx)
	case ModeGet:
		return g.get(ctx)
	case ModeHold:
		return g.hold(ctx, hold, ready)
	}
	return g.res, fmt.Errorf("unknown mode %q", spec.Mode)
}

type gen struct {
	spec   Spec
	dialer net.Dialer
	roots  *x509.CertPool
	res    Result
	cut    time.Time // ModeTTFB with Within: when every exchange ends

	errMu  sync.Mutex
	errs   atomic.Int64
	bytes  atomic.Int64
	nconns atomic.Int64
}

func (g *gen) fail(err error) {
	g.errs.Add(1)
	g.errMu.Lock()
	if g.res.FirstErr == "" {
		g.res.FirstErr = err.Error()
	}
	g.errMu.Unlock()
}

// dial opens a TCP connection to the origin, through the proxy when one is
// set (CONNECT Name:port, Basic auth with the entitlement code as user).
func (g *gen) dial(ctx context.Context) (*net.TCPConn, error) {
	s := g.spec
	addr := s.Dst
	if s.Proxy.IsValid() {
		addr = s.Proxy
	}
	network := "tcp4"
	if addr.Addr().Is6() {
		network = "tcp6"
	}
	c, err := g.dialer.DialContext(ctx, network, addr.String())
	if err != nil {
		return nil, err
	}
	tc := c.(*net.TCPConn)
	if !s.Proxy.IsValid() {
		return tc, nil
	}
	target := net.JoinHostPort(s.Name, fmt.Sprint(s.Dst.Port()))
	head := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n"
	if s.Auth != "" {
		cred := s.Auth
		if !strings.Contains(cred, ":") {
			cred += ":"
		}
		head += "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(cred)) + "\r\n"
	}
	head += "\r\n"
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(tc, head); err != nil {
		tc.Close()
		return nil, fmt.Errorf("send connect: %w", err)
	}
	// Read the answer byte by byte up to the blank line, so no tunnel byte
	// is consumed.
	var resp []byte
	b := make([]byte, 1)
	for !strings.HasSuffix(string(resp), "\r\n\r\n") {
		if len(resp) > 4096 {
			tc.Close()
			return nil, errors.New("connect answer: head too long")
		}
		if _, err := tc.Read(b); err != nil {
			tc.Close()
			return nil, fmt.Errorf("read connect answer: %w", err)
		}
		resp = append(resp, b[0])
	}
	if !strings.HasPrefix(string(resp), "HTTP/1.1 200") && !strings.HasPrefix(string(resp), "HTTP/1.0 200") {
		tc.Close()
		line, _, _ := strings.Cut(string(resp), "\r\n")
		return nil, fmt.Errorf("connect refused: %q", line)
	}
	tc.SetDeadline(time.Time{})
	return tc, nil
}

// ended reports whether the run of ctx is over: cancelled, or past its
// deadline. The deadline is checked against the clock because on a loaded
// machine the context's own timer fires late: until it does, every dial
// fails at once with "i/o timeout" (net checks the deadline itself) while
// ctx.Err() is still nil, which used to count hundreds of failures at the
// end of each run.
func ended(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// ClientHello returns the bytes of a real TLS ClientHello for name, as
// crypto/tls sends it.
func ClientHello(name string) ([]byte, error) {
	cc := &captureConn{}
	c := tls.Client(cc, &tls.Config{ServerName: name, InsecureSkipVerify: true})
	_ = c.Handshake()
	if len(cc.out) == 0 {
		return nil, errors.New("capture client hello: nothing written")
	}
	return cc.out, nil
}

// captureConn keeps what a TLS client writes and fails its first read.
type captureConn struct {
	net.Conn
	out []byte
}

func (c *captureConn) Write(b []byte) (int, error) { c.out = append(c.out, b...); return len(b), nil }
func (c *captureConn) Read([]byte) (int, error)    { return 0, io.EOF }
func (c *captureConn) Close() error                { return nil }
func (c *captureConn) SetDeadline(time.Time) error { return nil }
func (c *captureConn) SetWriteDeadline(time.Time) error {
	return nil
}
func (c *captureConn) SetReadDeadline(time.Time) error { return nil }
func (c *captureConn) LocalAddr() net.Addr             { return &net.TCPAddr{} }
func (c *captureConn) RemoteAddr() net.Addr            { return &net.TCPAddr{} }

// stream opens Flows TLS-shaped flows at once and counts the bytes each
// receives (spliced into /dev/null) until Duration ends.
func (g *gen) stream(ctx context.Context) (Result, error) {
	hello, err := ClientHello(g.spec.Name)
	if err != nil {
		return g.res, err
	}
	conns := make([]*net.TCPConn, 0, g.spec.Flows)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range g.spec.Flows {
		c, err := g.dial(ctx)
		if err != nil {
			return g.res, fmt.Errorf("open flow: %w", err)
		}
		conns = append(conns, c)
		if _, err := c.Write(hello); err != nil {
			return g.res, fmt.Errorf("send client hello: %w", err)
		}
	}
	start := time.Now()
	end := start.Add(g.spec.Duration)
	var wg sync.WaitGroup
	for _, c := range conns {
		c.SetReadDeadline(end)
		wg.Go(func() {
			// One /dev/null per flow (a shared one would serialise the
			// flows on its write lock): File.ReadFrom splices from the socket.
			null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
			if err != nil {
				g.fail(err)
				return
			}
			defer null.Close()
			n, err := null.ReadFrom(c)
			g.bytes.Add(n)
			if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				g.fail(err)
			} else if err == nil {
				g.fail(errors.New("stream ended early"))
			}
		})
	}
	wg.Wait()
	g.res.Seconds = time.Since(start).Seconds()
	g.res.Bytes = g.bytes.Load()
	g.res.Conns = int64(len(conns))
	g.res.Errors = g.errs.Load()
	return g.res, nil
}

// exchange does one short HTTPS exchange on a new connection: handshake,
// GET, read the whole response, close (the client closes first, so the
// TIME_WAIT socket stays on the client side). It returns the time from the
// dial to the first response byte.
func (g *gen) exchange(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	tc, err := g.dial(ctx)
	if err != nil {
		return 0, err
	}
	defer tc.Close()
	deadline := time.Now().Add(5 * time.Second)
	if !g.cut.IsZero() && g.cut.Before(deadline) {
		deadline = g.cut
	}
	tc.SetDeadline(deadline)
	c := tls.Client(tc, &tls.Config{ServerName: g.spec.Name, RootCAs: g.roots, NextProtos: []string{"http/1.1"}})
	req := "GET " + g.spec.Path + " HTTP/1.1\r\nHost: " + g.spec.Name + "\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil { // handshakes first
		return 0, fmt.Errorf("send request: %w", err)
	}
	br := bufio.NewReaderSize(c, 4096)
	if _, err := br.Peek(1); err != nil {
		return 0, fmt.Errorf("read response: %w", err)
	}
	ttfb := time.Since(start)
	n, err := readResponse(br)
	if err != nil {
		return 0, err
	}
	g.bytes.Add(n)
	return ttfb, nil
}

// readResponse reads an HTTP/1.1 response head and a Content-Length body;
// it returns the body length.
func readResponse(br *bufio.Reader) (int64, error) {
	status, err := br.ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("read status: %w", err)
	}
	if !strings.HasPrefix(status, "HTTP/1.1 200") {
		return 0, fmt.Errorf("response: %q", strings.TrimSpace(status))
	}
	length := int64(-1)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return 0, fmt.Errorf("read header: %w", err)
		}
		line = strings.TrimSpace(line)
		if line == "" {
			break
		}
		k, v, _ := strings.Cut(line, ":")
		if strings.EqualFold(k, "Content-Length") {
			if _, err := fmt.Sscan(strings.TrimSpace(v), &length); err != nil {
				return 0, fmt.Errorf("bad content-length %q", v)
			}
		}
	}
	if length < 0 {
		return 0, errors.New("response without content-length")
	}
	n, err := io.CopyN(io.Discard, br, length)
	if err != nil {
		return n, fmt.Errorf("read body: %w", err)
	}
	return n, nil
}

// conns runs Flows workers doing short HTTPS exchanges back to back.
func (g *gen) conns(ctx context.Context) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, g.spec.Duration)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for range g.spec.Flows {
		wg.Go(func() {
			for !ended(ctx) {
				t0 := time.Now()
				if _, err := g.exchange(ctx); err != nil {
					if !ended(ctx) {
						g.fail(fmt.Errorf("after %v: %w", time.Since(t0).Round(time.Millisecond), err))
					}
					continue
				}
				g.nconns.Add(1)
			}
		})
	}
	wg.Wait()
	g.res.Seconds = time.Since(start).Seconds()
	g.res.Conns = g.nconns.Load()
	g.res.Bytes = g.bytes.Load()
	g.res.Errors = g.errs.Load()
	return g.res, nil
}

// ttfb does Samples exchanges one after another and keeps each one's time
// to first byte.
func (g *gen) ttfb(ctx context.Context) (Result, error) {
	start := time.Now()
	if g.spec.Within > 0 {
		g.cut = start.Add(g.spec.Within)
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, g.cut)
		defer cancel()
	}
	next := start
	for range max(g.spec.Samples, 1) {
		if g.spec.Every > 0 {
			if wait := time.Until(next); wait > 0 {
				select {
				case <-time.After(wait):
				case <-ctx.Done():
				}
			}
			// Never a catch-up burst: a slow sample delays the rest.
			if now := time.Now(); now.After(next) {
				next = now
			}
			next = next.Add(g.spec.Every)
		}
		if ctx.Err() != nil {
			break
		}
		d, err := g.exchange(ctx)
		if err != nil {
			g.fail(err)
			continue
		}
		g.res.TTFBus = append(g.res.TTFBus, float64(d.Nanoseconds())/1e3)
	}
	g.res.Seconds = time.Since(start).Seconds()
	g.res.Conns = int64(len(g.res.TTFBus))
	g.res.Bytes = g.bytes.Load()
	g.res.Errors = g.errs.Load()
	return g.res, nil
}

// get runs Flows real TLS GETs of Path at once and counts the body bytes
// read until Duration ends.
func (g *gen) get(ctx context.Context) (Result, error) {
	var conns []*tls.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range g.spec.Flows {
		tc, err := g.dial(ctx)
		if err != nil {
			return g.res, fmt.Errorf("open flow: %w", err)
		}
		c := tls.Client(tc, &tls.Config{ServerName: g.spec.Name, RootCAs: g.roots, NextProtos: []string{"http/1.1"}})
		conns = append(conns, c)
		req := "GET " + g.spec.Path + " HTTP/1.1\r\nHost: " + g.spec.Name + "\r\n\r\n"
		if _, err := io.WriteString(c, req); err != nil {
			return g.res, fmt.Errorf("send request: %w", err)
		}
	}
	start := time.Now()
	end := start.Add(g.spec.Duration)
	var wg sync.WaitGroup
	for _, c := range conns {
		c.SetReadDeadline(end)
		wg.Go(func() {
			buf := make([]byte, 256<<10)
			var n int64
			for {
				k, err := c.Read(buf)
				n += int64(k)
				if err != nil {
					if !errors.Is(err, os.ErrDeadlineExceeded) {
						g.fail(err)
					}
					break
				}
			}
			g.bytes.Add(n)
		})
	}
	wg.Wait()
	g.res.Seconds = time.Since(start).Seconds()
	g.res.Bytes = g.bytes.Load()
	g.res.Conns = int64(len(conns))
	g.res.Errors = g.errs.Load()
	return g.res, nil
}

// hold opens Flows TLS-shaped flows (ClientHello sent, then silence),
// writes "ready N\n" to ready and keeps them until hold reaches EOF.
func (g *gen) hold(ctx context.Context, hold io.Reader, ready io.Writer) (Result, error) {
	hello, err := ClientHello(g.spec.Name)
	if err != nil {
		return g.res, err
	}
	var mu sync.Mutex
	var conns []*net.TCPConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	start := time.Now()
	// A few dialers in parallel: 10 000 flows in a couple of seconds.
	var wg sync.WaitGroup
	var next atomic.Int64
	for range 16 {
		wg.Go(func() {
			for next.Add(1) <= int64(g.spec.Flows) {
				c, err := g.dial(ctx)
				if err != nil {
					g.fail(err)
					continue
				}
				if _, err := c.Write(hello); err != nil {
					g.fail(err)
					c.Close()
					continue
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	g.res.Seconds = time.Since(start).Seconds()
	g.res.Conns = int64(len(conns))
	g.res.Errors = g.errs.Load()
	fmt.Fprintf(ready, "ready %d\n", len(conns))
	if hold != nil {
		_, _ = io.Copy(io.Discard, hold)
	}
	return g.res, nil
}

// Percentile returns the p-th percentile (0..100) of xs (nearest rank).
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(p/100*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

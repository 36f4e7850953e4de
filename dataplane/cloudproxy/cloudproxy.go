// Package cloudproxy is the client for the cloud proxy, an HTTP forward
// proxy reached over http:// or https:// that takes CONNECT tunnels and
// absolute-form HTTP requests with tenant credentials in
// Proxy-Authorization.
package cloudproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"strings"
	"syscall"
	"time"
)

const (
	// DefaultDialTimeout bounds a whole Connect (dial, TLS, CONNECT answer)
	// when Config.DialTimeout is zero.
	DefaultDialTimeout = 15 * time.Second
	// MaxHeadBytes caps the response head the proxy may send for CONNECT.
	MaxHeadBytes = 16 << 10
	// MaxBodyBytes caps the bytes of a refusal's body kept in RefusedError.
	MaxBodyBytes = 4 << 10
)

// Config says where the cloud proxy is and how to authenticate to it.
type Config struct {
	// URL is the proxy's address: http://host:port or https://host:port.
	// Without a port, http means 80 and https 443 (as Go's http.Transport
	// reads proxy URLs). It must not carry credentials, a path or a query.
	URL *url.URL
	// RootCAs verifies an https proxy's certificate; nil means the
	// system roots.
	RootCAs *x509.CertPool
	// Username and Password are the tenant credentials sent as Basic
	// Proxy-Authorization; both empty means no header.
	Username, Password string
	// DialTimeout bounds a Connect or DialProxy as a whole: TCP dial, TLS
	// handshake and, for Connect, the proxy's answer. Zero means
	// DefaultDialTimeout.
	DialTimeout time.Duration
	// OnConnect, when set, is called after every Connect and DialProxy
	// attempt (see observe.go). It must not block.
	OnConnect func(d time.Duration, err error)
	// PoolMax is the most established, unused connections to the proxy
	// the Client keeps warm for Connect and DialProxy (see pool.go): zero
	// means DefaultPoolMax, a negative value turns the pool off.
	PoolMax int
	// PoolMaxAge is how long a warm connection may wait unused before it
	// is closed; zero means DefaultPoolMaxAge.
	PoolMaxAge time.Duration
	// Backups are further proxies, in order, that new flows go to while
	// URL (and the backups before) are down; each is health-checked like
	// URL. They take the same credentials, CA and pool settings.
	Backups []*url.URL
	// Health, when set (or when there are Backups), health-checks every
	// proxy actively and passively and fails over between them (see
	// failover.go); nil keeps the Client a plain client of URL.
	Health *HealthConfig
}

// Client opens connections through one cloud proxy, keeping a few
// established connections warm while there is demand. It is safe for
// concurrent use; Close releases the warm connections.
type Client struct {
	addr       string // host:port to dial
	useTLS     bool
	tlsConfig  *tls.Config
	auth       string
	timeout    time.Duration
	dialer     net.Dialer
	displayURL string
	onConnect  func(time.Duration, error)
	pool       *pool // nil when Config.PoolMax < 0
	stats      counters
	fo         *failover // the health-checked proxies, when Config.Health or Backups is set
}

// New validates cfg and returns a Client. With Config.Health or Backups
// set it starts the health checks, which Close stops.
func New(cfg Config) (*Client, error) {
	if cfg.Health == nil && len(cfg.Backups) == 0 {
		return newSingle(cfg)
	}
	return newFailover(cfg)
}

// newSingle returns a Client of cfg.URL alone.
func newSingle(cfg Config) (*Client, error) {
	u := cfg.URL
	if u == nil {
		return nil, errors.New("cloud proxy url is missing")
	}
	var port string
	switch u.Scheme {
	case "http":
		port = "80"
	case "https":
		port = "443"
	default:
		return nil, fmt.Errorf("cloud proxy url %q: scheme must be http or https", u.Redacted())
	}
	if u.User != nil {
		return nil, fmt.Errorf("cloud proxy url %q: put credentials in username and password, not in the url", u.Redacted())
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return nil, fmt.Errorf("cloud proxy url %q: must not have a path or query", u.Redacted())
	}
	host := u.Hostname()
	if host == "" {
		return nil, fmt.Errorf("cloud proxy url %q: host is missing", u.Redacted())
	}
	if p := u.Port(); p != "" {
		port = p
	}
	if n, err := net.LookupPort("tcp", port); err != nil || n == 0 || strings.TrimLeft(port, "0123456789") != "" {
		return nil, fmt.Errorf("cloud proxy url %q: bad port %q", u.Redacted(), port)
	}
	if strings.ContainsAny(cfg.Username, ":\r\n") || strings.ContainsAny(cfg.Password, "\r\n") {
		return nil, errors.New("cloud proxy username must not contain ':' or line breaks, password no line breaks")
	}
	c := &Client{
		addr:       net.JoinHostPort(host, port),
		useTLS:     u.Scheme == "https",
		timeout:    cfg.DialTimeout,
		displayURL: u.Scheme + "://" + net.JoinHostPort(host, port),
		onConnect:  cfg.OnConnect,
	}
	if c.timeout <= 0 {
		c.timeout = DefaultDialTimeout
	}
	if cfg.Username != "" || cfg.Password != "" {
		c.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(cfg.Username+":"+cfg.Password))
	}
	if c.useTLS {
		c.tlsConfig = &tls.Config{
			ServerName: host,
			RootCAs:    cfg.RootCAs,
			MinVersion: tls.VersionTLS12,
			NextProtos: []string{"http/1.1"},
		}
	}
	c.dialer = net.Dialer{KeepAlive: 30 * time.Second}
	c.dialer.SetMultipathTCP(false)
	if cfg.PoolMax >= 0 {
		size, age := cfg.PoolMax, cfg.PoolMaxAge
		if size == 0 {
			size = DefaultPoolMax
		}
		if age <= 0 {
			age = DefaultPoolMaxAge
		}
		c.pool = newPool(c.refillDial, size, age, &c.stats)
	}
	return c, nil
}

// Close closes the warm connections and stops refilling them. Tunnels
// already handed out stay open; Connect and DialProxy still work after
// Close, dialing every connection.
func (c *Client) Close() error {
	if c.fo != nil {
		c.fo.close()
		return nil
	}
	if c.pool != nil {
		c.pool.close()
	}
	return nil
}

// Stats returns the warm pool's counters.
func (c *Client) Stats() Stats {
	if c.fo != nil {
		var s Stats
		for _, m := range c.fo.members {
			s = s.Add(m.c.Stats())
		}
		return s
	}
	s := Stats{
		TakenWarm:      c.stats.takenWarm.Load(),
		DialedCold:     c.stats.dialedCold.Load(),
		DiscardedStale: c.stats.discardedStale.Load(),
		Retries:        c.stats.retries.Load(),
		Expired:        c.stats.expired.Load(),
		RefillDials:    c.stats.refillDials.Load(),
		RefillErrors:   c.stats.refillErrors.Load(),
	}
	if c.pool != nil {
		s.Idle = c.pool.len()
	}
	return s
}

// String returns the proxy's URL (it never holds credentials).
// With backups it is the one new flows use now (the primary when none is
// healthy).
func (c *Client) String() string {
	if c.fo != nil {
		return c.fo.current().c.displayURL
	}
	return c.displayURL
}

// AuthHeader returns the Proxy-Authorization value ("Basic ..."), or "" when
// no credentials are configured. It is a secret: never log it.
func (c *Client) AuthHeader() string { return c.auth }

// DialProxy returns a connection to the proxy itself, TLS-wrapped for an
// https proxy, for absolute-form HTTP requests.
func (c *Client) DialProxy(ctx context.Context) (net.Conn, error) {
	if c.fo != nil {
		return c.fo.dialProxy(ctx)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	start := time.Now()
	conn, _, err := c.get(ctx)
	c.observe(start, 0, err)
	return conn, err
}

// get returns a warm connection to the proxy, or else dials one; warm says
// which. It notes the demand, which (re)starts refilling the pool.
func (c *Client) get(ctx context.Context) (conn net.Conn, warm bool, err error) {
	if c.pool != nil && ctx.Err() == nil {
		if conn := c.pool.get(); conn != nil {
			return conn, true, nil
		}
	}
	conn, err = c.dial(ctx)
	if err == nil {
		c.stats.dialedCold.Add(1)
	}
	return conn, false, err
}

// refillDial dials one connection for the pool, bounded by the timeout.
func (c *Client) refillDial(ctx context.Context) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return c.dial(ctx)
}

func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	dctx := ctx
	if d, ok := ctx.Value(synBoundKey{}).(time.Duration); ok && d > 0 {
		// A backup is there to take the flow: do not wait out the whole
		// timeout for a proxy that does not even answer the SYN.
		var cancel context.CancelFunc
		dctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	conn, err := c.dialer.DialContext(dctx, "tcp", c.addr)
	if err != nil {
		return nil, fmt.Errorf("dial cloud proxy %s: %w", c.displayURL, err)
	}
	if !c.useTLS {
		return conn, nil
	}
	tc := tls.Client(conn, c.tlsConfig)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("tls handshake with cloud proxy %s: %w", c.displayURL, err)
	}
	return tc, nil
}

// RefusedError is the proxy's answer to a CONNECT other than 2xx.
type RefusedError struct {
	StatusCode int    // e.g. 403
	Status     string // status line text after the code, e.g. "Forbidden"
	Category   string // block category from X-Block-Category or the body, if any
	Body       []byte // the first MaxBodyBytes of the body
}

func (e *RefusedError) Error() string {
	switch e.StatusCode {
	case http.StatusProxyAuthRequired:
		return "cloud proxy rejected the tenant credentials (407): check the entitlement code"
	case http.StatusForbidden:
		if e.Category != "" {
			return fmt.Sprintf("blocked by cloud proxy policy (403, category %s)", e.Category)
		}
		return "blocked by cloud proxy policy (403)"
	}
	return fmt.Sprintf("cloud proxy refused the tunnel: %d %s", e.StatusCode, e.Status)
}

// Connect opens a tunnel through the proxy to target ("name:port" or
// "[v6]:port") on behalf of the LAN client clientIP (sent as
// X-Forwarded-For when valid). On a 2xx answer the returned conn carries
// the tunnel: for an http proxy it is the *net.TCPConn itself, or, when the
// proxy sent bytes after its head, a conn that yields those first and
// then splices. Any other answer is a *RefusedError.
func (c *Client) Connect(ctx context.Context, target string, clientIP netip.Addr) (_ net.Conn, err error) {
	if err := checkTarget(target); err != nil {
		return nil, err
	}
	if c.fo != nil {
		return c.fo.connect(ctx, target, clientIP)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	start := time.Now()
	var answered time.Duration // until the proxy's answer head, once read
	defer func() { c.observe(start, answered, err) }()
	conn, warm, err := c.get(ctx)
	if err != nil {
		return nil, err
	}
	req := connectRequest(target, c.auth, clientIP)
	tunnel, answeredAt, unanswered, err := c.connectOn(ctx, conn, req)
	if err != nil && warm && unanswered && ctx.Err() == nil {
		// The pooled connection died between the liveness check and the
		// request (the proxy's idle close crossed it): the proxy read
		// nothing it answered, so send the CONNECT again on a fresh dial.
		c.stats.retries.Add(1)
		if conn, err = c.dial(ctx); err != nil {
			return nil, err
		}
		c.stats.dialedCold.Add(1)
		tunnel, answeredAt, _, err = c.connectOn(ctx, conn, req)
	}
	if !answeredAt.IsZero() {
		answered = answeredAt.Sub(start)
	}
	return tunnel, err
}

// connectRequest returns the CONNECT request head for target.
func connectRequest(target, auth string, clientIP netip.Addr) []byte {
	var req bytes.Buffer
	fmt.Fprintf(&req, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", target, target)
	if auth != "" {
		fmt.Fprintf(&req, "Proxy-Authorization: %s\r\n", auth)
	}
	if clientIP.IsValid() {
		fmt.Fprintf(&req, "X-Forwarded-For: %s\r\n", clientIP.Unmap())
	}
	req.WriteString("\r\n")
	return req.Bytes()
}

// connectOn sends req on conn and reads the proxy's answer; it closes conn
// unless it returns the tunnel. answered is when the answer head was read
// (zero if it was not); unanswered says the attempt failed on a broken
// connection (a write error, or EOF or reset before any answer byte),
// the failure a retry on another connection may cure.
func (c *Client) connectOn(ctx context.Context, conn net.Conn, req []byte) (_ net.Conn, answered time.Time, unanswered bool, err error) {
	ok := false
	defer func() {
		if !ok {
			conn.Close()
		}
	}()
	if d, has := ctx.Deadline(); has {
		conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if _, err := conn.Write(req); err != nil {
		return nil, time.Time{}, !isTimeout(err), c.ioErr("send CONNECT", ctx, err)
	}

	cr := &countingReader{r: conn}
	br := bufio.NewReaderSize(cr, 4096)
	var head *responseHead
	for {
		head, err = readHead(br, MaxHeadBytes)
		if err != nil {
			return nil, time.Time{}, cr.n == 0 && isBroken(err), c.ioErr("read CONNECT answer", ctx, err)
		}
		if head.StatusCode/100 != 1 || head.StatusCode == http.StatusSwitchingProtocols {
			break // 100 Continue and other interim answers come before the real one
		}
	}
	answered = time.Now()
	if head.StatusCode/100 != 2 {
		return nil, answered, false, refusal(br, head, conn)
	}
	if !stop() {
		return nil, answered, false, c.ioErr("read CONNECT answer", ctx, ctx.Err())
	}
	conn.SetDeadline(time.Time{})
	ok = true
	if n := br.Buffered(); n > 0 {
		buf, _ := br.Peek(n)
		return &bufferedConn{Conn: conn, buf: bytes.Clone(buf)}, answered, false, nil
	}
	return conn, answered, false, nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n += n
	return n, err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// isBroken says err means the connection was closed or reset under us.
func isBroken(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNABORTED) ||
		errors.Is(err, syscall.EPIPE)
}

func (c *Client) ioErr(what string, ctx context.Context, err error) error {
	if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.DeadlineExceeded) {
			return fmt.Errorf("%s from cloud proxy %s: %w", what, c.displayURL, cause)
		}
		return fmt.Errorf("%s from cloud proxy %s: no answer within %s: %w", what, c.displayURL, c.timeout, err)
	}
	return fmt.Errorf("%s from cloud proxy %s: %w", what, c.displayURL, err)
}

// checkTarget accepts host:port where host is a name or a bracketed IPv6
// literal, and refuses anything that could break the request line.
func checkTarget(target string) error {
	host, port, err := net.SplitHostPort(target)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("connect target %q: want host:port", target)
	}
	for i := 0; i < len(target); i++ {
		if b := target[i]; b <= ' ' || b >= 0x7f {
			return fmt.Errorf("connect target %q: bad character", target)
		}
	}
	if strings.Contains(host, ":") && !strings.HasPrefix(target, "[") {
		return fmt.Errorf("connect target %q: ipv6 needs brackets", target)
	}
	return nil
}

// refusal reads (a bounded part of) the body of a refusing answer and
// returns the RefusedError for it.
func refusal(br *bufio.Reader, head *responseHead, conn net.Conn) *RefusedError {
	e := &RefusedError{StatusCode: head.StatusCode, Status: head.Reason}
	// Let net/http frame the body (length, chunked or until close).
	resp, err := http.ReadResponse(bufio.NewReader(io.MultiReader(bytes.NewReader(head.Raw), br)), &http.Request{Method: http.MethodConnect})
	if err == nil {
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		e.Body, _ = io.ReadAll(io.LimitReader(resp.Body, MaxBodyBytes))
		resp.Body.Close()
	}
	e.Category = BlockCategory(head.Header, e.Body)
	return e
}

var categoryInBody = regexp.MustCompile(`(?i)category\s*(?:</[a-z]+>\s*)?[:=]\s*(?:<[^>]{0,40}>\s*)?"?([A-Za-z0-9][A-Za-z0-9 _/.-]{0,63})`)

// BlockCategory returns the block category a proxy's refusal names: the
// X-Block-Category header, else a "Category: X" (or category=X) in the
// body, else "". The result is printable ASCII of at most 64 bytes.
func BlockCategory(h http.Header, body []byte) string {
	if v := clean(h.Get("X-Block-Category")); v != "" {
		return v
	}
	if m := categoryInBody.FindSubmatch(body); m != nil {
		return clean(string(m[1]))
	}
	return ""
}

func clean(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 64 {
		s = s[:64]
	}
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] >= 0x7f {
			return ""
		}
	}
	return strings.TrimSpace(s)
}

// bufferedConn is a tunnel whose first bytes were read along with the
// proxy's response head. WriteTo and ReadFrom hand over to the inner
// connection so io.Copy still splices once the buffer is drained.
type bufferedConn struct {
	net.Conn
	buf []byte
}

func (c *bufferedConn) Read(p []byte) (int, error) {
	if len(c.buf) > 0 {
		n := copy(p, c.buf)
		c.buf = c.buf[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// WriteTo writes the buffered bytes to w, then copies the rest of the tunnel.
func (c *bufferedConn) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for len(c.buf) > 0 {
		n, err := w.Write(c.buf)
		total += int64(n)
		c.buf = c.buf[n:]
		if err != nil {
			return total, err
		}
	}
	n, err := io.Copy(w, c.Conn)
	return total + n, err
}

// ReadFrom copies r into the tunnel, letting the inner conn splice.
func (c *bufferedConn) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(c.Conn, r)
}

// CloseWrite half-closes the inner connection when it can.
func (c *bufferedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// TakeBuffered returns the bytes not read yet from the buffer and empties
// it, for a caller that then reads (or splices from) NetConn itself.
func (c *bufferedConn) TakeBuffered() []byte {
	b := c.buf
	c.buf = nil
	return b
}

// NetConn returns the inner connection.
func (c *bufferedConn) NetConn() net.Conn { return c.Conn }

package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptrace"
	"net/url"
	"strings"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/controlplane/console/auth"
	"github.com/cloudsteer/cloudsteer/controlplane/console/tlscert"
	"github.com/cloudsteer/cloudsteer/lab"
)

// consoleAdmin is the administrator the figure creates (its password is
// random per run and never printed).
const consoleAdmin = "office-admin"

// consoleSession is the figure's browser: HTTP clients in the LAN client's
// namespace that trust the console's self-signed certificate by the
// fingerprint the CLI printed, with a cookie jar each.
type consoleSession struct {
	base   *url.URL // https://10.10.0.1
	fp     string
	proto  string
	csrf   string       // the signed-in session's CSRF token (body data-csrf)
	in     *http.Client // signed in
	out    *http.Client // no session (the login page)
	plain  *http.Client // plain HTTP (the CA page)
	trs    []*http.Transport
	dialer func(ctx context.Context, network, addr string) (net.Conn, error)
}

// consoleTarget is one URL the figure measures.
type consoleTarget struct {
	name   string // path and query
	kind   string
	client *http.Client
	url    string
	header http.Header
}

func (s *consoleSession) close() {
	for _, t := range s.trs {
		t.CloseIdleConnections()
	}
}

// transport is a LAN-side transport pinned to the console's certificate:
// one connection per host, kept alive (h2 when offered, as a browser), or
// a new connection for every request when fresh.
func (s *consoleSession) transport(fresh bool) *http.Transport {
	t := &http.Transport{
		DialContext:         s.dialer,
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: true, VerifyPeerCertificate: tlscert.VerifyPinned(s.fp), MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:   !fresh,
		MaxIdleConnsPerHost: 1,
		MaxConnsPerHost:     1,
		IdleConnTimeout:     5 * time.Minute,
		DisableKeepAlives:   fresh,
		DisableCompression:  true, // the browser-like Accept-Encoding is set per request
	}
	if fresh {
		t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // HTTP/1.1, one request per connection
		t.MaxConnsPerHost = 0
	}
	s.trs = append(s.trs, t)
	return t
}

func newClient(t *http.Transport, jar http.CookieJar) *http.Client {
	return &http.Client{Transport: t, Jar: jar, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// consoleSignIn does what the admin does on a fresh gateway: the setup
// link from `cloudsteer console setup-link`, the setup form (user and
// password), the TOTP enrolment with a code computed from the secret the
// page shows, and lands signed in on the status page.
func (r *runner) consoleSignIn(ctx context.Context, cs consoleCLI) (*consoleSession, error) {
	var info api.ConsoleInfo
	if err := cs.json(ctx, &info, "console", "info"); err != nil {
		return nil, err
	}
	if !info.Enabled || info.Fingerprint == "" || info.AdminSetUp {
		return nil, fmt.Errorf("console info: %+v", info)
	}
	var link api.SetupLink
	if err := cs.json(ctx, &link, "console", "setup-link"); err != nil {
		return nil, err
	}
	setup, err := url.Parse(link.URL)
	if err != nil {
		return nil, fmt.Errorf("setup link: %w", err)
	}
	s := &consoleSession{base: &url.URL{Scheme: "https", Host: setup.Host}, fp: info.Fingerprint,
		dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return r.lab.DialContext(ctx, lab.RoleLAN, network, addr)
		}}
	jar, _ := cookiejar.New(nil)
	s.in = newClient(s.transport(false), jar)
	outJar, _ := cookiejar.New(nil)
	s.out = newClient(s.transport(false), outJar)
	s.plain = newClient(s.transport(false), nil)

	// The setup form.
	doc, resp, err := s.getDoc(ctx, s.in, link.URL, http.StatusOK)
	if err != nil {
		return nil, fmt.Errorf("setup page: %w", err)
	}
	s.proto = resp.Proto
	action, hidden, err := doc.Form("setup-form")
	if err != nil {
		return nil, err
	}
	pw, err := newBenchPassword()
	if err != nil {
		return nil, err
	}
	form := url.Values{"user": {consoleAdmin}, "email": {"it@office.example"}, "password": {pw}, "password2": {pw}}
	for k, v := range hidden {
		form.Set(k, v)
	}
	if err := s.post(ctx, action, form, "", "/enroll"); err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	// The enrolment: the secret as the page shows it, a code from it.
	doc, _, err = s.getDoc(ctx, s.in, s.abs("/enroll"), http.StatusOK)
	if err != nil {
		return nil, fmt.Errorf("enrolment page: %w", err)
	}
	secret, err := doc.Text("enroll-secret")
	if err != nil {
		return nil, err
	}
	key, err := auth.DecodeTOTPSecret(secret)
	if err != nil {
		return nil, fmt.Errorf("enrolment secret: %w", err)
	}
	action, hidden, err = doc.Form("enroll-form")
	if err != nil {
		return nil, err
	}
	form = url.Values{"code": {auth.TOTP(key, time.Now(), auth.TOTPDigits)}}
	for k, v := range hidden {
		form.Set(k, v)
	}
	if err := s.post(ctx, action, form, "", "/recovery"); err != nil {
		return nil, fmt.Errorf("enrol: %w", err)
	}
	if _, _, err := s.getDoc(ctx, s.in, s.abs("/recovery"), http.StatusOK); err != nil {
		return nil, fmt.Errorf("recovery codes page: %w", err)
	}
	// Signed in: the status page, with the session's CSRF token.
	doc, _, err = s.getDoc(ctx, s.in, s.abs("/"), http.StatusOK)
	if err != nil {
		return nil, fmt.Errorf("status page: %w", err)
	}
	if doc.Body("data-page") != "status" || doc.Body("data-csrf") == "" {
		return nil, fmt.Errorf("not signed in: status page has data-page %q", doc.Body("data-page"))
	}
	s.csrf = doc.Body("data-csrf")
	// Name the first LAN client, as the Events page's script does.
	if err := s.post(ctx, "/clients", url.Values{"client": {lab.ClientV4.Addr().String()}, "name": {"Reception PC"}}, s.csrf, ""); err != nil {
		return nil, fmt.Errorf("name a client: %w", err)
	}
	return s, nil
}

// newBenchPassword draws until benchPassword accepts (the first draw, in
// practice).
func newBenchPassword() (string, error) {
	for range 10 {
		b := make([]byte, 24)
		if _, err := rand.Read(b); err != nil {
			return "", err
		}
		if pw, err := benchPassword(b); err == nil && !strings.Contains(strings.ToLower(pw), "office") {
			return pw, nil
		}
	}
	return "", errNoSecret
}

func (s *consoleSession) abs(path string) string { return s.base.String() + path }

// browserHeader is what a browser sends with a page request.
func browserHeader() http.Header {
	return http.Header{
		"Accept":          {"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
		"Accept-Language": {"en-US,en;q=0.9"},
		"Accept-Encoding": {"gzip, deflate, br"},
		"User-Agent":      {"cloudsteer-bench (console figure)"},
	}
}

// getDoc fetches and parses a page, which must answer want.
func (s *consoleSession) getDoc(ctx context.Context, c *http.Client, u string, want int) (*consoleDoc, *http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header = browserHeader()
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, resp, err
	}
	if resp.StatusCode != want {
		return nil, resp, fmt.Errorf("GET %s: %s (want %d; Location %q)", redact(u), resp.Status, want, resp.Header.Get("Location"))
	}
	doc, err := parseConsoleDoc(bytes.NewReader(body))
	return doc, resp, err
}

// post sends a form from the signed-in client, as the browser does (the
// page's Origin; csrfHeader set as the script sends it, or the form's own
// csrf field). A redirect must go to wantLocation ("" wants 200).
func (s *consoleSession) post(ctx context.Context, path string, form url.Values, csrfHeader, wantLocation string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.abs(path), strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header = browserHeader()
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", s.base.String())
	if csrfHeader != "" {
		req.Header.Set("X-CSRF-Token", csrfHeader)
	}
	resp, err := s.in.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if wantLocation == "" {
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("POST %s: %s: %s", path, resp.Status, lastLines(string(body), 3))
		}
		return nil
	}
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != wantLocation {
		return fmt.Errorf("POST %s: %s to %q, want 303 to %s: %s", path, resp.Status, resp.Header.Get("Location"), wantLocation, errorText(body))
	}
	return nil
}

// errorText is the console's error list of a refused form, if any.
func errorText(body []byte) string {
	doc, err := parseConsoleDoc(bytes.NewReader(body))
	if err != nil {
		return ""
	}
	for _, t := range []string{"setup-errors", "enroll-errors"} {
		if s, err := doc.Text(t); err == nil {
			return s
		}
	}
	return lastLines(string(body), 2)
}

// redact drops a URL's query (the setup token).
func redact(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i] + "?…"
	}
	return u
}

// eventRows counts the rows of the Events page, unfiltered and filtered
// by the figure's name.
func (s *consoleSession) eventRows(ctx context.Context) (int, int, error) {
	doc, _, err := s.getDoc(ctx, s.in, s.abs("/events"), http.StatusOK)
	if err != nil {
		return 0, 0, err
	}
	fdoc, _, err := s.getDoc(ctx, s.in, s.abs("/events?name="+consoleNameFilter), http.StatusOK)
	if err != nil {
		return 0, 0, err
	}
	return doc.Count("events-row"), fdoc.Count("events-row"), nil
}

// targets are the figure's URLs, in table order.
func (s *consoleSession) targets() []consoleTarget {
	var ts []consoleTarget
	page := func(p string) {
		ts = append(ts, consoleTarget{name: p, kind: consolePage, client: s.in, url: s.abs(p), header: browserHeader()})
	}
	for _, p := range []string{"/", "/bypass", "/pause", "/events", "/events?name=" + consoleNameFilter, "/diagnostics", "/settings", "/certificate", "/account"} {
		page(p)
	}
	script := func(p string) {
		h := http.Header{"Accept": {"*/*"}, "Accept-Language": {"en-US,en;q=0.9"}, "X-CSRF-Token": {s.csrf}}
		ts = append(ts, consoleTarget{name: p, kind: consoleAPI, client: s.in, url: s.abs(p), header: h})
	}
	// The Events page polls the newest event every 5 s (with its filter);
	// the other pages ask for the badge every 15 s.
	script("/api/v1/events?limit=1")
	script("/api/v1/events?name=" + consoleNameFilter + "&limit=1")
	script("/badge")
	ts = append(ts, consoleTarget{name: "/login", kind: consoleSignedOut, client: s.out, url: s.abs("/login"), header: browserHeader()})
	ts = append(ts, consoleTarget{name: "/ca", kind: consolePlain, client: s.plain, url: "http://" + s.base.Host + "/ca", header: browserHeader()})
	fresh := newClient(s.transport(true), s.in.Jar)
	ts = append(ts, consoleTarget{name: "/ (new connection each)", kind: consoleFresh, client: fresh, url: s.abs("/"), header: browserHeader()})
	return ts
}

// measure times warm untimed requests, then n timed ones, one after the
// other: from the request written to the first response byte on a
// kept-alive connection (for the fresh-TLS row: from asking for a
// connection, so dial and handshake count), and to the last byte read.
// The console renders a page into a buffer before it writes the first
// byte, so the first byte comes after all of the server's work: that is
// the server time plus one round trip on the lab's veth. gwCPU reads the
// CPU seconds the gateway namespace's processes have used (for the CPU
// time per timed request). Every answer must be 200.
func (s *consoleSession) measure(ctx context.Context, t consoleTarget, warm, n int, gwCPU func() float64) ConsolePage {
	p := ConsolePage{Name: t.name, Kind: t.kind}
	var ds, whole []time.Duration
	var cpu0 float64
	for i := range warm + n {
		if i == warm {
			cpu0 = gwCPU()
		}
		var start, wrote, first time.Time
		reused := false
		trace := &httptrace.ClientTrace{
			GetConn:              func(string) { start = time.Now() },
			GotConn:              func(ci httptrace.GotConnInfo) { reused = ci.Reused },
			WroteRequest:         func(httptrace.WroteRequestInfo) { wrote = time.Now() },
			GotFirstResponseByte: func() { first = time.Now() },
		}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodGet, t.url, nil)
		if err != nil {
			p.Problem = err.Error()
			return p
		}
		req.Header = t.header.Clone()
		resp, err := t.client.Do(req)
		if err != nil {
			p.Problem = fmt.Sprintf("request %d: %v", i+1, err)
			break
		}
		nb, err := io.Copy(io.Discard, resp.Body)
		done := time.Now()
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("%s (Location %q)", resp.Status, resp.Header.Get("Location"))
		}
		if err != nil {
			p.Problem = fmt.Sprintf("request %d: %v", i+1, err)
			p.Status = resp.StatusCode
			break
		}
		p.Status, p.Bytes = resp.StatusCode, nb
		if i < warm {
			continue
		}
		if !reused {
			p.NewConns++
		}
		from := wrote
		if t.kind == consoleFresh {
			from = start
		}
		if from.IsZero() || first.IsZero() {
			p.Problem = "no timing from the client trace"
			break
		}
		ds = append(ds, first.Sub(from))
		whole = append(whole, done.Sub(from))
	}
	p.Latency, p.LastByte = latencyOf(ds), latencyOf(whole)
	if len(ds) > 0 {
		p.GatewayCPUms = (gwCPU() - cpu0) * 1000 / float64(len(ds))
	}
	if p.Problem == "" && t.kind != consoleFresh && p.NewConns > 0 {
		p.Problem = fmt.Sprintf("%d of %d timed requests opened a new connection", p.NewConns, n)
	}
	if p.Problem == "" && t.kind == consoleFresh && p.NewConns != n {
		p.Problem = fmt.Sprintf("only %d of %d requests on a new connection", p.NewConns, n)
	}
	if p.Problem != "" && errors.Is(ctx.Err(), context.Canceled) {
		p.Problem = ctx.Err().Error()
	}
	return p
}

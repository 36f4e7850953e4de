package console

import (
	"bytes"
	"html"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/console/auth"
)

// testClock is the console's injectable clock, moved by hand.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// syncBuffer collects the console's log lines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// cheapHash keeps the tests fast; the parameters are not under test here.
var cheapHash = auth.HashParams{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}

const (
	testToken = "setup-token-0123456789abcdefghijklmnopqrstuvwxyz"
	testUser  = "kanri"
	testEmail = "kato@example.jp"
	testPass  = "Tokyo2026!x"
)

// harness is a Console over a fakeBackend with a fake clock and captured
// logs.
type harness struct {
	t     *testing.T
	b     *fakeBackend
	c     *Console
	clock *testClock
	logs  *syncBuffer
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	b := newFakeBackend()
	b.setupToken = testToken
	h := &harness{t: t, b: b, clock: &testClock{t: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)}, logs: &syncBuffer{}}
	h.c = h.newConsole()
	return h
}

// newConsole makes a Console over the harness's backend (a "restart"
// when called again).
func (h *harness) newConsole() *Console {
	h.t.Helper()
	log := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{} // digits of a timestamp could look like a TOTP code
			}
			return a
		}}))
	c, err := New(h.b, Options{Now: h.clock.Now, Logger: log, HashParams: cheapHash})
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

// browser is one client: its address, its cookies, its language.
type browser struct {
	h       *harness
	ip      string
	lang    string
	cookies map[string]*http.Cookie
	// header is added to every request (a poll's X-Cloudsteer-Poll).
	header http.Header
	// seen collects every page body, for the no-secret checks.
	seen []string
}

func (h *harness) browser(ip string) *browser {
	return &browser{h: h, ip: ip, cookies: map[string]*http.Cookie{}}
}

// do sends a request through the console's whole handler and keeps the
// cookies it sets.
func (br *browser) do(method, target string, form url.Values) *httptest.ResponseRecorder {
	br.h.t.Helper()
	var body *strings.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	} else {
		body = strings.NewReader("")
	}
	r := httptest.NewRequest(method, "https://192.168.1.1"+target, body)
	r.RemoteAddr = br.ip + ":50000"
	if form != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if br.lang != "" {
		r.Header.Set("Accept-Language", br.lang)
	}
	for k, v := range br.header {
		r.Header[k] = v
	}
	for _, ck := range br.cookies {
		r.AddCookie(&http.Cookie{Name: ck.Name, Value: ck.Value})
	}
	w := httptest.NewRecorder()
	br.h.c.Handler().ServeHTTP(w, r)
	for _, ck := range w.Result().Cookies() {
		if ck.MaxAge < 0 || ck.Value == "" {
			delete(br.cookies, ck.Name)
		} else {
			br.cookies[ck.Name] = ck
		}
	}
	br.seen = append(br.seen, w.Body.String())
	return w
}

func (br *browser) get(target string) *httptest.ResponseRecorder { return br.do("GET", target, nil) }

func (br *browser) post(target string, form url.Values) *httptest.ResponseRecorder {
	return br.do("POST", target, form)
}

var (
	csrfRe     = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	secretRe   = regexp.MustCompile(`data-test="enroll-secret">([A-Z2-7]+)<`)
	codeRe     = regexp.MustCompile(`data-test="recovery-code">([^<]+)<`)
	loginErrRe = regexp.MustCompile(`data-test="login-error">([^<]*)<`)
)

func mustMatch(t *testing.T, re *regexp.Regexp, body string) string {
	t.Helper()
	m := re.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no %s in page:\n%s", re, body)
	}
	return m[1]
}

// expect checks the status (and the redirect target when want is 3xx).
func expect(t *testing.T, w *httptest.ResponseRecorder, status int, location string) {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status %d, want %d; body:\n%s", w.Code, status, w.Body.String())
	}
	if location != "" {
		if got := w.Header().Get("Location"); got != location {
			t.Fatalf("Location %q, want %q", got, location)
		}
	}
}

// text is the catalog text as the page shows it (HTML-escaped).
func (h *harness) text(lang, key string, args ...any) string {
	return html.EscapeString(h.c.cat.text(lang, key, args...))
}

// setup creates the admin through the setup link.
func (br *browser) setup(user, email, pw string) *httptest.ResponseRecorder {
	br.h.t.Helper()
	w := br.get("/setup?token=" + testToken)
	expect(br.h.t, w, http.StatusOK, "")
	csrf := mustMatch(br.h.t, csrfRe, w.Body.String())
	return br.post("/setup", url.Values{"csrf": {csrf}, "token": {testToken}, "user": {user}, "email": {email},
		"password": {pw}, "password2": {pw}})
}

// code is the current TOTP code of secret at the fake clock.
func (h *harness) code(secret string) string {
	key, err := auth.DecodeTOTPSecret(secret)
	if err != nil {
		h.t.Fatal(err)
	}
	return auth.TOTP(key, h.clock.Now(), auth.TOTPDigits)
}

// enroll enrols TOTP from the enrolment page and returns the secret and
// the recovery codes shown.
func (br *browser) enroll() (secret string, codes []string) {
	t := br.h.t
	t.Helper()
	w := br.get("/enroll")
	expect(t, w, http.StatusOK, "")
	body := w.Body.String()
	secret = mustMatch(t, secretRe, body)
	if !strings.Contains(body, `data-test="enroll-qr"`) || !strings.Contains(body, `src="data:image/png;base64,`) {
		t.Fatal("no QR code image on the enrolment page")
	}
	if strings.Contains(body, `type="hidden" name="secret"`) || strings.Count(body, secret) != 1 {
		t.Fatalf("the secret appears %d times (want once, as text)", strings.Count(body, secret))
	}
	csrf := mustMatch(t, csrfRe, body)
	expect(t, br.post("/enroll", url.Values{"csrf": {csrf}, "code": {br.h.code(secret)}}), http.StatusSeeOther, "/recovery")
	w = br.get("/recovery")
	expect(t, w, http.StatusOK, "")
	for _, m := range codeRe.FindAllStringSubmatch(w.Body.String(), -1) {
		codes = append(codes, m[1])
	}
	if len(codes) != auth.RecoveryCodeCount {
		t.Fatalf("%d recovery codes shown, want %d", len(codes), auth.RecoveryCodeCount)
	}
	return secret, codes
}

// password does the password step and returns its answer.
func (br *browser) password(user, pw string) *httptest.ResponseRecorder {
	br.h.t.Helper()
	w := br.get("/login")
	expect(br.h.t, w, http.StatusOK, "")
	return br.post("/login", url.Values{"csrf": {mustMatch(br.h.t, csrfRe, w.Body.String())}, "user": {user}, "password": {pw}})
}

// secondFactor does the code step and returns its answer.
func (br *browser) secondFactor(code string) *httptest.ResponseRecorder {
	br.h.t.Helper()
	w := br.get("/login/2fa")
	expect(br.h.t, w, http.StatusOK, "")
	return br.post("/login/2fa", url.Values{"csrf": {mustMatch(br.h.t, csrfRe, w.Body.String())}, "code": {code}})
}

// login signs in with both factors and checks it worked.
func (br *browser) login(user, pw, code string) {
	t := br.h.t
	t.Helper()
	expect(t, br.password(user, pw), http.StatusSeeOther, "/login/2fa")
	expect(t, br.secondFactor(code), http.StatusSeeOther, "/")
	expect(t, br.get("/account"), http.StatusOK, "")
}

// logout signs out with the page's CSRF token.
func (br *browser) logout() {
	t := br.h.t
	t.Helper()
	w := br.get("/account")
	expect(t, w, http.StatusOK, "")
	expect(t, br.post("/logout", url.Values{"csrf": {mustMatch(t, csrfRe, w.Body.String())}}), http.StatusSeeOther, "/login")
}

// ready returns a harness whose admin is set up and enrolled, the browser
// that did it (signed in) and the secret and recovery codes.
func ready(t *testing.T) (*harness, *browser, string, []string) {
	t.Helper()
	h := newHarness(t)
	br := h.browser("192.168.1.20")
	expect(t, br.setup(testUser, testEmail, testPass), http.StatusSeeOther, "/enroll")
	secret, codes := br.enroll()
	h.clock.Advance(30 * time.Second) // the enrolment used this step's code
	return h, br, secret, codes
}

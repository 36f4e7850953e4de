package console

import (
	"bytes"
	"encoding/base64"
	"html"
	"image/png"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/console/auth"
)

// TestFullFlow: setup through the link, TOTP enrolment, recovery codes
// shown once, logout, then a login with password and TOTP code.
func TestFullFlow(t *testing.T) {
	h := newHarness(t)
	br := h.browser("192.168.1.20")

	w := br.setup(testUser, testEmail, testPass)
	expect(t, w, http.StatusSeeOther, "/enroll")
	checkSessionCookie(t, w)
	// The setup session may only enrol: pages and the API send it back.
	expect(t, br.get("/account"), http.StatusSeeOther, "/enroll")
	expect(t, br.get("/recovery"), http.StatusSeeOther, "/login")
	// The same secret on every visit until enrolment succeeds.
	s1 := mustMatch(t, secretRe, br.get("/enroll").Body.String())
	s2 := mustMatch(t, secretRe, br.get("/enroll").Body.String())
	if s1 != s2 {
		t.Fatal("enrolment secret changed between visits")
	}
	// A wrong code does not enrol.
	csrf := mustMatch(t, csrfRe, br.get("/enroll").Body.String())
	wrong := "000000"
	if h.code(s1) == wrong {
		wrong = "111111"
	}
	w = br.post("/enroll", url.Values{"csrf": {csrf}, "code": {wrong}})
	expect(t, w, http.StatusUnprocessableEntity, "")
	if !strings.Contains(w.Body.String(), h.text("en", "auth.enroll.wrong_code")) {
		t.Fatal("no wrong-code message at enrolment")
	}

	qr := mustMatch(t, regexp.MustCompile(`src="data:image/png;base64,([^"]+)"`), br.get("/enroll").Body.String())
	raw, err := base64.StdEncoding.DecodeString(html.UnescapeString(qr)) // the page escapes + as &#43;
	if err != nil {
		t.Fatal(err)
	}
	if cfg, err := png.DecodeConfig(bytes.NewReader(raw)); err != nil || cfg.Width != 256 || cfg.Height != 256 {
		t.Fatalf("QR code PNG: %v, %+v", err, cfg)
	}
	secret, codes := br.enroll()
	if secret != s1 {
		t.Fatal("enrolled a different secret than shown")
	}
	a, _, _ := h.b.Admin(t.Context())
	if a.TOTPSecret != secret || len(a.RecoveryHashes) != auth.RecoveryCodeCount || a.TOTPLastStep != auth.TOTPStep(h.clock.Now())+1 {
		t.Fatalf("stored admin: secret %v, %d recovery hashes, last step %d", a.TOTPSecret == secret, len(a.RecoveryHashes), a.TOTPLastStep)
	}
	for _, c := range codes {
		for _, hh := range a.RecoveryHashes {
			if strings.Contains(hh, c) || strings.Contains(hh, strings.ReplaceAll(c, "-", "")) {
				t.Fatal("a recovery code is stored in clear")
			}
		}
	}
	// Shown once: a reload shows no code.
	w = br.get("/recovery")
	expect(t, w, http.StatusSeeOther, "/account")
	w = br.get("/account")
	expect(t, w, http.StatusOK, "")
	if !strings.Contains(w.Body.String(), `data-test="account-user">`+testUser+`<`) {
		t.Fatal("account page does not show the user")
	}
	if !strings.Contains(w.Body.String(), h.text("en", "auth.account.recovery_left", 10)) {
		t.Fatal("account page does not count the recovery codes")
	}
	// Enrolled: the enrolment page is closed.
	expect(t, br.get("/enroll"), http.StatusSeeOther, "/")

	br.logout()
	expect(t, br.get("/account"), http.StatusSeeOther, "/login")

	h.clock.Advance(30 * time.Second)
	expect(t, br.password(testUser, testPass), http.StatusSeeOther, "/login/2fa")
	if br.cookies[auth.SessionCookieName] != nil {
		t.Fatal("a session before the second factor")
	}
	pc := br.cookies[pendingCookie]
	if pc == nil || !pc.Secure || !pc.HttpOnly || pc.SameSite != http.SameSiteStrictMode || pc.MaxAge != 300 {
		t.Fatalf("pending login cookie %+v", pc)
	}
	w = br.secondFactor(h.code(secret))
	expect(t, w, http.StatusSeeOther, "/")
	checkSessionCookie(t, w)
	if br.cookies[pendingCookie] != nil {
		t.Fatal("pending login cookie kept after sign-in")
	}
	expect(t, br.get("/account"), http.StatusOK, "")
	// The user name is matched without case.
	other := h.browser("192.168.1.21")
	h.clock.Advance(30 * time.Second)
	other.login(strings.ToUpper(testUser), testPass, h.code(secret))
}

func checkSessionCookie(t *testing.T, w interface{ Result() *http.Response }) {
	t.Helper()
	for _, ck := range w.Result().Cookies() {
		if ck.Name != auth.SessionCookieName {
			continue
		}
		if !ck.Secure || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" || ck.Value == "" {
			t.Fatalf("session cookie %+v: want Secure, HttpOnly, SameSite=Strict, Path=/", ck)
		}
		return
	}
	t.Fatal("no session cookie set")
}

// TestSetupLink: without an admin, every page leads to the page that asks
// for the setup link, which has no form; a wrong or used token is refused.
func TestSetupLink(t *testing.T) {
	h := newHarness(t)
	br := h.browser("192.168.1.20")
	expect(t, br.get("/login"), http.StatusSeeOther, "/setup")
	expect(t, br.get("/account"), http.StatusSeeOther, "/setup")
	expect(t, br.post("/login", url.Values{"user": {"x"}, "password": {"y"}}), http.StatusSeeOther, "/setup")
	w := br.get("/setup")
	expect(t, w, http.StatusOK, "")
	body := w.Body.String()
	if !strings.Contains(body, `data-test="setup-needed"`) || !strings.Contains(body, "cloudsteer console setup-link") {
		t.Fatal("setup page without token does not explain the setup link")
	}
	if strings.Contains(body, "<form") && strings.Contains(body, `name="password"`) {
		t.Fatal("a create-admin form without a token")
	}
	w = br.get("/setup?token=wrong")
	expect(t, w, http.StatusForbidden, "")
	if !strings.Contains(w.Body.String(), `data-test="setup-invalid"`) || strings.Contains(w.Body.String(), `name="password"`) {
		t.Fatal("wrong token: no invalid-link page, or a form")
	}
	// POST with a wrong or no token creates nothing.
	csrf := mustMatch(t, csrfRe, br.get("/setup?token="+testToken).Body.String())
	for _, tok := range []string{"", "wrong"} {
		w = br.post("/setup", url.Values{"csrf": {csrf}, "token": {tok}, "user": {"eve"}, "password": {testPass}, "password2": {testPass}})
		expect(t, w, http.StatusForbidden, "")
	}
	if _, ok, _ := h.b.Admin(t.Context()); ok {
		t.Fatal("admin created without the token")
	}
	expect(t, br.setup(testUser, "", testPass), http.StatusSeeOther, "/enroll")
	// The token is used up.
	other := h.browser("192.168.1.66")
	w = other.get("/setup?token=" + testToken)
	expect(t, w, http.StatusOK, "")
	if !strings.Contains(w.Body.String(), `data-test="setup-done"`) || strings.Contains(w.Body.String(), `name="password"`) {
		t.Fatal("used token: no already-set-up page, or a form")
	}
	w = other.post("/setup", url.Values{"csrf": {csrf}, "token": {testToken}, "user": {"eve"}, "password": {testPass}, "password2": {testPass}})
	expect(t, w, http.StatusConflict, "")
	if a, _, _ := h.b.Admin(t.Context()); a.User != testUser {
		t.Fatalf("admin replaced by %q", a.User)
	}
}

// TestPasswordRules: each broken rule gives its own message, in English
// and in Japanese, and nothing is created.
func TestPasswordRules(t *testing.T) {
	cases := []struct {
		rule  auth.Rule
		pw    string
		args  []any
		email string
	}{
		{auth.RuleMinLength, "ab1x", []any{auth.MinPasswordLength}, ""},
		{auth.RuleLetter, "1234567890", nil, ""},
		{auth.RuleDigit, "abcdefghij", nil, ""},
		{auth.RuleRepeat, "abcdd12345", nil, ""},
		{auth.RuleContainsUser, "x" + testUser + "123", nil, ""},
		{auth.RuleContainsEmail, "kato12345", nil, testEmail},
	}
	errorsRe := regexp.MustCompile(`(?s)data-test="setup-errors">(.*?)</div>`)
	for _, lang := range []string{"en", "ja"} {
		for _, tc := range cases {
			t.Run(lang+"/"+string(tc.rule), func(t *testing.T) {
				h := newHarness(t)
				br := h.browser("192.168.1.20")
				br.lang = lang
				w := br.setup(testUser, tc.email, tc.pw)
				expect(t, w, http.StatusUnprocessableEntity, "")
				errs := mustMatch(t, errorsRe, w.Body.String())
				want := h.text(lang, "auth.rule."+string(tc.rule), tc.args...)
				if !strings.Contains(errs, want) {
					t.Fatalf("errors %q lack %q", errs, want)
				}
				if n := strings.Count(errs, "<li"); n != 1 {
					t.Fatalf("%d messages, want only the broken rule's: %s", n, errs)
				}
				if lang == "ja" && !strings.Contains(w.Header().Get("Content-Language"), "ja") {
					t.Fatal("not a Japanese page")
				}
				if _, ok, _ := h.b.Admin(t.Context()); ok {
					t.Fatal("admin created with a bad password")
				}
			})
		}
	}
	t.Run("mismatch", func(t *testing.T) {
		h := newHarness(t)
		br := h.browser("192.168.1.20")
		csrf := mustMatch(t, csrfRe, br.get("/setup?token="+testToken).Body.String())
		w := br.post("/setup", url.Values{"csrf": {csrf}, "token": {testToken}, "user": {testUser},
			"password": {testPass}, "password2": {testPass + "x"}})
		expect(t, w, http.StatusUnprocessableEntity, "")
		if !strings.Contains(w.Body.String(), h.text("en", "auth.error.password_mismatch")) {
			t.Fatal("no mismatch message")
		}
	})
	t.Run("every rule has a text", func(t *testing.T) {
		h := newHarness(t)
		for _, r := range []auth.Rule{auth.RuleMinLength, auth.RuleLetter, auth.RuleDigit, auth.RuleRepeat,
			auth.RuleContainsUser, auth.RuleContainsEmail, auth.RuleReused} {
			for _, lang := range languages {
				if _, ok := h.c.cat[lang]["auth.rule."+string(r)]; !ok {
					t.Errorf("%s: no text for rule %s", lang, r)
				}
			}
		}
	})
}

// TestWrongPasswordAndCode: the same message for a wrong password and an
// unknown user, an event for each failure with the name given (clipped)
// and never the password; a wrong code has its own message.
func TestWrongPasswordAndCode(t *testing.T) {
	h, _, secret, _ := ready(t)
	br := h.browser("192.168.1.30")
	long := strings.Repeat("ü", 100)
	for _, tc := range []struct{ user, pw string }{{testUser, "Wrong2026pass"}, {"nobody", testPass}, {long, "x1y2z3w4"}} {
		w := br.password(tc.user, tc.pw)
		expect(t, w, http.StatusUnauthorized, "")
		if got := mustMatch(t, loginErrRe, w.Body.String()); got != h.text("en", "auth.login.wrong") {
			t.Fatalf("login error %q", got)
		}
		h.clock.Advance(time.Minute) // past the backoff
	}
	h.b.mu.Lock()
	events := slices.Clone(h.b.recorded)
	h.b.mu.Unlock()
	if len(events) != 3 {
		t.Fatalf("%d events, want 3", len(events))
	}
	for i, e := range events {
		if e.Proto != "console" || e.Reason != "login_failed" || e.Client != "192.168.1.30" || e.Time.IsZero() {
			t.Errorf("event %d: %+v", i, e)
		}
		if strings.Contains(e.Name, "Wrong2026pass") || strings.Contains(e.Name, testPass) {
			t.Errorf("event %d holds a password", i)
		}
	}
	if events[0].Name != testUser || events[1].Name != "nobody" || events[2].Name != strings.Repeat("ü", 64) {
		t.Fatalf("event names %q, %q, %q", events[0].Name, events[1].Name, events[2].Name)
	}
	// Right password, wrong code.
	expect(t, br.password(testUser, testPass), http.StatusSeeOther, "/login/2fa")
	wrong := "123456"
	if h.code(secret) == wrong {
		wrong = "654321"
	}
	w := br.secondFactor(wrong)
	expect(t, w, http.StatusUnauthorized, "")
	if got := mustMatch(t, loginErrRe, w.Body.String()); got != h.text("en", "auth.login2fa.wrong") {
		t.Fatalf("2fa error %q", got)
	}
	if n := len(h.b.recorded); n != 4 || h.b.recorded[3].Name != testUser {
		t.Fatalf("wrong code: %d events", n)
	}
	if br.cookies[auth.SessionCookieName] != nil {
		t.Fatal("session after a wrong code")
	}
	h.clock.Advance(time.Minute)
	expect(t, br.secondFactor(h.code(secret)), http.StatusSeeOther, "/")
}

// TestPendingLoginExpires: the code step is open 5 minutes, and a few
// wrong codes send the browser back to the password.
func TestPendingLoginExpires(t *testing.T) {
	h, _, secret, _ := ready(t)
	br := h.browser("192.168.1.30")
	expect(t, br.password(testUser, testPass), http.StatusSeeOther, "/login/2fa")
	w := br.get("/login/2fa")
	csrf := mustMatch(t, csrfRe, w.Body.String())
	h.clock.Advance(pendingTTL + time.Second)
	expect(t, br.post("/login/2fa", url.Values{"csrf": {csrf}, "code": {h.code(secret)}}), http.StatusSeeOther, "/login?e=expired")
	if br.cookies[auth.SessionCookieName] != nil {
		t.Fatal("session from an expired pending login")
	}
	expect(t, br.get("/login/2fa"), http.StatusSeeOther, "/login")
}

// TestAuthPagesAccessible: on every login page each visible control has
// a label and a data-test hook, and the password, user name and code
// fields say what they are to password managers and phones.
func TestAuthPagesAccessible(t *testing.T) {
	_, br, _, _ := ready(t)
	pages := map[string]string{"account": br.get("/account").Body.String()}
	br.logout()
	pages["login"] = br.get("/login").Body.String()
	expect(t, br.password(testUser, testPass), http.StatusSeeOther, "/login/2fa")
	pages["login2fa"] = br.get("/login/2fa").Body.String()
	h2 := newHarness(t)
	b2 := h2.browser("192.168.1.20")
	pages["setup-needed"] = b2.get("/setup").Body.String()
	pages["setup"] = b2.get("/setup?token=" + testToken).Body.String()
	expect(t, b2.setup(testUser, "", testPass), http.StatusSeeOther, "/enroll")
	pages["enroll"] = b2.get("/enroll").Body.String()

	inputRe := regexp.MustCompile(`<(input|select|textarea|button)\b[^>]*>`)
	attr := func(tag, name string) string {
		m := regexp.MustCompile(`\b` + name + `="([^"]*)"`).FindStringSubmatch(tag)
		if m == nil {
			return ""
		}
		return m[1]
	}
	wantAuto := map[string]string{"user": "username", "current": "current-password", "code": "one-time-code"}
	for name, body := range pages {
		for _, tag := range inputRe.FindAllString(body, -1) {
			if attr(tag, "type") == "hidden" {
				continue
			}
			if attr(tag, "data-test") == "" {
				t.Errorf("%s: %s has no data-test", name, tag)
			}
			if strings.HasPrefix(tag, "<button") {
				continue
			}
			id := attr(tag, "id")
			if id == "" || !strings.Contains(body, `<label for="`+id+`"`) {
				t.Errorf("%s: %s has no label", name, tag)
			}
			n := attr(tag, "name")
			if n == "lang" {
				continue
			}
			auto := attr(tag, "autocomplete")
			switch {
			case n == "password" || n == "password2":
				if auto != "new-password" && !(name == "login" && auto == "current-password") {
					t.Errorf("%s: %s: autocomplete %q", name, n, auto)
				}
			case wantAuto[n] != "" && auto != wantAuto[n]:
				t.Errorf("%s: %s: autocomplete %q, want %q", name, n, auto, wantAuto[n])
			}
		}
	}
}

// TestDefaultHashParams: without Options.HashParams the console hashes
// with auth.DefaultHashParams (the other tests use cheap ones), and a
// password-only account (set up, never enrolled) signs in to enrol only.
func TestDefaultHashParams(t *testing.T) {
	b := newFakeBackend()
	b.setupToken = testToken
	h := &harness{t: t, b: b, clock: &testClock{t: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)}, logs: &syncBuffer{}}
	c, err := New(b, Options{Now: h.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	h.c = c
	br := h.browser("192.168.1.20")
	expect(t, br.setup(testUser, "", testPass), http.StatusSeeOther, "/enroll")
	a, _, _ := b.Admin(t.Context())
	if auth.NeedsRehash(auth.Hash(a.PasswordHash)) {
		t.Fatalf("stored hash %q not made with the default parameters", a.PasswordHash[:30])
	}
	h.c.EndAllSessions()
	expect(t, br.password("nobody", testPass), http.StatusUnauthorized, "")
	h.clock.Advance(time.Minute)
	expect(t, br.password(testUser, testPass), http.StatusSeeOther, "/enroll")
	expect(t, br.get("/account"), http.StatusSeeOther, "/enroll")
	expect(t, br.get("/enroll"), http.StatusOK, "")
}

// TestAuthKeysExist: every catalog key the login's Go code names exists
// (TestCatalogsComplete checks the templates' keys).
func TestAuthKeysExist(t *testing.T) {
	cat, err := loadCatalogs()
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("auth*.go")
	files = append(files, "session.go")
	keyRe := regexp.MustCompile(`"(auth\.[a-z0-9_]+\.[a-z0-9_.]+)"`)
	n := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range keyRe.FindAllStringSubmatch(string(src), -1) {
			n++
			if !cat.has(m[1]) {
				t.Errorf("%s names %q, which no catalog has", f, m[1])
			}
		}
	}
	if n < 20 {
		t.Fatalf("found only %d keys: the scan is broken", n)
	}
}

package e2e

import (
	"context"
	"crypto/tls"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/console/auth"
	"github.com/cloudsteer/cloudsteer/controlplane/console/tlscert"
	"github.com/cloudsteer/cloudsteer/internal/privtest"
	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/browser"
)

// consolePin makes a TLS handshake with the console from the LAN client,
// checks that its certificate has the fingerprint the CLI printed, and
// returns the SPKI hash the browser is pinned to.
func (e *env) consolePin(t *testing.T, fingerprint string) string {
	t.Helper()
	var pin string
	privtest.InNetNS(t, e.lab.NS(lab.RoleLAN), func() {
		d := &net.Dialer{Timeout: 5 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp", "10.10.0.1:443", &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("TLS to the console: %v", err)
		}
		defer c.Close()
		cert := c.ConnectionState().PeerCertificates[0]
		if fp := tlscert.Fingerprint(cert.Raw); fp != fingerprint || fp == "" {
			t.Fatalf("the console's certificate %s is not the one the CLI names (%s)", fp, fingerprint)
		}
		pin = browser.SPKIHash(cert)
	})
	return pin
}

// pinnedCurl sends one request from the LAN client with curl, trusting the
// console's key only (--pinnedpubkey), and returns the status and the
// response headers (lower case). HTTP/1.1: over HTTP/2 curl reports the
// server's reset of an unread request body (a refusal that does not read
// the form) as a stream error (exit 92) instead of the answer.
func (e *env) pinnedCurl(t *testing.T, pin, method, url string, extra ...string) (int, string) {
	t.Helper()
	args := []string{"curl", "-sk", "--http1.1", "--pinnedpubkey", "sha256//" + pin, "--max-time", "5", "-X", method,
		"-D", "-", "-o", "/dev/null", "-w", "%{http_code}"}
	if method == "GET" {
		// -d would turn it into a POST with a body; keep GETs plain.
		var keep []string
		for i := 0; i < len(extra); i++ {
			if extra[i] == "-d" {
				i++
				continue
			}
			keep = append(keep, extra[i])
		}
		extra = keep
	}
	out, err := e.run(lab.RoleLAN, 10*time.Second, append(append(args, extra...), url)...)
	if err != nil {
		t.Fatalf("curl %s %s: %v", method, url, err)
	}
	i := strings.LastIndex(strings.TrimRight(out, "\n"), "\n")
	var status int
	fmt.Sscan(out[i+1:], &status)
	return status, strings.ToLower(out[:max(i, 0)])
}

// consoleUI is one browser on the console with the test's helpers; each
// helper fails the test on error.
type consoleUI struct {
	ctx    context.Context
	b      *browser.Browser
	cat    map[string]map[string]string
	shots  string
	closed bool
}

func newConsoleUI(ctx context.Context, t *testing.T, o browser.Options) *consoleUI {
	t.Helper()
	b, err := browser.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := browser.ArtifactsDir()
	if err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(dir, "console")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	u := &consoleUI{ctx: ctx, b: b, cat: loadConsoleCatalogs(t), shots: dir}
	t.Cleanup(func() {
		if t.Failed() && !u.closed {
			// What the page showed when the test failed.
			c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			url, _ := b.URL(c)
			text, _ := b.Text(c, "body")
			shot := filepath.Join(dir, "FAILED-"+strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())+".png")
			_ = b.Screenshot(c, shot, true)
			cancel()
			t.Logf("browser at %s (screenshot %s):\n%s", url, shot, text)
			if b.Stderr() != "" {
				t.Logf("browser driver stderr (last part):\n%s", b.Stderr())
			}
		}
		b.Close()
	})
	return u
}

func (u *consoleUI) close(t *testing.T) {
	t.Helper()
	u.checkClean(t)
	u.closed = true
	if err := u.b.Close(); err != nil {
		t.Error(err)
	}
}

// loadConsoleCatalogs reads the console's catalogs (lang → key → text).
func loadConsoleCatalogs(t *testing.T) map[string]map[string]string {
	t.Helper()
	cat := map[string]map[string]string{}
	for _, lang := range []string{"en", "ja"} {
		cat[lang] = map[string]string{}
		files, _ := filepath.Glob(filepath.Join("..", "controlplane", "console", "locales", lang, "*.json"))
		if len(files) == 0 {
			t.Fatalf("no %s catalogs", lang)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]string
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			for k, v := range m {
				cat[lang][k] = v
			}
		}
	}
	return cat
}

// T is the catalog text of key in lang, formatted with args; a missing key
// fails the test's expectations loudly.
func (u *consoleUI) T(lang, key string, args ...any) string {
	s, ok := u.cat[lang][key]
	if !ok {
		return "<missing " + lang + " " + key + ">"
	}
	if len(args) > 0 {
		return fmt.Sprintf(s, args...)
	}
	return s
}

func (u *consoleUI) gotoPath(t *testing.T, path string) browser.Response {
	t.Helper()
	r, err := u.b.Goto(u.ctx, consoleBase+path)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status >= 400 {
		t.Fatalf("GET %s: %d", path, r.Status)
	}
	return r
}

func (u *consoleUI) fill(t *testing.T, sel, v string) {
	t.Helper()
	if err := u.b.Fill(u.ctx, sel, v); err != nil {
		t.Fatal(err)
	}
}

func (u *consoleUI) click(t *testing.T, sel string) {
	t.Helper()
	if err := u.b.Click(u.ctx, sel); err != nil {
		t.Fatal(err)
	}
}

func (u *consoleUI) check(t *testing.T, sel string) {
	t.Helper()
	if err := u.b.Check(u.ctx, sel); err != nil {
		t.Fatal(err)
	}
}

func (u *consoleUI) uncheck(t *testing.T, sel string) {
	t.Helper()
	if err := u.b.Uncheck(u.ctx, sel); err != nil {
		t.Fatal(err)
	}
}

func (u *consoleUI) press(t *testing.T, sel, key string) {
	t.Helper()
	if err := u.b.Press(u.ctx, sel, key); err != nil {
		t.Fatal(err)
	}
}

func (u *consoleUI) text(t *testing.T, sel string) string {
	t.Helper()
	s, err := u.b.Text(u.ctx, sel)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// textOr is the text of sel, or def when nothing matches now.
func (u *consoleUI) textOr(t *testing.T, sel, def string) string {
	t.Helper()
	if u.count(t, sel) == 0 {
		return def
	}
	return u.text(t, sel)
}

func (u *consoleUI) texts(t *testing.T, sel string) []string {
	t.Helper()
	s, err := u.b.Texts(u.ctx, sel)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (u *consoleUI) count(t *testing.T, sel string) int {
	t.Helper()
	n, err := u.b.Count(u.ctx, sel)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// wantText waits until sel's text contains want.
func (u *consoleUI) wantText(t *testing.T, sel, want string) {
	t.Helper()
	if _, err := u.b.WaitForText(u.ctx, sel, want, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

// waitURL waits until the page's URL contains substr.
func (u *consoleUI) waitURL(t *testing.T, substr string) {
	t.Helper()
	if _, err := u.b.WaitForURL(u.ctx, substr, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

// waitPath waits until the page is path exactly.
func (u *consoleUI) waitPath(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		cur, err := u.b.URL(u.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if cur == consoleBase+path {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("page is %s, want %s", cur, consoleBase+path)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// wantState waits (reloading) until the status page says state.
func (u *consoleUI) wantState(t *testing.T, state string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, _, err := u.b.Attr(u.ctx, `[data-test="status-state"]`, "data-state")
		if err == nil && got == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("status state %q (%v), want %q", got, err, state)
		}
		time.Sleep(500 * time.Millisecond)
		u.gotoPath(t, "/")
	}
}

// login signs in with the password and the next TOTP code (a wrong code
// first when wrongFirst), waiting out the login limiter's backoff where it
// answers "too many attempts".
func (u *consoleUI) login(t *testing.T, clock *totpClock, wrongFirst bool) {
	t.Helper()
	u.gotoPath(t, "/login")
	u.submitLimited(t, "/login/2fa", func() {
		u.fill(t, `[data-test="login-user"]`, cbUser)
		u.fill(t, `[data-test="login-password"]`, cbPassword)
		u.click(t, `[data-test="login-submit"]`)
	})
	u.shot(t, "en-login2fa")
	if wrongFirst {
		u.fill(t, `[data-test="login2fa-code"]`, clock.wrong())
		u.click(t, `[data-test="login2fa-submit"]`)
		u.wantText(t, `[data-test="login-error"]`, u.T("en", "auth.login2fa.wrong"))
		// A failed login: the limiter's backoff (1 s, 2 s, … by the
		// client's count) first, or the next code would be spent on a
		// refusal and the clock would have to wait for another step.
		time.Sleep(2100 * time.Millisecond)
	}
	u.submitLimited(t, consoleBase+"/", func() {
		u.fill(t, `[data-test="login2fa-code"]`, clock.code())
		u.click(t, `[data-test="login2fa-submit"]`)
	})
	u.waitPath(t, "/")
}

// limitedFor reads the limiter's "too many attempts, try again in N
// seconds" message, in either language.
func (u *consoleUI) limitedFor(msg string) (secs int, ok bool) {
	for _, lang := range []string{"en", "ja"} {
		pat := "^" + strings.Replace(regexp.QuoteMeta(u.T(lang, "auth.login.limited")), "%d", `(\d+)`, 1) + "$"
		if m := regexp.MustCompile(pat).FindStringSubmatch(strings.TrimSpace(msg)); m != nil {
			n, err := strconv.Atoi(m[1])
			return n, err == nil
		}
	}
	return 0, false
}

// submitLimited runs submit until the page's URL ends with want, sleeping
// out each "too many attempts, wait N seconds" answer (at most a minute);
// any other error fails the test.
func (u *consoleUI) submitLimited(t *testing.T, want string, submit func()) {
	t.Helper()
	for range 6 {
		submit()
		deadline := time.Now().Add(10 * time.Second)
		for {
			cur, err := u.b.URL(u.ctx)
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasSuffix(cur, want) {
				return
			}
			if n, _ := u.b.Count(u.ctx, `[data-test="login-error"]`); n > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after submitting: page %s, no error, want %s", cur, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
		msg := u.text(t, `[data-test="login-error"]`)
		secs, ok := u.limitedFor(msg)
		if !ok || secs > 60 {
			t.Fatalf("submitting for %s: %q", want, msg)
		}
		time.Sleep(time.Duration(secs)*time.Second + 100*time.Millisecond)
	}
	t.Fatalf("still limited after 6 tries for %s", want)
}

// checkSessionCookie checks the session cookie's flags.
func (u *consoleUI) checkSessionCookie(t *testing.T) {
	t.Helper()
	cookies, err := u.b.Cookies(u.ctx, consoleBase+"/")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cookies {
		if c.Name == auth.SessionCookieName {
			if !c.Secure || !c.HTTPOnly || c.SameSite != "Strict" {
				t.Errorf("session cookie: secure=%v httponly=%v samesite=%s", c.Secure, c.HTTPOnly, c.SameSite)
			}
			return
		}
	}
	t.Errorf("no %s cookie after signing in", auth.SessionCookieName)
}

// shot photographs the whole page into the artifacts directory.
func (u *consoleUI) shot(t *testing.T, name string) {
	t.Helper()
	if err := u.b.Screenshot(u.ctx, filepath.Join(u.shots, name+".png"), true); err != nil {
		t.Errorf("screenshot %s: %v", name, err)
	}
}

// expectFailed checks that the page's script got status for method path,
// the failure the test provoked (other failures fail the test).
func (u *consoleUI) expectFailed(t *testing.T, method, path string, status int) {
	t.Helper()
	failed, err := u.b.FailedRequests(u.ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := false
	for _, r := range failed {
		if r.Method == method && r.URL == consoleBase+path && r.Status == status {
			seen = true
			continue
		}
		t.Errorf("a page's request failed: %s %s (%s): %d %s", r.Method, r.URL, r.Type, r.Status, r.Error)
	}
	if !seen {
		t.Errorf("no %s %s answered %d", method, path, status)
	}
}

// checkClean fails the test for any console error (a CSP violation, a
// script error), any failed request of a page's (its script's fetches,
// styles, images: the pages themselves answer 4xx where the test provokes
// it, and it checks those), and any request to another host than the
// console. chromium's own /favicon.ico fetch (the console
// has none) is not a page's request: Playwright reports it only as a
// console message, so "Failed to load resource" messages are left to the
// failed requests, which name their URL.
func (u *consoleUI) checkClean(t *testing.T) {
	t.Helper()
	failed, err := u.b.FailedRequests(u.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range failed {
		if r.Type == "document" && r.Status >= 400 && r.Status < 500 {
			continue
		}
		t.Errorf("a page's request failed: %s %s (%s): %d %s", r.Method, r.URL, r.Type, r.Status, r.Error)
	}
	errs, err := u.b.ConsoleErrors(u.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range errs {
		if !strings.HasPrefix(e, "Failed to load resource:") {
			t.Errorf("console error: %s", e)
		}
	}
	reqs, err := u.b.Requests(u.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reqs {
		// The console, its plain-HTTP CA page, inline images.
		if !strings.HasPrefix(r.URL, consoleBase+"/") && !strings.HasPrefix(r.URL, "http://10.10.0.1/") && !strings.HasPrefix(r.URL, "data:") {
			t.Errorf("the page requested %s %s", r.Method, r.URL)
		}
	}
}

// totpClock gives codes like an authenticator app, never one of a time
// step already used (the console refuses replays): the current step's
// code, or the next step's (accepted within the allowed skew), or it
// waits for the next step.
type totpClock struct {
	key  []byte
	last uint64 // the step of the last code given
}

func (c *totpClock) code() string {
	for {
		now := time.Now()
		cur := auth.TOTPStep(now)
		want := max(cur, c.last+1)
		if c.last == 0 {
			want = cur
		}
		if want <= cur+auth.TOTPSkewSteps {
			c.last = want
			return auth.HOTP(c.key, want, auth.TOTPDigits)
		}
		next := time.Unix(int64(cur+1)*int64(auth.TOTPPeriod/time.Second), 0)
		time.Sleep(time.Until(next) + 100*time.Millisecond)
	}
}

// wrong returns a code that no step within the skew accepts.
func (c *totpClock) wrong() string {
	cur := auth.TOTPStep(time.Now())
	valid := map[string]bool{}
	for s := cur - auth.TOTPSkewSteps - 1; s <= cur+auth.TOTPSkewSteps+1; s++ {
		valid[auth.HOTP(c.key, s, auth.TOTPDigits)] = true
	}
	for i := 0; ; i++ {
		w := fmt.Sprintf("%06d", (123457+i*7919)%1000000)
		if !valid[w] {
			return w
		}
	}
}

// totpB32 is the key as the enrolment page shows it (base32, no padding).
func totpB32(key []byte) string {
	return base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(key)
}

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

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/controlplane/console/auth"
	"github.com/cloudsteer/cloudsteer/controlplane/console/tlscert"
	"github.com/cloudsteer/cloudsteer/internal/privtest"
	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/browser"
	"github.com/cloudsteer/cloudsteer/lab/gateway"
)

// consoleBase is the console as the LAN client reaches it.
const consoleBase = "https://10.10.0.1"

// The administrator the test creates. The e-mail's local part and the user
// name are what the password rules forbid inside a password.
const (
	cbUser     = "admin"
	cbEmail    = "team@example.com"
	cbPassword = "Blue7sky!Tea"
)

// TestConsoleBrowser drives the web console in chromium, running in the
// LAN client's namespace, against the real daemon in the lab: first-run
// setup through the setup link with the password rules, TOTP enrolment and
// two-step login with a wrong code, bypass toggles that the LAN client's
// traffic follows (the cloud proxy seeing nothing), pause and resume, the
// quick test, a block the client causes showing on the events page by
// itself, Japanese, CSRF-less and session-less requests refused, a phone
// width, keyboard use, and the login lockout. Each page is photographed in
// both languages (CLOUDSTEER_ARTIFACTS, default e2e/out/screenshots).
func TestConsoleBrowser(t *testing.T) {
	browser.Require(t)
	e := newEnv(t, false)
	g := e.startGateway(gateway.Options{})
	sock := gateway.SocketPath(e.lab, "gw")
	www := site(t, "www.example.com")
	lan := e.lab.NS(lab.RoleLAN)

	// Pin the certificate the CLI vouches for (its fingerprint), as an
	// admin would check it on the first visit.
	var info api.ConsoleInfo
	e.cliJSON(sock, &info, "console", "info")
	pin := e.consolePin(t, info.Fingerprint)

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	ui := newConsoleUI(ctx, t, browser.Options{NetNS: lan, Locale: "en-US", SPKIPins: []string{pin}})
	b := ui.b
	clock := &totpClock{}
	var recovery []string
	// The comment cells of the system bypass entries, in English.
	const systemComment = `tr[data-source="system"] td:nth-child(3)`
	var systemRowEN []string

	// Each step ends with the page check: no CSP violation or script
	// error, no failed request of a page's script, no foreign host.
	step := func(name string, f func(t *testing.T)) {
		t.Helper()
		if !t.Run(name, func(t *testing.T) { f(t); ui.checkClean(t) }) {
			t.FailNow() // every step builds on the ones before
		}
	}

	step("no admin yet: the setup link is needed", func(t *testing.T) {
		r := ui.gotoPath(t, "/")
		if !strings.HasSuffix(r.URL, "/setup") {
			t.Fatalf("/ without an admin went to %s, want /setup", r.URL)
		}
		ui.wantText(t, `[data-test="setup-needed"]`, ui.T("en", "auth.setup.needed"))
		ui.shot(t, "en-setup-needed")
		if r, err := b.Goto(ctx, consoleBase+"/setup?token="+strings.Repeat("A", 43)); err != nil || r.Status != 403 {
			t.Fatalf("setup with a wrong token: %+v, %v; want 403", r, err)
		}
		ui.wantText(t, `[data-test="setup-invalid"]`, ui.T("en", "auth.setup.invalid"))
		if n := ui.count(t, `[data-test="setup-form"]`); n != 0 {
			t.Fatal("a wrong token got the setup form")
		}
	})

	step("setup: every password rule refused with its own message", func(t *testing.T) {
		out, errOut, code := e.cli(sock, "console", "setup-link")
		link := regexp.MustCompile(`https://10\.10\.0\.1/setup\?token=[A-Za-z0-9_-]{43}`).FindString(out)
		if code != 0 || link == "" {
			t.Fatalf("console setup-link: exit %d %q %q", code, out, errOut)
		}
		if _, err := b.Goto(ctx, link); err != nil {
			t.Fatal(err)
		}
		ui.shot(t, "en-setup")
		for _, c := range []struct {
			pw, pw2 string
			want    string
		}{
			{"ab1", "", ui.T("en", "auth.rule.min_length", auth.MinPasswordLength)},
			{"abcdefgh", "", ui.T("en", "auth.rule.needs_digit")},
			{"12345678", "", ui.T("en", "auth.rule.needs_letter")},
			{"ab1cdd2ef", "", ui.T("en", "auth.rule.repeated_char")},
			{"x9Admin7q", "", ui.T("en", "auth.rule.contains_user")},
			{"q7team3z", "", ui.T("en", "auth.rule.contains_email")},
			{cbPassword, cbPassword + "x", ui.T("en", "auth.error.password_mismatch")},
		} {
			if c.pw2 == "" {
				c.pw2 = c.pw
			}
			ui.fill(t, `[data-test="setup-user"]`, cbUser)
			ui.fill(t, `[data-test="setup-email"]`, cbEmail)
			ui.fill(t, `[data-test="setup-password"]`, c.pw)
			ui.fill(t, `[data-test="setup-password2"]`, c.pw2)
			ui.click(t, `[data-test="setup-submit"]`)
			if err := b.WaitFor(ctx, `[data-test="setup-error"]`, browser.Visible, 10*time.Second); err != nil {
				t.Fatalf("password %q: no error shown: %v", c.pw, err)
			}
			got := ui.texts(t, `[data-test="setup-error"]`)
			if len(got) != 1 || got[0] != c.want {
				t.Errorf("password %q: errors %q, want just %q", c.pw, got, c.want)
			}
		}
		ui.shot(t, "en-setup-errors")
		ui.fill(t, `[data-test="setup-user"]`, cbUser)
		ui.fill(t, `[data-test="setup-email"]`, cbEmail)
		ui.fill(t, `[data-test="setup-password"]`, cbPassword)
		ui.fill(t, `[data-test="setup-password2"]`, cbPassword)
		ui.click(t, `[data-test="setup-submit"]`)
		ui.waitURL(t, "/enroll")
		// The link works once.
		if r, err := b.Fetch(ctx, browser.Request{URL: link}); err != nil || !strings.Contains(r.Body, `data-test="setup-done"`) || strings.Contains(r.Body, `data-test="setup-form"`) {
			t.Fatalf("the setup link after setup: %d, %v", r.Status, err)
		}
	})

	step("TOTP enrolment: a wrong code, then the app's code", func(t *testing.T) {
		secret := strings.TrimSpace(ui.text(t, `[data-test="enroll-secret"]`))
		key, err := auth.DecodeTOTPSecret(secret)
		if err != nil {
			t.Fatalf("the page's secret %q: %v", secret, err)
		}
		clock.key = key
		if src, ok, err := b.Attr(ctx, `[data-test="enroll-qr"]`, "src"); err != nil || !ok || !strings.HasPrefix(src, "data:image/png;base64,") {
			t.Errorf("QR code src %.40q, %v: want an inline PNG", src, err)
		}
		ui.shot(t, "en-enroll")
		ui.fill(t, `[data-test="enroll-code"]`, clock.wrong())
		ui.click(t, `[data-test="enroll-submit"]`)
		ui.wantText(t, `[data-test="enroll-errors"]`, ui.T("en", "auth.enroll.wrong_code"))
		ui.fill(t, `[data-test="enroll-code"]`, clock.code())
		ui.click(t, `[data-test="enroll-submit"]`)
		ui.waitURL(t, "/recovery")
		recovery = ui.texts(t, `[data-test="recovery-code"]`)
		if len(recovery) < 8 {
			t.Fatalf("recovery codes: %d, want at least 8", len(recovery))
		}
		ui.shot(t, "en-recovery")
		ui.click(t, `[data-test="recovery-continue"]`)
		ui.waitPath(t, "/")
		ui.wantState(t, "protected")
		ui.checkSessionCookie(t)
	})

	step("sign out, sign in with password and a TOTP code, a wrong code first", func(t *testing.T) {
		ui.click(t, `[data-test="logout"]`)
		ui.waitURL(t, "/login")
		ui.shot(t, "en-login")
		// Signed out means signed out: the old pages send to the login.
		if r := ui.gotoPath(t, "/bypass"); !strings.HasSuffix(r.URL, "/login") {
			t.Fatalf("/bypass after logout went to %s", r.URL)
		}
		ui.fill(t, `[data-test="login-user"]`, cbUser)
		ui.fill(t, `[data-test="login-password"]`, "Wrong7pass")
		ui.click(t, `[data-test="login-submit"]`)
		ui.wantText(t, `[data-test="login-error"]`, ui.T("en", "auth.login.wrong"))
		ui.login(t, clock, true)
		ui.wantState(t, "protected")
	})

	step("status page", func(t *testing.T) {
		ui.gotoPath(t, "/")
		ui.wantText(t, `[data-test="status-state"]`, ui.T("en", "status.protected"))
		for _, c := range []string{"status-steered", "status-bypassed", "status-blocked"} {
			if _, err := strconv.Atoi(strings.TrimSpace(ui.text(t, `[data-test="`+c+`"]`))); err != nil {
				t.Errorf("%s is not a count: %v", c, err)
			}
		}
	})

	step("bypass toggles, and the client's traffic follows", func(t *testing.T) {
		ui.gotoPath(t, "/bypass")
		if got := e.pathOf(t, "www.example.com", www.V4.String(), "cb-before"); got != "proxy" {
			t.Fatalf("before: %s", got)
		}
		// System entries are locked, with the reason.
		if _, disabled, err := b.Attr(ctx, `[data-test="bypass-toggle-*.akaetp.net"]`, "disabled"); err != nil || !disabled {
			t.Errorf("the system entry's switch is not disabled: %v", err)
		}
		systemRowEN = ui.texts(t, systemComment)
		// A bad value gets the API's validation message.
		ui.fill(t, `[data-test="bypass-add-value"]`, "not a name")
		ui.click(t, `[data-test="bypass-add-submit"]`)
		if msg, err := b.WaitForText(ctx, `[data-test="bypass-error"]`, "", 5*time.Second); err != nil || strings.TrimSpace(msg) == "" {
			t.Errorf("bad value: error %q, %v", msg, err)
		}
		ui.expectFailed(t, "POST", "/api/v1/bypass", 400)
		ui.fill(t, `[data-test="bypass-add-value"]`, "www.example.com")
		ui.fill(t, `[data-test="bypass-add-comment"]`, "browser test")
		ui.click(t, `[data-test="bypass-add-submit"]`)
		toggle := `[data-test="bypass-toggle-www.example.com"]`
		if err := b.WaitFor(ctx, toggle, browser.Visible, 10*time.Second); err != nil {
			t.Fatalf("the added entry has no switch: %v", err)
		}
		if on, err := b.IsChecked(ctx, toggle); err != nil || !on {
			t.Fatalf("the added entry is off: %v", err)
		}
		ui.shot(t, "en-bypass")
		follows := func(tag, want string) {
			t.Helper()
			time.Sleep(time.Second) // applies within a second
			if got := e.pathOf(t, "www.example.com", www.V4.String(), tag); got != want {
				t.Fatalf("%s: the client's flow went %s, want %s", tag, got, want)
			}
		}
		follows("cb-added", "bypass")
		ui.uncheck(t, toggle)
		ui.wantText(t, `[data-test="bypass-msg"]`, ui.T("en", "bypass.saved"))
		follows("cb-off", "proxy")
		ui.check(t, toggle)
		ui.wantText(t, `[data-test="bypass-msg"]`, ui.T("en", "bypass.saved"))
		follows("cb-on", "bypass")
		// The page shows the stored state after a reload.
		ui.gotoPath(t, "/bypass")
		if on, err := b.IsChecked(ctx, toggle); err != nil || !on {
			t.Fatalf("after reload the switch is off: %v", err)
		}
		ui.click(t, `[data-test="bypass-remove-www.example.com"]`)
		if err := b.WaitFor(ctx, `[data-test="bypass-row-www.example.com"]`, browser.Detached, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		follows("cb-removed", "proxy")
	})

	step("pause and resume, the client's traffic following", func(t *testing.T) {
		ui.gotoPath(t, "/pause")
		ui.shot(t, "en-pause")
		ui.click(t, `[data-test="pause-15m"]`)
		if err := b.WaitFor(ctx, `[data-test="pause-state"][data-paused="true"]`, browser.Attached, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		left := func() time.Duration {
			t.Helper()
			var h, m, s int
			txt := ui.text(t, `[data-test="pause-remaining"]`)
			if _, err := fmt.Sscanf(strings.TrimSpace(txt), "%d:%d:%d", &h, &m, &s); err != nil {
				t.Fatalf("remaining %q: %v", txt, err)
			}
			return time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(s)*time.Second
		}
		first := left()
		if first > 15*time.Minute || first < 14*time.Minute {
			t.Fatalf("remaining %v after pausing for 15 minutes", first)
		}
		ui.shot(t, "en-pause-paused")
		if got := e.pathOf(t, "www.example.com", www.V4.String(), "cb-paused"); got != "bypass" {
			t.Fatalf("paused: the client's flow went %s", got)
		}
		time.Sleep(2100 * time.Millisecond)
		if second := left(); second >= first || first-second > 4*time.Second {
			t.Errorf("the countdown went from %v to %v in 2s", first, second)
		}
		ui.gotoPath(t, "/")
		ui.wantState(t, "paused")
		ui.gotoPath(t, "/pause")
		ui.click(t, `[data-test="pause-resume"]`)
		if err := b.WaitFor(ctx, `[data-test="pause-state"][data-paused="false"]`, browser.Attached, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if got := e.pathOf(t, "www.example.com", www.V4.String(), "cb-resumed"); got != "proxy" {
			t.Fatalf("resumed: the client's flow went %s", got)
		}
		ui.gotoPath(t, "/")
		ui.wantState(t, "protected")
	})

	step("quick test", func(t *testing.T) {
		ui.gotoPath(t, "/diagnostics")
		ui.click(t, `[data-test="diag-run"]`)
		ui.wantText(t, `[data-test="diag-live"]`, ui.T("en", "diag.done"))
		for _, c := range []string{"install", "network", "components", "settings"} {
			sel := `[data-test="diag-check-` + c + `"]`
			if ok, _, err := b.Attr(ctx, sel, "data-ok"); err != nil || ok != "true" {
				t.Errorf("check %s: data-ok %q, %v; text %q", c, ok, err, ui.text(t, sel))
			}
			if txt := ui.text(t, sel); !strings.Contains(txt, ui.T("en", "diag.check."+c)) || !strings.Contains(txt, ui.T("en", "diag.pass")) {
				t.Errorf("check %s reads %q", c, txt)
			}
		}
		if _, ok, err := b.Attr(ctx, `[data-test="diag-time"] time`, "datetime"); err != nil || !ok {
			t.Errorf("no time of the run: %v", err)
		}
		ui.shot(t, "en-diagnostics")
		ui.gotoPath(t, "/")
		if ok, _, err := b.Attr(ctx, `[data-test="status-lasttest"]`, "data-ok"); err != nil || ok != "true" {
			t.Errorf("status page's last test: %q, %v", ok, err)
		}
	})

	step("events: a block the client just caused shows up by itself", func(t *testing.T) {
		ui.gotoPath(t, "/events")
		before := ui.count(t, `[data-test="events-row"][data-client="`+clientV4+`"]`)
		sports := site(t, "scores.sports.example")
		e.curl("https://scores.sports.example/?case=cb-block", "scores.sports.example", sports.V4.String())
		// The page refreshes itself (every 5 s): no reload here.
		row, err := b.WaitForText(ctx, `[data-test="events-row"][data-client="`+clientV4+`"]`, "scores.sports.example", 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(row, ui.T("en", "event.reason.blocked")) {
			t.Errorf("the block's row reads %q, want %q", row, ui.T("en", "event.reason.blocked"))
		}
		if n := ui.count(t, `[data-test="events-row"][data-client="`+clientV4+`"]`); n <= before {
			t.Errorf("client rows %d → %d", before, n)
		}
		if _, err := b.WaitForText(ctx, `[data-test="events-live"]`, strings.SplitN(ui.T("en", "events.new"), "%d", 2)[1], 5*time.Second); err != nil {
			t.Errorf("no notice of new events: %v", err)
		}
		// Newest first.
		if first := ui.texts(t, `[data-test="events-row"]`); len(first) == 0 || !strings.Contains(first[0], "scores.sports.example") {
			t.Errorf("the newest row is not the block: %q", first)
		}
		// Name the client.
		ui.click(t, `[data-test="events-row"][data-client="`+clientV4+`"] summary >> nth=0`)
		ui.fill(t, `[data-test="events-client-input-`+clientV4+`"] >> nth=0`, "Reception PC")
		ui.click(t, `[data-test="events-client-save-`+clientV4+`"] >> nth=0`)
		if _, err := b.WaitForText(ctx, `[data-test="events-client-name-`+clientV4+`"]`, "Reception PC", 5*time.Second); err != nil {
			t.Error(err)
		}
		// Filter by name.
		ui.fill(t, `[data-test="events-filter-name"]`, "sports")
		ui.click(t, `[data-test="events-filter-submit"]`)
		ui.waitURL(t, "name=sports")
		for _, r := range ui.texts(t, `[data-test="events-row"]`) {
			if !strings.Contains(r, "sports") {
				t.Errorf("filtered by name, a row reads %q", r)
			}
		}
		ui.shot(t, "en-events")
		// Another block while a different page is open: the badge.
		ui.gotoPath(t, "/")
		if n := ui.count(t, `[data-test="badge"]`); n != 0 {
			t.Errorf("a badge right after the events page was seen: %q", ui.text(t, `[data-test="badge"]`))
		}
		e.curl("http://scores.sports.example/?case=cb-badge", "scores.sports.example", sports.V4.String())
		badge := ""
		eventually(5*time.Second, func() bool {
			ui.gotoPath(t, "/")
			badge = strings.TrimSpace(ui.textOr(t, `[data-test="badge"]`, ""))
			return badge != ""
		})
		if n, err := strconv.Atoi(badge); err != nil || n < 1 {
			t.Errorf("badge %q after a new block: %v", badge, err)
		}
	})

	step("settings and certificate pages", func(t *testing.T) {
		ui.gotoPath(t, "/settings")
		if fp := strings.TrimSpace(ui.text(t, `[data-test="settings-fingerprint"]`)); fp != info.Fingerprint {
			t.Errorf("settings fingerprint %q, CLI %q", fp, info.Fingerprint)
		}
		if code := ui.text(t, `[data-test="settings-code"]`); strings.Contains(code, lab.EntitlementCode) {
			t.Error("the entitlement code is shown unmasked")
		}
		ui.shot(t, "en-settings")
		ui.gotoPath(t, "/certificate")
		ui.shot(t, "en-certificate")
		ui.gotoPath(t, "/account")
		ui.shot(t, "en-account")
		// The last rule: not one of the last passwords.
		ui.fill(t, `[data-test="account-current"]`, cbPassword)
		ui.fill(t, `[data-test="account-password"]`, cbPassword)
		ui.fill(t, `[data-test="account-password2"]`, cbPassword)
		ui.click(t, `[data-test="account-password-submit"]`)
		if err := b.WaitFor(ctx, `[data-test="account-password-error"]`, browser.Visible, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		want := ui.T("en", "auth.rule.reused", auth.PasswordHistoryDepth)
		if got := ui.texts(t, `[data-test="account-password-error"]`); len(got) != 1 || got[0] != want {
			t.Errorf("the same password again: %q, want just %q", got, want)
		}
	})

	step("a recovery code signs in once", func(t *testing.T) {
		signIn := func() {
			t.Helper()
			ui.click(t, `[data-test="logout"]`)
			ui.waitURL(t, "/login")
			ui.submitLimited(t, "/login/2fa", func() {
				ui.fill(t, `[data-test="login-user"]`, cbUser)
				ui.fill(t, `[data-test="login-password"]`, cbPassword)
				ui.click(t, `[data-test="login-submit"]`)
			})
		}
		signIn()
		ui.submitLimited(t, consoleBase+"/", func() {
			ui.fill(t, `[data-test="login2fa-code"]`, recovery[0])
			ui.click(t, `[data-test="login2fa-submit"]`)
		})
		ui.gotoPath(t, "/account")
		if got, want := ui.text(t, `[data-test="account-recovery-left"]`), ui.T("en", "auth.account.recovery_left", len(recovery)-1); got != want {
			t.Errorf("after using one: %q, want %q", got, want)
		}
		signIn()
		ui.fill(t, `[data-test="login2fa-code"]`, recovery[0])
		ui.click(t, `[data-test="login2fa-submit"]`)
		ui.wantText(t, `[data-test="login-error"]`, ui.T("en", "auth.login2fa.wrong"))
		time.Sleep(4100 * time.Millisecond) // the client's third failure's backoff
		ui.submitLimited(t, consoleBase+"/", func() {
			ui.fill(t, `[data-test="login2fa-code"]`, clock.code())
			ui.click(t, `[data-test="login2fa-submit"]`)
		})
		ui.wantState(t, "protected")
	})

	step("Japanese", func(t *testing.T) {
		ui.gotoPath(t, "/")
		if _, err := b.SelectOption(ctx, `[data-test="lang"]`, "ja"); err != nil {
			t.Fatal(err)
		}
		ui.click(t, `[data-test="lang-apply"]`)
		ui.wantText(t, `[data-test="status-state"]`, ui.T("ja", "status.protected"))
		if lang, _, _ := b.Attr(ctx, "html", "lang"); lang != "ja" {
			t.Errorf("html lang %q", lang)
		}
		nav := strings.Join(ui.texts(t, "nav a"), "|")
		for _, k := range []string{"nav.status", "nav.bypass", "nav.pause", "nav.events", "nav.diagnostics", "nav.settings", "nav.certificate"} {
			if !strings.Contains(nav, ui.T("ja", k)) {
				t.Errorf("navigation %q lacks %s %q", nav, k, ui.T("ja", k))
			}
		}
		// Each page in Japanese: its own strings, no English title left.
		for _, p := range []struct{ path, name, key string }{
			{"/", "status", "status.title"}, {"/bypass", "bypass", "bypass.title"}, {"/pause", "pause", "pause.title"},
			{"/events", "events", "events.title"}, {"/diagnostics", "diagnostics", "diag.title"},
			{"/settings", "settings", "settings.title"}, {"/certificate", "certificate", "cert.title"},
			{"/account", "account", "auth.account.title"},
		} {
			ui.gotoPath(t, p.path)
			if h1 := ui.text(t, "h1"); h1 != ui.T("ja", p.key) {
				t.Errorf("%s: h1 %q, want %q", p.path, h1, ui.T("ja", p.key))
			}
			ui.shot(t, "ja-"+p.name)
		}
		// The product's own texts in the lists are Japanese too (an
		// admin's comments stay as typed).
		ui.gotoPath(t, "/bypass")
		for i, c := range ui.texts(t, systemComment) {
			if i < len(systemRowEN) && c == systemRowEN[i] {
				t.Errorf("a system entry's comment is English on the Japanese page: %q", c)
			}
		}
		ui.gotoPath(t, "/pause")
		ui.wantText(t, `[data-test="pause-15m"]`, ui.T("ja", "pause.for_15m"))
		ui.gotoPath(t, "/diagnostics")
		ui.click(t, `[data-test="diag-run"]`)
		ui.wantText(t, `[data-test="diag-live"]`, ui.T("ja", "diag.done"))
		ui.wantText(t, `[data-test="diag-check-network"]`, ui.T("ja", "diag.pass"))
		ui.shot(t, "ja-diagnostics-run")
		// The choice is kept by this browser: a reload stays Japanese.
		ui.gotoPath(t, "/events")
		ui.wantText(t, "h1", ui.T("ja", "events.title"))

		// A browser that asks for Japanese gets it before signing in.
		ja := newConsoleUI(ctx, t, browser.Options{NetNS: lan, Locale: "ja-JP", SPKIPins: []string{pin}})
		ja.gotoPath(t, "/")
		ja.waitURL(t, "/login")
		ja.wantText(t, "h1", ui.T("ja", "auth.login.title"))
		ja.shot(t, "ja-login")
		ja.gotoPath(t, "/setup")
		ja.shot(t, "ja-setup-done")
		ja.close(t)

		// Back to English.
		ui.gotoPath(t, "/")
		if _, err := b.SelectOption(ctx, `[data-test="lang"]`, "en"); err != nil {
			t.Fatal(err)
		}
		ui.click(t, `[data-test="lang-apply"]`)
		ui.wantText(t, `[data-test="status-state"]`, ui.T("en", "status.protected"))
		ui.shot(t, "en-status")
	})

	step("requests without the CSRF token or without a session are refused", func(t *testing.T) {
		ui.gotoPath(t, "/")
		csrf, ok, err := b.Attr(ctx, "body", "data-csrf")
		if err != nil || !ok || len(csrf) < 16 {
			t.Fatalf("the page's CSRF token: %v %v", ok, err)
		}
		pause := func(headers map[string]string) browser.HTTPResponse {
			t.Helper()
			h := map[string]string{"Content-Type": "application/json"}
			for k, v := range headers {
				h[k] = v
			}
			r, err := b.Fetch(ctx, browser.Request{Method: "POST", URL: consoleBase + "/api/v1/pause", Headers: h, Body: `{"duration":"15m"}`})
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		paused := func() bool {
			t.Helper()
			r, err := b.Fetch(ctx, browser.Request{URL: consoleBase + "/api/v1/status"})
			if err != nil || r.Status != 200 {
				t.Fatalf("status with the session: %+v, %v", r, err)
			}
			var st struct{ State string }
			if err := json.Unmarshal([]byte(r.Body), &st); err != nil {
				t.Fatal(err)
			}
			return st.State == "paused"
		}
		if r := pause(nil); r.Status != 403 {
			t.Errorf("pause with the session but no CSRF token: %d %s", r.Status, r.Body)
		}
		if r := pause(map[string]string{"X-CSRF-Token": csrf[:len(csrf)-2] + "xx"}); r.Status != 403 {
			t.Errorf("pause with a wrong CSRF token: %d %s", r.Status, r.Body)
		}
		if paused() {
			t.Fatal("a refused request paused protection")
		}
		for _, f := range []struct{ path, body string }{
			{"/clients", "client=" + clientV4 + "&name=evil"},
			{"/logout", ""},
		} {
			r, err := b.Fetch(ctx, browser.Request{Method: "POST", URL: consoleBase + f.path,
				Headers: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, Body: f.body + "&x=1"})
			if err != nil || r.Status != 403 {
				t.Errorf("POST %s without the CSRF token: %d, %v", f.path, r.Status, err)
			}
		}
		// Control: the same request with the page's token works.
		if r := pause(map[string]string{"X-CSRF-Token": csrf}); r.Status != 200 || !paused() {
			t.Fatalf("pause with the token: %d %s", r.Status, r.Body)
		}
		r, err := b.Fetch(ctx, browser.Request{Method: "POST", URL: consoleBase + "/api/v1/resume", Headers: map[string]string{"X-CSRF-Token": csrf}})
		if err != nil || r.Status != 200 || paused() {
			t.Fatalf("resume with the token: %+v, %v", r, err)
		}
		// No session: curl from the LAN client, pinned to the same key.
		for _, c := range []struct {
			method, path string
			want         int
		}{
			{"GET", "/api/v1/status", 401},
			{"POST", "/api/v1/pause", 401},
			{"GET", "/events", 303},
			{"POST", "/clients", 303},
		} {
			status, hdr := e.pinnedCurl(t, pin, c.method, consoleBase+c.path, "-H", "X-CSRF-Token: "+csrf, "-d", `{"duration":"15m"}`)
			if status != c.want {
				t.Errorf("%s %s without a session: %d, want %d\n%s", c.method, c.path, status, c.want, hdr)
			}
			if c.want == 303 && !strings.Contains(hdr, "location: /login") {
				t.Errorf("%s %s without a session: not sent to /login:\n%s", c.method, c.path, hdr)
			}
		}
		if paused() {
			t.Fatal("a session-less request paused protection")
		}
	})

	step("phone width and keyboard", func(t *testing.T) {
		if err := b.SetViewport(ctx, browser.Phone); err != nil {
			t.Fatal(err)
		}
		for _, p := range []struct{ path, name string }{{"/", "status"}, {"/bypass", "bypass"}, {"/pause", "pause"}, {"/events", "events"}} {
			ui.gotoPath(t, p.path)
			l, err := b.Layout(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if l.InnerWidth != browser.Phone.Width || l.ScrollWidth > l.ClientWidth {
				t.Errorf("%s at phone width: %+v (scrolls sideways)", p.path, l)
			}
			ui.shot(t, "en-phone-"+p.name)
		}
		// The bypass switches work on the phone, and by keyboard.
		ui.gotoPath(t, "/bypass")
		ui.fill(t, `[data-test="bypass-add-value"]`, "bank.example")
		ui.press(t, `[data-test="bypass-add-value"]`, "Enter")
		toggle := `[data-test="bypass-toggle-bank.example"]`
		if err := b.WaitFor(ctx, toggle, browser.Visible, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := b.Focus(ctx, toggle); err != nil {
			t.Fatal(err)
		}
		ui.press(t, toggle, "Space")
		ui.wantText(t, `[data-test="bypass-msg"]`, ui.T("en", "bypass.saved"))
		if on, err := b.IsChecked(ctx, toggle); err != nil || on {
			t.Errorf("Space on the focused switch left it on: %v", err)
		}
		ui.press(t, toggle, "Tab")
		if f, err := b.Focused(ctx); err != nil || f.Tag == "" {
			t.Errorf("Tab from the switch: focus %+v, %v", f, err)
		}
		ui.shot(t, "en-phone-bypass-added")
		if err := b.SetViewport(ctx, browser.Desktop); err != nil {
			t.Fatal(err)
		}
	})

	step("wrong passwords lock the login, not the signed-in admin", func(t *testing.T) {
		guest := newConsoleUI(ctx, t, browser.Options{NetNS: lan, Locale: "en-US", SPKIPins: []string{pin}})
		limitedRE := regexp.MustCompile(`\d+`)
		locked := false
		failures := 0
		for i := 0; i < 12 && !locked; i++ {
			guest.gotoPath(t, "/login")
			guest.fill(t, `[data-test="login-user"]`, cbUser)
			guest.fill(t, `[data-test="login-password"]`, fmt.Sprintf("Guess%dword", i))
			guest.click(t, `[data-test="login-submit"]`)
			msg := guest.text(t, `[data-test="login-error"]`)
			switch {
			case msg == ui.T("en", "auth.login.wrong"):
				failures++
			case strings.HasPrefix(msg, strings.SplitN(ui.T("en", "auth.login.limited"), "%d", 2)[0]):
				secs, _ := strconv.Atoi(limitedRE.FindString(msg))
				if secs > 60 {
					locked = true
					break
				}
				time.Sleep(time.Duration(secs)*time.Second + 100*time.Millisecond)
			default:
				t.Fatalf("login error %q", msg)
			}
		}
		if !locked || failures > auth.LimiterLockoutAfter {
			t.Fatalf("after %d wrong passwords: locked %v", failures, locked)
		}
		guest.shot(t, "en-login-locked")
		// Now even the right password is refused from here…
		guest.fill(t, `[data-test="login-user"]`, cbUser)
		guest.fill(t, `[data-test="login-password"]`, cbPassword)
		guest.click(t, `[data-test="login-submit"]`)
		if msg := guest.text(t, `[data-test="login-error"]`); !strings.HasPrefix(msg, strings.SplitN(ui.T("en", "auth.login.limited"), "%d", 2)[0]) {
			t.Errorf("the right password during the lockout: %q", msg)
		}
		if u, _ := guest.b.URL(ctx); u != consoleBase+"/login" {
			t.Errorf("the lockout let the right password through to %s", u)
		}
		guest.close(t)
		// …while the admin's session goes on, and the events say why.
		ui.gotoPath(t, "/events?name="+cbUser)
		rows := ui.texts(t, `[data-test="events-row"]`)
		n := 0
		for _, r := range rows {
			if strings.Contains(r, ui.T("en", "event.reason.login_failed")) {
				n++
			}
		}
		if n < failures {
			t.Errorf("%d failed sign-in events for %d failures: %q", n, failures, rows)
		}
	})

	step("secrets stay out of the daemon's log", func(t *testing.T) {
		log := g.Log()
		for what, s := range map[string]string{"password": cbPassword, "TOTP secret": totpB32(clock.key)} {
			if strings.Contains(log, s) {
				t.Errorf("the %s is in the daemon's log", what)
			}
		}
		for _, c := range recovery {
			if strings.Contains(log, c) {
				t.Error("a recovery code is in the daemon's log")
			}
		}
	})
}

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
// response headers (lower case).
func (e *env) pinnedCurl(t *testing.T, pin, method, url string, extra ...string) (int, string) {
	t.Helper()
	args := []string{"curl", "-sk", "--pinnedpubkey", "sha256//" + pin, "--max-time", "5", "-X", method,
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

// submitLimited runs submit until the page's URL ends with want, sleeping
// out each "too many attempts, wait N seconds" answer (at most a minute);
// any other error fails the test.
func (u *consoleUI) submitLimited(t *testing.T, want string, submit func()) {
	t.Helper()
	prefix := strings.SplitN(u.T("en", "auth.login.limited"), "%d", 2)[0]
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
		secs, err := strconv.Atoi(regexp.MustCompile(`\d+`).FindString(msg))
		if !strings.HasPrefix(msg, prefix) || err != nil || secs > 60 {
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
		if !strings.HasPrefix(r.URL, consoleBase+"/") && !strings.HasPrefix(r.URL, "data:") {
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

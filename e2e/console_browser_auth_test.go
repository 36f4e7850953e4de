package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/console/auth"
	"github.com/cloudsteer/cloudsteer/lab/browser"
)

// This file holds the sign-in steps of TestConsoleBrowser: first-run setup,
// enrolment, two-step sign-in, recovery codes, lockout.

// setupNeeded is the step "no admin yet: the setup link is needed".
func (cr *cbRun) setupNeeded(t *testing.T) {
	ctx, b, ui := cr.ctx, cr.ui.b, cr.ui
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
}

// setupRules is the step "setup: every password rule refused with its own
// message".
func (cr *cbRun) setupRules(t *testing.T) {
	ctx, b, ui, e, sock := cr.ctx, cr.ui.b, cr.ui, cr.e, cr.sock
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
}

// enrol is the step "TOTP enrolment: a wrong code, then the app's code".
func (cr *cbRun) enrol(t *testing.T) {
	ctx, b, ui, clock := cr.ctx, cr.ui.b, cr.ui, cr.clock
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
	cr.recovery = ui.texts(t, `[data-test="recovery-code"]`)
	if len(cr.recovery) < 8 {
		t.Fatalf("recovery codes: %d, want at least 8", len(cr.recovery))
	}
	ui.shot(t, "en-recovery")
	ui.click(t, `[data-test="recovery-continue"]`)
	ui.waitPath(t, "/")
	ui.wantState(t, "protected")
	ui.checkSessionCookie(t)
}

// signIn is the step "sign out, sign in with password and a TOTP code, a
// wrong code first".
func (cr *cbRun) signIn(t *testing.T) {
	ui, clock := cr.ui, cr.clock
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
}

// recoveryCode is the step "a recovery code signs in once".
func (cr *cbRun) recoveryCode(t *testing.T) {
	ui, clock := cr.ui, cr.clock
	signIn := func() {
		t.Helper()
		ui.gotoPath(t, "/")
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
		ui.fill(t, `[data-test="login2fa-code"]`, cr.recovery[0])
		ui.click(t, `[data-test="login2fa-submit"]`)
	})
	ui.gotoPath(t, "/account")
	if got, want := ui.text(t, `[data-test="account-recovery-left"]`), ui.T("en", "auth.account.recovery_left", len(cr.recovery)-1); got != want {
		t.Errorf("after using one: %q, want %q", got, want)
	}
	signIn()
	ui.fill(t, `[data-test="login2fa-code"]`, cr.recovery[0])
	ui.click(t, `[data-test="login2fa-submit"]`)
	ui.wantText(t, `[data-test="login-error"]`, ui.T("en", "auth.login2fa.wrong"))
	time.Sleep(4100 * time.Millisecond) // the client's third failure's backoff
	ui.submitLimited(t, consoleBase+"/", func() {
		ui.fill(t, `[data-test="login2fa-code"]`, clock.code())
		ui.click(t, `[data-test="login2fa-submit"]`)
	})
	ui.wantState(t, "protected")
}

// lockout is the step "wrong passwords lock the login, not the signed-in
// admin".
func (cr *cbRun) lockout(t *testing.T) {
	ctx, ui, lan, pin := cr.ctx, cr.ui, cr.lan, cr.pin
	guest := newConsoleUI(ctx, t, browser.Options{NetNS: lan, Locale: "en-US", SPKIPins: []string{pin}})
	locked := 0 // seconds of the lockout, once it came
	failures := 0
	for i := 0; i < 12 && locked == 0; i++ {
		guest.gotoPath(t, "/login")
		guest.fill(t, `[data-test="login-user"]`, cbUser)
		guest.fill(t, `[data-test="login-password"]`, fmt.Sprintf("Guess%dword", i))
		guest.click(t, `[data-test="login-submit"]`)
		msg := guest.text(t, `[data-test="login-error"]`)
		secs, limited := ui.limitedFor(msg)
		switch {
		case msg == ui.T("en", "auth.login.wrong"):
			failures++
		case limited && secs > 60:
			locked = secs
		case limited:
			time.Sleep(time.Duration(secs)*time.Second + 100*time.Millisecond)
		default:
			t.Fatalf("login error %q", msg)
		}
	}
	lockFor := int(auth.LimiterLockoutFor / time.Second)
	if locked < lockFor-60 || locked > lockFor || failures > auth.LimiterLockoutAfter {
		t.Fatalf("after %d wrong passwords: locked for %ds, want about %ds", failures, locked, lockFor)
	}
	guest.shot(t, "en-login-locked")
	// Now even the right password is refused from here…
	guest.fill(t, `[data-test="login-user"]`, cbUser)
	guest.fill(t, `[data-test="login-password"]`, cbPassword)
	guest.click(t, `[data-test="login-submit"]`)
	if msg := guest.text(t, `[data-test="login-error"]`); func() bool { s, ok := ui.limitedFor(msg); return !ok || s <= 60 }() {
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
}

package e2e

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/console/auth"
	"github.com/cloudsteer/cloudsteer/controlplane/console/tlscert"
	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/browser"
)

// This file holds the page steps of TestConsoleBrowser: status, bypass,
// pause, quick test, events, settings, Japanese, phone.

// statusPage is the step "status page".
func (cr *cbRun) statusPage(t *testing.T) {
	ui := cr.ui
	ui.gotoPath(t, "/")
	ui.wantText(t, `[data-test="status-state"]`, ui.T("en", "status.protected"))
	for _, c := range []string{"status-steered", "status-bypassed", "status-blocked"} {
		if _, err := strconv.Atoi(strings.TrimSpace(ui.text(t, `[data-test="`+c+`"]`))); err != nil {
			t.Errorf("%s is not a count: %v", c, err)
		}
	}
}

// bypass is the step "bypass toggles, and the client's traffic follows".
func (cr *cbRun) bypass(t *testing.T) {
	ctx, b, ui, e, www := cr.ctx, cr.ui.b, cr.ui, cr.e, cr.www
	ui.gotoPath(t, "/bypass")
	if got := e.pathOf(t, "www.example.com", www.V4.String(), "cb-before"); got != "proxy" {
		t.Fatalf("before: %s", got)
	}
	// System entries are locked, with the reason.
	if _, disabled, err := b.Attr(ctx, `[data-test="bypass-toggle-*.akaetp.net"]`, "disabled"); err != nil || !disabled {
		t.Errorf("the system entry's switch is not disabled: %v", err)
	}
	cr.systemRowEN = ui.texts(t, systemComment)
	// A bad value gets the API's validation message.
	ui.fill(t, `[data-test="bypass-add-value"]`, "not a name")
	ui.click(t, `[data-test="bypass-add-submit"]`)
	// The message appears once the API has answered: wait for text (an
	// empty wanted text would match the empty element at once).
	var msg string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if m, err := b.Text(ctx, `[data-test="bypass-error"]`); err == nil && strings.TrimSpace(m) != "" {
			msg = m
			break
		}
	}
	if strings.TrimSpace(msg) == "" {
		t.Errorf("bad value: no error message shown")
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
}

// pause is the step "pause and resume, the client's traffic following".
func (cr *cbRun) pause(t *testing.T) {
	ctx, b, ui, e, www := cr.ctx, cr.ui.b, cr.ui, cr.e, cr.www
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
}

// quickTest is the step "quick test".
func (cr *cbRun) quickTest(t *testing.T) {
	ctx, b, ui := cr.ctx, cr.ui.b, cr.ui
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
}

// events is the step "events: a block the client just caused shows up by
// itself".
func (cr *cbRun) events(t *testing.T) {
	ctx, b, ui, e := cr.ctx, cr.ui.b, cr.ui, cr.e
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
	// Name the client (its form is in the section below the table).
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
}

// settings is the step "settings and certificate pages".
func (cr *cbRun) settings(t *testing.T) {
	ctx, b, ui, info := cr.ctx, cr.ui.b, cr.ui, cr.info
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
}

// japanese is the step "Japanese".
func (cr *cbRun) japanese(t *testing.T) {
	ctx, b, ui, lan, pin := cr.ctx, cr.ui.b, cr.ui, cr.lan, cr.pin
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
		{"/ca", "ca", "ca.title"},
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
		if i < len(cr.systemRowEN) && c == cr.systemRowEN[i] {
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
	// The wrong-password message and the code step in Japanese.
	ja.fill(t, `[data-test="login-user"]`, cbUser)
	ja.fill(t, `[data-test="login-password"]`, "Wrong7pass")
	ja.click(t, `[data-test="login-submit"]`)
	ja.wantText(t, `[data-test="login-error"]`, ui.T("ja", "auth.login.wrong"))
	ja.shot(t, "ja-login-error")
	ja.submitLimited(t, "/login/2fa", func() {
		ja.fill(t, `[data-test="login-user"]`, cbUser)
		ja.fill(t, `[data-test="login-password"]`, cbPassword)
		ja.click(t, `[data-test="login-submit"]`)
	})
	ja.wantText(t, "h1", ui.T("ja", "auth.login2fa.title"))
	ja.shot(t, "ja-login2fa")
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
}

// phone is the step "phone width and keyboard".
func (cr *cbRun) phone(t *testing.T) {
	ctx, b, ui := cr.ctx, cr.ui.b, cr.ui
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
}

// inspectionCA is the step "inspection CA: upload, the short URL, the
// download": the admin uploads the provider's CA (DER, as cacert.cer) on
// the certificate page; any LAN client then gets the install page at the
// short plain-HTTP URL the page shows, and the very certificate at
// /ca.cer.
func (cr *cbRun) inspectionCA(t *testing.T) {
	ctx, b, ui, e := cr.ctx, cr.ui.b, cr.ui, cr.e
	path := filepath.Join(t.TempDir(), "cacert.cer")
	der := writeDERCA(t, path)
	ui.gotoPath(t, "/certificate")
	if err := b.SetInputFiles(ctx, `[data-test="cert-upload-file"]`, path); err != nil {
		t.Fatal(err)
	}
	ui.click(t, `[data-test="cert-upload-submit"]`)
	ui.wantText(t, `[data-test="cert-uploaded"]`, ui.T("en", "cert.uploaded"))
	fp := tlscert.Fingerprint(der)
	if got := strings.TrimSpace(ui.text(t, `[data-test="cert-fingerprint"]`)); got != fp {
		t.Errorf("certificate page fingerprint %q, want %q", got, fp)
	}
	short := strings.TrimSpace(ui.text(t, `[data-test="cert-url"]`))
	if short != "http://10.10.0.1/ca" {
		t.Errorf("short URL %q, want http://10.10.0.1/ca", short)
	}
	ui.shot(t, "en-certificate-uploaded")
	// The short URL, plain HTTP, as a LAN client without a session types it.
	r, err := b.Goto(ctx, short)
	if err != nil || r.Status != 200 || r.URL != short {
		t.Fatalf("the short URL: %+v, %v", r, err)
	}
	if got := strings.TrimSpace(ui.text(t, `[data-test="ca-fingerprint"]`)); got != fp {
		t.Errorf("install page fingerprint %q, want %q", got, fp)
	}
	if href, _, err := b.Attr(ctx, `[data-test="ca-download"]`, "href"); err != nil || href != "/ca.cer" {
		t.Errorf("download link %q, %v", href, err)
	}
	ui.shot(t, "en-ca")
	out, err := e.run(lab.RoleLAN, 10*time.Second, "curl", "-sS", "--max-time", "5", "http://10.10.0.1/ca.cer")
	if err != nil || out != string(der) {
		t.Errorf("http://10.10.0.1/ca.cer from the LAN client: %d bytes, %v; want the %d uploaded", len(out), err, len(der))
	}
}

package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
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
// LAN client's namespace (the console's self-made certificate pinned by
// its SPKI hash, checked against the CLI's fingerprint), against the real
// daemon in the lab: first-run setup through the setup link with every
// password rule, TOTP enrolment and two-step sign-in with a wrong code, a
// recovery code that works once, bypass toggles that the LAN client's
// traffic follows (the cloud proxy seeing nothing), pause and resume, the
// quick test, a block the client causes showing on the events page by
// itself and in the badge, the inspection CA's upload and short URL,
// Japanese, CSRF-less and session-less requests refused, a phone width,
// keyboard use, and the login lockout; after each step, no CSP violation,
// script error or failed request of a page's script, and no host but the
// gateway asked. Each page is photographed in both languages
// (CLOUDSTEER_ARTIFACTS, default e2e/out/screenshots; console/*.png).
func TestConsoleBrowser(t *testing.T) {
	browser.Require(t)
	e := newEnv(t, false)
	r := &cbRun{e: e, clock: &totpClock{}}
	r.g = e.startGateway(gateway.Options{})
	r.sock = gateway.SocketPath(e.lab, "gw")
	r.www = site(t, "www.example.com")
	r.lan = e.lab.NS(lab.RoleLAN)

	// Pin the certificate the CLI vouches for (its fingerprint), as an
	// admin would check it on the first visit.
	e.cliJSON(r.sock, &r.info, "console", "info")
	r.pin = e.consolePin(t, r.info.Fingerprint)

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	r.ctx = ctx
	r.ui = newConsoleUI(ctx, t, browser.Options{NetNS: r.lan, Locale: "en-US", SPKIPins: []string{r.pin}})

	for _, s := range []struct {
		name string
		run  func(t *testing.T)
	}{
		{"no admin yet: the setup link is needed", r.setupNeeded},
		{"setup: every password rule refused with its own message", r.setupRules},
		{"TOTP enrolment: a wrong code, then the app's code", r.enrol},
		{"sign out, sign in with password and a TOTP code, a wrong code first", r.signIn},
		{"status page", r.statusPage},
		{"bypass toggles, and the client's traffic follows", r.bypass},
		{"pause and resume, the client's traffic following", r.pause},
		{"quick test", r.quickTest},
		{"events: a block the client just caused shows up by itself", r.events},
		{"settings and certificate pages", r.settings},
		{"inspection CA: upload, the short URL, the download", r.inspectionCA},
		{"a recovery code signs in once", r.recoveryCode},
		{"Japanese", r.japanese},
		{"requests without the CSRF token or without a session are refused", r.refusals},
		{"phone width and keyboard", r.phone},
		{"wrong passwords lock the login, not the signed-in admin", r.lockout},
		{"secrets stay out of the daemon's log", r.noSecrets},
	} {
		// Each step ends with the page check: no CSP violation or
		// script error, no failed request of a page's script, no
		// foreign host.
		if !t.Run(s.name, func(t *testing.T) { s.run(t); r.ui.checkClean(t) }) {
			t.FailNow() // every step builds on the ones before
		}
	}
}

// cbRun is the state TestConsoleBrowser's steps share, in order.
type cbRun struct {
	ctx   context.Context
	e     *env
	g     *gateway.Gateway
	sock  string
	www   lab.Site
	lan   string          // the LAN client's namespace, where chromium runs
	info  api.ConsoleInfo // `cloudsteer console info`
	pin   string          // the console certificate's SPKI hash
	ui    *consoleUI      // the admin's browser
	clock *totpClock      // the admin's authenticator app

	recovery    []string // the recovery codes shown at enrolment
	systemRowEN []string // the system bypass entries' comments in English
}

// systemComment selects the comment cells of the system bypass entries.
const systemComment = `tr[data-source="system"] td:nth-child(3)`

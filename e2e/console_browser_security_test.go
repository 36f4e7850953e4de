package e2e

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/cloudsteer/cloudsteer/lab/browser"
)

// This file holds the refusal steps of TestConsoleBrowser: CSRF and session
// checks, secrets kept out of the log.

// refusals is the step "requests without the CSRF token or without a session
// are refused".
func (cr *cbRun) refusals(t *testing.T) {
	ctx, b, ui, e, pin := cr.ctx, cr.ui.b, cr.ui, cr.e, cr.pin
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
}

// noSecrets is the step "secrets stay out of the daemon's log".
func (cr *cbRun) noSecrets(t *testing.T) {
	clock, g := cr.clock, cr.g
	log := g.Log()
	for what, s := range map[string]string{"password": cbPassword, "TOTP secret": totpB32(clock.key)} {
		if strings.Contains(log, s) {
			t.Errorf("the %s is in the daemon's log", what)
		}
	}
	for _, c := range cr.recovery {
		if strings.Contains(log, c) {
			t.Error("a recovery code is in the daemon's log")
		}
	}
}

package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/controlplane/api/apitest"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// consoleFake is apitest.Fake with the console's root-only side.
type consoleFake struct {
	*apitest.Fake
	mu     sync.Mutex
	admin  bool
	links  int
	resets int
}

func (f *consoleFake) ConsoleInfo(context.Context) (api.ConsoleInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := api.ConsoleInfo{Enabled: true, URLs: []string{"https://192.0.2.1/"}, Fingerprint: "AB:CD", AdminSetUp: f.admin}
	if f.admin {
		i.User = "admin"
	}
	return i, nil
}

func (f *consoleFake) ConsoleSetupLink(context.Context) (api.SetupLink, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.admin {
		return api.SetupLink{}, model.Plain(model.ErrConflict, "the console admin is already set up")
	}
	f.links++
	return api.SetupLink{URL: "https://192.0.2.1/setup?token=t", Expires: t0.Add(24 * time.Hour)}, nil
}

func (f *consoleFake) ConsoleResetAdmin(context.Context) (api.SetupLink, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.admin = false
	f.resets++
	f.links++
	return api.SetupLink{URL: "https://192.0.2.1/setup?token=u", Expires: t0.Add(24 * time.Hour)}, nil
}

func TestConsoleRoutesUnixOnly(t *testing.T) {
	f := &consoleFake{Fake: apitest.New(func() time.Time { return t0 }), admin: true}
	h := newHarness(t, f, api.Options{Token: testToken})
	auth := map[string]string{"Authorization": "Bearer " + testToken}

	// On the unix socket: info, 409 with an admin, reset, then a link.
	info := decode[api.ConsoleInfo](t, do(t, h.unix, "http://x", request{method: "GET", path: "/api/v1/console"}))
	if !info.AdminSetUp || info.User != "admin" || info.Fingerprint != "AB:CD" {
		t.Fatalf("info = %+v", info)
	}
	if r := do(t, h.unix, "http://x", request{method: "POST", path: "/api/v1/console/setup-link"}); r.status != http.StatusConflict {
		t.Fatalf("setup-link with an admin: %d %s", r.status, r.body)
	}
	r := do(t, h.unix, "http://x", request{method: "POST", path: "/api/v1/console/reset-admin"})
	if l := decode[api.SetupLink](t, r); r.status != http.StatusOK || !strings.Contains(l.URL, "/setup?token=") || l.Expires.IsZero() {
		t.Fatalf("reset-admin: %d %s", r.status, r.body)
	}
	r = do(t, h.unix, "http://x", request{method: "POST", path: "/api/v1/console/setup-link"})
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"url"`) {
		t.Fatalf("setup-link after reset: %d %s", r.status, r.body)
	}
	if r := do(t, h.unix, "http://x", request{method: "GET", path: "/api/v1/console/setup-link"}); r.status != http.StatusMethodNotAllowed {
		t.Fatalf("GET setup-link: %d", r.status)
	}
	links, resets := f.links, f.resets

	// On the network listener, even with the right token: 403, nothing done.
	for _, q := range []request{
		{method: "GET", path: "/api/v1/console", header: auth},
		{method: "POST", path: "/api/v1/console/setup-link", header: auth},
		{method: "POST", path: "/api/v1/console/reset-admin", header: auth},
	} {
		r := do(t, h.net, h.netURL, q)
		if r.status != http.StatusForbidden || r.errBody(t).Code != api.CodeForbidden || strings.Contains(string(r.body), "token=") {
			t.Errorf("network %s %s: %d %s", q.method, q.path, r.status, r.body)
		}
	}
	// Inside the console (session or token): 403 too.
	ch := h.srv.ConsoleHandler(func(*http.Request) (string, bool, bool) { return "admin", true, true })
	for _, q := range []struct{ method, path string }{{"GET", "/api/v1/console"}, {"POST", "/api/v1/console/setup-link"}, {"POST", "/api/v1/console/reset-admin"}} {
		rec := httptest.NewRecorder()
		ch.ServeHTTP(rec, httptest.NewRequest(q.method, q.path, nil))
		if rec.Code != http.StatusForbidden {
			t.Errorf("console %s %s: %d %s", q.method, q.path, rec.Code, rec.Body)
		}
	}
	if f.links != links || f.resets != resets {
		t.Fatalf("a refused request reached the controller: links %d→%d resets %d→%d", links, f.links, resets, f.resets)
	}
}

func TestConsoleRoutesWithoutConsole(t *testing.T) {
	h := newHarness(t, nil, api.Options{})
	if r := do(t, h.unix, "http://x", request{method: "GET", path: "/api/v1/console"}); r.status != http.StatusNotFound {
		t.Fatalf("no console: %d %s", r.status, r.body)
	}
}

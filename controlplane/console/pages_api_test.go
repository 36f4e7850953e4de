package console

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/net/html"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
)

// TestScriptAPICalls: the calls static/app.js makes reach the admin API
// through the console with the session cookie and the X-CSRF-Token
// header; without the header a change is refused (403 "csrf"), without
// the session 401.
func TestScriptAPICalls(t *testing.T) {
	pt := newPagesTest(t, Options{})
	call := func(method, path, body string, csrf bool) (int, map[string]any) {
		hdr := map[string]string{}
		if body != "" {
			hdr["Content-Type"] = "application/json"
		}
		if csrf {
			hdr[csrfHeader] = pt.csrf
		}
		hdr["Origin"] = "https://example.com"
		var rb *strings.Reader
		if body != "" {
			rb = strings.NewReader(body)
		} else {
			rb = strings.NewReader("")
		}
		w := pt.do(t, pageReq{method: method, path: path, body: rb, hdr: hdr})
		var m map[string]any
		json.Unmarshal(w.Body.Bytes(), &m)
		return w.Code, m
	}
	for _, tc := range []struct {
		method, path, body string
		status             int
	}{
		{"POST", "/api/v1/bypass", `{"value":"bank.example","comment":"online banking"}`, 201},
		{"POST", "/api/v1/bypass/bank.example/disable", "", 200},
		{"POST", "/api/v1/bypass/bank.example/enable", "", 200},
		{"DELETE", "/api/v1/bypass/bank.example", "", 200},
		{"POST", "/api/v1/pause", `{"duration":"15m"}`, 200},
		{"POST", "/api/v1/pause", `{"duration":"forever","code":""}`, 200},
		{"POST", "/api/v1/resume", "", 200},
		{"POST", "/api/v1/diagnose", "", 200},
		{"PUT", "/api/v1/settings", `{"require_code_to_pause":true,"code":""}`, 200},
		{"POST", "/api/v1/activate", `{"code":"3315471d-b831-48ed-a621-17042a74a8e3"}`, 200},
	} {
		if code, m := call(tc.method, tc.path, tc.body, false); code != http.StatusForbidden || m["code"] != api.CodeCSRF {
			t.Errorf("%s %s without CSRF: %d %v", tc.method, tc.path, code, m)
		}
		if code, m := call(tc.method, tc.path, tc.body, true); code != tc.status {
			t.Errorf("%s %s: %d %v, want %d", tc.method, tc.path, code, m, tc.status)
		}
	}
	if !pt.f.settings.RequireCodeToPause || pt.f.code == "" || !pt.f.reported {
		t.Error("the calls did not reach the backend")
	}
	// What the pages read after a change: the API's messages for errors.
	if code, m := call("POST", "/api/v1/bypass", `{"value":"has space"}`, true); code != 400 || m["error"] == "" {
		t.Errorf("bad value: %d %v", code, m)
	}
	seedEvents(pt.f)
	// The fake ignores limit; the script reads only the first (newest) event.
	if code, m := call("GET", "/api/v1/events?client=10.0.0.5&limit=1", "", false); code != 200 || len(m["events"].([]any)) == 0 || m["events"].([]any)[0].(map[string]any)["id"] != 4.0 {
		t.Errorf("events poll: %d %v", code, m)
	}
	// The events page's polling query is one the API takes.
	doc := pt.page(t, "/events?client=10.0.0.5&since=2026-12-03T09:00&tz=-540", "en")
	var q string
	walkHTML(doc, func(n *html.Node) {
		if htmlAttr(n, "id") == "events" {
			q = htmlAttr(n, "data-query")
		}
	})
	if q == "" {
		t.Fatal("no data-query")
	}
	if code, m := call("GET", "/api/v1/events?"+q+"&limit=1", "", false); code != 200 {
		t.Errorf("events poll %q: %d %v", q, code, m)
	}
	if !strings.Contains(q, "since=2026-12-03T00%3A00%3A00Z") {
		t.Errorf("since not converted to UTC: %q", q)
	}
	w := pt.do(t, pageReq{method: "GET", path: "/api/v1/status", anon: true})
	if w.Code != http.StatusUnauthorized {
		t.Errorf("API without session: %d", w.Code)
	}
}

package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/controlplane/api/apitest"
)

// FuzzHandler feeds arbitrary methods, paths, content types, bodies and
// auth headers to the unix and network handlers: the answer is always
// JSON (metrics aside), never a 5xx unless the fake controller failed on
// purpose, and never 2xx on the network without the token.
func FuzzHandler(f *testing.F) {
	seeds := []struct {
		method, path, ct, body string
		mode                   uint8 // 0 unix, 1 network no token, 2 network token
	}{
		{"GET", "/api/v1/status", "", "", 0},
		{"GET", "/api/v1/bypass", "", "", 2},
		{"POST", "/api/v1/bypass", "application/json", `{"value":"bank2.example","comment":"x"}`, 0},
		{"POST", "/api/v1/bypass", "application/json", `{"value":"192.0.2.0/24"}`, 0},
		{"POST", "/api/v1/bypass", "application/json", `{"value":"boom.invalid"}`, 0},
		{"POST", "/api/v1/bypass", "application/json", `{"value":5,"comment":null}`, 0},
		{"POST", "/api/v1/bypass", "text/plain", `{"value":"a.example"}`, 0},
		{"DELETE", "/api/v1/bypass/bank.example", "", "", 0},
		{"DELETE", "/api/v1/bypass/198.51.100.0%2F24", "", "", 2},
		{"DELETE", "/api/v1/bypass/%2E%2E", "", "", 0},
		{"POST", "/api/v1/bypass/bank.example/disable", "", "", 0},
		{"POST", "/api/v1/bypass/*.akaetp.net/disable", "application/json", "{}", 0},
		{"PATCH", "/api/v1/bypass/bank.example", "application/json", `{"enabled":false}`, 0},
		{"PATCH", "/api/v1/bypass/bank.example", "application/json", `{"enabled":"x"}`, 0},
		{"GET", "/api/v1/pause", "", "", 1},
		{"POST", "/api/v1/pause", "application/json", `{"duration":"15m","code":"x"}`, 0},
		{"POST", "/api/v1/pause", "application/json", `{"duration":"1e400h"}`, 0},
		{"POST", "/api/v1/resume", "", "", 0},
		{"GET", "/api/v1/events?client=10.10.0.10&name=sport&since=2026-01-01T00:00:00Z&limit=5", "", "", 0},
		{"GET", "/api/v1/events?limit=-1&until=x", "", "", 2},
		{"POST", "/api/v1/activate", "application/json", `{"code":"3315471d-b831-48ed-a621-17042a74a8e3"}`, 0},
		{"POST", "/api/v1/activate", "application/json; charset=utf-8", `{"code":"00000000-0000-0000-0000-000000000407"}`, 0},
		{"POST", "/api/v1/diagnose", "", "", 0},
		{"GET", "/api/v1/settings", "", "", 0},
		{"PUT", "/api/v1/settings", "application/json", `{"require_code_to_pause":true}`, 2},
		{"PUT", "/api/v1/settings", "application/json", `{"require_code_to_pause":1} trailing`, 0},
		{"GET", "/api/v1//status", "", "", 0},
		{"CONNECT", "/api/v1/status", "", "", 0},
		{"GET", "/metrics", "", "", 1},
		{"OPTIONS", "/", "", "", 0},
		{"POST", "/api/v1/bypass", "application/json", "{\"value\":\"\xff\xfe\"}", 0},
		{"POST", "/api/v1/bypass", "application/json", `{"value":"a","value":"b","VALUE":"c"}`, 0},
		{"POST", "/api/v1/bypass", "application/json", strings.Repeat("[", 100000), 0},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, s.ct, []byte(s.body), s.mode)
	}
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("cloudsteer_up 1\n"))
	})
	f.Fuzz(func(t *testing.T, method, path, ct string, body []byte, mode uint8) {
		// A fresh controller each time keeps every input reproducible.
		fake := apitest.New(func() time.Time { return t0 })
		srv, err := api.NewServer(fake, api.Options{Token: testToken, Metrics: metrics})
		if err != nil {
			t.Fatal(err)
		}
		unixH, netH := api.UnixHandler(srv), api.NetworkHandler(srv)
		req, err := http.NewRequest(method, "http://cloudsteer"+path, bytes.NewReader(body))
		if err != nil {
			return // not a request a client could send
		}
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		h := unixH
		switch mode % 3 {
		case 1:
			h = netH
		case 2:
			h = netH
			req.Header.Set("Authorization", "Bearer "+testToken)
		}
		before := fake.Internal.Load()
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		res := w.Result()
		deliberate := fake.Internal.Load() != before
		if res.StatusCode >= 500 && !deliberate {
			t.Fatalf("%s %q: %d %s", method, path, res.StatusCode, w.Body.Bytes())
		}
		if deliberate && res.StatusCode != 500 {
			t.Fatalf("controller failed but status %d", res.StatusCode)
		}
		if mode%3 == 1 && res.StatusCode < 300 && req.URL.Path != "/metrics" {
			t.Fatalf("network without token got %d for %s %q", res.StatusCode, method, path)
		}
		if req.URL.Path == "/metrics" && mode%3 != 0 && res.StatusCode == 200 {
			return
		}
		if got := res.Header.Get("Content-Type"); got != "application/json" {
			t.Fatalf("%s %q: Content-Type %q", method, path, got)
		}
		if method != http.MethodHead && !json.Valid(w.Body.Bytes()) {
			t.Fatalf("%s %q: body not JSON: %q", method, path, w.Body.Bytes())
		}
		if res.StatusCode >= 400 && method != http.MethodHead {
			var e api.Error
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" || e.Code == "" || strings.ContainsAny(e.Error, "\r\n") {
				t.Fatalf("error body %q", w.Body.Bytes())
			}
		}
		if res.StatusCode == 405 && res.Header.Get("Allow") == "" {
			t.Fatal("405 without Allow")
		}
		if strings.Contains(w.Body.String(), testToken) {
			t.Fatal("token echoed")
		}
	})
}

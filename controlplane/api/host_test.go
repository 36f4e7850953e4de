package api_test

import (
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/controlplane/api/apitest"
)

// TestHostCheck: the network listener answers only the Host names its
// AllowHost accepts, /metrics included; the unix socket is not checked.
func TestHostCheck(t *testing.T) {
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "cloudsteer_up 1\n") })
	allow := func(a netip.Addr, name string) bool {
		return a == netip.MustParseAddr("127.0.0.1") || name == "gw.office.lan"
	}
	h := newHarness(t, nil, api.Options{Token: testToken, Metrics: metrics, AllowHost: allow})
	get := func(c *http.Client, base, path, host string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		if host != "" {
			req.Host = host
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	port := h.netURL[strings.LastIndex(h.netURL, ":"):]
	for _, tc := range []struct {
		path, host string
		want       int
	}{
		{"/api/v1/status", "", 200}, // 127.0.0.1:port
		{"/api/v1/status", "gw.office.lan" + port, 200},
		{"/api/v1/status", "GW.office.lan.", 200},
		{"/metrics", "gw.office.lan", 200},
		{"/api/v1/status", "evil.example" + port, 421},
		{"/metrics", "evil.example", 421},
		{"/api/v1/bypass", "10.10.0.99", 421},
		{"/api/v1/status", "[::1]:1", 421},
	} {
		status, body := get(h.net, h.netURL, tc.path, tc.host)
		if status != tc.want {
			t.Errorf("%s Host %q: %d %s, want %d", tc.path, tc.host, status, body, tc.want)
		}
		if tc.want == 421 && (!strings.Contains(body, `"code":"misdirected"`) || strings.Contains(body, "cloudsteer_up")) {
			t.Errorf("%s Host %q: body %s", tc.path, tc.host, body)
		}
	}
	if status, _ := get(h.unix, "http://evil.example", "/api/v1/status", ""); status != 200 {
		t.Errorf("unix socket with a foreign Host: %d, want 200", status)
	}
}

// TestSettingsOffNeedsCode: require_code_to_pause cannot be switched off
// without the code.
func TestSettingsOffNeedsCode(t *testing.T) {
	h := newHarness(t, nil, api.Options{})
	put := func(body string) response {
		return do(t, h.unix, "http://cloudsteer", request{method: "PUT", path: "/api/v1/settings", ct: jsonCT, body: body})
	}
	if _, err := h.fake.Activate(t.Context(), apitest.GoodCode); err != nil {
		t.Fatal(err)
	}
	if r := put(`{"require_code_to_pause":true}`); r.status != 200 {
		t.Fatalf("switch on: %d %s", r.status, r.body)
	}
	for _, body := range []string{`{"require_code_to_pause":false}`, `{"require_code_to_pause":false,"code":"00000000-0000-4000-8000-000000000000"}`} {
		r := put(body)
		if r.status != 403 || !strings.Contains(r.errBody(t).Error, "code") {
			t.Fatalf("%s: %d %s", body, r.status, r.body)
		}
	}
	if r := put(`{"require_code_to_pause":false,"code":"` + apitest.GoodCode + `"}`); r.status != 200 || strings.Contains(string(r.body), "true") {
		t.Fatalf("switch off with the code: %d %s", r.status, r.body)
	}
}

// TestForceReachesController: force in the bodies gets to the controller.
func TestForceReachesController(t *testing.T) {
	h := newHarness(t, nil, api.Options{})
	for _, tc := range []struct {
		req  request
		want bool
	}{
		{request{method: "POST", path: "/api/v1/bypass", ct: jsonCT, body: `{"value":"10.0.0.0/8","force":true}`}, true},
		{request{method: "POST", path: "/api/v1/bypass/10.0.0.0%2F8/enable", ct: jsonCT, body: `{"force":true}`}, true},
		{request{method: "POST", path: "/api/v1/bypass/10.0.0.0%2F8/enable"}, false},
		{request{method: "PATCH", path: "/api/v1/bypass/10.0.0.0%2F8", ct: jsonCT, body: `{"enabled":true,"force":true}`}, true},
		{request{method: "POST", path: "/api/v1/bypass", ct: jsonCT, body: `{"value":"11.0.0.0/8"}`}, false},
	} {
		r := do(t, h.unix, "http://cloudsteer", tc.req)
		if r.status/100 != 2 || h.fake.LastForce != tc.want {
			t.Errorf("%s %s %s: %d %s, force %v; want %v", tc.req.method, tc.req.path, tc.req.body, r.status, r.body, h.fake.LastForce, tc.want)
		}
	}
}

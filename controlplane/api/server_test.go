package api_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/controlplane/api/apitest"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

const jsonCT = "application/json"

// TestEndpoints drives every endpoint with good and bad input over the
// unix socket, each case against a fresh server and fake controller.
func TestEndpoints(t *testing.T) {
	big := `{"value":"a.example","comment":"` + strings.Repeat("x", 70<<10) + `"}`
	cases := []struct {
		name     string
		setup    []request // run first, each must answer < 300
		req      request
		status   int
		code     string // error code when status >= 400
		contains string // substring of the body
		check    func(t *testing.T, h *harness, r response)
	}{
		// status
		{name: "status", req: request{method: "GET", path: "/api/v1/status"}, status: 200,
			check: func(t *testing.T, h *harness, r response) {
				st := decode[model.Status](t, r)
				if st.State != model.Protected || st.Code != "3315…a8e3" || st.Reasons == nil || st.Version != "test" {
					t.Errorf("status = %+v", st)
				}
			}},
		{name: "status paused", setup: []request{{method: "POST", path: "/api/v1/pause", ct: jsonCT, body: `{"duration":"1h"}`}},
			req: request{method: "GET", path: "/api/v1/status"}, status: 200,
			check: func(t *testing.T, h *harness, r response) {
				st := decode[model.Status](t, r)
				if st.State != model.Paused || !st.PauseUntil.Equal(t0.Add(time.Hour)) {
					t.Errorf("status = %+v", st)
				}
			}},
		{name: "status with empty object body", req: request{method: "GET", path: "/api/v1/status", ct: jsonCT, body: "{}"}, status: 200},
		{name: "status with unknown body field", req: request{method: "GET", path: "/api/v1/status", ct: jsonCT, body: `{"x":1}`}, status: 400, code: "invalid", contains: `unknown field`},
		{name: "status with text body", req: request{method: "GET", path: "/api/v1/status", ct: "text/plain", body: "hi"}, status: 415, code: "unsupported_media_type"},
		{name: "status with query", req: request{method: "GET", path: "/api/v1/status?verbose=1"}, status: 400, code: "invalid"},
		{name: "status wrong method", req: request{method: "POST", path: "/api/v1/status"}, status: 405, code: "method_not_allowed",
			check: wantAllow("GET")},
		{name: "status HEAD", req: request{method: "HEAD", path: "/api/v1/status"}, status: 405},

		// bypass list and add
		{name: "bypass list", req: request{method: "GET", path: "/api/v1/bypass"}, status: 200,
			check: func(t *testing.T, h *harness, r response) {
				l := decode[api.BypassList](t, r)
				if len(l.Entries) != 4 || !l.Entries[0].System || l.Entries[3].Value != "bank.example" {
					t.Errorf("list = %+v", l)
				}
			}},
		{name: "bypass add domain", req: request{method: "POST", path: "/api/v1/bypass", ct: jsonCT, body: `{"value":" WWW.Bank.Example ","comment":"online banking"}`}, status: 201,
			check: func(t *testing.T, h *harness, r response) {
				e := decode[model.BypassEntry](t, r)
				want := model.BypassEntry{Value: "www.bank.example", Kind: model.BypassDomain, Enabled: true, Source: "api", Comment: "online banking", Added: t0}
				if !e.Added.Equal(want.Added) || e.Value != want.Value || e.Kind != want.Kind || !e.Enabled || e.Source != want.Source || e.Comment != want.Comment {
					t.Errorf("entry = %+v, want %+v", e, want)
				}
				if l := h.fake.Bypass(context.Background()); len(l) != 5 {
					t.Errorf("controller has %d entries, want 5", len(l))
				}
			}},
		{name: "bypass add cidr", req: request{method: "POST", path: "/api/v1/bypass", ct: jsonCT, body: `{"value":"192.0.2.7/24"}`}, status: 201, contains: `"value":"192.0.2.0/24","kind":"cidr"`},
		{name: "bypass add charset", req: request{method: "POST", path: "/api/v1/bypass", ct: "application/json; charset=UTF-8", body: `{"value":"a.example"}`}, status: 201},
		{name: "bypass add duplicate", req: request{method: "POST", path: "/api/v1/bypass", ct: jsonCT, body: `{"value":"bank.example"}`}, status: 409, code: "conflict", contains: "already exists"},
		{name: "bypass add bad domain", req: request{method: "POST", path: "/api/v1/bypass", ct: jsonCT, body: `{"value":"-bad-.example"}`}, status: 400, code: "invalid", contains: "not a domain"},
		{name: "bypass add space", req: request{method: "POST", path: "/api/v1/bypass", ct: jsonCT, body: `{"value":"a b.example"}`}, status: 400, code: "invalid", contains: "space"},
		{name: "bypass add empty value", req: request{method: "POST", path: "/api/v1/bypass", ct: jsonCT, body: `{"value":""}`}, status: 400, code: "invalid", contains: "required"},
		{name: "bypass add missing value", req: request{method: "POST", path: "/api/v1/bypass", ct: jsonCT, body: `{"comment":"x"}`}, status: 400, code: "invalid"},
		{name: "bypass add long value", req: request{method: "POST", path: "/api/v1/bypass", ct: jsonCT, body: `{"value":"` + strings.Repeat("a", 300) + `"}`}, status: 400, code: "invalid", contains: "longer than"},
		{name: "bypass add control in comment", req: request{method: "POST", path: "/api/v1/bypass", ct: jsonCT, body: `{"value":"a.example","comment":"x\u0007"}`}, status: 400, code: "invalid", contains: "control character"},
		{name: "bypass add unknown field", req: request{method: "POST", path: "/api/v1/bypass", ct: jsonCT, body: `{"valeu":"a.example"}`}, status: 400, code: "invalid", contains: `unknown field \"valeu\"`},
		{name: "bypass add wrong type", req: request{method: "POST", path: "/api/v1/bypass", ct: jsonCT, body: `{"value":5}`}, status: 400, code: "invalid", contains: `field \"value\" must be a string`},
		{name: "bypass add cut short", req: request{method: "POST", path: "/api/v1/bypass", ct: jsonCT, body: `{"value":`}, status: 400, code: "invalid", contains: "cut short"},
		{name: "bypass add syntax error", req: request{method: "POST", path: "/api/v1/bypass", ct: jsonCT, body: `{"value" "a"}`}, status: 400, code: "invalid", contains: "invalid JSON at byte"},
		{name: "bypass add trailing data", req: request{method: "POST", path: "/api/v1/bypass", ct: jsonCT, body: `{"value":"a.example"} {}`}, status: 400, code: "invalid", contains: "after the object"},
		{name: "bypass add array", req: request{method: "POST", path: "/api/v1/bypass", ct: jsonCT, body: `["a.example"]`}, status: 400, code: "invalid", contains: "JSON object"},
		{name: "bypass add null", req: request{method: "POST", path: "/api/v1/bypass", ct: jsonCT, body: `null`}, status: 400, code: "invalid"},
		{name: "bypass add empty body", req: request{method: "POST", path: "/api/v1/bypass", ct: jsonCT}, status: 400, code: "invalid", contains: "empty"},
		{name: "bypass add no content type", req: request{method: "POST", path: "/api/v1/bypass", body: `{"value":"a.example"}`}, status: 415, code: "unsupported_media_type", contains: "missing Content-Type"},
		{name: "bypass add text content type", req: request{method: "POST", path: "/api/v1/bypass", ct: "text/plain", body: `{"value":"a.example"}`}, status: 415, code: "unsupported_media_type"},
		{name: "bypass add latin1", req: request{method: "POST", path: "/api/v1/bypass", ct: "application/json; charset=latin1", body: `{"value":"a.example"}`}, status: 415},
		{name: "bypass add too large", req: request{method: "POST", path: "/api/v1/bypass", ct: jsonCT, body: big}, status: 413, code: "too_large"},
		{name: "bypass add invalid utf8", req: request{method: "POST", path: "/api/v1/bypass", ct: jsonCT, body: "{\"value\":\"a\xff.example\"}"}, status: 400, code: "invalid"},
		{name: "bypass add controller failure", req: request{method: "POST", path: "/api/v1/bypass", ct: jsonCT, body: `{"value":"` + apitest.BoomValue + `"}`}, status: 500, code: "internal",
			check: func(t *testing.T, h *harness, r response) {
				if strings.Contains(string(r.body), "deliberate") {
					t.Errorf("500 body leaks the error detail: %s", r.body)
				}
				if !strings.Contains(h.logs.String(), "deliberate") {
					t.Errorf("500 detail not logged: %s", h.logs.String())
				}
			}},
		{name: "bypass wrong method", req: request{method: "PUT", path: "/api/v1/bypass", ct: jsonCT, body: `{}`}, status: 405, check: wantAllow("GET, POST")},

		// bypass remove
		{name: "bypass remove", req: request{method: "DELETE", path: "/api/v1/bypass/bank.example"}, status: 200, contains: `{"value":"bank.example","removed":true}`,
			check: func(t *testing.T, h *harness, r response) {
				if l := h.fake.Bypass(context.Background()); len(l) != 3 {
					t.Errorf("controller has %d entries, want 3", len(l))
				}
			}},
		{name: "bypass remove system", req: request{method: "DELETE", path: "/api/v1/bypass/*.akaetp.net"}, status: 403, code: "forbidden", contains: "system entry"},
		{name: "bypass remove missing", req: request{method: "DELETE", path: "/api/v1/bypass/nope.example"}, status: 404, code: "not_found"},
		{name: "bypass remove escaped cidr",
			setup:  []request{{method: "POST", path: "/api/v1/bypass", ct: jsonCT, body: `{"value":"198.51.100.0/24"}`}},
			req:    request{method: "DELETE", path: "/api/v1/bypass/198.51.100.0%2F24"},
			status: 200, contains: `"value":"198.51.100.0/24"`},
		{name: "bypass remove escaped ipv6 cidr",
			setup:  []request{{method: "POST", path: "/api/v1/bypass", ct: jsonCT, body: `{"value":"2001:db8::/32"}`}},
			req:    request{method: "DELETE", path: "/api/v1/bypass/2001:db8::%2F32"},
			status: 200, contains: `"value":"2001:db8::/32"`},
		{name: "bypass remove unescaped cidr", req: request{method: "DELETE", path: "/api/v1/bypass/198.51.100.0/24"}, status: 404, code: "not_found", contains: "no such endpoint"},
		{name: "bypass remove escaped space", req: request{method: "DELETE", path: "/api/v1/bypass/a%20b"}, status: 400, code: "invalid"},
		{name: "bypass remove escaped dotdot", req: request{method: "DELETE", path: "/api/v1/bypass/%2E%2E"}, status: 400, code: "invalid"},
		{name: "bypass remove with body", req: request{method: "DELETE", path: "/api/v1/bypass/bank.example", ct: jsonCT, body: `{"force":true}`}, status: 400, code: "invalid"},
		{name: "bypass value GET", req: request{method: "GET", path: "/api/v1/bypass/bank.example"}, status: 405, check: wantAllow("DELETE, PATCH")},
		{name: "bypass remove controller failure", req: request{method: "DELETE", path: "/api/v1/bypass/" + apitest.BoomValue}, status: 500, code: "internal"},

		// bypass enable / disable / patch
		{name: "bypass disable", req: request{method: "POST", path: "/api/v1/bypass/bank.example/disable"}, status: 200, contains: `"enabled":false`},
		{name: "bypass enable", setup: []request{{method: "POST", path: "/api/v1/bypass/bank.example/disable"}},
			req: request{method: "POST", path: "/api/v1/bypass/bank.example/enable"}, status: 200, contains: `"enabled":true`},
		{name: "bypass enable empty object", req: request{method: "POST", path: "/api/v1/bypass/bank.example/enable", ct: jsonCT, body: "{}"}, status: 200},
		{name: "bypass enable with field", req: request{method: "POST", path: "/api/v1/bypass/bank.example/enable", ct: jsonCT, body: `{"enabled":true}`}, status: 400, code: "invalid"},
		{name: "bypass disable system", req: request{method: "POST", path: "/api/v1/bypass/*.akaetp.net/disable"}, status: 403, code: "forbidden"},
		{name: "bypass enable system", req: request{method: "POST", path: "/api/v1/bypass/*.akaetp.net/enable"}, status: 200},
		{name: "bypass disable missing", req: request{method: "POST", path: "/api/v1/bypass/nope.example/disable"}, status: 404, code: "not_found"},
		{name: "bypass disable GET", req: request{method: "GET", path: "/api/v1/bypass/bank.example/disable"}, status: 405, check: wantAllow("POST")},
		{name: "bypass patch", req: request{method: "PATCH", path: "/api/v1/bypass/bank.example", ct: jsonCT, body: `{"enabled":false}`}, status: 200, contains: `"enabled":false`},
		{name: "bypass patch missing field", req: request{method: "PATCH", path: "/api/v1/bypass/bank.example", ct: jsonCT, body: `{}`}, status: 400, code: "invalid", contains: "or both"},
		{name: "bypass patch comment", req: request{method: "PATCH", path: "/api/v1/bypass/bank.example", ct: jsonCT, body: `{"comment":"online banking"}`}, status: 200, contains: `"comment":"online banking"`},
		{name: "bypass patch comment and enabled", req: request{method: "PATCH", path: "/api/v1/bypass/bank.example", ct: jsonCT, body: `{"comment":"","enabled":false}`}, status: 200, contains: `"enabled":false`},
		{name: "bypass patch comment too long", req: request{method: "PATCH", path: "/api/v1/bypass/bank.example", ct: jsonCT, body: `{"comment":"` + strings.Repeat("x", 300) + `"}`}, status: 400, code: "invalid", contains: "comment"},
		{name: "bypass patch comment of a system entry", req: request{method: "PATCH", path: "/api/v1/bypass/*.akaetp.net", ct: jsonCT, body: `{"comment":"x"}`}, status: 403, code: "forbidden"},
		{name: "bypass patch wrong type", req: request{method: "PATCH", path: "/api/v1/bypass/bank.example", ct: jsonCT, body: `{"enabled":"no"}`}, status: 400, code: "invalid", contains: "true or false"},
		{name: "bypass patch no content type", req: request{method: "PATCH", path: "/api/v1/bypass/bank.example", body: `{"enabled":false}`}, status: 415},

		// pause and resume
		{name: "pause get", req: request{method: "GET", path: "/api/v1/pause"}, status: 200, contains: `{"paused":false}`},
		{name: "pause 15m", req: request{method: "POST", path: "/api/v1/pause", ct: jsonCT, body: `{"duration":"15m"}`}, status: 200,
			check: wantPause(15*time.Minute, "cli")},
		{name: "pause 1h", req: request{method: "POST", path: "/api/v1/pause", ct: jsonCT, body: `{"duration":"1h"}`}, status: 200, check: wantPause(time.Hour, "cli")},
		{name: "pause 24h", req: request{method: "POST", path: "/api/v1/pause", ct: jsonCT, body: `{"duration":"24h"}`}, status: 200, check: wantPause(24*time.Hour, "cli")},
		{name: "pause 1d", req: request{method: "POST", path: "/api/v1/pause", ct: jsonCT, body: `{"duration":"1d"}`}, status: 200, check: wantPause(24*time.Hour, "cli")},
		{name: "pause 90m", req: request{method: "POST", path: "/api/v1/pause", ct: jsonCT, body: `{"duration":"1h30m"}`}, status: 200, check: wantPause(90*time.Minute, "cli")},
		{name: "pause until resumed", req: request{method: "POST", path: "/api/v1/pause", ct: jsonCT, body: `{"duration":"0"}`}, status: 200, check: wantPause(0, "cli")},
		{name: "pause forever", req: request{method: "POST", path: "/api/v1/pause", ct: jsonCT, body: `{"duration":"forever"}`}, status: 200, check: wantPause(0, "cli")},
		{name: "pause max", req: request{method: "POST", path: "/api/v1/pause", ct: jsonCT, body: `{"duration":"168h"}`}, status: 200, check: wantPause(model.MaxPause, "cli")},
		{name: "pause too long", req: request{method: "POST", path: "/api/v1/pause", ct: jsonCT, body: `{"duration":"168h1s"}`}, status: 400, code: "invalid", contains: "longer than"},
		{name: "pause 8d", req: request{method: "POST", path: "/api/v1/pause", ct: jsonCT, body: `{"duration":"8d"}`}, status: 400, code: "invalid"},
		{name: "pause negative", req: request{method: "POST", path: "/api/v1/pause", ct: jsonCT, body: `{"duration":"-5m"}`}, status: 400, code: "invalid", contains: "negative"},
		{name: "pause garbage", req: request{method: "POST", path: "/api/v1/pause", ct: jsonCT, body: `{"duration":"soon"}`}, status: 400, code: "invalid"},
		{name: "pause missing duration", req: request{method: "POST", path: "/api/v1/pause", ct: jsonCT, body: `{}`}, status: 400, code: "invalid", contains: "required"},
		{name: "pause number duration", req: request{method: "POST", path: "/api/v1/pause", ct: jsonCT, body: `{"duration":900}`}, status: 400, code: "invalid", contains: "must be a string"},
		{name: "pause code required wrong",
			setup: []request{{method: "PUT", path: "/api/v1/settings", ct: jsonCT, body: `{"require_code_to_pause":true}`}},
			req:   request{method: "POST", path: "/api/v1/pause", ct: jsonCT, body: `{"duration":"1h","code":"nope"}`}, status: 403, code: "forbidden",
			check: func(t *testing.T, h *harness, r response) {
				if strings.Contains(string(r.body), "nope") || strings.Contains(h.logs.String(), "nope") {
					t.Errorf("wrong code echoed or logged")
				}
			}},
		{name: "pause code required right",
			setup: []request{{method: "PUT", path: "/api/v1/settings", ct: jsonCT, body: `{"require_code_to_pause":true}`}},
			req:   request{method: "POST", path: "/api/v1/pause", ct: jsonCT, body: `{"duration":"1h","code":"` + apitest.GoodCode + `"}`}, status: 200,
			check: func(t *testing.T, h *harness, r response) {
				if strings.Contains(string(r.body), apitest.GoodCode) || strings.Contains(h.logs.String(), apitest.GoodCode) {
					t.Errorf("code echoed or logged")
				}
			}},
		{name: "pause controller failure", req: request{method: "POST", path: "/api/v1/pause", ct: jsonCT, body: `{"duration":"1h","code":"` + apitest.BoomValue + `"}`}, status: 500, code: "internal"},
		{name: "resume", setup: []request{{method: "POST", path: "/api/v1/pause", ct: jsonCT, body: `{"duration":"0"}`}},
			req: request{method: "POST", path: "/api/v1/resume"}, status: 200, contains: `{"paused":false}`,
			check: func(t *testing.T, h *harness, r response) {
				if h.fake.PauseState(context.Background()).Paused {
					t.Error("still paused")
				}
			}},
		{name: "resume GET", req: request{method: "GET", path: "/api/v1/resume"}, status: 405},
		{name: "resume with field", req: request{method: "POST", path: "/api/v1/resume", ct: jsonCT, body: `{"now":true}`}, status: 400},

		// events
		{name: "events all", req: request{method: "GET", path: "/api/v1/events"}, status: 200, check: wantEvents(3, model.EventFilter{})},
		{name: "events client", req: request{method: "GET", path: "/api/v1/events?client=10.10.0.10"}, status: 200,
			check: wantEvents(2, model.EventFilter{Client: "10.10.0.10"})},
		{name: "events mapped client", req: request{method: "GET", path: "/api/v1/events?client=::ffff:10.10.0.10"}, status: 200,
			check: wantEvents(2, model.EventFilter{Client: "10.10.0.10"})},
		{name: "events name", req: request{method: "GET", path: "/api/v1/events?name=SPORTS"}, status: 200,
			check: wantEvents(1, model.EventFilter{Name: "SPORTS"})},
		{name: "events since until limit", req: request{method: "GET", path: "/api/v1/events?since=2026-11-25T08:30:00Z&until=2026-11-25T12:00:00%2B00:00&limit=1"}, status: 200,
			check: wantEvents(1, model.EventFilter{Since: t0.Add(-210 * time.Minute), Until: t0, Limit: 1})},
		{name: "events bad client", req: request{method: "GET", path: "/api/v1/events?client=lan-pc"}, status: 400, code: "invalid", contains: "not an IP"},
		{name: "events bad since", req: request{method: "GET", path: "/api/v1/events?since=yesterday"}, status: 400, code: "invalid", contains: "RFC 3339"},
		{name: "events until before since", req: request{method: "GET", path: "/api/v1/events?since=2026-11-25T12:00:00Z&until=2026-11-25T11:00:00Z"}, status: 400, code: "invalid"},
		{name: "events limit zero", req: request{method: "GET", path: "/api/v1/events?limit=0"}, status: 400, code: "invalid"},
		{name: "events limit too big", req: request{method: "GET", path: "/api/v1/events?limit=1001"}, status: 400, code: "invalid"},
		{name: "events limit garbage", req: request{method: "GET", path: "/api/v1/events?limit=ten"}, status: 400, code: "invalid"},
		{name: "events unknown param", req: request{method: "GET", path: "/api/v1/events?host=x"}, status: 400, code: "invalid", contains: "unknown query parameter"},
		{name: "events repeated param", req: request{method: "GET", path: "/api/v1/events?name=a&name=b"}, status: 400, code: "invalid", contains: "more than once"},
		{name: "events bad escape", req: request{method: "GET", path: "/api/v1/events?name=%zz"}, status: 400, code: "invalid"},
		{name: "events controller failure", req: request{method: "GET", path: "/api/v1/events?name=" + apitest.BoomValue}, status: 500, code: "internal"},
		{name: "events POST", req: request{method: "POST", path: "/api/v1/events"}, status: 405},

		// activate
		{name: "activate", req: request{method: "POST", path: "/api/v1/activate", ct: jsonCT, body: `{"code":"` + apitest.GoodCode + `"}`}, status: 200,
			contains: `{"entitlement_code":"3315…a8e3","verified":true,"in_use":true,`,
			check: func(t *testing.T, h *harness, r response) {
				if strings.Contains(h.logs.String(), apitest.GoodCode) {
					t.Errorf("code logged: %s", h.logs.String())
				}
			}},
		{name: "activate replaces", req: request{method: "POST", path: "/api/v1/activate", ct: jsonCT, body: `{"code":"aaaabbbbccccdddd"}`}, status: 200,
			check: func(t *testing.T, h *harness, r response) {
				if h.fake.Code() != "aaaabbbbccccdddd" {
					t.Errorf("code = %q", h.fake.Code())
				}
			}},
		{name: "activate rejected", req: request{method: "POST", path: "/api/v1/activate", ct: jsonCT, body: `{"code":"` + apitest.RejectedCode + `"}`}, status: 422, code: "rejected",
			contains: "code rejected by the cloud proxy",
			check: func(t *testing.T, h *harness, r response) {
				if strings.Contains(string(r.body), apitest.RejectedCode) || strings.Contains(h.logs.String(), apitest.RejectedCode) {
					t.Error("rejected code echoed or logged")
				}
			}},
		{name: "activate unreachable", req: request{method: "POST", path: "/api/v1/activate", ct: jsonCT, body: `{"code":"` + apitest.UnreachableCode + `"}`}, status: 503, code: "unavailable"},
		{name: "activate empty", req: request{method: "POST", path: "/api/v1/activate", ct: jsonCT, body: `{"code":"  "}`}, status: 400, code: "invalid", contains: "required"},
		{name: "activate short", req: request{method: "POST", path: "/api/v1/activate", ct: jsonCT, body: `{"code":"abc"}`}, status: 400, code: "invalid", contains: "too short"},
		{name: "activate control char", req: request{method: "POST", path: "/api/v1/activate", ct: jsonCT, body: `{"code":"abc\ndefghijklmnop"}`}, status: 400, code: "invalid"},
		{name: "activate GET", req: request{method: "GET", path: "/api/v1/activate"}, status: 405},
		{name: "activate controller failure", req: request{method: "POST", path: "/api/v1/activate", ct: jsonCT, body: `{"code":"` + apitest.BoomValue + `"}`}, status: 500, code: "internal"},

		// diagnose
		{name: "diagnose", req: request{method: "POST", path: "/api/v1/diagnose"}, status: 200,
			check: func(t *testing.T, h *harness, r response) {
				rep := decode[model.Report](t, r)
				if !rep.OK || len(rep.Checks) != 4 || rep.Checks[1].Took != 40*time.Millisecond {
					t.Errorf("report = %+v", rep)
				}
			}},
		{name: "diagnose GET", req: request{method: "GET", path: "/api/v1/diagnose"}, status: 405, check: wantAllow("POST")},

		// settings
		{name: "settings get", req: request{method: "GET", path: "/api/v1/settings"}, status: 200, contains: `{"require_code_to_pause":false}`},
		{name: "settings put", req: request{method: "PUT", path: "/api/v1/settings", ct: jsonCT, body: `{"require_code_to_pause":true}`}, status: 200,
			contains: `{"require_code_to_pause":true}`,
			check: func(t *testing.T, h *harness, r response) {
				if !h.fake.Settings(context.Background()).RequireCodeToPause {
					t.Error("setting not applied")
				}
			}},
		{name: "settings put missing", req: request{method: "PUT", path: "/api/v1/settings", ct: jsonCT, body: `{}`}, status: 400, code: "invalid", contains: "required"},
		{name: "settings put unknown", req: request{method: "PUT", path: "/api/v1/settings", ct: jsonCT, body: `{"require_code_to_pause":true,"x":1}`}, status: 400, code: "invalid"},
		{name: "settings patch", req: request{method: "PATCH", path: "/api/v1/settings", ct: jsonCT, body: `{}`}, status: 405, check: wantAllow("GET, PUT")},

		// routing
		{name: "unknown endpoint", req: request{method: "GET", path: "/api/v1/nope"}, status: 404, code: "not_found"},
		{name: "other version", req: request{method: "GET", path: "/api/v2/status"}, status: 404, code: "not_found"},
		{name: "root", req: request{method: "GET", path: "/"}, status: 404, code: "not_found"},
		{name: "double slash", req: request{method: "GET", path: "/api/v1//status"}, status: 404, code: "not_found"},
		{name: "dot segment", req: request{method: "GET", path: "/api/v1/x/../status"}, status: 404, code: "not_found"},
		{name: "trailing slash", req: request{method: "GET", path: "/api/v1/status/"}, status: 404, code: "not_found"},
		{name: "metrics not on unix", req: request{method: "GET", path: "/metrics"}, status: 404, code: "not_found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil, api.Options{Version: "v-test"})
			for _, s := range tc.setup {
				if r := do(t, h.unix, "http://cloudsteer", s); r.status >= 300 {
					t.Fatalf("setup %s %s: %d %s", s.method, s.path, r.status, r.body)
				}
			}
			r := do(t, h.unix, "http://cloudsteer", tc.req)
			if r.status != tc.status {
				t.Fatalf("status = %d, want %d; body %s", r.status, tc.status, r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if tc.req.method != "HEAD" && !jsonValid(r.body) {
				t.Errorf("body is not JSON: %q", r.body)
			}
			if r.status >= 400 && tc.req.method != "HEAD" {
				e := r.errBody(t)
				if e.Error == "" || strings.ContainsAny(e.Error, "\r\n") {
					t.Errorf("error message %q: want one non-empty line", e.Error)
				}
				if tc.code != "" && e.Code != tc.code {
					t.Errorf("code = %q, want %q (%s)", e.Code, tc.code, e.Error)
				}
			}
			if tc.contains != "" && !strings.Contains(string(r.body), tc.contains) {
				t.Errorf("body %s does not contain %s", r.body, tc.contains)
			}
			if got := r.header.Get("Cloudsteer-Version"); got != "v-test" {
				t.Errorf("Cloudsteer-Version = %q", got)
			}
			if tc.check != nil {
				tc.check(t, h, r)
			}
		})
	}
}

func wantAllow(allow string) func(*testing.T, *harness, response) {
	return func(t *testing.T, _ *harness, r response) {
		t.Helper()
		if got := r.header.Get("Allow"); got != allow {
			t.Errorf("Allow = %q, want %q", got, allow)
		}
	}
}

func wantPause(d time.Duration, by string) func(*testing.T, *harness, response) {
	return func(t *testing.T, h *harness, r response) {
		t.Helper()
		ps := decode[model.PauseState](t, r)
		var until time.Time
		if d > 0 {
			until = t0.Add(d)
		}
		if !ps.Paused || !ps.Until.Equal(until) || ps.By != by {
			t.Errorf("pause = %+v, want until %v by %q", ps, until, by)
		}
		if got := h.fake.PauseState(context.Background()); !got.Until.Equal(until) {
			t.Errorf("controller pause = %+v", got)
		}
	}
}

func wantEvents(n int, f model.EventFilter) func(*testing.T, *harness, response) {
	return func(t *testing.T, h *harness, r response) {
		t.Helper()
		l := decode[api.EventList](t, r)
		if len(l.Events) != n {
			t.Errorf("got %d events, want %d: %+v", len(l.Events), n, l.Events)
		}
		got := h.fake.LastFilter
		if got.Client != f.Client || got.Name != f.Name || !got.Since.Equal(f.Since) || !got.Until.Equal(f.Until) || got.Limit != f.Limit {
			t.Errorf("filter = %+v, want %+v", got, f)
		}
		if !slices.IsSortedFunc(l.Events, func(a, b model.Event) int { return b.Time.Compare(a.Time) }) {
			t.Error("events not newest first")
		}
	}
}

// TestEmptyListsAreArrays checks that nil slices from a controller reach
// clients as [] rather than null.
func TestEmptyListsAreArrays(t *testing.T) {
	h := newHarness(t, emptyCtrl{apitest.New(nil)}, api.Options{})
	for _, tc := range []struct {
		name, method, path, want string
	}{
		{"bypass", "GET", "/api/v1/bypass", `{"entries":[]}`},
		{"events", "GET", "/api/v1/events", `{"events":[]}`},
		{"diagnose", "POST", "/api/v1/diagnose", `"checks":[]`},
		{"status", "GET", "/api/v1/status", `"reasons":[]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, h.unix, "http://x", request{method: tc.method, path: tc.path})
			if r.status != http.StatusOK || !strings.Contains(string(r.body), tc.want) {
				t.Errorf("%d %s, want %s", r.status, r.body, tc.want)
			}
		})
	}
}

// emptyCtrl answers nil slices.
type emptyCtrl struct{ *apitest.Fake }

func (emptyCtrl) Bypass(context.Context) []model.BypassEntry { return nil }
func (emptyCtrl) Events(context.Context, model.EventFilter) ([]model.Event, error) {
	return nil, nil
}
func (emptyCtrl) Diagnose(context.Context) model.Report { return model.Report{} }
func (emptyCtrl) Status(context.Context) model.Status   { return model.Status{} }

func TestNewServerNilController(t *testing.T) {
	if _, err := api.NewServer(nil, api.Options{}); err == nil {
		t.Fatal("NewServer(nil) succeeded")
	}
	if _, err := api.NewServer(apitest.New(nil), api.Options{Token: "short"}); err == nil {
		t.Fatal("NewServer with a short token succeeded")
	}
}

package console

import (
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// TestStatusReasons: every reason code shows its own translated title and
// what to do, in both languages; an unknown code shows the generic title
// and the gateway's message.
func TestStatusReasons(t *testing.T) {
	pt := newPagesTest(t, Options{})
	for _, lang := range languages {
		for _, code := range reasonCodes {
			pt.f.mu.Lock()
			pt.f.status = model.Status{State: model.NotProtected, Reasons: []model.Reason{{Code: code, Message: "msg-" + code}}}
			pt.f.mu.Unlock()
			doc := pt.page(t, "/", lang)
			got := nodeText(oneTest(t, doc, "status-reason-"+code))
			title, fix := pt.text(lang, "reason."+code+".title"), pt.text(lang, "reason."+code+".fix")
			if title == "reason."+code+".title" || fix == "reason."+code+".fix" {
				t.Fatalf("%s: %s untranslated", lang, code)
			}
			wantContains(t, lang+" "+code, got, title)
			wantContains(t, lang+" "+code, got, fix)
			wantContains(t, lang+" "+code, got, "msg-"+code)
			wantContains(t, "state", nodeText(oneTest(t, doc, "status-state")), pt.text(lang, "status.not_protected"))
			// The diagnostics information part says the same.
			d := pt.page(t, "/diagnostics", lang)
			wantContains(t, "diag-info "+code, nodeText(oneTest(t, d, "diag-info")), title)
		}
		pt.f.status = model.Status{State: model.NotProtected, Reasons: []model.Reason{{Code: "new_thing", Message: "something new"}}}
		got := nodeText(oneTest(t, pt.page(t, "/", lang), "status-reason-new_thing"))
		wantContains(t, "unknown reason", got, pt.text(lang, "reason.other.title"))
		wantContains(t, "unknown reason", got, "something new")
	}
}

func TestStatusPage(t *testing.T) {
	pt := newPagesTest(t, Options{})
	until := time.Date(2026, 12, 3, 15, 0, 0, 0, time.UTC)
	pt.f.status = model.Status{State: model.Paused, PauseUntil: until, Reasons: []model.Reason{{Code: model.ReasonPaused}}}
	pt.f.counters = Counters{Steered: 1234, Bypassed: 56, Blocked: 7, Since: until.Add(-time.Hour)}
	pt.f.report = model.Report{Time: until.Add(-time.Minute), OK: false}
	pt.f.reported = true
	for _, lang := range languages {
		doc := pt.page(t, "/", lang)
		st := nodeText(oneTest(t, doc, "status-state"))
		wantContains(t, "state", st, pt.text(lang, "status.paused_until"))
		wantContains(t, "state", st, "2026-12-03T15:00:00Z")
		for k, v := range map[string]string{"status-steered": "1234", "status-bypassed": "56", "status-blocked": "7"} {
			if got := nodeText(oneTest(t, doc, k)); got != v {
				t.Errorf("%s %s = %q, want %q", lang, k, got, v)
			}
		}
		lt := nodeText(oneTest(t, doc, "status-lasttest"))
		wantContains(t, "last test", lt, pt.text(lang, "status.test_failed"))
		wantContains(t, "last test", lt, "2026-12-03T14:59:00Z")
	}
	pt.f.status = model.Status{State: model.Paused}
	wantContains(t, "forever", nodeText(oneTest(t, pt.page(t, "/", "en"), "status-state")), "Paused until resumed")
	pt.f.status = model.Status{State: model.Protected}
	pt.f.reported = false
	doc := pt.page(t, "/", "ja")
	wantContains(t, "protected ja", nodeText(oneTest(t, doc, "status-state")), "保護されています")
	wantContains(t, "no test", nodeText(oneTest(t, doc, "status-lasttest")), pt.text("ja", "status.test_none"))
}

func TestBypassPage(t *testing.T) {
	pt := newPagesTest(t, Options{})
	pt.f.entries = append(pt.f.entries,
		model.BypassEntry{Value: "bank.example", Kind: model.BypassDomain, Enabled: true, Source: "config"},
		model.BypassEntry{Value: "192.0.2.0/24", Kind: model.BypassCIDR, Enabled: false, Source: "api", Comment: "printer net"},
	)
	for _, lang := range languages {
		doc := pt.page(t, "/bypass", lang)
		for _, id := range []string{"bypass-add-value", "bypass-add-comment", "bypass-add-submit", "bypass-error"} {
			oneTest(t, doc, id)
		}
		sys := oneTest(t, doc, "bypass-toggle-*.akaetp.net")
		if !htmlHasAttr(sys, "checked") || !htmlHasAttr(sys, "disabled") || htmlAttr(sys, "role") != "switch" {
			t.Errorf("system toggle: %v", sys.Attr)
		}
		if !htmlHasAttr(oneTest(t, doc, "bypass-remove-*.akaetp.net"), "disabled") {
			t.Error("system entry removable")
		}
		wantContains(t, "system row", nodeText(oneTest(t, doc, "bypass-row-*.akaetp.net")), pt.text(lang, "bypass.system_why"))
		cfg := oneTest(t, doc, "bypass-row-bank.example")
		wantContains(t, "config row", nodeText(cfg), pt.text(lang, "bypass.config"))
		wantContains(t, "config row", nodeText(cfg), pt.text(lang, "bypass.config_why"))
		if !htmlHasAttr(oneTest(t, doc, "bypass-remove-bank.example"), "disabled") {
			t.Error("config entry removable")
		}
		if tg := oneTest(t, doc, "bypass-toggle-bank.example"); htmlHasAttr(tg, "disabled") || !htmlHasAttr(tg, "checked") {
			t.Error("config entry toggle should be on and usable")
		}
		oneTest(t, doc, "bypass-row-192.0.2.0/24")
		// An API entry's comment is editable in place (PATCH comment).
		if c := oneTest(t, doc, "bypass-comment-192.0.2.0/24"); htmlAttr(c, "value") != "printer net" {
			t.Errorf("api entry comment field: %v", c.Attr)
		}
		oneTest(t, doc, "bypass-comment-save-192.0.2.0/24")
		if len(byTest(doc, "bypass-comment-bank.example")) != 0 {
			t.Error("config entry comment is editable")
		}
		if tg := oneTest(t, doc, "bypass-toggle-192.0.2.0/24"); htmlHasAttr(tg, "checked") || htmlHasAttr(tg, "disabled") {
			t.Error("disabled api entry: toggle should be off and usable")
		}
		if rm := oneTest(t, doc, "bypass-remove-192.0.2.0/24"); htmlHasAttr(rm, "disabled") || htmlAttr(rm, "data-value") != "192.0.2.0/24" {
			t.Error("api entry should be removable")
		}
	}
}

func TestPausePage(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	pt := newPagesTest(t, Options{Now: func() time.Time { return now }})
	doc := pt.page(t, "/pause", "en")
	for test, dur := range map[string]string{"pause-15m": "15m", "pause-1h": "1h", "pause-1d": "1d", "pause-forever": "forever"} {
		if got := htmlAttr(oneTest(t, doc, test), "data-duration"); got != dur {
			t.Errorf("%s duration %q, want %q", test, got, dur)
		}
		if _, err := api.ParsePauseDuration(dur); err != nil {
			t.Errorf("%s: the API refuses %q: %v", test, dur, err)
		}
	}
	if len(byTest(doc, "pause-code")) != 0 || len(byTest(doc, "pause-resume")) != 0 || len(byTest(doc, "pause-remaining")) != 0 {
		t.Error("not paused, no code required: code field, resume or countdown shown")
	}
	if got := htmlAttr(oneTest(t, doc, "pause-state"), "data-paused"); got != "false" {
		t.Errorf("pause-state data-paused %q", got)
	}
	pt.f.settings.RequireCodeToPause = true
	pt.f.pause = model.PauseState{Paused: true, Since: now, Until: now.Add(15 * time.Minute)}
	for _, lang := range languages {
		doc = pt.page(t, "/pause", lang)
		oneTest(t, doc, "pause-code")
		oneTest(t, doc, "pause-resume")
		if got := nodeText(oneTest(t, doc, "pause-remaining")); got != "0:15:00" {
			t.Errorf("remaining %q", got)
		}
		wantContains(t, "state", nodeText(oneTest(t, doc, "pause-state")), pt.text(lang, "status.paused_until"))
		wantContains(t, "15m label", nodeText(oneTest(t, doc, "pause-15m")), pt.text(lang, "pause.for_15m"))
	}
	// A pause whose end has passed is over.
	pt.f.pause.Until = now.Add(-time.Second)
	if got := htmlAttr(oneTest(t, pt.page(t, "/pause", "en"), "pause-state"), "data-paused"); got != "false" {
		t.Errorf("expired pause shown as paused")
	}
	pt.f.pause = model.PauseState{Paused: true, Since: now}
	doc = pt.page(t, "/pause", "en")
	wantContains(t, "forever", nodeText(oneTest(t, doc, "pause-state")), "Paused until resumed")
	if len(byTest(doc, "pause-remaining")) != 0 {
		t.Error("countdown for an open-ended pause")
	}
}

func TestDiagnosticsPage(t *testing.T) {
	pt := newPagesTest(t, Options{})
	doc := pt.page(t, "/diagnostics", "en")
	oneTest(t, doc, "diag-run")
	wantContains(t, "never", nodeText(oneTest(t, doc, "diag-time")), "not run yet")
	pt.f.report = model.Report{Time: time.Date(2026, 6, 6, 6, 20, 54, 0, time.UTC), Checks: []model.Check{
		{Name: "install", OK: true, Detail: "installed"}, {Name: "network", OK: false, Detail: "proxy down"},
		{Name: "components", OK: true}, {Name: "settings", OK: true},
	}}
	pt.f.reported = true
	for _, lang := range languages {
		doc = pt.page(t, "/diagnostics", lang)
		wantContains(t, "time", nodeText(oneTest(t, doc, "diag-time")), "2026-06-06T06:20:54Z")
		for _, n := range checkNames {
			li := oneTest(t, doc, "diag-check-"+n)
			wantContains(t, n, nodeText(li), pt.text(lang, "diag.check."+n))
		}
		net := oneTest(t, doc, "diag-check-network")
		if htmlAttr(net, "data-ok") != "false" {
			t.Error("network check not failed")
		}
		wantContains(t, "network", nodeText(net), pt.text(lang, "diag.fail"))
		wantContains(t, "network", nodeText(net), "proxy down")
		if htmlAttr(oneTest(t, doc, "diag-check-install"), "data-ok") != "true" {
			t.Error("install check not passed")
		}
	}
	doc = pt.page(t, "/diagnostics", "ja")
	wantContains(t, "ja check", nodeText(oneTest(t, doc, "diag-check-install")), "インストールチェック")
	wantContains(t, "ja ok", nodeText(oneTest(t, doc, "diag-info")), pt.text("ja", "diag.info_ok"))
}

func TestSettingsPage(t *testing.T) {
	pt := newPagesTest(t, Options{})
	pt.f.status.Code = model.MaskCode("3315471d-b831-48ed-a621-17042a74a8e3")
	pt.f.status.CodeSource = "activate"
	pt.f.settings.RequireCodeToPause = true
	for _, lang := range languages {
		doc := pt.page(t, "/settings", lang)
		if got := nodeText(oneTest(t, doc, "settings-code")); got != "3315…a8e3" {
			t.Errorf("code %q", got)
		}
		if strings.Contains(nodeText(doc), "b831") {
			t.Error("the full code is on the page")
		}
		for _, id := range []string{"settings-code-new", "settings-code-submit", "settings-code-message"} {
			oneTest(t, doc, id)
		}
		if !htmlHasAttr(oneTest(t, doc, "settings-require-code"), "checked") {
			t.Error("require-code switch off")
		}
		if got := nodeText(oneTest(t, doc, "settings-fingerprint")); got != "AB:CD" {
			t.Errorf("fingerprint %q", got)
		}
		wantContains(t, "proxy", nodeText(oneTest(t, doc, "settings-proxy")), "proxy.example:8080")
		wantContains(t, "dns", nodeText(oneTest(t, doc, "settings-dns")), "192.0.2.53:53")
		wantContains(t, "source", nodeText(oneTest(t, doc, "settings-code-source")), pt.text(lang, "settings.source_activate"))
	}
	pt.f.settings.RequireCodeToPause = false
	if htmlHasAttr(oneTest(t, pt.page(t, "/settings", "en"), "settings-require-code"), "checked") {
		t.Error("require-code switch on")
	}
}

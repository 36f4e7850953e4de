package console

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

func (pt *pagesTest) postUpgrade(t *testing.T, path, ctype string, body []byte, csrf bool) (int, map[string]any) {
	t.Helper()
	hdr := map[string]string{"Content-Type": ctype, "Origin": "https://example.com"}
	if csrf {
		hdr[csrfHeader] = pt.csrf
	}
	w := pt.do(t, pageReq{method: http.MethodPost, path: path, body: bytes.NewReader(body), hdr: hdr})
	var m map[string]any
	json.Unmarshal(w.Body.Bytes(), &m)
	return w.Code, m
}

func TestUpgradePageOffImage(t *testing.T) {
	pt := newPagesTest(t, Options{})
	doc := pt.page(t, "/upgrade", "en")
	wantContains(t, "not-image", nodeText(oneTest(t, doc, "upgrade-not-image")), "does not run from it")
	if len(byTest(doc, "upgrade-file")) != 0 {
		t.Error("the upload form shows off the image")
	}
	oneTest(t, doc, "nav-upgrade")
}

func TestUpgradePageOnImage(t *testing.T) {
	pt := newPagesTest(t, Options{})
	pt.f.status.Image = &model.ImageStatus{Version: "1", Slot: "a", RolledBack: true,
		Upgrade: "upgrade to 2 failed to come up healthy; rolled back to 1"}
	pt.f.upgradeState = UpgradeState{State: "failed", Error: "read bundle: vmlinuz sha256 x", Time: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)}
	pt.f.hasUpgrade = true
	for _, lang := range []string{"en", "ja"} {
		doc := pt.page(t, "/upgrade", lang)
		if got, want := nodeText(oneTest(t, doc, "upgrade-image")), pt.text(lang, "upgrade.version_slot", "1", "a"); got != want {
			t.Errorf("%s: image %q, want %q", lang, got, want)
		}
		if got := nodeText(oneTest(t, doc, "upgrade-rolled-back")); got != pt.text(lang, "upgrade.rolled_back") {
			t.Errorf("%s: rolled back %q", lang, got)
		}
		wantContains(t, "detail", nodeText(oneTest(t, doc, "upgrade-detail")), "upgrade to 2 failed to come up healthy; rolled back to 1")
		st := oneTest(t, doc, "upgrade-state")
		wantContains(t, "state", nodeText(st), pt.text(lang, "upgrade.state.failed", "read bundle: vmlinuz sha256 x"))
		oneTest(t, doc, "upgrade-file")
		oneTest(t, doc, "upgrade-submit")
		oneTest(t, doc, "upgrade-url")
	}
	// The status page says so too.
	doc := pt.page(t, "/", "en")
	wantContains(t, "status image", nodeText(oneTest(t, doc, "status-image")), "cloudsteer 1 (slot a)")
	oneTest(t, doc, "status-rolled-back")
	// A pending install.
	pt.f.status.Image = &model.ImageStatus{Version: "1", Slot: "a"}
	pt.f.upgradeState = UpgradeState{State: "rebooting", Version: "2", Time: time.Now()}
	doc = pt.page(t, "/upgrade", "en")
	wantContains(t, "state", nodeText(oneTest(t, doc, "upgrade-state")), "2 is written; the gateway restarts into it.")
	if len(byTest(doc, "upgrade-rolled-back")) != 0 {
		t.Error("rolled back shown without a rollback")
	}
}

func TestUpgradeUpload(t *testing.T) {
	pt := newPagesTest(t, Options{})
	bundle := bytes.Repeat([]byte("bundle bytes "), 1000)
	// Without the CSRF header: refused, the backend never sees it.
	if code, _ := pt.postUpgrade(t, "/upgrade", "application/octet-stream", bundle, false); code != http.StatusForbidden {
		t.Fatalf("upload without CSRF: %d", code)
	}
	if pt.f.upgradeBody != nil {
		t.Fatal("the backend got a bundle without CSRF")
	}
	// Without a session: not taken either.
	w := pt.do(t, pageReq{method: http.MethodPost, path: "/upgrade", body: bytes.NewReader(bundle), anon: true,
		hdr: map[string]string{csrfHeader: pt.csrf, "Origin": "https://example.com"}})
	if w.Code == http.StatusOK || pt.f.upgradeBody != nil {
		t.Fatalf("anonymous upload: %d", w.Code)
	}
	code, m := pt.postUpgrade(t, "/upgrade", "application/octet-stream", bundle, true)
	if code != http.StatusOK || m["version"] != "2" || m["message"] != pt.text("en", "upgrade.received", "2") {
		t.Fatalf("upload: %d %v", code, m)
	}
	if !bytes.Equal(pt.f.upgradeBody, bundle) {
		t.Fatalf("the backend got %d bytes, want the %d sent", len(pt.f.upgradeBody), len(bundle))
	}
	// Refusals carry the reason.
	pt.f.upgradeErr = model.Plain(model.ErrInvalid, "open bundle: signature does not verify with the upgrade key")
	code, m = pt.postUpgrade(t, "/upgrade", "application/octet-stream", bundle, true)
	if code != http.StatusBadRequest || m["code"] != "invalid" || !strings.Contains(m["error"].(string), "signature does not verify") {
		t.Fatalf("bad bundle: %d %v", code, m)
	}
	pt.f.upgradeErr = model.Plain(model.ErrForbidden, "not the image")
	if code, m = pt.postUpgrade(t, "/upgrade", "application/octet-stream", bundle, true); code != http.StatusForbidden || m["code"] != "not_image" {
		t.Fatalf("off the image: %d %v", code, m)
	}
}

func TestUpgradeFromURL(t *testing.T) {
	bundle := []byte("the bundle from the admin's server")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/cloudsteer-2-amd64.upgrade" {
			http.NotFound(w, r)
			return
		}
		w.Write(bundle)
	}))
	defer srv.Close()
	pt := newPagesTest(t, Options{HTTPClient: srv.Client()})
	form := func(u string) []byte { return []byte(url.Values{"url": {u}}.Encode()) }
	const ct = "application/x-www-form-urlencoded"
	code, m := pt.postUpgrade(t, "/upgrade/url", ct, form(srv.URL+"/cloudsteer-2-amd64.upgrade"), true)
	if code != http.StatusOK || m["version"] != "2" || !bytes.Equal(pt.f.upgradeBody, bundle) {
		t.Fatalf("from URL: %d %v, backend got %q", code, m, pt.f.upgradeBody)
	}
	if code, m = pt.postUpgrade(t, "/upgrade/url", ct, form(srv.URL+"/nope"), true); code != http.StatusBadGateway || m["code"] != "download" || !strings.Contains(m["error"].(string), "404") {
		t.Fatalf("404: %d %v", code, m)
	}
	for _, bad := range []string{"", "file:///etc/passwd", "ftp://x/y", "https://", "not a url"} {
		if code, m = pt.postUpgrade(t, "/upgrade/url", ct, form(bad), true); code != http.StatusBadRequest || m["code"] != "invalid_url" {
			t.Errorf("url %q: %d %v", bad, code, m)
		}
	}
	pt.f.upgradeBody = nil
	if code, _ = pt.postUpgrade(t, "/upgrade/url", ct, form(srv.URL+"/cloudsteer-2-amd64.upgrade"), false); code != http.StatusForbidden || pt.f.upgradeBody != nil {
		t.Fatalf("without CSRF: %d", code)
	}
}

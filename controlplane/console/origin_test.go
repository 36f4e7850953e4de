package console

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestReferrerPolicyKeepsOrigin: the pages' referrer policy must let a
// browser send the console's own Origin on a same-origin POST. Under
// "no-referrer" browsers send "Origin: null" instead (Fetch standard,
// "serializing a request origin"), which the Origin check refuses, so no
// form or script of the console could change anything (seen in chromium
// by e2e TestConsoleBrowser).
func TestReferrerPolicyKeepsOrigin(t *testing.T) {
	c, err := New(newFakeBackend(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := c.Handler()
	post := func(origin string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", "https://10.10.0.1/lang", strings.NewReader("lang=ja&back=/"))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	w := post("https://10.10.0.1")
	if w.Code != http.StatusSeeOther {
		t.Fatalf("same-origin POST: %d %s", w.Code, w.Body)
	}
	switch p := w.Header().Get("Referrer-Policy"); p {
	case "same-origin", "strict-origin", "strict-origin-when-cross-origin", "origin", "origin-when-cross-origin":
	default:
		t.Errorf("Referrer-Policy %q: browsers would send Origin: null on the console's POSTs", p)
	}
	if w := post("null"); w.Code != http.StatusForbidden {
		t.Errorf("POST with Origin: null: %d, want 403", w.Code)
	}
	if w := post("https://evil.example"); w.Code != http.StatusForbidden {
		t.Errorf("cross-origin POST: %d, want 403", w.Code)
	}
}

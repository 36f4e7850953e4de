package console

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestOriginCheck: a state-changing request is answered only when its
// Origin is the console's own. "Origin: null" (what browsers send under a
// no-referrer policy, see TestReferrerPolicy) and a foreign origin are
// refused before any handler runs.
func TestOriginCheck(t *testing.T) {
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
	if w := post("https://10.10.0.1"); w.Code != http.StatusSeeOther {
		t.Fatalf("same-origin POST: %d %s", w.Code, w.Body)
	}
	for _, o := range []string{"null", "https://evil.example", "http://10.10.0.1"} {
		if w := post(o); w.Code != http.StatusForbidden {
			t.Errorf("POST with Origin %s: %d, want 403", o, w.Code)
		}
	}
}

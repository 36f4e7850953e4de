package console

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

var evT0 = time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)

func seedEvents(f *fakeBackend) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = []model.Event{
		{ID: 1, Time: evT0, Client: "10.0.0.5", MAC: "aa:bb:cc:dd:ee:01", Name: "sports.example", Proto: "tls", Reason: "blocked", Category: "Sports", Target: "203.0.113.9:443"},
		{ID: 2, Time: evT0.Add(time.Hour), Client: "10.0.0.6", Name: "bad.example", Proto: "dns", Reason: "dns_blocked"},
		{ID: 3, Time: evT0.Add(2 * time.Hour), Client: "10.0.0.5", Name: "console", Proto: "console", Reason: "login_failed"},
		{ID: 4, Time: evT0.Add(3 * time.Hour), Client: "10.0.0.5", Name: "news.example", Proto: "http", Reason: "blocked", Status: 403},
	}
}

func rowIDs(t *testing.T, pt *pagesTest, path string) []string {
	t.Helper()
	var ids []string
	for _, n := range byTest(pt.page(t, path, "en"), "events-row") {
		ids = append(ids, htmlAttr(n, "data-id"))
	}
	return ids
}

func TestEventsPage(t *testing.T) {
	pt := newPagesTest(t, Options{})
	seedEvents(pt.f)
	pt.f.names["10.0.0.5"] = "Reception PC"
	for _, lang := range languages {
		doc := pt.page(t, "/events", lang)
		rows := byTest(doc, "events-row")
		if len(rows) != 4 || htmlAttr(rows[0], "data-id") != "4" || htmlAttr(rows[3], "data-id") != "1" {
			t.Fatalf("%s: rows not newest first", lang)
		}
		last := nodeText(rows[3])
		for _, want := range []string{"10.0.0.5", "aa:bb:cc:dd:ee:01", "Reception PC", "sports.example", pt.text(lang, "event.reason.blocked"), "Sports", "203.0.113.9:443", "2026-12-03T10:00:00Z"} {
			wantContains(t, lang+" row 1", last, want)
		}
		wantContains(t, "dns row", nodeText(rows[2]), pt.text(lang, "event.reason.dns_blocked"))
		if got := nodeText(byTest(doc, "events-client-name-10.0.0.5")[0]); got != "Reception PC" {
			t.Errorf("client name %q", got)
		}
		for _, id := range []string{"events-filter-client", "events-filter-name", "events-filter-submit"} {
			oneTest(t, doc, id)
		}
	}
	for _, tc := range []struct {
		name, query string
		want        string
	}{
		{"client IP", "client=10.0.0.6", "2"},
		{"client name", "client=reception+pc", "4,3,1"},
		{"host name", "name=SPORTS", "1"},
		{"since RFC 3339", "since=2026-12-03T11:00:00Z", "4,3,2"},
		{"until local UTC", "until=2026-12-03T11:00", "1"},
		{"since local JST (21:00 JST = 12:00 UTC)", "since=2026-12-03T21:00&tz=-540", "4,3"},
		{"range", "since=2026-12-03T10:30:00Z&until=2026-12-03T12:30:00Z&client=10.0.0.5", "3"},
		{"unknown parameter ignored", "utm=1", "4,3,2,1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := strings.Join(rowIDs(t, pt, "/events?"+tc.query), ","); got != tc.want {
				t.Errorf("ids %s, want %s", got, tc.want)
			}
		})
	}
	for _, tc := range []struct{ name, query, key, arg string }{
		{"bad client", "client=10.0.0.999", "events.err.client", "10.0.0.999"},
		{"bad since", "since=yesterday", "events.err.since", "yesterday"},
		{"bad until", "until=2026-13-01T00:00", "events.err.until", "2026-13-01T00:00"},
		{"order", "since=2026-12-03T12:00:00Z&until=2026-12-03T11:00:00Z", "events.err.order", ""},
		{"bad tz", "tz=abc&since=2026-12-03T12:00", "events.err.tz", "abc"},
		{"control char", "name=" + url.QueryEscape("a\x01b"), "events.err.name", "a\x01b"},
		{"long name", "name=" + strings.Repeat("a", 300), "events.err.name", strings.Repeat("a", 300)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, lang := range languages {
				w := pt.do(t, pageReq{path: "/events?" + tc.query, lang: lang})
				if w.Code != http.StatusBadRequest {
					t.Fatalf("%d, want 400", w.Code)
				}
				doc := parsePage(t, w.Body.String())
				want := pt.text(lang, tc.key, clipEcho(tc.arg))
				if got := nodeText(oneTest(t, doc, "events-error")); got != strings.Join(strings.Fields(want), " ") {
					t.Errorf("%s error %q, want %q", lang, got, want)
				}
				if len(byTest(doc, "events-row")) != 0 {
					t.Error("rows shown with a bad filter")
				}
			}
		})
	}
}

func badgeCount(t *testing.T, pt *pagesTest) int {
	t.Helper()
	w := pt.do(t, pageReq{path: "/badge"})
	var b badgeAnswer
	if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &b) != nil {
		t.Fatalf("GET /badge: %d %s", w.Code, w.Body)
	}
	// The page's navigation shows the same count.
	doc := pt.page(t, "/", "en")
	nav := byTest(doc, "badge")
	switch {
	case b.Count == 0 && len(nav) != 0, b.Count > 0 && (len(nav) != 1 || nodeText(nav[0]) != countText(b.Count)):
		t.Errorf("nav badge %d elements, /badge says %d", len(nav), b.Count)
	}
	if b.Count > 0 && b.Label != pt.text("en", "nav.badge", b.Count) {
		t.Errorf("label %q", b.Label)
	}
	return b.Count
}

func countText(n int) string { b, _ := json.Marshal(n); return string(b) }

func TestBadge(t *testing.T) {
	pt := newPagesTest(t, Options{})
	if n := badgeCount(t, pt); n != 0 {
		t.Fatalf("badge %d with no events", n)
	}
	seedEvents(pt.f)
	if n := badgeCount(t, pt); n != 3 {
		t.Fatalf("badge %d, want 3 (blocked, dns_blocked, blocked; not the failed login)", n)
	}
	// Opening Events, even filtered, marks them seen; its own nav shows none.
	doc := pt.page(t, "/events?client=10.0.0.6", "en")
	if len(byTest(doc, "badge")) != 0 {
		t.Error("badge on the Events page")
	}
	if n := badgeCount(t, pt); n != 0 {
		t.Fatalf("badge %d after opening Events", n)
	}
	pt.f.mu.Lock()
	pt.f.events = append(pt.f.events, model.Event{ID: 5, Time: evT0.Add(4 * time.Hour), Client: "10.0.0.7", Name: "x.example", Reason: "blocked"},
		model.Event{ID: 6, Time: evT0.Add(4 * time.Hour), Client: "10.0.0.7", Name: "x.example", Reason: "auth_failed"})
	pt.f.mu.Unlock()
	if n := badgeCount(t, pt); n != 1 {
		t.Fatalf("badge %d, want 1 new block", n)
	}
	// Another account has its own mark.
	if n := pt.c.badge(t.Context(), "someone-else"); n != 4 {
		t.Errorf("other account's badge %d, want 4", n)
	}
	// The Events page's script marks what it showed; the CSRF token is needed.
	if w := pt.do(t, pageReq{method: "POST", path: "/events/seen", body: strings.NewReader("id=6"), hdr: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}}); w.Code != http.StatusForbidden {
		t.Fatalf("seen without CSRF: %d", w.Code)
	}
	w := pt.do(t, pageReq{method: "POST", path: "/events/seen", body: strings.NewReader("id=6"), hdr: map[string]string{"Content-Type": "application/x-www-form-urlencoded", csrfHeader: pt.csrf}})
	if w.Code != http.StatusOK {
		t.Fatalf("seen: %d %s", w.Code, w.Body)
	}
	if n := badgeCount(t, pt); n != 0 {
		t.Fatalf("badge %d after seen", n)
	}
	// An id past the newest cannot hide blocks to come.
	pt.do(t, pageReq{method: "POST", path: "/events/seen", body: strings.NewReader("id=999999"), hdr: map[string]string{"Content-Type": "application/x-www-form-urlencoded", csrfHeader: pt.csrf}})
	pt.f.mu.Lock()
	pt.f.events = append(pt.f.events, model.Event{ID: 7, Time: evT0.Add(5 * time.Hour), Client: "10.0.0.7", Name: "y.example", Reason: "blocked"})
	pt.f.mu.Unlock()
	if n := badgeCount(t, pt); n != 1 {
		t.Fatalf("badge %d after a too-large seen id, want 1", n)
	}
	if w := pt.do(t, pageReq{method: "POST", path: "/events/seen", body: strings.NewReader("id=x"), hdr: map[string]string{"Content-Type": "application/x-www-form-urlencoded", csrfHeader: pt.csrf}}); w.Code != http.StatusBadRequest {
		t.Errorf("bad id: %d", w.Code)
	}
}

func TestClientNaming(t *testing.T) {
	pt := newPagesTest(t, Options{})
	seedEvents(pt.f)
	form := func(v url.Values, hdr map[string]string) (int, string, http.Header) {
		h := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
		for k, x := range hdr {
			h[k] = x
		}
		w := pt.do(t, pageReq{method: "POST", path: "/clients", body: strings.NewReader(v.Encode()), hdr: h})
		return w.Code, w.Body.String(), w.Header()
	}
	if code, _, _ := form(url.Values{"client": {"10.0.0.5"}, "name": {"Reception"}}, nil); code != http.StatusForbidden {
		t.Fatalf("no CSRF: %d", code)
	}
	if code, _, _ := form(url.Values{"client": {"10.0.0.5"}, "name": {"Reception"}, "csrf": {"wrong"}}, nil); code != http.StatusForbidden {
		t.Fatalf("wrong CSRF: %d", code)
	}
	if len(pt.f.names) != 0 {
		t.Fatal("named without CSRF")
	}
	code, body, _ := form(url.Values{"client": {"10.0.0.5"}, "name": {" Reception "}}, map[string]string{csrfHeader: pt.csrf})
	if code != http.StatusOK || !strings.Contains(body, `"name":"Reception"`) {
		t.Fatalf("name by script: %d %s", code, body)
	}
	if pt.f.names["10.0.0.5"] != "Reception" {
		t.Fatalf("names %v", pt.f.names)
	}
	if got := nodeText(byTest(pt.page(t, "/events", "en"), "events-client-name-10.0.0.5")[0]); got != "Reception" {
		t.Errorf("events page shows %q", got)
	}
	// A plain form post (no script) goes back to the page it came from.
	code, _, h := form(url.Values{"client": {"AA:BB:CC:DD:EE:01"}, "name": {"Printer"}, "csrf": {pt.csrf}, "back": {"/events?client=10.0.0.5"}}, nil)
	if code != http.StatusSeeOther || h.Get("Location") != "/events?client=10.0.0.5" {
		t.Fatalf("form post: %d %q", code, h.Get("Location"))
	}
	if pt.f.names["aa:bb:cc:dd:ee:01"] != "Printer" {
		t.Errorf("MAC not normalised: %v", pt.f.names)
	}
	if _, _, h := form(url.Values{"client": {"10.0.0.6"}, "name": {"x"}, "csrf": {pt.csrf}, "back": {"//evil.example/"}}, nil); h.Get("Location") != "/events" {
		t.Errorf("open redirect: %q", h.Get("Location"))
	}
	for _, bad := range []url.Values{
		{"client": {"not-an-ip"}, "name": {"x"}},
		{"client": {"10.0.0.5"}, "name": {strings.Repeat("名", 65)}},
		{"client": {"10.0.0.5"}, "name": {"a\nb"}},
	} {
		code, body, _ := form(bad, map[string]string{csrfHeader: pt.csrf})
		if code != http.StatusBadRequest || !strings.Contains(body, `"code":"invalid"`) {
			t.Errorf("%v: %d %s", bad, code, body)
		}
	}
	// An empty name removes it.
	form(url.Values{"client": {"10.0.0.5"}, "name": {""}}, map[string]string{csrfHeader: pt.csrf})
	if _, ok := pt.f.names["10.0.0.5"]; ok {
		t.Error("empty name kept")
	}
}

func FuzzParseEventQuery(f *testing.F) {
	for _, s := range []string{"client=10.0.0.5", "since=2026-12-03T21:00&tz=-540", "until=2026-12-03T11:00:00Z&name=x", "client=%ff", "tz=99999", "since=a&until=b"} {
		f.Add(s)
	}
	names := map[string]string{"10.0.0.5": "pc"}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		flt, _, err := parseEventQuery(q, names)
		if err != nil {
			if _, ok := err.(*filterError); !ok {
				t.Fatalf("error type %T", err)
			}
			return
		}
		if !flt.Since.IsZero() && !flt.Until.IsZero() && flt.Until.Before(flt.Since) {
			t.Fatal("until before since accepted")
		}
		if len(flt.Name) > maxNameFilter || !printableText(flt.Name) {
			t.Fatal("bad name accepted")
		}
		// Whatever the page accepts, the API's filter accepts too (the
		// script polls it with the same filter).
		if _, err := url.ParseQuery(apiEventQuery(flt)); err != nil {
			t.Fatal(err)
		}
	})
}

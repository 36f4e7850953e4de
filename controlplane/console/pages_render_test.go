package console

import (
	"bytes"
	"compress/gzip"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

var signedInPages = map[string]string{
	"/": "status.title", "/bypass": "bypass.title", "/pause": "pause.title", "/events": "events.title",
	"/diagnostics": "diag.title", "/settings": "settings.title", "/certificate": "cert.title",
}

// TestPagesRender: every page renders in both languages with its title
// from the catalog, the page's language, and every visible control
// labelled.
func TestPagesRender(t *testing.T) {
	pt := newPagesTest(t, Options{})
	for path, title := range signedInPages {
		for _, lang := range languages {
			w := pt.do(t, pageReq{path: path, lang: lang})
			if w.Code != http.StatusOK {
				t.Fatalf("GET %s %s: %d", path, lang, w.Code)
			}
			if got := w.Header().Get("Content-Language"); got != lang {
				t.Errorf("GET %s: Content-Language %q, want %q", path, got, lang)
			}
			doc := parsePage(t, w.Body.String())
			var h1 string
			walkHTML(doc, func(n *html.Node) {
				if n.Data == "h1" {
					h1 = nodeText(n)
				}
			})
			if want := pt.text(lang, title); h1 != want {
				t.Errorf("GET %s %s: h1 %q, want %q", path, lang, h1, want)
			}
			checkLabels(t, path, doc)
			if lang == "ja" && !regexp.MustCompile(`[\p{Hiragana}\p{Katakana}]`).MatchString(h1+w.Body.String()) {
				t.Errorf("GET %s ja: no Japanese", path)
			}
		}
	}
}

// checkLabels: every input, select and textarea that is not hidden has a
// <label for> or an aria-label.
func checkLabels(t *testing.T, page string, doc *html.Node) {
	t.Helper()
	labels := map[string]bool{}
	walkHTML(doc, func(n *html.Node) {
		if n.Data == "label" {
			labels[htmlAttr(n, "for")] = true
		}
	})
	walkHTML(doc, func(n *html.Node) {
		switch n.Data {
		case "input", "select", "textarea":
		default:
			return
		}
		if htmlAttr(n, "type") == "hidden" || htmlAttr(n, "aria-label") != "" {
			return
		}
		if id := htmlAttr(n, "id"); id == "" || !labels[id] {
			t.Errorf("%s: %s %q (data-test %q) has no label", page, n.Data, htmlAttr(n, "name"), htmlAttr(n, "data-test"))
		}
	})
}

// TestPagesNeedLogin: without a session every page goes to the login.
func TestPagesNeedLogin(t *testing.T) {
	pt := newPagesTest(t, Options{})
	for path := range signedInPages {
		w := pt.do(t, pageReq{path: path, anon: true})
		if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/login" {
			t.Errorf("GET %s without session: %d %q, want 303 /login", path, w.Code, w.Header().Get("Location"))
		}
	}
	for _, p := range []string{"/badge"} {
		if w := pt.do(t, pageReq{path: p, anon: true}); w.Code != http.StatusSeeOther {
			t.Errorf("GET %s without session: %d", p, w.Code)
		}
	}
}

// TestTemplatesCSP: the strict CSP forbids inline scripts, styles and
// event handlers; no template may use them.
func TestTemplatesCSP(t *testing.T) {
	bad := regexp.MustCompile(`(?i)<script|<style|\sstyle=|\son[a-z]+=|javascript:`)
	files, _ := fs.Glob(templateFS, "templates/*.html")
	for _, f := range files {
		raw, _ := templateFS.ReadFile(f)
		if m := bad.Find(raw); m != nil && !(strings.HasSuffix(f, "layout.html") && bytes.Contains(m, []byte("<script"))) {
			t.Errorf("%s: %q breaks the CSP", f, m)
		}
	}
}

// TestStaticSmall: the shipped JS and CSS stay far below 150 KB
// compressed (aim: under 20 KB).
func TestStaticSmall(t *testing.T) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	for _, f := range []string{"static/app.js", "static/app.css"} {
		raw, err := staticFS.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		zw.Write(raw)
	}
	zw.Close()
	if buf.Len() > 20<<10 {
		t.Errorf("JS+CSS gzip %d bytes, want ≤ 20 KB", buf.Len())
	}
}

// TestDynamicKeys: the keys the templates build at run time exist.
func TestDynamicKeys(t *testing.T) {
	cat, err := loadCatalogs()
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, c := range reasonCodes {
		keys = append(keys, "reason."+c+".title", "reason."+c+".fix")
	}
	for _, n := range checkNames {
		keys = append(keys, "diag.check."+n)
	}
	for _, r := range eventReasons {
		keys = append(keys, "event.reason."+r)
	}
	for _, ch := range pauseChoices() {
		keys = append(keys, ch.Label)
	}
	keys = append(keys, "settings.source_config", "settings.source_activate")
	for _, k := range keys {
		for _, lang := range languages {
			if _, ok := cat[lang][k]; !ok {
				t.Errorf("%s lacks %q", lang, k)
			}
		}
	}
	if len(pauseChoices()) != len(model.PauseChoices)+1 {
		t.Error("pause choices do not follow model.PauseChoices")
	}
}

func TestClock(t *testing.T) {
	for d, want := range map[time.Duration]string{
		15 * time.Minute: "0:15:00", time.Hour + 500*time.Millisecond: "1:00:01", 25 * time.Hour: "25:00:00", -time.Second: "0:00:00",
	} {
		if got := clock(d); got != want {
			t.Errorf("clock(%v) = %q, want %q", d, got, want)
		}
	}
}

// TestReferrerPolicy: the policy must not be "no-referrer", under which
// Chromium sends "Origin: null" on form posts and sameOrigin refuses the
// language switch, logout and the CA upload (seen in a real browser).
func TestReferrerPolicy(t *testing.T) {
	pt := newPagesTest(t, Options{})
	for _, h := range []http.Handler{pt.h, pt.c.CAHandler()} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/ca", nil))
		if got := w.Header().Get("Referrer-Policy"); got != "same-origin" {
			t.Errorf("Referrer-Policy %q, want same-origin", got)
		}
	}
}

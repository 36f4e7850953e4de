package console

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"golang.org/x/net/html"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/controlplane/console/auth"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// pagesTest is a Console over a fake Backend with a signed-in admin.
type pagesTest struct {
	c     *Console
	f     *fakeBackend
	h     http.Handler
	token string
	csrf  string
}

func newPagesTest(t testing.TB, opts Options) *pagesTest {
	t.Helper()
	f := newFakeBackend()
	f.admin = model.AdminAccount{User: "admin", TOTPSecret: "JBSWY3DPEHPK3PXP"}
	f.hasAdmin = true
	if opts.API == nil {
		srv, err := api.NewServer(f, api.Options{})
		if err != nil {
			t.Fatal(err)
		}
		opts.API = srv
	}
	c, err := New(f, opts)
	if err != nil {
		t.Fatal(err)
	}
	token, s, err := c.sessions.Create("admin")
	if err != nil {
		t.Fatal(err)
	}
	return &pagesTest{c: c, f: f, h: c.Handler(), token: token, csrf: s.CSRF}
}

// req is one request: the session cookie unless anon, the language
// cookie when lang is set, and the headers.
type pageReq struct {
	method, path string
	body         io.Reader
	lang         string
	anon         bool
	hdr          map[string]string
}

func (pt *pagesTest) do(t testing.TB, r pageReq) *httptest.ResponseRecorder {
	t.Helper()
	if r.method == "" {
		r.method = http.MethodGet
	}
	hr := httptest.NewRequest(r.method, r.path, r.body)
	if !r.anon {
		hr.AddCookie(&http.Cookie{Name: auth.SessionCookieName, Value: pt.token})
	}
	if r.lang != "" {
		hr.AddCookie(&http.Cookie{Name: langCookie, Value: r.lang})
	}
	for k, v := range r.hdr {
		hr.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	pt.h.ServeHTTP(w, hr)
	return w
}

// page GETs path in lang, wants 200 and returns the parsed document.
func (pt *pagesTest) page(t testing.TB, path, lang string) *html.Node {
	t.Helper()
	w := pt.do(t, pageReq{path: path, lang: lang})
	if w.Code != http.StatusOK {
		t.Fatalf("GET %s (%s): %d %s", path, lang, w.Code, w.Body.String())
	}
	return parsePage(t, w.Body.String())
}

func (pt *pagesTest) text(lang, key string, args ...any) string {
	return pt.c.cat.text(lang, key, args...)
}

func parsePage(t testing.TB, s string) *html.Node {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// walk calls fn on every element node under n.
func walkHTML(n *html.Node, fn func(*html.Node)) {
	if n.Type == html.ElementNode {
		fn(n)
	}
	for ch := n.FirstChild; ch != nil; ch = ch.NextSibling {
		walkHTML(ch, fn)
	}
}

func htmlAttr(n *html.Node, k string) string {
	for _, a := range n.Attr {
		if a.Key == k {
			return a.Val
		}
	}
	return ""
}

func htmlHasAttr(n *html.Node, k string) bool {
	for _, a := range n.Attr {
		if a.Key == k {
			return true
		}
	}
	return false
}

// byTest returns the elements whose data-test is name.
func byTest(doc *html.Node, name string) []*html.Node {
	var out []*html.Node
	walkHTML(doc, func(n *html.Node) {
		if htmlAttr(n, "data-test") == name {
			out = append(out, n)
		}
	})
	return out
}

// one returns the single element with data-test name.
func oneTest(t testing.TB, doc *html.Node, name string) *html.Node {
	t.Helper()
	ns := byTest(doc, name)
	if len(ns) != 1 {
		t.Fatalf("data-test=%q: %d elements, want 1", name, len(ns))
	}
	return ns[0]
}

// textOf is n's text with white space collapsed.
func nodeText(n *html.Node) string {
	var b strings.Builder
	var rec func(*html.Node)
	rec = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
			b.WriteByte(' ')
		}
		for ch := n.FirstChild; ch != nil; ch = ch.NextSibling {
			rec(ch)
		}
	}
	rec(n)
	return strings.Join(strings.Fields(b.String()), " ")
}

func wantContains(t testing.TB, what, got, want string) {
	t.Helper()
	if !strings.Contains(got, want) {
		t.Errorf("%s = %q, want it to contain %q", what, got, want)
	}
}

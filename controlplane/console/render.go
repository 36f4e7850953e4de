package console

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cloudsteer/cloudsteer/internal/hostheader"
)

//go:embed templates
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// pageData is what every template gets: the language, the session's CSRF
// token for forms and the script, the signed-in user and the page's own
// data. Templates call {{.T "key" args…}} for every visible string.
type pageData struct {
	Lang  string
	Page  string // the template's name, which the navigation highlights
	CSRF  string
	User  string // "" when nobody is signed in
	Path  string // the request path, for the language switch's way back
	Badge int    // new block events since the admin last opened Events
	Data  any
	cat   catalogs
}

// T returns key's text in the page's language.
func (p pageData) T(key string, args ...any) string { return p.cat.text(p.Lang, key, args...) }

// Langs lists the languages for the switch.
func (p pageData) Langs() []string { return languages }

// templateFuncs are the helpers templates may use besides .T.
var templateFuncs = template.FuncMap{
	"rfc3339": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	},
	"query": url.QueryEscape,
	"itoa":  strconv.Itoa,
}

// parsePages parses each templates/<page>.html together with
// templates/layout.html; a page defines "title" and "content" (and
// "scripts" data attributes if it needs them).
func parsePages() (map[string]*template.Template, error) {
	files, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("parse pages: %w", err)
	}
	pages := map[string]*template.Template{}
	for _, f := range files {
		name := strings.TrimSuffix(strings.TrimPrefix(f, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.New("layout.html").Funcs(templateFuncs).ParseFS(templateFS, "templates/layout.html", f)
		if err != nil {
			return nil, fmt.Errorf("parse page %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

// render writes page name with data in the request's language. It renders
// into a buffer first so that a template error is a clean 500.
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, p pageData) {
	t, ok := c.pages[name]
	if !ok {
		c.log.Error("render: no such page", "page", name)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	p.cat, p.Page, p.Path = c.cat, name, r.URL.Path
	if p.Lang == "" {
		p.Lang = langOf(r)
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout.html", p); err != nil {
		c.log.Error("render page", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Language", p.Lang)
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// staticHandler serves the embedded CSS, script and images.
func staticHandler() http.Handler {
	sub, _ := fs.Sub(staticFS, "static")
	fsrv := http.StripPrefix("/static/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		fsrv.ServeHTTP(w, r)
	})
}

// contentSecurityPolicy allows only the console's own scripts, styles and
// images (QR codes are data: URLs), and no framing.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// referrerPolicy keeps the Referer within the console: a form POST then
// carries its real Origin.
const referrerPolicy = "same-origin"

// secured answers only this gateway's Host (421 otherwise, as the admin
// API), refuses cross-origin state changes by their Origin header (the
// CSRF token is checked as well, by each handler), and sets the security
// headers on every answer.
func (c *Console) secured(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		// Not "no-referrer": under it Chromium sends "Origin: null" on a
		// form POST, which sameOrigin refuses (language switch, logout,
		// uploads). "same-origin" still sends nothing to other sites.
		h.Set("Referrer-Policy", referrerPolicy)
		h.Set("Strict-Transport-Security", "max-age=31536000")
		if !strings.HasPrefix(r.URL.Path, "/static/") {
			h.Set("Cache-Control", "no-store")
		}
		addr, name, ok := hostheader.Parse(r.Host)
		if !ok || c.opts.AllowHost != nil && !c.opts.AllowHost(addr, name) {
			http.Error(w, "this is not a name of this gateway: use its LAN address", http.StatusMisdirectedRequest)
			return
		}
		if !safeMethod(r.Method) && !sameOrigin(r) {
			http.Error(w, "cross-origin request refused", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func safeMethod(m string) bool { return m == http.MethodGet || m == http.MethodHead }

// sameOrigin reports whether a state-changing request's Origin (or, when
// absent, Referer) names the host it was sent to over HTTPS. Browsers send
// Origin on every cross-origin and same-origin POST; a request with
// neither (curl, the CLI) is left to the token checks.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		o = r.Header.Get("Referer")
		if o == "" {
			return true
		}
	}
	u, err := url.Parse(o)
	if err != nil {
		return false
	}
	return u.Scheme == "https" && strings.EqualFold(u.Host, r.Host)
}

package console

import (
	"bytes"
	"compress/gzip"
	"io/fs"
	"net/http/httptest"
	"strings"
	"testing"
)

// maxAssetsGzip is the budget for the shipped script and style,
// compressed: a phone on a slow office Wi-Fi loads the console at once.
const maxAssetsGzip = 150 << 10

// TestAssetsSmall: the embedded JS and CSS, gzip-compressed, stay within
// the budget, and nothing in them loads from another origin.
func TestAssetsSmall(t *testing.T) {
	var all bytes.Buffer
	err := fs.WalkDir(staticFS, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if !strings.HasSuffix(p, ".js") && !strings.HasSuffix(p, ".css") {
			return nil
		}
		b, err := staticFS.ReadFile(p)
		if err != nil {
			return err
		}
		for _, bad := range []string{"http://", "https://", "//cdn", "@import url(", "fonts.googleapis"} {
			if bytes.Contains(b, []byte(bad)) {
				t.Errorf("%s mentions %q: assets must not load from elsewhere", p, bad)
			}
		}
		all.Write(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var z bytes.Buffer
	w, _ := gzip.NewWriterLevel(&z, gzip.BestCompression)
	w.Write(all.Bytes())
	w.Close()
	t.Logf("JS+CSS: %d bytes, %d gzip-compressed (budget %d)", all.Len(), z.Len(), maxAssetsGzip)
	if all.Len() == 0 {
		t.Fatal("no JS or CSS embedded")
	}
	if z.Len() > maxAssetsGzip {
		t.Errorf("JS+CSS compress to %d bytes, over the %d budget", z.Len(), maxAssetsGzip)
	}
}

// TestFavicon: every page names the embedded icon, and it is served (a
// browser asks for /favicon.ico otherwise, a 404 in its console).
func TestFavicon(t *testing.T) {
	c, err := New(newFakeBackend(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	c.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "https://gw/static/favicon.svg", nil))
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "image/svg+xml" || !strings.Contains(rec.Body.String(), "<svg") {
		t.Fatalf("favicon: %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	raw, _ := templateFS.ReadFile("templates/layout.html")
	if !strings.Contains(string(raw), `rel="icon" href="/static/favicon.svg"`) {
		t.Fatal("the layout does not name the icon")
	}
}

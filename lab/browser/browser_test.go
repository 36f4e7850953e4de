package browser_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"image/png"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
	"github.com/cloudsteer/cloudsteer/lab/browser"
)

// TestBrowserInNetNS drives chromium inside a network namespace of its own
// against an HTTPS server there whose self-signed certificate is pinned by
// its SPKI hash: every command of the driver, the locale, a phone viewport,
// screenshots, and the refusal of a server whose certificate is not the
// pinned one.
func TestBrowserInNetNS(t *testing.T) {
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "ip")
	browser.Require(t)
	ns := privtest.NewNetNS(t)

	good, bad := selfSigned(t), selfSigned(t)
	site := &testSite{}
	serveTLS(t, ns, "127.0.0.1:8443", good, site.handler())
	other := &testSite{}
	serveTLS(t, ns, "127.0.0.1:8444", bad, other.handler())
	const base = "https://127.0.0.1:8443"
	shots := artifacts(t)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b := start(ctx, t, browser.Options{NetNS: ns, Locale: "ja-JP", SPKIPins: []string{browser.SPKIHash(good.Leaf)}})

	resp, err := b.Goto(ctx, base+"/")
	if err != nil {
		t.Fatalf("goto the pinned server: %v", err)
	}
	if resp.Status != 200 || resp.URL != base+"/" {
		t.Fatalf("goto: %+v, want 200 at %s/", resp, base)
	}
	if al := site.last("accept-language"); !strings.HasPrefix(al, "ja-JP") {
		t.Errorf("Accept-Language %q, want ja-JP first (locale)", al)
	}
	if title, err := b.Title(ctx); err != nil || title != "selftest" {
		t.Errorf("title %q, %v", title, err)
	}

	// Form controls, a click, and text that appears later.
	must(t, b.Fill(ctx, `[data-test="name"]`, "Taro"))
	if got, err := b.SelectOption(ctx, `[data-test="color"]`, "blue"); err != nil || len(got) != 1 || got[0] != "blue" {
		t.Fatalf("select: %v, %v", got, err)
	}
	must(t, b.Check(ctx, `[data-test="agree"]`))
	if on, err := b.IsChecked(ctx, `[data-test="agree"]`); err != nil || !on {
		t.Fatalf("checked after Check: %v, %v", on, err)
	}
	if v, err := b.InputValue(ctx, `[data-test="name"]`); err != nil || v != "Taro" {
		t.Fatalf("input value %q, %v", v, err)
	}
	if txt, err := b.Text(ctx, `[data-test="out"]`); err != nil || txt != "before" {
		t.Fatalf("text before the click: %q, %v", txt, err)
	}
	must(t, b.Click(ctx, `[data-test="go"]`))
	got, err := b.WaitForText(ctx, `[data-test="out"]`, "hello Taro", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got != "hello Taro blue agreed" {
		t.Errorf("text after the click: %q", got)
	}
	must(t, b.Uncheck(ctx, `[data-test="agree"]`))
	must(t, b.Press(ctx, `[data-test="name"]`, "Enter"))
	if _, err := b.WaitForText(ctx, `[data-test="out"]`, "enter Taro", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if items, err := b.Texts(ctx, `[data-test="item"]`); err != nil || strings.Join(items, ",") != "a,b" {
		t.Errorf("texts %q, %v", items, err)
	}
	if n, err := b.Count(ctx, `[data-test="item"]`); err != nil || n != 2 {
		t.Errorf("count %d, %v", n, err)
	}
	if v, ok, err := b.Attr(ctx, `[data-test="name"]`, "id"); err != nil || !ok || v != "name" {
		t.Errorf("attr id: %q %v %v", v, ok, err)
	}
	if _, ok, err := b.Attr(ctx, `[data-test="name"]`, "data-missing"); err != nil || ok {
		t.Errorf("missing attr: ok %v, %v", ok, err)
	}
	if vis, err := b.IsVisible(ctx, `[data-test="hidden"]`); err != nil || vis {
		t.Errorf("hidden element visible: %v, %v", vis, err)
	}
	must(t, b.WaitFor(ctx, `[data-test="late"]`, browser.Visible, 5*time.Second))
	must(t, b.Focus(ctx, `[data-test="name"]`))
	must(t, b.Press(ctx, `[data-test="name"]`, "Tab"))
	if f, err := b.Focused(ctx); err != nil || f.Tag != "input" || f.DataTest != "agree" {
		t.Errorf("focus after Tab from the name: %+v, %v; want the checkbox", f, err)
	}
	if l, err := b.Layout(ctx); err != nil || l.InnerWidth != browser.Desktop.Width || l.ScrollWidth > l.ClientWidth {
		t.Errorf("layout %+v, %v", l, err)
	}

	// A file upload, as the console's certificate page takes one.
	up := filepath.Join(t.TempDir(), "cacert.cer")
	if err := os.WriteFile(up, []byte("certificate bytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	must(t, b.SetInputFiles(ctx, `[data-test="file"]`, up))
	must(t, b.Click(ctx, `[data-test="upload"]`))
	if txt, err := b.WaitForText(ctx, "body", "got cacert.cer", 5*time.Second); err != nil || txt != "got cacert.cer: certificate bytes" {
		t.Errorf("upload: %q, %v", txt, err)
	}
	if _, err := b.Goto(ctx, base+"/"); err != nil {
		t.Fatal(err)
	}

	// A failing command carries Playwright's message.
	short, cancelShort := context.WithTimeout(ctx, time.Second)
	_, err = b.Text(short, `[data-test="nowhere"]`)
	cancelShort()
	if err == nil || !strings.Contains(err.Error(), "locator.innerText: Timeout") {
		t.Fatalf("text of a missing element: %v, want Playwright's timeout", err)
	}
	if err := b.WaitFor(ctx, `[data-test="nowhere"]`, browser.Visible, 300*time.Millisecond); err == nil || !strings.Contains(err.Error(), "Timeout 300ms exceeded") {
		t.Errorf("wait for a missing element: %v, want Playwright's timeout", err)
	}

	// The request API shares the page's cookies; extra headers go along.
	r, err := b.Fetch(ctx, browser.Request{URL: base + "/login", Method: "POST", Form: map[string]string{"user": "admin"}})
	if err != nil || r.Status != http.StatusSeeOther || r.Headers["location"] != "/" {
		t.Fatalf("post /login: %+v, %v", r, err)
	}
	cookies, err := b.Cookies(ctx, base+"/")
	if err != nil || len(cookies) != 1 {
		t.Fatalf("cookies: %d, %v", len(cookies), err)
	}
	if c := cookies[0]; c.Name != "sid" || !c.Secure || !c.HTTPOnly || c.SameSite != "Strict" {
		t.Errorf("cookie flags: %s secure=%v httponly=%v samesite=%s", c.Name, c.Secure, c.HTTPOnly, c.SameSite)
	}
	must(t, b.SetExtraHeaders(ctx, map[string]string{"X-Test": "yes"}))
	if _, err := b.Goto(ctx, base+"/whoami"); err != nil {
		t.Fatal(err)
	}
	if txt, err := b.Text(ctx, "body"); err != nil || txt != "sid=s3 x-test=yes form=admin" {
		t.Errorf("whoami after the request API's login: %q, %v", txt, err)
	}
	must(t, b.ClearCookies(ctx))
	if r, err := b.Fetch(ctx, browser.Request{URL: base + "/whoami"}); err != nil || r.Status != 200 || !strings.HasPrefix(r.Body, "sid= ") {
		t.Errorf("whoami after ClearCookies: %+v, %v", r, err)
	}

	// A screenshot is a PNG of the viewport.
	if _, err := b.Goto(ctx, base+"/"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WaitForURL(ctx, "127.0.0.1:8443/", time.Second); err != nil {
		t.Error(err)
	}
	shot := filepath.Join(shots, "selftest-desktop.png")
	must(t, b.Screenshot(ctx, shot, false))
	checkPNG(t, shot, browser.Desktop)
	if txt, err := b.Text(ctx, `[data-test="width"]`); err != nil || txt != "1280" {
		t.Errorf("page width %q, %v", txt, err)
	}
	full := filepath.Join(shots, "selftest-desktop-full.png")
	must(t, b.Screenshot(ctx, full, true))
	if cfg := pngSize(t, full); cfg.Height <= browser.Desktop.Height {
		t.Errorf("full-page screenshot %dx%d: want taller than the viewport", cfg.Width, cfg.Height)
	}

	// The pin admits that certificate only.
	if _, err := b.Goto(ctx, "https://127.0.0.1:8444/"); err == nil || !strings.Contains(err.Error(), "ERR_CERT") {
		t.Errorf("goto a server with another certificate: %v, want a certificate error", err)
	}
	if r, err := b.Fetch(ctx, browser.Request{URL: "https://127.0.0.1:8444/whoami"}); err == nil || !strings.Contains(err.Error(), "self-signed certificate") {
		t.Errorf("request API to a server with another certificate: %+v, %v; want refused", r, err)
	}
	if n := other.count(); n != 0 {
		t.Errorf("the unpinned server answered %d requests", n)
	}

	// Nothing but the namespace's own server was asked; the page's script
	// ran without a CSP violation.
	reqs, err := b.Requests(ctx)
	if err != nil || len(reqs) == 0 {
		t.Fatalf("requests: %d, %v", len(reqs), err)
	}
	for _, r := range reqs {
		if u, err := url.Parse(r.URL); err != nil || u.Hostname() != "127.0.0.1" {
			t.Errorf("the page requested %s", r.URL)
		}
	}
	if failed, err := b.FailedRequests(ctx); err != nil || len(failed) != 1 || failed[0].URL != "https://127.0.0.1:8444/" || failed[0].Status != 0 || failed[0].Type != "document" {
		t.Errorf("failed requests %+v, %v; want the refused navigation alone", failed, err)
	}
	if errs, err := b.ConsoleErrors(ctx); err != nil || len(errs) > 0 {
		t.Errorf("console errors: %q, %v", errs, err)
	}

	// A phone: 375 px wide, touch.
	phone := start(ctx, t, browser.Options{NetNS: ns, Locale: "en-US", Viewport: browser.Phone, Mobile: true,
		SPKIPins: []string{browser.SPKIHash(good.Leaf)}})
	if _, err := phone.Goto(ctx, base+"/"); err != nil {
		t.Fatal(err)
	}
	if al := site.last("accept-language"); !strings.HasPrefix(al, "en-US") {
		t.Errorf("phone Accept-Language %q, want en-US", al)
	}
	if txt, err := phone.Text(ctx, `[data-test="width"]`); err != nil || txt != "375" {
		t.Errorf("phone page width %q, %v", txt, err)
	}
	shot = filepath.Join(shots, "selftest-phone.png")
	must(t, phone.Screenshot(ctx, shot, false))
	checkPNG(t, shot, browser.Phone)

	// Close ends chromium too: nothing is left in the namespace.
	must(t, phone.Close())
	must(t, b.Close())
	if _, err := b.Goto(ctx, base+"/"); err == nil {
		t.Error("goto after Close: no error")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, _ := exec.Command("ip", "netns", "pids", ns).Output()
		var left []string
		for _, pid := range strings.Fields(string(out)) {
			if pid != strconv.Itoa(os.Getpid()) { // the listeners' threads
				left = append(left, pid)
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			ps, _ := exec.Command("ps", "-o", "pid,ppid,stat,args", "-p", strings.Join(left, ",")).Output()
			t.Errorf("processes left in %s after Close:\n%s", ns, ps)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestBrowserNoPin: without the pin the same self-signed server is refused,
// so the pin, not a blanket exception, is what admits it.
func TestBrowserNoPin(t *testing.T) {
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "ip")
	browser.Require(t)
	ns := privtest.NewNetNS(t)
	site := &testSite{}
	serveTLS(t, ns, "127.0.0.1:8443", selfSigned(t), site.handler())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := start(ctx, t, browser.Options{NetNS: ns, SPKIPins: []string{browser.SPKIHash(selfSigned(t).Leaf)}})
	_, err := b.Goto(ctx, "https://127.0.0.1:8443/")
	if err == nil || !strings.Contains(err.Error(), "ERR_CERT_AUTHORITY_INVALID") {
		t.Errorf("goto a self-signed server pinned to another key: %v, want ERR_CERT_AUTHORITY_INVALID", err)
	}
	if n := site.count(); n != 0 {
		t.Errorf("the server answered %d requests", n)
	}
}

func start(ctx context.Context, t *testing.T, o browser.Options) *browser.Browser {
	t.Helper()
	b, err := browser.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.Close()
		if t.Failed() && b.Stderr() != "" {
			t.Logf("browser driver stderr:\n%s", b.Stderr())
		}
	})
	return b
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// artifacts returns the screenshot directory (CLOUDSTEER_ARTIFACTS or
// e2e/out/screenshots).
func artifacts(t *testing.T) string {
	t.Helper()
	dir, err := browser.ArtifactsDir()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func pngSize(t *testing.T, path string) (cfg struct{ Width, Height int }) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
	cfg.Width, cfg.Height = img.Bounds().Dx(), img.Bounds().Dy()
	return cfg
}

// checkPNG checks path is a whole PNG of viewport's size.
func checkPNG(t *testing.T, path string, v browser.Viewport) {
	t.Helper()
	if cfg := pngSize(t, path); cfg.Width != v.Width || cfg.Height != v.Height {
		t.Errorf("%s is %dx%d, want %dx%d", path, cfg.Width, cfg.Height, v.Width, v.Height)
	}
}

// selfSigned makes a self-signed ECDSA certificate for 127.0.0.1.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "browser selftest"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// serveTLS serves h over HTTPS with cert on addr inside namespace ns until
// the test ends.
func serveTLS(t *testing.T, ns, addr string, cert tls.Certificate, h http.Handler) {
	t.Helper()
	var ln net.Listener
	privtest.InNetNS(t, ns, func() {
		var err error
		if ln, err = net.Listen("tcp", netip.MustParseAddrPort(addr).String()); err != nil {
			t.Fatalf("listen %s in %s: %v", addr, ns, err)
		}
	})
	srv := &http.Server{Handler: h, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		ErrorLog: log.New(io.Discard, "", 0), ReadHeaderTimeout: 10 * time.Second}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
}

// testSite is the self-test's web site; it records the requests' headers.
type testSite struct {
	mu      sync.Mutex
	n       int
	headers []http.Header
	form    string
}

func (s *testSite) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// last returns header name of the last request.
func (s *testSite) last(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.headers) == 0 {
		return ""
	}
	return s.headers[len(s.headers)-1].Get(name)
}

const page = `<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>selftest</title><link rel="stylesheet" href="/app.css"></head>
<body>
<h1>selftest</h1>
<label for="name">Name</label> <input id="name" data-test="name">
<label><input type="checkbox" data-test="agree"> agree</label>
<label for="color">Colour</label>
<select id="color" data-test="color"><option value="red">Red</option><option value="blue">Blue</option></select>
<button type="button" data-test="go">Go</button>
<form method="post" action="/upload" enctype="multipart/form-data"><label for="file">File</label>
<input type="file" id="file" name="file" data-test="file"><button type="submit" data-test="upload">Upload</button></form>
<p data-test="out">before</p>
<ul><li data-test="item">a</li><li data-test="item">b</li></ul>
<p data-test="hidden" hidden>hidden</p>
<p data-test="width"></p>
<div class="tall"></div>
<script src="/app.js"></script>
</body></html>`

const script = `const $ = (t) => document.querySelector('[data-test="' + t + '"]');
$('width').textContent = String(window.innerWidth);
$('go').addEventListener('click', () => {
  setTimeout(() => {
    $('out').textContent = 'hello ' + $('name').value + ' ' + $('color').value + ($('agree').checked ? ' agreed' : '');
  }, 300);
});
$('name').addEventListener('keydown', (e) => {
  if (e.key === 'Enter') $('out').textContent = 'enter ' + $('name').value;
});
setTimeout(() => {
  const p = document.createElement('p');
  p.dataset.test = 'late';
  p.textContent = 'late';
  document.body.appendChild(p);
}, 500);
`

func (s *testSite) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, page)
	})
	mux.HandleFunc("GET /app.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		fmt.Fprint(w, script)
	})
	mux.HandleFunc("GET /app.css", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/css")
		fmt.Fprint(w, ".tall { height: 2000px; }\n")
	})
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		f, hdr, err := r.FormFile("file")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		defer f.Close()
		b, _ := io.ReadAll(f)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "got %s: %s", hdr.Filename, b)
	})
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.form = r.PostFormValue("user")
		s.mu.Unlock()
		http.SetCookie(w, &http.Cookie{Name: "sid", Value: "s3", Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
		http.Redirect(w, r, "/", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /whoami", func(w http.ResponseWriter, r *http.Request) {
		sid := ""
		if c, err := r.Cookie("sid"); err == nil {
			sid = c.Value
		}
		s.mu.Lock()
		form := s.form
		s.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "sid=%s x-test=%s form=%s", sid, r.Header.Get("X-Test"), form)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.n++
		s.headers = append(s.headers, r.Header.Clone())
		s.mu.Unlock()
		mux.ServeHTTP(w, r)
	})
}

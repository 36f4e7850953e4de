package console

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/console/tlscert"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// testCert makes a self-signed certificate, a CA or not, and its key.
func testCACert(t testing.TB, isCA bool) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Security Omakase Plan"},
		NotBefore:             time.Date(2022, 2, 25, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2122, 2, 25, 0, 0, 0, 0, time.UTC),
		BasicConstraintsValid: true,
		IsCA:                  isCA,
	}
	if isCA {
		tmpl.KeyUsage = x509.KeyUsageCertSign
	} else {
		tmpl.Subject.CommonName = "leaf.example"
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

func pemOf(typ string, b []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}) }

func (pt *pagesTest) upload(t *testing.T, file []byte, csrf string) *httptest.ResponseRecorder {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if csrf != "" {
		mw.WriteField("csrf", csrf)
	}
	if file != nil {
		fw, _ := mw.CreateFormFile("file", "cacert.cer")
		fw.Write(file)
	}
	mw.Close()
	return pt.do(t, pageReq{method: "POST", path: "/certificate", body: &buf, lang: "ja", hdr: map[string]string{"Content-Type": mw.FormDataContentType()}})
}

// conflictBackend is a fake whose config file names the CA.
type conflictBackend struct{ *fakeBackend }

func (conflictBackend) SetInspectionCA(context.Context, []byte) error {
	return model.Plain(model.ErrConflict, "the config file names the CA")
}

func TestCAUpload(t *testing.T) {
	caDER, key := testCACert(t, true)
	leafDER, _ := testCACert(t, false)
	keyDER, _ := x509.MarshalECPrivateKey(key)
	pt := newPagesTest(t, Options{})

	doc := pt.page(t, "/certificate", "en")
	oneTest(t, doc, "cert-upload-file")
	oneTest(t, doc, "cert-upload-submit")
	oneTest(t, doc, "cert-none")

	for _, tc := range []struct {
		name   string
		file   []byte
		status int
		key    string
	}{
		{"garbage", []byte("hello, this is not a certificate"), 400, "cert.err.parse"},
		{"empty", []byte("  \n"), 400, "cert.err.empty"},
		{"no file", nil, 400, "cert.err.empty"},
		{"too large", bytes.Repeat([]byte("A"), 100<<10), 413, "cert.err.too_large"},
		{"not a CA", pemOf("CERTIFICATE", leafDER), 400, "cert.err.not_ca"},
		{"not a CA, DER", leafDER, 400, "cert.err.not_ca"},
		{"two certificates", append(pemOf("CERTIFICATE", caDER), pemOf("CERTIFICATE", caDER)...), 400, "cert.err.multiple"},
		{"private key", append(pemOf("CERTIFICATE", caDER), pemOf("EC PRIVATE KEY", keyDER)...), 400, "cert.err.key"},
		{"DER with trailing bytes", append(append([]byte{}, caDER...), 0, 1), 400, "cert.err.parse"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := pt.upload(t, tc.file, pt.csrf)
			if w.Code != tc.status {
				t.Fatalf("%d, want %d: %s", w.Code, tc.status, w.Body)
			}
			got := nodeText(oneTest(t, parsePage(t, w.Body.String()), "cert-error"))
			if want := pt.text("ja", tc.key); got != want {
				t.Errorf("error %q, want %q", got, want)
			}
			if pt.f.caDER != nil {
				t.Fatal("stored a refused upload")
			}
		})
	}
	if w := pt.upload(t, pemOf("CERTIFICATE", caDER), ""); w.Code != http.StatusForbidden || pt.f.caDER != nil {
		t.Fatalf("upload without CSRF: %d", w.Code)
	}
	if w := pt.upload(t, bytes.Repeat([]byte("A"), maxUploadBody+1), pt.csrf); w.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("huge body: %d", w.Code)
	}

	for _, file := range [][]byte{pemOf("CERTIFICATE", caDER), caDER} {
		pt.f.caDER = nil
		w := pt.upload(t, file, pt.csrf)
		if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/certificate?uploaded=1" {
			t.Fatalf("upload: %d %s", w.Code, w.Body)
		}
		if !bytes.Equal(pt.f.caDER, caDER) {
			t.Fatal("backend did not get the DER")
		}
	}
	for _, lang := range languages {
		doc = pt.page(t, "/certificate?uploaded=1", lang)
		wantContains(t, "subject", nodeText(oneTest(t, doc, "cert-subject")), "CN=Security Omakase Plan")
		if got := nodeText(oneTest(t, doc, "cert-fingerprint")); got != tlscert.Fingerprint(caDER) {
			t.Errorf("fingerprint %q", got)
		}
		wantContains(t, "validity", nodeText(oneTest(t, doc, "cert-validity")), "2122-02-25T00:00:00Z")
		if got := nodeText(oneTest(t, doc, "cert-url")); got != "http://example.com/ca" {
			t.Errorf("short URL %q", got)
		}
		wantContains(t, "uploaded", nodeText(oneTest(t, doc, "cert-uploaded")), pt.text(lang, "cert.uploaded"))
	}

	// The config file names the CA: the backend's refusal is shown.
	cb := conflictBackend{newFakeBackend()}
	cb.admin, cb.hasAdmin = model.AdminAccount{User: "admin", TOTPSecret: "X"}, true
	c, err := New(cb, Options{})
	if err != nil {
		t.Fatal(err)
	}
	tok, s, _ := c.sessions.Create("admin")
	pc := &pagesTest{c: c, f: cb.fakeBackend, h: c.Handler(), token: tok, csrf: s.CSRF}
	w := pc.upload(t, caDER, pc.csrf)
	if w.Code != http.StatusConflict {
		t.Fatalf("conflict: %d", w.Code)
	}
	if got := nodeText(oneTest(t, parsePage(t, w.Body.String()), "cert-error")); got != pc.text("ja", "cert.err.config") {
		t.Errorf("conflict message %q", got)
	}
}

func TestShortCAURL(t *testing.T) {
	for host, want := range map[string]string{
		"192.168.1.1:8443": "http://192.168.1.1/ca", "[fd00::1]:8443": "http://[fd00::1]/ca", "gw.lan": "http://gw.lan/ca",
	} {
		if got := shortCAURL(host); got != want {
			t.Errorf("shortCAURL(%q) = %q, want %q", host, got, want)
		}
	}
}

// TestCAPublic: /ca and /ca.cer need no login, on CAHandler alone (plain
// HTTP) and on the console's handler; 404 with a page while there is none.
func TestCAPublic(t *testing.T) {
	caDER, _ := testCACert(t, true)
	pt := newPagesTest(t, Options{})
	handlers := map[string]http.Handler{"CAHandler": pt.c.CAHandler(), "console": pt.c.Handler()}
	get := func(h http.Handler, path string, hdr map[string]string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", path, nil)
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	for name, h := range handlers {
		for _, p := range []string{"/ca", "/ca.cer"} {
			w := get(h, p, nil)
			if w.Code != http.StatusNotFound {
				t.Fatalf("%s %s without CA: %d", name, p, w.Code)
			}
			wantContains(t, name+p, nodeText(oneTest(t, parsePage(t, w.Body.String()), "ca-none")), pt.text("en", "ca.none"))
		}
	}
	pt.f.caDER, pt.f.caSource = caDER, "config"
	for name, h := range handlers {
		w := get(h, "/ca.cer", nil)
		if w.Code != 200 || !bytes.Equal(w.Body.Bytes(), caDER) {
			t.Fatalf("%s /ca.cer: %d", name, w.Code)
		}
		if ct := w.Header().Get("Content-Type"); ct != "application/pkix-cert" {
			t.Errorf("Content-Type %q", ct)
		}
		if cd := w.Header().Get("Content-Disposition"); cd != `attachment; filename="cacert.cer"` {
			t.Errorf("Content-Disposition %q", cd)
		}
		for _, lc := range []struct{ hdr, query, lang string }{{"", "", "en"}, {"ja-JP,ja;q=0.9", "", "ja"}, {"ja", "?lang=en", "en"}, {"", "?lang=ja", "ja"}} {
			w := get(h, "/ca"+lc.query, map[string]string{"Accept-Language": lc.hdr})
			if w.Code != 200 || w.Header().Get("Content-Language") != lc.lang {
				t.Fatalf("%s /ca%s: %d %s", name, lc.query, w.Code, w.Header().Get("Content-Language"))
			}
			if w.Header().Get("Content-Security-Policy") == "" {
				t.Error("no CSP")
			}
			doc := parsePage(t, w.Body.String())
			if htmlAttr(oneTest(t, doc, "ca-download"), "href") != "/ca.cer" {
				t.Error("download link")
			}
			if got := nodeText(oneTest(t, doc, "ca-fingerprint")); got != tlscert.Fingerprint(caDER) {
				t.Errorf("fingerprint %q", got)
			}
			body := nodeText(doc)
			for _, k := range []string{"ca.win2", "ca.mac3", "ca.ff2", "ca.ff4"} {
				wantContains(t, lc.lang+" steps", body, pt.text(lc.lang, k))
			}
			wantContains(t, "firefox", body, "security.enterprise_roots.enabled")
			if lc.lang == "ja" {
				wantContains(t, "ja", body, "常に信頼")
			}
			if strings.Contains(body, pt.text(lc.lang, "nav.logout")) {
				t.Error("public page shows the signed-in navigation")
			}
		}
	}
	// The stylesheet is there for the plain-HTTP page too.
	if w := get(pt.c.CAHandler(), "/static/app.css", nil); w.Code != 200 {
		t.Errorf("CAHandler /static/app.css: %d", w.Code)
	}
	if w := get(pt.c.CAHandler(), "/certificate", nil); w.Code != http.StatusNotFound || CAPath("/certificate") || CAPath("/") {
		t.Errorf("CAHandler serves /certificate: %d", w.Code)
	}
	for _, p := range []string{"/ca", "/ca.cer", "/static/app.css", "/lang"} {
		if !CAPath(p) {
			t.Errorf("CAPath(%q) false", p)
		}
	}
	// The layout's language switch works on the plain-HTTP page too.
	r := httptest.NewRequest("POST", "/lang", strings.NewReader("lang=ja&back=/ca"))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := httptest.NewRecorder()
	pt.c.CAHandler().ServeHTTP(w, r)
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/ca?lang=ja" {
		t.Errorf("POST /lang: %d %q", w.Code, w.Header().Get("Location"))
	}
}

func FuzzParseCAUpload(f *testing.F) {
	caDER, _ := testCACert(f, true)
	f.Add(caDER)
	f.Add(pemOf("CERTIFICATE", caDER))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		der, cert, err := parseCAUpload(b)
		if err != nil {
			if _, ok := err.(*caUploadError); !ok {
				t.Fatalf("error type %T", err)
			}
			return
		}
		if !cert.IsCA || len(der) == 0 || len(b) > maxCAFile {
			t.Fatal("accepted a non-CA or an oversize file")
		}
		if _, err := x509.ParseCertificate(der); err != nil {
			t.Fatal(err)
		}
	})
}

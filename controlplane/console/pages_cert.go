package console

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/console/tlscert"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
	"github.com/cloudsteer/cloudsteer/internal/hostheader"
)

// Upload bounds: a CA certificate is a few KB; the request may carry the
// multipart framing and the CSRF field besides.
const (
	maxCAFile     = 64 << 10
	maxUploadBody = 256 << 10
)

// caFileName is the download's name, as the provider's setup kit calls it.
const caFileName = "cacert.cer"

// caInfo describes the inspection CA for the pages.
type caInfo struct {
	Subject     string
	Issuer      string
	NotBefore   time.Time
	NotAfter    time.Time
	Expired     bool
	Fingerprint string
	Source      string // "config" or "upload"
}

// caUploadError is a refused upload: the catalog key saying why.
type caUploadError struct{ key string }

func (e *caUploadError) Error() string { return e.key }

// parseCAUpload reads an uploaded file as exactly one CA certificate, PEM
// (one CERTIFICATE block; a private key is refused outright) or DER, and
// returns its DER bytes. Errors are *caUploadError.
func parseCAUpload(b []byte) ([]byte, *x509.Certificate, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, nil, &caUploadError{"cert.err.empty"}
	}
	if len(b) > maxCAFile {
		return nil, nil, &caUploadError{"cert.err.too_large"}
	}
	der := b
	if bytes.Contains(b, []byte("-----BEGIN")) {
		var certs [][]byte
		rest := b
		for {
			var blk *pem.Block
			blk, rest = pem.Decode(rest)
			if blk == nil {
				break
			}
			switch {
			case strings.Contains(blk.Type, "PRIVATE KEY"):
				return nil, nil, &caUploadError{"cert.err.key"}
			case blk.Type == "CERTIFICATE":
				certs = append(certs, blk.Bytes)
			}
		}
		switch len(certs) {
		case 0:
			return nil, nil, &caUploadError{"cert.err.parse"}
		case 1:
			der = certs[0]
		default:
			return nil, nil, &caUploadError{"cert.err.multiple"}
		}
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, &caUploadError{"cert.err.parse"}
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, nil, &caUploadError{"cert.err.not_ca"}
	}
	return slices.Clone(der), cert, nil
}

// inspectionCA reads the Backend's CA; ok is false when there is none or
// it does not parse (logged).
func (c *Console) inspectionCA(r *http.Request) (der []byte, info caInfo, ok bool) {
	der, source, ok := c.b.InspectionCA(r.Context())
	if !ok || len(der) == 0 {
		return nil, caInfo{}, false
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		c.log.Error("inspection CA does not parse", "err", err)
		return nil, caInfo{}, false
	}
	return der, caInfo{
		Subject:     cert.Subject.String(),
		Issuer:      cert.Issuer.String(),
		NotBefore:   cert.NotBefore,
		NotAfter:    cert.NotAfter,
		Expired:     c.now().After(cert.NotAfter),
		Fingerprint: tlscert.Fingerprint(der),
		Source:      source,
	}, true
}

// certData is the Certificate page's data.
type certData struct {
	Has      bool
	CA       caInfo
	Error    string // the upload's problem, translated
	Uploaded bool
	ShortURL string // http://<this host>/ca
}

func (c *Console) certificatePage(w http.ResponseWriter, r *http.Request, p pageData) {
	c.renderCert(w, r, http.StatusOK, p, "", r.URL.Query().Get("uploaded") == "1")
}

func (c *Console) renderCert(w http.ResponseWriter, r *http.Request, status int, p pageData, errText string, uploaded bool) {
	_, info, ok := c.inspectionCA(r)
	p.Data = certData{Has: ok, CA: info, Error: errText, Uploaded: uploaded && errText == "", ShortURL: shortCAURL(r.Host)}
	c.render(w, r, status, "certificate", p)
}

// shortCAURL is the address LAN clients type to get the CA: plain HTTP on
// the host the admin reached the console by, without the console's port.
func shortCAURL(host string) string {
	addr, name, ok := hostheader.Parse(host)
	switch {
	case !ok:
		return "/ca"
	case addr.IsValid() && addr.Is6():
		return "http://[" + addr.String() + "]/ca"
	case addr.IsValid():
		return "http://" + addr.String() + "/ca"
	}
	return "http://" + name + "/ca"
}

// limitUpload refuses an upload body larger than maxUploadBody before
// anything reads it (413 with a translated line) and caps the reader.
func (c *Console) limitUpload(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > maxUploadBody {
			http.Error(w, c.cat.text(langOf(r), "cert.err.too_large"), http.StatusRequestEntityTooLarge)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxUploadBody)
		h.ServeHTTP(w, r)
	})
}

// uploadCA is POST /certificate (multipart: file, csrf): the admin uploads
// the provider's inspection CA. A refusal re-renders the page with the
// reason; success goes back to the page (303).
func (c *Console) uploadCA(w http.ResponseWriter, r *http.Request, p pageData) {
	fail := func(status int, key string, args ...any) {
		c.renderCert(w, r, status, p, c.cat.text(p.Lang, key, args...), false)
	}
	f, _, err := r.FormFile("file")
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			fail(http.StatusRequestEntityTooLarge, "cert.err.too_large")
			return
		}
		fail(http.StatusBadRequest, "cert.err.empty")
		return
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxCAFile+1))
	if err != nil {
		fail(http.StatusBadRequest, "cert.err.empty")
		return
	}
	der, cert, err := parseCAUpload(raw)
	if err != nil {
		var ue *caUploadError
		errors.As(err, &ue)
		status := http.StatusBadRequest
		if ue.key == "cert.err.too_large" {
			status = http.StatusRequestEntityTooLarge
		}
		fail(status, ue.key)
		return
	}
	if err := c.b.SetInspectionCA(r.Context(), der); err != nil {
		switch {
		case errors.Is(err, model.ErrConflict):
			fail(http.StatusConflict, "cert.err.config")
		case errors.Is(err, model.ErrInvalid):
			fail(http.StatusBadRequest, "cert.err.refused", err.Error())
		default:
			c.log.Error("store inspection CA", "err", err)
			fail(http.StatusInternalServerError, "common.err.internal")
		}
		return
	}
	c.log.Info("inspection CA uploaded", "subject", cert.Subject.String(), "fingerprint", tlscert.Fingerprint(der), "by", p.User)
	http.Redirect(w, r, "/certificate?uploaded=1", http.StatusSeeOther)
}

// caData is the public install page's data.
type caData struct {
	Has bool
	CA  caInfo
}

// CAHandler serves the inspection CA to any LAN client, without a login:
// GET /ca is the install page (in the request's language; ?lang=en|ja
// chooses), GET /ca.cer the certificate (DER, as the provider's
// cacert.cer), GET /static/ its stylesheet, and POST /lang the page's
// language switch (back to /ca?lang=…, no cookie). The daemon mounts it on
// plain HTTP for the paths CAPath accepts (the rest goes to the HTTPS
// redirect); the console serves GET /ca and /ca.cer itself. Both answer
// 404 with a page while no CA is set.
func (c *Console) CAHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ca", c.caPage)
	mux.HandleFunc("GET /ca.cer", c.caFile)
	mux.Handle("GET /static/", staticHandler())
	mux.HandleFunc("POST /lang", func(w http.ResponseWriter, r *http.Request) {
		lang := r.PostFormValue("lang")
		if !slices.Contains(languages, lang) {
			lang = languages[0]
		}
		http.Redirect(w, r, "/ca?lang="+lang, http.StatusSeeOther)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		if addr, name, ok := hostheader.Parse(r.Host); !ok || c.opts.AllowHost != nil && !c.opts.AllowHost(addr, name) {
			http.Error(w, "this is not a name of this gateway: use its LAN address", http.StatusMisdirectedRequest)
			return
		}
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", referrerPolicy)
		if !strings.HasPrefix(r.URL.Path, "/static/") {
			h.Set("Cache-Control", "no-store")
		}
		mux.ServeHTTP(w, r)
	})
}

// CAPath reports whether CAHandler serves path, for the daemon's plain
// HTTP listener: everything else there redirects to the console's HTTPS.
func CAPath(path string) bool {
	return path == "/ca" || path == "/ca.cer" || path == "/lang" || strings.HasPrefix(path, "/static/")
}

// publicLang is the language of a public page: ?lang= when it names one,
// else the cookie and Accept-Language.
func publicLang(r *http.Request) string {
	if l := r.URL.Query().Get("lang"); slices.Contains(languages, l) {
		return l
	}
	return langOf(r)
}

func (c *Console) caPage(w http.ResponseWriter, r *http.Request) {
	_, info, ok := c.inspectionCA(r)
	status := http.StatusOK
	if !ok {
		status = http.StatusNotFound
	}
	c.render(w, r, status, "ca", pageData{Lang: publicLang(r), Data: caData{Has: ok, CA: info}})
}

func (c *Console) caFile(w http.ResponseWriter, r *http.Request) {
	der, _, ok := c.inspectionCA(r)
	if !ok {
		c.render(w, r, http.StatusNotFound, "ca", pageData{Lang: publicLang(r), Data: caData{}})
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/pkix-cert")
	h.Set("Content-Disposition", `attachment; filename="`+caFileName+`"`)
	w.WriteHeader(http.StatusOK)
	w.Write(der)
}

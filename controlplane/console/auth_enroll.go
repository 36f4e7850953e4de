package console

import (
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strings"

	qrcode "github.com/skip2/go-qrcode"

	"github.com/cloudsteer/cloudsteer/controlplane/console/auth"
)

// enrollView is enroll.html's data: the QR code of the otpauth URI (a PNG
// data: URL, which the CSP allows for images) and the same secret as text
// for typing in.
type enrollView struct {
	QR      template.URL
	Secret  string
	Account string
	Errors  []string
}

// recoveryView is recovery.html's data: the codes, shown this once.
type recoveryView struct {
	Codes []string
}

// enrollGate sends a request that may not enrol elsewhere: to setup, to
// the login, or (already enrolled) to the status page. It returns the
// signed-in state and true when the request may enrol.
func (c *Console) enrollGate(w http.ResponseWriter, r *http.Request) (signedIn, bool) {
	si, err := c.whoIs(r)
	if err != nil {
		c.internalError(w, r, "enroll: read admin", err)
		return si, false
	}
	switch si.access {
	case accessNoAdmin:
		http.Redirect(w, r, "/setup", http.StatusSeeOther)
		return si, false
	case accessNone:
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return si, false
	case accessFull:
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return si, false
	}
	return si, true
}

// enrollPage shows a new TOTP secret as a QR code and as text. The secret
// stays on the server with the session; the form sends only the code.
func (c *Console) enrollPage(w http.ResponseWriter, r *http.Request) {
	si, ok := c.enrollGate(w, r)
	if !ok {
		return
	}
	c.renderEnroll(w, r, http.StatusOK, si, nil)
}

func (c *Console) renderEnroll(w http.ResponseWriter, r *http.Request, status int, si signedIn, errs []string) {
	secret, err := c.enrolSecret(si.token)
	if err != nil {
		c.internalError(w, r, "enroll: new secret", err)
		return
	}
	qr, err := qrDataURL(auth.TOTPURI(secret, si.admin.User))
	if err != nil {
		c.internalError(w, r, "enroll: qr code", err)
		return
	}
	c.render(w, r, status, "enroll", pageData{CSRF: si.session.CSRF,
		Data: enrollView{QR: qr, Secret: secret, Account: si.admin.User, Errors: errs}})
}

// qrDataURL renders s as a QR code PNG in a data: URL.
func qrDataURL(s string) (template.URL, error) {
	q, err := qrcode.New(s, qrcode.Medium)
	if err != nil {
		return "", fmt.Errorf("encode qr code: %w", err)
	}
	png, err := q.PNG(256)
	if err != nil {
		return "", fmt.Errorf("encode qr code: %w", err)
	}
	// The content is our own PNG, so the URL is safe to mark as such.
	return template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(png)), nil
}

// enrollSubmit confirms the enrolment with a current code, stores the
// secret and fresh recovery codes, and shows the codes once.
func (c *Console) enrollSubmit(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	si, ok := c.enrollGate(w, r)
	if !ok {
		return
	}
	if !c.checkCSRF(r) {
		c.csrfRefused(w, r)
		return
	}
	lang := langOf(r)
	secret, ok := c.peekEnrolSecret(si.token)
	if !ok {
		http.Redirect(w, r, "/enroll", http.StatusSeeOther)
		return
	}
	user := si.admin.User
	code := normalizeCode(r.PostFormValue("code"))
	c.totp.Forget(user) // a new secret: an old secret's steps say nothing
	if err := c.totp.Verify(user, secret, code); err != nil {
		c.renderEnroll(w, r, http.StatusUnprocessableEntity, si, []string{c.cat.text(lang, "auth.enroll.wrong_code")})
		return
	}
	step, _ := c.totp.LastStep(user)
	codes, hashes, err := c.newRecoveryCodes(r.Context())
	if err != nil {
		c.hashFailed(w, r, "enroll: recovery codes", err)
		return
	}
	c.login.adminMu.Lock()
	a, has, err := c.b.Admin(r.Context())
	if err == nil && (!has || a.User != user || a.TOTPEnrolled()) {
		err = errors.New("admin changed during enrolment")
	}
	if err == nil {
		a.TOTPSecret, a.TOTPLastStep, a.RecoveryHashes = secret, step+1, hashes
		err = c.b.PutAdmin(r.Context(), a)
	}
	c.login.adminMu.Unlock()
	if err != nil {
		c.internalError(w, r, "enroll: store admin", err)
		return
	}
	c.dropEnrolSecret(si.token)
	// The session gains the full rights now: give it a new token.
	c.sessions.Delete(si.token)
	ns, ok := c.startSession(w, r, user)
	if !ok {
		return
	}
	c.showOnce(ns.token, codes)
	c.log.Info("console two-factor enrolled", "admin", a, "client", clientIP(r))
	http.Redirect(w, r, "/recovery", http.StatusSeeOther)
}

// recoveryPage shows the recovery codes made by the enrolment or by a
// regeneration on the account page, once: a reload shows nothing.
func (c *Console) recoveryPage(w http.ResponseWriter, r *http.Request) {
	si, err := c.whoIs(r)
	if err != nil {
		c.internalError(w, r, "recovery: read admin", err)
		return
	}
	if si.access != accessFull {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	codes, ok := c.takeShown(si.token)
	if !ok {
		http.Redirect(w, r, "/account", http.StatusSeeOther)
		return
	}
	c.render(w, r, http.StatusOK, "recovery", pageData{CSRF: si.session.CSRF, Data: recoveryView{Codes: codes}})
}

// normalizeCode drops the spaces and dashes people type into one-time
// codes ("123 456").
func normalizeCode(s string) string {
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '-' || r == '\t' {
			return -1
		}
		return r
	}, strings.TrimSpace(s))
}

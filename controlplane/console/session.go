package console

import (
	"net/http"

	"github.com/cloudsteer/cloudsteer/controlplane/console/auth"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// csrfHeader carries the session's CSRF token on the script's API calls;
// forms carry it in the csrfField field.
const (
	csrfHeader = "X-CSRF-Token"
	csrfField  = "csrf"
)

// session returns the live session of the request's cookie.
func (c *Console) session(r *http.Request) (auth.Session, bool) {
	_, s, ok := c.sessionToken(r)
	return s, ok
}

// sessionToken returns the request's session cookie token and its live
// session.
func (c *Console) sessionToken(r *http.Request) (string, auth.Session, bool) {
	ck, err := r.Cookie(auth.SessionCookieName)
	if err != nil || ck.Value == "" {
		return "", auth.Session{}, false
	}
	get := c.sessions.Get
	if r.Header.Get(pollHeader) == "1" {
		get = c.sessions.Peek // a page polling by itself is not the admin's activity
	}
	s, err := get(ck.Value)
	if err != nil {
		return "", auth.Session{}, false
	}
	return ck.Value, s, true
}

// pollHeader marks the requests the pages' script makes on a timer (the
// events refresh, the badge): they do not restart the session's idle
// timeout.
const pollHeader = "X-Cloudsteer-Poll"

// checkCSRF reports whether the request carries its session's CSRF token,
// in the header or the form field.
func (c *Console) checkCSRF(r *http.Request) bool {
	ck, err := r.Cookie(auth.SessionCookieName)
	if err != nil {
		return false
	}
	tok := r.Header.Get(csrfHeader)
	if tok == "" {
		tok = r.PostFormValue(csrfField)
	}
	return tok != "" && c.sessions.CheckCSRF(ck.Value, tok)
}

// access is how far a request is signed in.
type access int

const (
	accessNoAdmin     access = iota // first run: nobody can sign in before setup
	accessNone                      // no live session (or one of a replaced admin)
	accessNotEnrolled               // signed in with the password only: may enrol TOTP, nothing else
	accessFull                      // signed in, two-factor enrolled
)

// signedIn is the request's session and admin and how far they go.
type signedIn struct {
	access  access
	token   string
	session auth.Session
	admin   model.AdminAccount
}

// whoIs looks up the request's session and the admin it must belong to.
func (c *Console) whoIs(r *http.Request) (signedIn, error) {
	a, ok, err := c.b.Admin(r.Context())
	if err != nil {
		return signedIn{}, err
	}
	if !ok {
		return signedIn{access: accessNoAdmin}, nil
	}
	tok, s, ok := c.sessionToken(r)
	if !ok || s.Account != a.User {
		return signedIn{access: accessNone, admin: a}, nil
	}
	si := signedIn{access: accessFull, token: tok, session: s, admin: a}
	if !a.TOTPEnrolled() {
		si.access = accessNotEnrolled
	}
	return si, nil
}

// requireLogin serves h to a signed-in admin only; others go to the login
// page, to the setup page while no admin exists, or to the TOTP enrolment
// while the admin has none (two-factor is mandatory). State-changing
// requests need the session's CSRF token too (403 otherwise). h gets the
// pageData to render with (language, CSRF token, user).
func (c *Console) requireLogin(h func(w http.ResponseWriter, r *http.Request, p pageData)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		si, err := c.whoIs(r)
		if err != nil {
			c.internalError(w, r, "read admin", err)
			return
		}
		switch si.access {
		case accessNoAdmin:
			http.Redirect(w, r, "/setup", http.StatusSeeOther)
			return
		case accessNone:
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		case accessNotEnrolled:
			http.Redirect(w, r, "/enroll", http.StatusSeeOther)
			return
		}
		if !safeMethod(r.Method) && !c.checkCSRF(r) {
			c.csrfRefused(w, r)
			return
		}
		h(w, r, pageData{Lang: langOf(r), CSRF: si.session.CSRF, User: si.session.Account})
	}
}

// apiSession authenticates the pages' API calls by the session cookie; a
// state-changing call needs the CSRF header too (api.ConsoleHandler
// answers 403 when csrfOK is false). A session that has not finished
// two-factor enrolment is refused like no session.
func (c *Console) apiSession(r *http.Request) (account string, ok, csrfOK bool) {
	si, err := c.whoIs(r)
	if err != nil {
		c.log.Error("api session: read admin", "err", err)
		return "", false, false
	}
	if si.access != accessFull {
		return "", false, false
	}
	tok := r.Header.Get(csrfHeader)
	return si.session.Account, true, tok != "" && c.sessions.CheckCSRF(si.token, tok)
}

// csrfRefused answers 403 to a state-changing request without its CSRF
// token, in the request's language.
func (c *Console) csrfRefused(w http.ResponseWriter, r *http.Request) {
	http.Error(w, c.cat.text(langOf(r), "auth.error.csrf"), http.StatusForbidden)
}

// internalError logs err (never a secret: callers pass store errors) and
// answers 500 in the request's language.
func (c *Console) internalError(w http.ResponseWriter, r *http.Request, what string, err error) {
	c.log.Error(what, "err", err)
	http.Error(w, c.cat.text(langOf(r), "auth.error.internal"), http.StatusInternalServerError)
}

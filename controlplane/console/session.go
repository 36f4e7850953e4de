package console

import (
	"net/http"

	"github.com/cloudsteer/cloudsteer/controlplane/console/auth"
)

// csrfHeader carries the session's CSRF token on the script's API calls;
// forms carry it in the csrfField field.
const (
	csrfHeader = "X-CSRF-Token"
	csrfField  = "csrf"
)

// session returns the live session of the request's cookie.
func (c *Console) session(r *http.Request) (auth.Session, bool) {
	ck, err := r.Cookie(auth.SessionCookieName)
	if err != nil || ck.Value == "" {
		return auth.Session{}, false
	}
	s, err := c.sessions.Get(ck.Value)
	if err != nil {
		return auth.Session{}, false
	}
	return s, true
}

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

// requireLogin serves h to a signed-in admin only; others go to the login
// page (or the setup page while no admin exists). State-changing requests
// need the CSRF token too (403 otherwise). h gets the pageData to render
// with (language, CSRF token, user).
func (c *Console) requireLogin(h func(w http.ResponseWriter, r *http.Request, p pageData)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, ok := c.session(r)
		if !ok {
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		if !safeMethod(r.Method) && !c.checkCSRF(r) {
			http.Error(w, "missing or wrong CSRF token: reload the page", http.StatusForbidden)
			return
		}
		h(w, r, pageData{Lang: langOf(r), CSRF: s.CSRF, User: s.Account})
	}
}

// apiSession authenticates the pages' API calls by the session cookie; a
// state-changing call needs the CSRF header too (api.ConsoleHandler
// answers 403 when csrfOK is false).
func (c *Console) apiSession(r *http.Request) (account string, ok, csrfOK bool) {
	s, ok := c.session(r)
	if !ok {
		return "", false, false
	}
	tok := r.Header.Get(csrfHeader)
	return s.Account, true, tok != "" && c.sessions.CheckCSRF(mustCookie(r), tok)
}

func mustCookie(r *http.Request) string {
	ck, err := r.Cookie(auth.SessionCookieName)
	if err != nil {
		return ""
	}
	return ck.Value
}

package console

import (
	"errors"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/cloudsteer/cloudsteer/controlplane/console/auth"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// Limits of the setup form's fields.
const (
	maxUserLen  = 64  // characters
	maxEmailLen = 254 // bytes, RFC 5321's path limit
	maxPassLen  = 256 // characters: beyond that only a paste error or an attack
)

// setupView is setup.html's data. Mode is "form" (the token is live),
// "needed" (no token given: how to get a link), "invalid" (the token is
// wrong, expired or used) or "done" (the admin exists already).
type setupView struct {
	Mode     string
	Token    string
	FormCSRF string
	User     string
	Email    string
	Errors   []string
	passwordRules
}

// passwordRules gives the templates the numbers in the rule texts.
type passwordRules struct{}

// MinLength is the minimum password length.
func (passwordRules) MinLength() int { return auth.MinPasswordLength }

// History is how many previous passwords may not be reused.
func (passwordRules) History() int { return auth.PasswordHistoryDepth }

// setupPage shows the create-admin form for a live setup token, and
// otherwise says how to get one.
func (c *Console) setupPage(w http.ResponseWriter, r *http.Request) {
	_, hasAdmin, err := c.b.Admin(r.Context())
	if err != nil {
		c.internalError(w, r, "setup: read admin", err)
		return
	}
	token := r.URL.Query().Get("token")
	switch {
	case hasAdmin:
		c.renderSetup(w, r, http.StatusOK, setupView{Mode: "done"})
	case token == "":
		c.renderSetup(w, r, http.StatusOK, setupView{Mode: "needed"})
	case c.b.CheckSetupToken(r.Context(), token) != nil:
		c.renderSetup(w, r, http.StatusForbidden, setupView{Mode: "invalid"})
	default:
		c.renderSetup(w, r, http.StatusOK, setupView{Mode: "form", Token: token})
	}
}

func (c *Console) renderSetup(w http.ResponseWriter, r *http.Request, status int, v setupView) {
	if v.Mode == "form" {
		tok, err := c.formCSRF(w, r)
		if err != nil {
			c.internalError(w, r, "setup: form token", err)
			return
		}
		v.FormCSRF = tok
	}
	c.render(w, r, status, "setup", pageData{Data: v})
}

// setupSubmit creates the admin: the token must be live, the password must
// pass every rule; then the token is used up and the browser gets a
// session that may only enrol two-factor.
func (c *Console) setupSubmit(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		http.Error(w, c.cat.text(langOf(r), "auth.error.bad_form"), http.StatusBadRequest)
		return
	}
	if _, hasAdmin, err := c.b.Admin(ctx); err != nil {
		c.internalError(w, r, "setup: read admin", err)
		return
	} else if hasAdmin {
		c.renderSetup(w, r, http.StatusConflict, setupView{Mode: "done"})
		return
	}
	token := r.PostForm.Get("token")
	if token == "" || c.b.CheckSetupToken(ctx, token) != nil {
		c.renderSetup(w, r, http.StatusForbidden, setupView{Mode: "invalid"})
		return
	}
	lang := langOf(r)
	user := strings.TrimSpace(r.PostForm.Get("user"))
	email := strings.TrimSpace(r.PostForm.Get("email"))
	v := setupView{Mode: "form", Token: token, User: user, Email: email}
	if !c.checkFormCSRF(r) {
		v.Errors = []string{c.cat.text(lang, "auth.error.form_expired")}
		c.renderSetup(w, r, http.StatusForbidden, v)
		return
	}
	pw, pw2 := r.PostForm.Get("password"), r.PostForm.Get("password2")
	v.Errors = c.checkUser(lang, user)
	if email != "" && !validEmail(email) {
		v.Errors = append(v.Errors, c.cat.text(lang, "auth.setup.email_invalid"))
	}
	v.Errors = append(v.Errors, c.checkNewPassword(lang, pw, pw2, user, email, nil)...)
	if len(v.Errors) > 0 {
		c.renderSetup(w, r, http.StatusUnprocessableEntity, v)
		return
	}
	h, err := c.hashPassword(ctx, pw)
	if err != nil {
		c.hashFailed(w, r, "setup: hash password", err)
		return
	}
	now := c.now()
	a := model.AdminAccount{User: user, Email: email, Created: now}
	a.SetPassword(string(h), now)
	if err := c.b.SetupAdmin(ctx, token, a); err != nil {
		switch {
		case errors.Is(err, model.ErrForbidden):
			c.renderSetup(w, r, http.StatusForbidden, setupView{Mode: "invalid"})
		case errors.Is(err, model.ErrConflict):
			c.renderSetup(w, r, http.StatusConflict, setupView{Mode: "done"})
		default:
			c.internalError(w, r, "setup: create admin", err)
		}
		return
	}
	c.log.Info("console admin created", "admin", a, "client", clientIP(r))
	if _, ok := c.startSession(w, r, a.User); !ok {
		return
	}
	http.Redirect(w, r, "/enroll", http.StatusSeeOther)
}

// startSession creates a session for account and sets its cookie; on
// failure it answers 500 and returns false.
func (c *Console) startSession(w http.ResponseWriter, r *http.Request, account string) (signedIn, bool) {
	tok, s, err := c.sessions.Create(account)
	if err != nil {
		c.internalError(w, r, "create session", err)
		return signedIn{}, false
	}
	http.SetCookie(w, auth.SessionCookie(tok))
	return signedIn{token: tok, session: s}, true
}

// checkUser validates a new user name: 1 to 64 characters, no spaces or
// control characters.
func (c *Console) checkUser(lang, user string) []string {
	if user == "" {
		return []string{c.cat.text(lang, "auth.setup.user_required")}
	}
	if utf8.RuneCountInString(user) > maxUserLen || !utf8.ValidString(user) ||
		strings.IndexFunc(user, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
		return []string{c.cat.text(lang, "auth.setup.user_invalid", maxUserLen)}
	}
	return nil
}

// validEmail is a light check: one '@' with text either side, no spaces,
// at most 254 bytes. The box sends no mail; the address only feeds the
// password rule.
func validEmail(e string) bool {
	local, domain, ok := strings.Cut(e, "@")
	return ok && local != "" && domain != "" && !strings.Contains(domain, "@") && len(e) <= maxEmailLen &&
		strings.IndexFunc(e, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) < 0
}

// checkNewPassword applies the password rules (auth.Check, each broken rule
// its own translated message) and the confirmation. history holds the
// previous hashes (argon2 each, so the caller holds no lock that matters).
func (c *Console) checkNewPassword(lang, pw, pw2, user, email string, history []auth.Hash) []string {
	var errs []string
	if utf8.RuneCountInString(pw) > maxPassLen {
		errs = append(errs, c.cat.text(lang, "auth.error.password_too_long", maxPassLen))
		return errs
	}
	for _, v := range auth.Check(pw, user, email, history) {
		errs = append(errs, c.ruleText(lang, v.Rule))
	}
	if pw != pw2 {
		errs = append(errs, c.cat.text(lang, "auth.error.password_mismatch"))
	}
	return errs
}

// ruleText is a broken password rule's message in lang.
func (c *Console) ruleText(lang string, rule auth.Rule) string {
	key := "auth.rule." + string(rule)
	switch rule {
	case auth.RuleMinLength:
		return c.cat.text(lang, key, auth.MinPasswordLength)
	case auth.RuleReused:
		return c.cat.text(lang, key, auth.PasswordHistoryDepth)
	}
	return c.cat.text(lang, key)
}

// hashFailed answers a failed argon2 step: 503 "busy, try again" when no
// slot came free, 500 otherwise.
func (c *Console) hashFailed(w http.ResponseWriter, r *http.Request, what string, err error) {
	if errors.Is(err, errBusy) || r.Context().Err() != nil {
		c.log.Warn(what, "err", err)
		w.Header().Set("Retry-After", "5")
		http.Error(w, c.cat.text(langOf(r), "auth.error.busy"), http.StatusServiceUnavailable)
		return
	}
	c.internalError(w, r, what, err)
}

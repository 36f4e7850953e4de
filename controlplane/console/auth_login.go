package console

import (
	"crypto/subtle"
	"errors"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cloudsteer/cloudsteer/controlplane/console/auth"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// loginView is login.html's and login2fa.html's data.
type loginView struct {
	FormCSRF string // the form's CSRF token (form cookie HMAC, or the pending login's)
	User     string
	Error    string
	Notice   string
}

// maxEventName clips the user name a failed login recorded (characters).
const maxEventName = 64

// loginPage shows the user name and password form.
func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	si, err := c.whoIs(r)
	if err != nil {
		c.internalError(w, r, "login: read admin", err)
		return
	}
	switch si.access {
	case accessNoAdmin:
		http.Redirect(w, r, "/setup", http.StatusSeeOther)
		return
	case accessFull:
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	v := loginView{}
	if r.URL.Query().Get("e") == "expired" {
		v.Notice = c.cat.text(langOf(r), "auth.login.expired")
	}
	c.renderLogin(w, r, http.StatusOK, v)
}

func (c *Console) renderLogin(w http.ResponseWriter, r *http.Request, status int, v loginView) {
	tok, err := c.formCSRF(w, r)
	if err != nil {
		c.internalError(w, r, "login: form token", err)
		return
	}
	v.FormCSRF = tok
	c.render(w, r, status, "login", pageData{Data: v})
}

// limited answers 429 with Retry-After and the translated wait on page.
func (c *Console) limited(w http.ResponseWriter, r *http.Request, wait time.Duration, page string, v loginView) {
	secs := int((wait + time.Second - 1) / time.Second)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	v.Error = c.cat.text(langOf(r), "auth.login.limited", secs)
	if page == "login" {
		c.renderLogin(w, r, http.StatusTooManyRequests, v)
		return
	}
	c.render(w, r, http.StatusTooManyRequests, page, pageData{Data: v})
}

// loginSubmit checks the user name and password. It never says which of
// the two was wrong, and an unknown user name costs the same argon2 time.
// With two-factor enrolled the browser gets a pending login (its own
// cookie, 5 minutes) for the code step, not a session.
func (c *Console) loginSubmit(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if err := r.ParseForm(); err != nil {
		http.Error(w, c.cat.text(langOf(r), "auth.error.bad_form"), http.StatusBadRequest)
		return
	}
	a, hasAdmin, err := c.b.Admin(ctx)
	if err != nil {
		c.internalError(w, r, "login: read admin", err)
		return
	}
	if !hasAdmin {
		http.Redirect(w, r, "/setup", http.StatusSeeOther)
		return
	}
	lang := langOf(r)
	user := strings.TrimSpace(r.PostForm.Get("user"))
	v := loginView{User: user}
	if !c.checkFormCSRF(r) {
		v.Error = c.cat.text(lang, "auth.error.form_expired")
		c.renderLogin(w, r, http.StatusForbidden, v)
		return
	}
	ip := clientIP(r)
	if wait := c.limiter.Allow(ip, user); wait > 0 {
		c.limited(w, r, wait, "login", v)
		return
	}
	pw := r.PostForm.Get("password")
	match := user != "" && strings.EqualFold(user, a.User)
	hash := auth.Hash("")
	if match {
		hash = auth.Hash(a.PasswordHash)
	}
	ok, err := false, error(nil)
	if utf8.RuneCountInString(pw) <= maxPassLen {
		ok, err = c.verifyPassword(ctx, pw, hash)
	}
	if err != nil && !errors.Is(err, auth.ErrMalformedHash) {
		c.hashFailed(w, r, "login: verify password", err)
		return
	}
	if err != nil {
		c.log.Error("login: stored password hash does not decode", "err", err)
	}
	if !ok || !match {
		c.loginFailed(r, ip, user)
		v.Error = c.cat.text(lang, "auth.login.wrong")
		c.renderLogin(w, r, http.StatusUnauthorized, v)
		return
	}
	if !a.TOTPEnrolled() {
		// Set up but never enrolled: the password is all this account
		// has, and the session may only enrol.
		c.limiter.Success(ip, user)
		if _, ok := c.startSession(w, r, a.User); ok {
			c.log.Info("console sign-in to enrol two-factor", "admin", a, "client", ip)
			http.Redirect(w, r, "/enroll", http.StatusSeeOther)
		}
		return
	}
	tok, _, err := c.newPending(a.User)
	if err != nil {
		c.internalError(w, r, "login: pending login", err)
		return
	}
	http.SetCookie(w, secureCookie(pendingCookie, tok, int(pendingTTL/time.Second)))
	http.Redirect(w, r, "/login/2fa", http.StatusSeeOther)
}

// loginFailed counts a failed login of either step for the client and
// the account and records the console event (the name given, clipped,
// never a password or code).
func (c *Console) loginFailed(r *http.Request, ip netip.Addr, user string) {
	c.limiter.Failure(ip, user)
	c.b.RecordEvent(r.Context(), model.Event{Time: c.now(), Client: ip.String(), Proto: "console",
		Reason: "login_failed", Name: clipName(user)})
	c.log.Info("console login failed", "client", ip)
}

// clipName keeps the first maxEventName characters of a user name given
// at the login, without control characters.
func clipName(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return -1
		}
		return r
	}, s)
	if utf8.RuneCountInString(s) <= maxEventName {
		return s
	}
	return string([]rune(s)[:maxEventName])
}

// login2faPage asks for the code of the pending login.
func (c *Console) login2faPage(w http.ResponseWriter, r *http.Request) {
	_, p, ok := c.pendingOf(r)
	if !ok {
		c.restartLogin(w, r)
		return
	}
	c.render(w, r, http.StatusOK, "login2fa", pageData{Data: loginView{FormCSRF: p.csrf}})
}

// restartLogin sends a browser without a live pending login back to the
// password step, saying why when it had one.
func (c *Console) restartLogin(w http.ResponseWriter, r *http.Request) {
	to := "/login"
	if _, err := r.Cookie(pendingCookie); err == nil {
		http.SetCookie(w, secureCookie(pendingCookie, "", -1))
		to = "/login?e=expired"
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

// login2faSubmit checks the TOTP code (replays refused, the last step
// stored so a restart does not reopen it) or a recovery code (used up
// before access is granted), then starts the session.
func (c *Console) login2faSubmit(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	if err := r.ParseForm(); err != nil {
		http.Error(w, c.cat.text(langOf(r), "auth.error.bad_form"), http.StatusBadRequest)
		return
	}
	ptok, p, ok := c.pendingOf(r)
	if !ok {
		c.restartLogin(w, r)
		return
	}
	lang := langOf(r)
	v := loginView{FormCSRF: p.csrf}
	if got := r.PostForm.Get(csrfField); got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(p.csrf)) != 1 {
		v.Error = c.cat.text(lang, "auth.error.form_expired")
		c.render(w, r, http.StatusForbidden, "login2fa", pageData{Data: v})
		return
	}
	ip := clientIP(r)
	if wait := c.limiter.Allow(ip, p.account); wait > 0 {
		c.limited(w, r, wait, "login2fa", v)
		return
	}
	code := normalizeCode(r.PostForm.Get("code"))
	res, a, err := c.checkSecondFactor(r, p.account, code)
	if err != nil {
		c.hashFailed(w, r, "login: second factor", err)
		return
	}
	switch res {
	case factorGone:
		c.dropPending(ptok)
		c.restartLogin(w, r)
		return
	case factorWrong, factorReplayed:
		c.loginFailed(r, ip, p.account)
		if !c.pendingFailed(ptok) {
			http.SetCookie(w, secureCookie(pendingCookie, "", -1))
			c.renderLogin(w, r, http.StatusUnauthorized, loginView{Error: c.cat.text(lang, "auth.login2fa.restart")})
			return
		}
		v.Error = c.cat.text(lang, "auth.login2fa.wrong")
		if res == factorReplayed {
			v.Error = c.cat.text(lang, "auth.login2fa.replayed")
		}
		c.render(w, r, http.StatusUnauthorized, "login2fa", pageData{Data: v})
		return
	}
	c.limiter.Success(ip, p.account)
	c.dropPending(ptok)
	http.SetCookie(w, secureCookie(pendingCookie, "", -1))
	if _, ok := c.startSession(w, r, a.User); !ok {
		return
	}
	c.log.Info("console sign-in", "admin", a, "client", ip, "recovery_code", res == factorRecovery)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// factorResult is the outcome of checkSecondFactor.
type factorResult int

const (
	factorTOTP     factorResult = iota // a fresh TOTP code
	factorRecovery                     // a recovery code, now used up
	factorWrong                        // neither
	factorReplayed                     // a TOTP code of a step already used
	factorGone                         // the admin changed under the pending login
)

// checkSecondFactor checks code against account's TOTP secret (a 6-digit
// code) or its recovery codes, storing the used step or the remaining
// codes before it reports success.
func (c *Console) checkSecondFactor(r *http.Request, account, code string) (factorResult, model.AdminAccount, error) {
	ctx := r.Context()
	c.login.adminMu.Lock()
	defer c.login.adminMu.Unlock()
	a, has, err := c.b.Admin(ctx)
	if err != nil {
		return 0, a, err
	}
	if !has || a.User != account || !a.TOTPEnrolled() {
		return factorGone, a, nil
	}
	if len(code) == auth.TOTPDigits && strings.Trim(code, "0123456789") == "" {
		c.syncLastStep(a)
		switch err := c.totp.Verify(a.User, a.TOTPSecret, code); {
		case errors.Is(err, auth.ErrTOTPReplayed):
			return factorReplayed, a, nil
		case err != nil:
			return factorWrong, a, nil
		}
		step, _ := c.totp.LastStep(a.User)
		a.TOTPLastStep = step + 1
		if err := c.b.PutAdmin(ctx, a); err != nil {
			return 0, a, err
		}
		return factorTOTP, a, nil
	}
	hashes := make([]auth.Hash, len(a.RecoveryHashes))
	for i, h := range a.RecoveryHashes {
		hashes[i] = auth.Hash(h)
	}
	var rest []auth.Hash
	ok := false
	if err := c.hashSlot(ctx, func() error {
		rest, ok = auth.ConsumeRecoveryCode(code, hashes)
		return nil
	}); err != nil {
		return 0, a, err
	}
	if !ok {
		return factorWrong, a, nil
	}
	a.RecoveryHashes = a.RecoveryHashes[:0:0]
	for _, h := range rest {
		a.RecoveryHashes = append(a.RecoveryHashes, string(h))
	}
	if err := c.b.PutAdmin(ctx, a); err != nil {
		return 0, a, err
	}
	return factorRecovery, a, nil
}

// syncLastStep gives the TOTP verifier the stored last step when it is
// newer than the verifier's (after a restart), so a code used before the
// restart stays refused.
func (c *Console) syncLastStep(a model.AdminAccount) {
	if a.TOTPLastStep == 0 {
		return
	}
	if last, ok := c.totp.LastStep(a.User); !ok || last+1 < a.TOTPLastStep {
		c.totp.SetLastStep(a.User, a.TOTPLastStep-1)
	}
}

// logout ends the session (CSRF-checked) and goes to the login page.
func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	tok, _, ok := c.sessionToken(r)
	if !ok {
		http.SetCookie(w, auth.ClearSessionCookie())
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	if !c.checkCSRF(r) {
		c.csrfRefused(w, r)
		return
	}
	c.sessions.Delete(tok)
	c.dropEnrolSecret(tok)
	c.takeShown(tok)
	http.SetCookie(w, auth.ClearSessionCookie())
	c.log.Info("console sign-out", "client", clientIP(r))
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

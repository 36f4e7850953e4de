package console

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/console/auth"
)

// accountView is account.html's data.
type accountView struct {
	User            string
	Email           string
	PasswordChanged time.Time
	RecoveryLeft    int
	PasswordErrors  []string
	RecoveryErrors  []string
	Notice          string
	passwordRules
}

// accountPage shows the admin's account: password change and recovery
// code regeneration.
func (c *Console) accountPage(w http.ResponseWriter, r *http.Request, p pageData) {
	c.renderAccount(w, r, http.StatusOK, p, accountView{})
}

func (c *Console) renderAccount(w http.ResponseWriter, r *http.Request, status int, p pageData, v accountView) {
	a, _, err := c.b.Admin(r.Context())
	if err != nil {
		c.internalError(w, r, "account: read admin", err)
		return
	}
	v.User, v.Email, v.PasswordChanged, v.RecoveryLeft = a.User, a.Email, a.PasswordChanged, len(a.RecoveryHashes)
	if v.Notice == "" && r.URL.Query().Get("done") == "password" {
		v.Notice = c.cat.text(p.Lang, "auth.account.password_changed")
	}
	p.Data = v
	c.render(w, r, status, "account", p)
}

// accountSubmit handles the account page's two forms (field "action":
// "password" or "recovery"); requireLogin has checked the session and
// its CSRF token.
func (c *Console) accountSubmit(w http.ResponseWriter, r *http.Request, p pageData) {
	switch r.PostFormValue("action") {
	case "password":
		c.changePassword(w, r, p)
	case "recovery":
		c.regenerateRecovery(w, r, p)
	default:
		http.Error(w, c.cat.text(p.Lang, "auth.error.bad_form"), http.StatusBadRequest)
	}
}

// changePassword needs the current password and a new one that passes
// every rule and is none of the last four. It ends every other session
// and pending login of the admin, and gives this browser a new session.
func (c *Console) changePassword(w http.ResponseWriter, r *http.Request, p pageData) {
	ctx := r.Context()
	si, err := c.whoIs(r)
	if err != nil || si.access != accessFull {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	a, ip := si.admin, clientIP(r)
	if wait := c.limiter.Allow(ip, a.User); wait > 0 {
		secs := int((wait + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		c.renderAccount(w, r, http.StatusTooManyRequests, p,
			accountView{PasswordErrors: []string{c.cat.text(p.Lang, "auth.login.limited", secs)}})
		return
	}
	cur, pw, pw2 := r.PostFormValue("current"), r.PostFormValue("password"), r.PostFormValue("password2")
	history := make([]auth.Hash, 0, len(a.PasswordHistory))
	for _, h := range a.PasswordHistory {
		history = append(history, auth.Hash(h))
	}
	var wrong bool
	var errs []string
	var hash auth.Hash
	err = c.hashSlot(ctx, func() error {
		ok, verr := c.login.verify(cur, auth.Hash(a.PasswordHash))
		if verr != nil || !ok {
			wrong = true
			return nil
		}
		if errs = c.checkNewPassword(p.Lang, pw, pw2, a.User, a.Email, history); len(errs) > 0 {
			return nil
		}
		var herr error
		hash, herr = auth.HashPasswordWith(pw, c.login.params)
		return herr
	})
	if err != nil {
		c.hashFailed(w, r, "account: change password", err)
		return
	}
	if wrong {
		c.loginFailed(r, ip, a.User)
		c.renderAccount(w, r, http.StatusUnauthorized, p,
			accountView{PasswordErrors: []string{c.cat.text(p.Lang, "auth.account.wrong_password")}})
		return
	}
	if len(errs) > 0 {
		c.renderAccount(w, r, http.StatusUnprocessableEntity, p, accountView{PasswordErrors: errs})
		return
	}
	c.login.adminMu.Lock()
	cur2, has, err := c.b.Admin(ctx)
	if err == nil && (!has || cur2.User != a.User || cur2.PasswordHash != a.PasswordHash) {
		err = errors.New("admin changed during the password change")
	}
	if err == nil {
		cur2.SetPassword(string(hash), c.now())
		err = c.b.PutAdmin(ctx, cur2)
	}
	c.login.adminMu.Unlock()
	if err != nil {
		c.internalError(w, r, "account: store password", err)
		return
	}
	n := c.sessions.DeleteAccount(a.User)
	c.dropPendingAccount(a.User)
	c.dropEnrolSecret(si.token)
	c.takeShown(si.token)
	if _, ok := c.startSession(w, r, a.User); !ok {
		return
	}
	c.log.Info("console password changed", "admin", cur2, "client", ip, "sessions_ended", n-1)
	http.Redirect(w, r, "/account?done=password", http.StatusSeeOther)
}

// regenerateRecovery replaces the recovery codes after a current TOTP
// code, and shows the new ones once.
func (c *Console) regenerateRecovery(w http.ResponseWriter, r *http.Request, p pageData) {
	ctx := r.Context()
	si, err := c.whoIs(r)
	if err != nil || si.access != accessFull {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	ip, user := clientIP(r), si.admin.User
	if wait := c.limiter.Allow(ip, user); wait > 0 {
		secs := int((wait + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		c.renderAccount(w, r, http.StatusTooManyRequests, p,
			accountView{RecoveryErrors: []string{c.cat.text(p.Lang, "auth.login.limited", secs)}})
		return
	}
	code := normalizeCode(r.PostFormValue("code"))
	c.login.adminMu.Lock()
	a, has, err := c.b.Admin(ctx)
	var verr error
	if err == nil && (!has || a.User != user || !a.TOTPEnrolled()) {
		err = errors.New("admin changed during the recovery code regeneration")
	}
	if err == nil {
		c.syncLastStep(a)
		if verr = c.totp.Verify(a.User, a.TOTPSecret, code); verr == nil {
			step, _ := c.totp.LastStep(a.User)
			a.TOTPLastStep = step + 1
			err = c.b.PutAdmin(ctx, a)
		}
	}
	c.login.adminMu.Unlock()
	if err != nil {
		c.internalError(w, r, "account: store totp step", err)
		return
	}
	if verr != nil {
		c.loginFailed(r, ip, user)
		key := "auth.login2fa.wrong"
		if errors.Is(verr, auth.ErrTOTPReplayed) {
			key = "auth.login2fa.replayed"
		}
		c.renderAccount(w, r, http.StatusUnauthorized, p, accountView{RecoveryErrors: []string{c.cat.text(p.Lang, key)}})
		return
	}
	codes, hashes, err := c.newRecoveryCodes(ctx)
	if err != nil {
		c.hashFailed(w, r, "account: recovery codes", err)
		return
	}
	c.login.adminMu.Lock()
	a, has, err = c.b.Admin(ctx)
	if err == nil && (!has || a.User != user) {
		err = errors.New("admin changed during the recovery code regeneration")
	}
	if err == nil {
		a.RecoveryHashes = hashes
		err = c.b.PutAdmin(ctx, a)
	}
	c.login.adminMu.Unlock()
	if err != nil {
		c.internalError(w, r, "account: store recovery codes", err)
		return
	}
	c.showOnce(si.token, codes)
	c.log.Info("console recovery codes replaced", "admin", a, "client", ip)
	http.Redirect(w, r, "/recovery", http.StatusSeeOther)
}

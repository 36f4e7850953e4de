package console

// authRoutes registers the first-run setup, login, two-factor enrolment,
// recovery codes, account and logout endpoints.
//
// The flow: GET /setup?token=T (the link `cloudsteer console setup-link`
// prints) creates the admin and a session that may only enrol TOTP at
// /enroll; /recovery then shows the recovery codes once. Later sign-ins
// go /login (user name and password) then /login/2fa (a TOTP or recovery
// code) under a 5-minute pending login. /account changes the password and
// replaces the recovery codes. Every POST is CSRF-checked: the session's
// token where there is a session, the pending login's on /login/2fa, and
// an HMAC of the form cookie on /login and /setup (auth_state.go).
func (c *Console) authRoutes() {
	c.mux.HandleFunc("GET /setup", c.setupPage)
	c.mux.HandleFunc("POST /setup", c.setupSubmit)
	c.mux.HandleFunc("GET /enroll", c.enrollPage)
	c.mux.HandleFunc("POST /enroll", c.enrollSubmit)
	c.mux.HandleFunc("GET /recovery", c.recoveryPage)
	c.mux.HandleFunc("GET /login", c.loginPage)
	c.mux.HandleFunc("POST /login", c.loginSubmit)
	c.mux.HandleFunc("GET /login/2fa", c.login2faPage)
	c.mux.HandleFunc("POST /login/2fa", c.login2faSubmit)
	c.mux.HandleFunc("POST /logout", c.logout)
	c.mux.HandleFunc("GET /account", c.requireLogin(c.accountPage))
	c.mux.HandleFunc("POST /account", c.requireLogin(c.accountSubmit))
}

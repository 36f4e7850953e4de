package console

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/console/auth"
)

// The login's own cookies besides the session cookie. Both are Secure,
// HttpOnly, SameSite=Strict and Path=/ like the session cookie.
const (
	// formCookie carries the random value that the login and setup
	// forms' CSRF field is an HMAC of (a signed double-submit cookie):
	// those forms have no session yet to tie a token to.
	formCookie = "cloudsteer_form"
	// pendingCookie names the pending login between the password and
	// the two-factor step.
	pendingCookie = "cloudsteer_login"
)

// Limits of the login's server-side state.
const (
	pendingTTL      = 5 * time.Minute // password accepted, waiting for the code
	pendingAttempts = 5               // codes tried on one pending login before it is dropped
	maxPending      = 256
	maxPerSession   = 64                          // enrolment secrets, one-time displays
	enrolTTL        = auth.DefaultSessionLifetime // an enrolment secret lives as long as its session may
	showTTL         = 10 * time.Minute            // recovery codes waiting for their one display
	hashSlotWait    = 15 * time.Second            // how long a login waits for an argon2 slot
	defaultHashSlot = 2
)

// errBusy: no argon2 slot came free in time (the page says "try again").
var errBusy = errors.New("too many logins at once")

type tokenKey = [sha256.Size]byte

func keyOf(token string) tokenKey { return sha256.Sum256([]byte(token)) }

// loginState is the console's login state besides the session store:
// pending logins, the TOTP secret being enrolled per session, recovery
// codes waiting to be shown once, and the argon2 semaphore. All of it is
// in memory and keyed by the SHA-256 of a cookie token.
type loginState struct {
	params  auth.HashParams
	sem     chan struct{}
	formKey []byte // HMAC key of the login and setup forms' CSRF tokens
	// verify is auth.Verify; tests swap it to watch the semaphore.
	verify func(pw string, h auth.Hash) (bool, error)

	dummyOnce sync.Once
	dummy     auth.Hash // verified against for unknown user names, so timing tells nothing

	// adminMu serializes read-modify-write of the admin account (second
	// factor, recovery codes used, password change), so that one recovery
	// code cannot be used twice by two racing requests.
	adminMu sync.Mutex

	mu      sync.Mutex
	pending map[tokenKey]*pendingLogin
	enrol   map[tokenKey]timed[string]   // session -> TOTP secret being enrolled
	show    map[tokenKey]timed[[]string] // session -> recovery codes to show once
}

type pendingLogin struct {
	account  string
	csrf     string
	expires  time.Time
	attempts int
}

type timed[T any] struct {
	v  T
	at time.Time
}

func (c *Console) initLogin() error {
	p := c.opts.HashParams
	if p == (auth.HashParams{}) {
		p = auth.DefaultHashParams
	}
	n := c.opts.HashConcurrency
	if n <= 0 {
		n = defaultHashSlot
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("new console: form key: %w", err)
	}
	c.login = &loginState{params: p, sem: make(chan struct{}, n), formKey: key, verify: auth.Verify,
		pending: map[tokenKey]*pendingLogin{}, enrol: map[tokenKey]timed[string]{}, show: map[tokenKey]timed[[]string]{}}
	return nil
}

// EndAllSessions ends every session and pending login and forgets the
// TOTP replay state, enrolment secrets and codes waiting to be shown. The
// daemon calls it after `cloudsteer console reset-admin`.
func (c *Console) EndAllSessions() {
	n := c.sessions.DeleteAll()
	l := c.login
	l.mu.Lock()
	clear(l.pending)
	clear(l.enrol)
	clear(l.show)
	l.mu.Unlock()
	c.totp.ForgetAll()
	c.log.Info("ended all console sessions", "sessions", n)
}

// hashSlot runs f holding one of the argon2 slots: a burst of logins
// queues instead of each taking 19 MiB at once. It gives up with errBusy
// after hashSlotWait, or when the request goes away.
func (c *Console) hashSlot(ctx context.Context, f func() error) error {
	t := time.NewTimer(hashSlotWait)
	defer t.Stop()
	select {
	case c.login.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return errBusy
	}
	defer func() { <-c.login.sem }()
	return f()
}

// verifyPassword checks pw against h (or, when h is empty, against a
// dummy hash so that an unknown user name costs the same time) in an
// argon2 slot.
func (c *Console) verifyPassword(ctx context.Context, pw string, h auth.Hash) (ok bool, err error) {
	l := c.login
	err = c.hashSlot(ctx, func() error {
		if h == "" {
			l.dummyOnce.Do(func() {
				// A hash of a random string with the live parameters; no password matches it.
				r := make([]byte, 16)
				_, _ = rand.Read(r)
				l.dummy, _ = auth.HashPasswordWith(base64.RawURLEncoding.EncodeToString(r), l.params)
			})
			h = l.dummy
		}
		var verr error
		ok, verr = l.verify(pw, h)
		return verr
	})
	return ok && err == nil, err
}

// hashPassword hashes pw with the console's parameters in an argon2 slot.
func (c *Console) hashPassword(ctx context.Context, pw string) (h auth.Hash, err error) {
	err = c.hashSlot(ctx, func() error {
		var herr error
		h, herr = auth.HashPasswordWith(pw, c.login.params)
		return herr
	})
	return h, err
}

// newRecoveryCodes makes a fresh set of recovery codes in an argon2 slot.
func (c *Console) newRecoveryCodes(ctx context.Context) (codes []string, hashes []string, err error) {
	err = c.hashSlot(ctx, func() error {
		cs, hs, gerr := auth.GenerateRecoveryCodesWith(auth.RecoveryCodeCount, c.login.params)
		codes = cs
		for _, h := range hs {
			hashes = append(hashes, string(h))
		}
		return gerr
	})
	return codes, hashes, err
}

// secureCookie is a cookie of the login: Secure, HttpOnly, SameSite=Strict,
// Path=/; maxAge 0 makes it a browser-session cookie, < 0 deletes it.
func secureCookie(name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: name, Value: value, Path: "/", MaxAge: maxAge,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode}
}

func randomString() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("read random: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func (l *loginState) formMAC(cookie string) string {
	m := hmac.New(sha256.New, l.formKey)
	m.Write([]byte("console form csrf\x00"))
	m.Write([]byte(cookie))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// formCSRF returns the CSRF token for a login or setup form, setting the
// form cookie it is derived from when the browser has none.
func (c *Console) formCSRF(w http.ResponseWriter, r *http.Request) (string, error) {
	if ck, err := r.Cookie(formCookie); err == nil && len(ck.Value) == 43 {
		return c.login.formMAC(ck.Value), nil
	}
	v, err := randomString()
	if err != nil {
		return "", err
	}
	http.SetCookie(w, secureCookie(formCookie, v, 0))
	return c.login.formMAC(v), nil
}

// checkFormCSRF reports whether a login or setup form's csrf field is the
// HMAC of the request's form cookie. A cross-site page can neither read
// the cookie nor compute the HMAC without the console's key.
func (c *Console) checkFormCSRF(r *http.Request) bool {
	ck, err := r.Cookie(formCookie)
	if err != nil || ck.Value == "" {
		return false
	}
	got := r.PostFormValue(csrfField)
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(c.login.formMAC(ck.Value))) == 1
}

// newPending starts a pending login for account and returns its cookie token.
func (c *Console) newPending(account string) (string, *pendingLogin, error) {
	tok, err := randomString()
	if err != nil {
		return "", nil, err
	}
	csrf, err := randomString()
	if err != nil {
		return "", nil, err
	}
	now := c.now()
	p := &pendingLogin{account: account, csrf: csrf, expires: now.Add(pendingTTL)}
	l := c.login
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.pending) >= maxPending {
		var oldest tokenKey
		var oe *pendingLogin
		for k, q := range l.pending {
			if !now.Before(q.expires) {
				delete(l.pending, k)
			} else if oe == nil || q.expires.Before(oe.expires) {
				oldest, oe = k, q
			}
		}
		if len(l.pending) >= maxPending {
			delete(l.pending, oldest)
		}
	}
	l.pending[keyOf(tok)] = p
	return tok, p, nil
}

// pendingOf returns (a copy of) the request's live pending login.
func (c *Console) pendingOf(r *http.Request) (string, pendingLogin, bool) {
	ck, err := r.Cookie(pendingCookie)
	if err != nil || ck.Value == "" {
		return "", pendingLogin{}, false
	}
	l := c.login
	l.mu.Lock()
	defer l.mu.Unlock()
	k := keyOf(ck.Value)
	p, ok := l.pending[k]
	if !ok {
		return "", pendingLogin{}, false
	}
	if !c.now().Before(p.expires) {
		delete(l.pending, k)
		return "", pendingLogin{}, false
	}
	return ck.Value, *p, true
}

// pendingFailed counts a wrong code on a pending login and drops it after
// pendingAttempts; it reports whether the pending login is still there.
func (c *Console) pendingFailed(tok string) bool {
	l := c.login
	l.mu.Lock()
	defer l.mu.Unlock()
	p, ok := l.pending[keyOf(tok)]
	if !ok {
		return false
	}
	p.attempts++
	if p.attempts >= pendingAttempts {
		delete(l.pending, keyOf(tok))
		return false
	}
	return true
}

func (c *Console) dropPending(tok string) {
	c.login.mu.Lock()
	delete(c.login.pending, keyOf(tok))
	c.login.mu.Unlock()
}

// dropPendingAccount ends the pending logins of account (password changed).
func (c *Console) dropPendingAccount(account string) {
	l := c.login
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, p := range l.pending {
		if p.account == account {
			delete(l.pending, k)
		}
	}
}

// putTimed stores v under k in m, keeping m within maxPerSession entries
// and dropping entries older than ttl.
func putTimed[T any](m map[tokenKey]timed[T], k tokenKey, v T, now time.Time, ttl time.Duration) {
	for key, e := range m {
		if now.Sub(e.at) >= ttl {
			delete(m, key)
		}
	}
	if _, ok := m[k]; !ok && len(m) >= maxPerSession {
		var oldest tokenKey
		var at time.Time
		first := true
		for key, e := range m {
			if first || e.at.Before(at) {
				oldest, at, first = key, e.at, false
			}
		}
		delete(m, oldest)
	}
	m[k] = timed[T]{v: v, at: now}
}

// enrolSecret returns the TOTP secret being enrolled by the session with
// cookie token tok, making one on the first call: the same secret on each
// visit until enrolment succeeds, kept on the server only.
func (c *Console) enrolSecret(tok string) (string, error) {
	l := c.login
	k := keyOf(tok)
	now := c.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.enrol[k]; ok && now.Sub(e.at) < enrolTTL {
		return e.v, nil
	}
	s, err := auth.NewTOTPSecret()
	if err != nil {
		return "", err
	}
	putTimed(l.enrol, k, s, now, enrolTTL)
	return s, nil
}

// peekEnrolSecret returns the session's enrolment secret, if it has one.
func (c *Console) peekEnrolSecret(tok string) (string, bool) {
	l := c.login
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.enrol[keyOf(tok)]
	if !ok || c.now().Sub(e.at) >= enrolTTL {
		return "", false
	}
	return e.v, true
}

func (c *Console) dropEnrolSecret(tok string) {
	c.login.mu.Lock()
	delete(c.login.enrol, keyOf(tok))
	c.login.mu.Unlock()
}

// showOnce keeps codes for the session's next GET /recovery.
func (c *Console) showOnce(tok string, codes []string) {
	l := c.login
	l.mu.Lock()
	defer l.mu.Unlock()
	putTimed(l.show, keyOf(tok), codes, c.now(), showTTL)
}

// takeShown returns and forgets the codes waiting for the session.
func (c *Console) takeShown(tok string) ([]string, bool) {
	l := c.login
	l.mu.Lock()
	defer l.mu.Unlock()
	k := keyOf(tok)
	e, ok := l.show[k]
	delete(l.show, k)
	if !ok || c.now().Sub(e.at) >= showTTL {
		return nil, false
	}
	return e.v, true
}

// clientIP is the request's peer address (the console is served directly,
// never behind a proxy); the zero Addr when it does not parse.
func clientIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

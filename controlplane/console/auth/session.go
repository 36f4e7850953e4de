package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Session defaults.
const (
	SessionCookieName      = "cloudsteer_session"
	DefaultSessionIdle     = 30 * time.Minute
	DefaultSessionLifetime = 12 * time.Hour
	DefaultMaxSessions     = 64
	sessionTokenBytes      = 32 // 256 bits
	csrfTokenBytes         = 32
)

// ErrNoSession is returned for a token that is unknown, expired or logged out.
var ErrNoSession = errors.New("no such session")

// Session is what the store knows about a logged-in browser. CSRF is the
// synchronizer token the console puts in its forms and checks on every
// state-changing request with SessionStore.CheckCSRF.
type Session struct {
	Account  string
	CSRF     string
	Created  time.Time
	LastSeen time.Time
}

// SessionStore keeps sessions in memory, keyed by the SHA-256 of the token
// so a memory dump does not hand out usable cookies. A session ends when
// idle for longer than idle, older than lifetime, or logged out.
type SessionStore struct {
	now      func() time.Time
	idle     time.Duration
	lifetime time.Duration
	max      int
	mu       sync.Mutex
	m        map[[sha256.Size]byte]*Session
}

// NewSessionStore returns a store with clock now (time.Now if nil), the
// given idle timeout and absolute lifetime (defaults if <= 0) and at most
// maxSessions sessions (DefaultMaxSessions if <= 0; when full, expired
// sessions go first, then the least recently used).
func NewSessionStore(now func() time.Time, idle, lifetime time.Duration, maxSessions int) *SessionStore {
	if now == nil {
		now = time.Now
	}
	if idle <= 0 {
		idle = DefaultSessionIdle
	}
	if lifetime <= 0 {
		lifetime = DefaultSessionLifetime
	}
	if maxSessions <= 0 {
		maxSessions = DefaultMaxSessions
	}
	return &SessionStore{now: now, idle: idle, lifetime: lifetime, max: maxSessions,
		m: map[[sha256.Size]byte]*Session{}}
}

func randomToken(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func tokenKey(token string) [sha256.Size]byte { return sha256.Sum256([]byte(token)) }

// Create starts a session for account and returns its token (for the
// cookie; it is not kept) and the session.
func (s *SessionStore) Create(account string) (string, Session, error) {
	tok, err := randomToken(sessionTokenBytes)
	if err != nil {
		return "", Session{}, fmt.Errorf("create session: %w", err)
	}
	csrf, err := randomToken(csrfTokenBytes)
	if err != nil {
		return "", Session{}, fmt.Errorf("create session: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if len(s.m) >= s.max {
		s.evictLocked(now)
	}
	sess := &Session{Account: account, CSRF: csrf, Created: now, LastSeen: now}
	s.m[tokenKey(tok)] = sess
	return tok, *sess, nil
}

func (s *SessionStore) expiredLocked(sess *Session, now time.Time) bool {
	return !now.Before(sess.LastSeen.Add(s.idle)) || !now.Before(sess.Created.Add(s.lifetime))
}

func (s *SessionStore) evictLocked(now time.Time) {
	var oldest [sha256.Size]byte
	var oe *Session
	for k, sess := range s.m {
		if s.expiredLocked(sess, now) {
			delete(s.m, k)
			continue
		}
		if oe == nil || sess.LastSeen.Before(oe.LastSeen) {
			oldest, oe = k, sess
		}
	}
	if len(s.m) >= s.max && oe != nil {
		delete(s.m, oldest)
	}
}

// Get returns the live session for token and marks it used now (the idle
// timeout restarts; the absolute lifetime does not). An expired session
// is removed.
func (s *SessionStore) Get(token string) (Session, error) { return s.get(token, true) }

// Peek is Get without marking the session used: for the requests a page
// makes by itself on a timer (polls), so that a page left open does not
// keep its session alive past the idle timeout.
func (s *SessionStore) Peek(token string) (Session, error) { return s.get(token, false) }

func (s *SessionStore) get(token string, touch bool) (Session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := tokenKey(token)
	sess, ok := s.m[k]
	if !ok {
		return Session{}, ErrNoSession
	}
	now := s.now()
	if s.expiredLocked(sess, now) {
		delete(s.m, k)
		return Session{}, ErrNoSession
	}
	if touch {
		sess.LastSeen = now
	}
	return *sess, nil
}

// CheckCSRF reports whether csrf is the CSRF token of the live session
// token, compared in constant time. It does not refresh the session.
func (s *SessionStore) CheckCSRF(token, csrf string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.m[tokenKey(token)]
	if !ok || s.expiredLocked(sess, s.now()) || csrf == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(sess.CSRF), []byte(csrf)) == 1
}

// Delete ends the session of token (logout). Unknown tokens are ignored.
func (s *SessionStore) Delete(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, tokenKey(token))
}

// DeleteAccount ends every session of account (after a password change or
// an admin reset) and returns how many there were.
func (s *SessionStore) DeleteAccount(account string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, sess := range s.m {
		if sess.Account == account {
			delete(s.m, k)
			n++
		}
	}
	return n
}

// DeleteAll ends every session (after `cloudsteer console reset-admin`)
// and returns how many there were.
func (s *SessionStore) DeleteAll() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.m)
	clear(s.m)
	return n
}

// Len returns the number of stored sessions, expired ones included until
// they are looked up or evicted.
func (s *SessionStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// SessionCookie returns the session cookie for token: Secure, HttpOnly,
// SameSite=Strict, Path=/, no Max-Age (a browser-session cookie; the
// server enforces expiry).
func SessionCookie(token string) *http.Cookie {
	return &http.Cookie{Name: SessionCookieName, Value: token, Path: "/",
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode}
}

// ClearSessionCookie returns a cookie that deletes the session cookie (logout).
func ClearSessionCookie() *http.Cookie {
	c := SessionCookie("")
	c.MaxAge = -1
	return c
}

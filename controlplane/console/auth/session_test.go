package auth_test

import (
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/console/auth"
)

func TestSessionLifecycle(t *testing.T) {
	clock := newFakeClock()
	s := auth.NewSessionStore(clock.Now, 10*time.Minute, time.Hour, 0)
	tok, sess, err := s.Create("admin")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(raw) != 32 {
		t.Fatalf("token %q: %d bytes, %v; want 32", tok, len(raw), err)
	}
	if sess.Account != "admin" || sess.CSRF == "" || sess.CSRF == tok {
		t.Fatalf("session %+v", sess)
	}
	steps := []struct {
		name    string
		advance time.Duration
		wantOK  bool
	}{
		{"fresh", 0, true},
		{"used before idle timeout", 9 * time.Minute, true},
		{"use restarts the idle timer", 9 * time.Minute, true},
		{"used again", 9 * time.Minute, true},
		{"idle just short of timeout", 9*time.Minute + 59*time.Second, true},
		{"idle 15 min after last use ends it", 15 * time.Minute, false},
		{"and it stays ended", 0, false},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			clock.Advance(st.advance)
			_, err := s.Get(tok)
			if st.wantOK != (err == nil) {
				t.Fatalf("Get after +%v: %v, want ok=%v", st.advance, err, st.wantOK)
			}
		})
	}
}

func TestSessionIdleExpiry(t *testing.T) {
	clock := newFakeClock()
	s := auth.NewSessionStore(clock.Now, 10*time.Minute, time.Hour, 0)
	tok, _, _ := s.Create("admin")
	clock.Advance(10 * time.Minute)
	if _, err := s.Get(tok); !errors.Is(err, auth.ErrNoSession) {
		t.Fatalf("Get after idle timeout: %v", err)
	}
	if s.Len() != 0 {
		t.Fatal("expired session not removed")
	}
}

// TestSessionPeek: Peek reads a live session without restarting its idle
// timeout; Get does restart it.
func TestSessionPeek(t *testing.T) {
	clock := newFakeClock()
	s := auth.NewSessionStore(clock.Now, 10*time.Minute, time.Hour, 0)
	peeked, _, _ := s.Create("admin")
	got, _, _ := s.Create("admin")
	clock.Advance(6 * time.Minute)
	if _, err := s.Peek(peeked); err != nil {
		t.Fatalf("Peek of a live session: %v", err)
	}
	if _, err := s.Get(got); err != nil {
		t.Fatalf("Get of a live session: %v", err)
	}
	clock.Advance(6 * time.Minute)
	if _, err := s.Peek(peeked); !errors.Is(err, auth.ErrNoSession) {
		t.Fatalf("Peek 12 min after the last use: %v, want expired", err)
	}
	if _, err := s.Get(got); err != nil {
		t.Fatalf("Get 6 min after the last Get: %v", err)
	}
}

func TestSessionAbsoluteLifetime(t *testing.T) {
	clock := newFakeClock()
	s := auth.NewSessionStore(clock.Now, 10*time.Minute, time.Hour, 0)
	tok, _, _ := s.Create("admin")
	for i := range 11 { // kept busy every 5 minutes: 55 minutes
		clock.Advance(5 * time.Minute)
		if _, err := s.Get(tok); err != nil {
			t.Fatalf("busy session died at %d min: %v", 5*(i+1), err)
		}
	}
	clock.Advance(5 * time.Minute) // 60 minutes
	if _, err := s.Get(tok); !errors.Is(err, auth.ErrNoSession) {
		t.Fatalf("Get past the absolute lifetime: %v", err)
	}
}

func TestSessionLogoutAndAccountReset(t *testing.T) {
	s := auth.NewSessionStore(newFakeClock().Now, 0, 0, 0)
	t1, _, _ := s.Create("admin")
	t2, _, _ := s.Create("admin")
	t3, _, _ := s.Create("other")
	s.Delete(t1)
	if _, err := s.Get(t1); err == nil {
		t.Fatal("session alive after logout")
	}
	if _, err := s.Get(t2); err != nil {
		t.Fatalf("logout ended another session: %v", err)
	}
	if n := s.DeleteAccount("admin"); n != 1 {
		t.Fatalf("DeleteAccount = %d, want 1", n)
	}
	if _, err := s.Get(t2); err == nil {
		t.Fatal("session alive after DeleteAccount")
	}
	if _, err := s.Get(t3); err != nil {
		t.Fatalf("other account's session ended: %v", err)
	}
	if _, err := s.Get("made-up-token"); !errors.Is(err, auth.ErrNoSession) {
		t.Fatalf("unknown token: %v", err)
	}
}

func TestSessionCSRF(t *testing.T) {
	clock := newFakeClock()
	s := auth.NewSessionStore(clock.Now, 10*time.Minute, time.Hour, 0)
	tok, sess, _ := s.Create("admin")
	tok2, sess2, _ := s.Create("admin")
	for _, tc := range []struct {
		name        string
		token, csrf string
		want        bool
	}{
		{"matching token", tok, sess.CSRF, true},
		{"other session's csrf", tok, sess2.CSRF, false},
		{"missing csrf", tok, "", false},
		{"truncated csrf", tok, sess.CSRF[:len(sess.CSRF)-1], false},
		{"csrf without session", "", sess.CSRF, false},
		{"session token as csrf", tok2, tok2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := s.CheckCSRF(tc.token, tc.csrf); got != tc.want {
				t.Fatalf("CheckCSRF = %v, want %v", got, tc.want)
			}
		})
	}
	clock.Advance(10 * time.Minute)
	if s.CheckCSRF(tok, sess.CSRF) {
		t.Fatal("CheckCSRF true for an expired session")
	}
}

func TestSessionStoreBounded(t *testing.T) {
	clock := newFakeClock()
	s := auth.NewSessionStore(clock.Now, time.Hour, 2*time.Hour, 3)
	var toks []string
	for range 5 {
		clock.Advance(time.Second)
		tok, _, _ := s.Create("admin")
		toks = append(toks, tok)
	}
	if s.Len() != 3 {
		t.Fatalf("Len = %d, want 3", s.Len())
	}
	if _, err := s.Get(toks[0]); err == nil {
		t.Fatal("least recently used session survived eviction")
	}
	if _, err := s.Get(toks[4]); err != nil {
		t.Fatalf("newest session evicted: %v", err)
	}
}

func TestSessionCookie(t *testing.T) {
	rec := httptest.NewRecorder()
	http.SetCookie(rec, auth.SessionCookie("tok123"))
	http.SetCookie(rec, auth.ClearSessionCookie())
	got := rec.Result().Header.Values("Set-Cookie")
	if len(got) != 2 {
		t.Fatalf("Set-Cookie = %q", got)
	}
	for _, want := range []string{"cloudsteer_session=tok123", "Path=/", "HttpOnly", "Secure", "SameSite=Strict"} {
		if !strings.Contains(got[0], want) {
			t.Errorf("cookie %q lacks %q", got[0], want)
		}
	}
	if !strings.Contains(got[1], "Max-Age=0") || !strings.Contains(got[1], "Secure") {
		t.Errorf("clearing cookie %q", got[1])
	}
}

func TestSessionDeleteAll(t *testing.T) {
	s := auth.NewSessionStore(newFakeClock().Now, 0, 0, 0)
	t1, _, _ := s.Create("admin")
	t2, _, _ := s.Create("other")
	if n := s.DeleteAll(); n != 2 {
		t.Fatalf("DeleteAll = %d, want 2", n)
	}
	for _, tok := range []string{t1, t2} {
		if _, err := s.Get(tok); err == nil {
			t.Fatal("session alive after DeleteAll")
		}
	}
}

package auth_test

import (
	"sync"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/console/auth"
)

// fakeClock is an injectable clock the test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fastParams keeps tests quick where the parameters themselves are not
// under test.
var fastParams = auth.HashParams{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}

func mustHash(tb testing.TB, pw string, p auth.HashParams) auth.Hash {
	tb.Helper()
	h, err := auth.HashPasswordWith(pw, p)
	if err != nil {
		tb.Fatalf("HashPasswordWith: %v", err)
	}
	return h
}

package auth_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/console/auth"
)

var (
	ipA = netip.MustParseAddr("192.168.1.10")
	ipB = netip.MustParseAddr("192.168.1.11")
)

func TestLimiterBackoffThenLockout(t *testing.T) {
	clock := newFakeClock()
	l := auth.NewLimiter(clock.Now, 0)
	if w := l.Allow(ipA, "admin"); w != 0 {
		t.Fatalf("fresh Allow = %v", w)
	}
	for i, want := range []time.Duration{1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 15 * time.Minute} {
		t.Run(fmt.Sprintf("failure %d", i+1), func(t *testing.T) {
			if w := l.Failure(ipA, "admin"); w != want {
				t.Fatalf("Failure wait = %v, want %v", w, want)
			}
			if w := l.Allow(ipA, "admin"); w != want {
				t.Fatalf("Allow right after = %v, want %v", w, want)
			}
			clock.Advance(want / 2)
			if w := l.Allow(ipA, "admin"); w != want-want/2 {
				t.Fatalf("Allow halfway = %v, want %v", w, want-want/2)
			}
			if w := l.Allow(ipB, "admin"); w != 0 {
				t.Fatalf("account limit applied to an IP that never failed at it: %v", w)
			}
			if w := l.Allow(ipA, "other"); w != want-want/2 {
				t.Fatalf("IP limit not applied to another account: %v", w)
			}
			clock.Advance(want - want/2)
			if w := l.Allow(ipA, "admin"); w != 0 {
				t.Fatalf("Allow after the wait = %v", w)
			}
		})
	}
	// After the lockout has passed the count starts over.
	if w := l.Failure(ipA, "admin"); w != time.Second {
		t.Fatalf("first failure after lockout: wait %v, want 1s", w)
	}
}

func TestLimiterSuccessResetsAccountOnly(t *testing.T) {
	clock := newFakeClock()
	l := auth.NewLimiter(clock.Now, 0)
	for range 4 {
		l.Failure(ipA, "admin")
	}
	clock.Advance(10 * time.Second)
	l.Success(ipA, "admin")
	// The account starts over: a failure from a fresh IP waits 1 s, not
	// the lockout its fifth failure would bring.
	if w := l.Failure(ipB, "admin"); w != time.Second {
		t.Fatalf("account failure after success: wait %v, want 1s", w)
	}
	// The IP keeps its four failures: the next one locks it out.
	if w := l.Failure(ipA, "someone"); w != auth.LimiterLockoutFor {
		t.Fatalf("IP's fifth failure wait = %v, want lockout", w)
	}
}

func TestLimiterIPv6CountsPer64(t *testing.T) {
	l := auth.NewLimiter(newFakeClock().Now, 0)
	for i := range 5 {
		l.Failure(netip.MustParseAddr(fmt.Sprintf("2001:db8:1:2::%x", i+1)), fmt.Sprintf("user%d", i))
	}
	if w := l.Allow(netip.MustParseAddr("2001:db8:1:2:ffff::1"), "new"); w != auth.LimiterLockoutFor {
		t.Fatalf("same /64 wait = %v, want lockout", w)
	}
	if w := l.Allow(netip.MustParseAddr("2001:db8:1:3::1"), "new"); w != 0 {
		t.Fatalf("other /64 wait = %v, want 0", w)
	}
	if w := l.Allow(netip.MustParseAddr("::ffff:192.168.1.10"), "new"); w != 0 {
		t.Fatalf("unrelated v4-mapped wait = %v", w)
	}
}

func TestLimiterEviction(t *testing.T) {
	clock := newFakeClock()
	const max = 8
	l := auth.NewLimiter(clock.Now, max)
	// Lock out the admin account from one IP; ipB failed at it once.
	l.Failure(ipB, "admin")
	for range auth.LimiterLockoutAfter - 1 {
		l.Failure(ipA, "admin")
	}
	// A flood of new accounts from many IPs, one failure each.
	for i := range 100 {
		clock.Advance(time.Millisecond)
		l.Failure(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), fmt.Sprintf("bogus%d", i))
	}
	if ips, accounts := l.Len(); ips > max || accounts > max {
		t.Fatalf("tables grew to %d IPs, %d accounts; bound %d", ips, accounts, max)
	}
	if w := l.Allow(ipB, "admin"); w != auth.LimiterLockoutFor-100*time.Millisecond {
		t.Fatalf("flood of new keys evicted the locked-out account: ipB waits %v", w)
	}
	if w := l.Allow(ipA, "x"); w <= 0 {
		t.Fatal("flood of new keys evicted the locked-out IP")
	}
	// Once everything is old, entries are dropped as expired.
	clock.Advance(auth.LimiterForget + time.Second)
	l.Failure(ipB, "fresh")
	if ips, accounts := l.Len(); ips != 1 || accounts != 1 {
		t.Fatalf("after expiry: %d IPs, %d accounts; want 1, 1", ips, accounts)
	}
	if w := l.Allow(ipA, "admin"); w != 0 {
		t.Fatalf("expired lockout still applies: %v", w)
	}
}

// TestLimiterAccountLockoutSparesCleanIPs: five failures at "admin" from
// one guest lock the account for the addresses that failed at it, not for
// the admin at another address; a new address that fails once is held by
// the account's lockout from then on, not just by its own 1 s backoff.
func TestLimiterAccountLockoutSparesCleanIPs(t *testing.T) {
	clock := newFakeClock()
	l := auth.NewLimiter(clock.Now, 0)
	for range auth.LimiterLockoutAfter {
		l.Failure(ipA, "admin")
		clock.Advance(time.Second)
	}
	if w := l.Allow(ipA, "admin"); w <= 0 {
		t.Fatal("the failing IP is not held")
	}
	if w := l.Allow(ipB, "admin"); w != 0 {
		t.Fatalf("clean IP waits %v for the locked account", w)
	}
	ipC := netip.MustParseAddr("192.168.1.12")
	if w := l.Failure(ipC, "admin"); w != auth.LimiterLockoutFor {
		t.Fatalf("a new IP's failure at a locked account: wait %v, want the lockout", w)
	}
	clock.Advance(2 * time.Second) // past ipC's own 1 s backoff
	if w := l.Allow(ipC, "admin"); w <= time.Minute {
		t.Fatalf("ipC waits only %v after failing at a locked account", w)
	}
	if w := l.Allow(ipC, "other"); w != 0 {
		t.Fatalf("ipC waits %v for another account, past its own backoff", w)
	}
	// The admin's success from the clean IP resets the account.
	l.Success(ipB, "admin")
	if w := l.Allow(ipC, "admin"); w != 0 {
		t.Fatalf("after the admin's success ipC still waits %v", w)
	}
}

// TestLimiterAccountIPsBounded: an account remembers at most
// LimiterAccountIPs failing addresses.
func TestLimiterAccountIPsBounded(t *testing.T) {
	clock := newFakeClock()
	l := auth.NewLimiter(clock.Now, 0)
	held := 0
	for i := range 3 * auth.LimiterAccountIPs {
		l.Failure(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), "admin")
	}
	clock.Advance(2 * time.Second) // past each IP's own 1 s backoff
	for i := range 3 * auth.LimiterAccountIPs {
		if l.Allow(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), "admin") > 0 {
			held++
		}
	}
	if held != auth.LimiterAccountIPs {
		t.Fatalf("%d addresses held by the account, want %d", held, auth.LimiterAccountIPs)
	}
}

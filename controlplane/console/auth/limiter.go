package auth

import (
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Login limiter policy. The same numbers apply to a client IP and to an
// account, counted separately:
//
//	failure 1..4: wait 1 s, 2 s, 4 s, 8 s before the next attempt
//	failure 5:    locked out for 15 minutes
//
// A key's failures are forgotten LimiterForget after its last failure (so
// after a lockout ends the count starts again), and a successful login
// resets the account's count (not the IP's: one client guessing at several
// accounts keeps its count).
//
// An account's wait applies only to the client IPs (per /64) that have
// failed at that account since its count started: otherwise a guest on the
// LAN could lock the administrator out by failing five times with the
// admin's user name. A client that has not failed at the account is held
// by its own IP's count only; its first failure puts it under the
// account's wait as well. So an attacker guessing from many addresses gets
// about one guess per address per lockout (each address is also limited
// by its own count), while the admin at a clean address can still sign in.
// Each account remembers at most LimiterAccountIPs addresses (an arbitrary
// one is forgotten when full; it is then still held by its own count).
const (
	LimiterBaseDelay    = time.Second
	LimiterLockoutAfter = 5
	LimiterLockoutFor   = 15 * time.Minute
	LimiterForget       = LimiterLockoutFor
	// LimiterMaxEntries bounds each of the two tables (IPs, accounts).
	LimiterMaxEntries = 4096
	// LimiterAccountIPs bounds the addresses each account remembers as
	// having failed at it.
	LimiterAccountIPs = 32
)

type limitEntry struct {
	failures int
	last     time.Time // last failure
	until    time.Time // next attempt allowed at
	// ips are the client keys that failed at this account (account
	// entries only): the account's wait applies to them alone.
	ips map[netip.Addr]struct{}
}

// Limiter counts failed logins per client IP and per account. IPv6 clients
// are counted per /64, since a host can pick any address in its prefix.
// Each table holds at most maxEntries keys; when full, expired entries go
// first, then the one with the fewest failures (oldest among equals), so a
// flood of new keys cannot push out a locked-out one.
type Limiter struct {
	now        func() time.Time
	maxEntries int
	mu         sync.Mutex
	ips        map[netip.Addr]*limitEntry
	accounts   map[string]*limitEntry
}

// NewLimiter returns a limiter with clock now (time.Now if nil) and at most
// maxEntries per table (LimiterMaxEntries if <= 0).
func NewLimiter(now func() time.Time, maxEntries int) *Limiter {
	if now == nil {
		now = time.Now
	}
	if maxEntries <= 0 {
		maxEntries = LimiterMaxEntries
	}
	return &Limiter{now: now, maxEntries: maxEntries,
		ips: map[netip.Addr]*limitEntry{}, accounts: map[string]*limitEntry{}}
}

func ipKey(ip netip.Addr) netip.Addr {
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
}

func accountKey(a string) string { return strings.ToLower(a) }

// Allow returns how long the caller must wait before it may try a login
// for account from ip: 0 means go ahead. The caller reports the outcome
// with Failure or Success.
func (l *Limiter) Allow(ip netip.Addr, account string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	k := ipKey(ip)
	w := wait(l.ips[k], now)
	if a := l.accounts[accountKey(account)]; a != nil {
		if _, failed := a.ips[k]; failed {
			w = max(w, wait(a, now))
		}
	}
	return w
}

// Failure records a failed login and returns the wait before the next
// attempt is allowed (the larger of the IP's and the account's).
func (l *Limiter) Failure(ip netip.Addr, account string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	k := ipKey(ip)
	a := fail(l.ips, k, now, l.maxEntries)
	b := fail(l.accounts, accountKey(account), now, l.maxEntries)
	e := l.accounts[accountKey(account)]
	if e.ips == nil {
		e.ips = map[netip.Addr]struct{}{}
	}
	if _, ok := e.ips[k]; !ok && len(e.ips) >= LimiterAccountIPs {
		for old := range e.ips {
			delete(e.ips, old)
			break
		}
	}
	e.ips[k] = struct{}{}
	return max(a, b)
}

// Success resets the account's failures after a successful login.
func (l *Limiter) Success(ip netip.Addr, account string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.accounts, accountKey(account))
}

// Len returns the number of tracked IPs and accounts (for tests and metrics).
func (l *Limiter) Len() (ips, accounts int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ips), len(l.accounts)
}

func wait(e *limitEntry, now time.Time) time.Duration {
	if e == nil || !now.Before(e.until) {
		return 0
	}
	return e.until.Sub(now)
}

func expired(e *limitEntry, now time.Time) bool {
	return !now.Before(e.last.Add(LimiterForget)) && !now.Before(e.until)
}

func fail[K comparable](m map[K]*limitEntry, k K, now time.Time, maxEntries int) time.Duration {
	e := m[k]
	if e != nil && expired(e, now) {
		delete(m, k)
		e = nil
	}
	if e == nil {
		if len(m) >= maxEntries {
			evict(m, now)
		}
		e = &limitEntry{}
		m[k] = e
	}
	e.failures++
	e.last = now
	var d time.Duration
	if e.failures >= LimiterLockoutAfter {
		d = LimiterLockoutFor
	} else {
		d = LimiterBaseDelay << (e.failures - 1)
	}
	e.until = now.Add(d)
	return d
}

// evict makes room for one entry: drop every expired entry, and if none
// was, the one with the fewest failures, oldest among equals.
func evict[K comparable](m map[K]*limitEntry, now time.Time) {
	n := len(m)
	for k, e := range m {
		if expired(e, now) {
			delete(m, k)
		}
	}
	if len(m) < n {
		return
	}
	var victim K
	var ve *limitEntry
	for k, e := range m {
		if ve == nil || e.failures < ve.failures || (e.failures == ve.failures && e.last.Before(ve.last)) {
			victim, ve = k, e
		}
	}
	delete(m, victim)
}

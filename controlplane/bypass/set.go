package bypass

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Map is the kernel's bypass map (dataplane/steer implements it).
type Map interface {
	AddBypass(p netip.Prefix) error
	DeleteBypass(p netip.Prefix) error
}

// Learned addresses live at least this long, so a client that caches an
// answer a little past its TTL still takes the fast path.
const (
	MinDNSLearnTTL = 30 * time.Second
	// SNILearnTTL is how long an address stays on the fast path after a
	// TLS flow to it was bypassed because of its server name.
	SNILearnTTL = 5 * time.Minute
	// MaxLearnTTL caps a learned entry's life.
	MaxLearnTTL = 24 * time.Hour
)

// Set is the live bypass state: which names bypass, which prefixes are
// configured, which addresses were learned and until when. It keeps the
// kernel map equal to the union of configured prefixes and unexpired
// learned addresses.
type Set struct {
	m   Map
	now func() time.Time
	log *slog.Logger

	mu      sync.Mutex
	matcher *Matcher
	static  map[netip.Prefix]bool
	learned map[netip.Prefix]*learned
}

// learned is an address on the fast path because of one or more names.
type learned struct {
	exp   time.Time
	names map[string]bool
}

// NewSet builds a Set over m with the system domains plus domains, and the
// static prefixes, and writes the prefixes to the map. now may be nil.
func NewSet(m Map, domains []string, prefixes []netip.Prefix, now func() time.Time, log *slog.Logger) (*Set, error) {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	s := &Set{m: m, now: now, log: log.With("component", "bypass"), static: map[netip.Prefix]bool{}, learned: map[netip.Prefix]*learned{}}
	s.SetDomains(domains)
	if err := s.SetPrefixes(prefixes); err != nil {
		return nil, err
	}
	return s, nil
}

// SetDomains replaces the admin's domain patterns (normalized); the system
// domains always stay. New flows follow the new list at once: addresses
// learned for names that no longer bypass leave the kernel map now.
func (s *Set) SetDomains(domains []string) {
	all := append(append([]string{}, SystemDomains...), domains...)
	m := NewMatcher(all)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.matcher = m
	for p, l := range s.learned {
		for n := range l.names {
			if !m.Match(n) {
				delete(l.names, n)
			}
		}
		if len(l.names) > 0 {
			continue
		}
		delete(s.learned, p)
		if !s.static[p] {
			if err := s.m.DeleteBypass(p); err != nil {
				s.log.Warn("remove bypass address of a dropped name", "prefix", p, "err", err)
			}
		}
	}
}

// SetPrefixes replaces the configured prefixes, updating the kernel map.
func (s *Set) SetPrefixes(prefixes []netip.Prefix) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := map[netip.Prefix]bool{}
	for _, p := range prefixes {
		want[p.Masked()] = true
	}
	var errs []error
	for p := range want {
		if !s.static[p] {
			if _, ok := s.learned[p]; !ok {
				if err := s.m.AddBypass(p); err != nil {
					errs = append(errs, err)
					continue
				}
			}
		}
	}
	for p := range s.static {
		if !want[p] {
			if _, ok := s.learned[p]; !ok {
				errs = append(errs, s.m.DeleteBypass(p))
			}
		}
	}
	s.static = want
	return errors.Join(errs...)
}

// BypassName reports whether flows to name pass untouched.
func (s *Set) BypassName(name string) bool {
	s.mu.Lock()
	m := s.matcher
	s.mu.Unlock()
	return m.Match(name)
}

// LearnBypass puts addr on the fast path for SNILearnTTL: a flow to it
// named the bypass domain name.
func (s *Set) LearnBypass(name string, addr netip.Addr) {
	s.learn(name, addr, SNILearnTTL, "sni")
}

// Snoop is the resolver's hook: the addresses of a bypass name go on the
// fast path for their TTL (at least MinDNSLearnTTL).
func (s *Set) Snoop(name string, addrs []netip.Addr, ttl time.Duration) {
	if !s.BypassName(name) {
		return
	}
	ttl = max(ttl, MinDNSLearnTTL)
	for _, a := range addrs {
		s.learn(name, a, ttl, "dns")
	}
}

func (s *Set) learn(name string, addr netip.Addr, ttl time.Duration, source string) {
	if !addr.IsValid() || addr.IsUnspecified() {
		return
	}
	addr = addr.Unmap()
	ttl = min(ttl, MaxLearnTTL)
	p := netip.PrefixFrom(addr, addr.BitLen())
	exp := s.now().Add(ttl)
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.matcher.Match(name) {
		return // the list changed since the caller looked
	}
	l, had := s.learned[p]
	if !had {
		if !s.static[p] {
			if err := s.m.AddBypass(p); err != nil {
				s.log.Warn("add learned bypass address", "addr", addr, "source", source, "err", err)
				return
			}
			s.log.Debug("learned bypass address", "addr", addr, "name", name, "source", source, "ttl", ttl)
		}
		l = &learned{names: map[string]bool{}}
		s.learned[p] = l
	}
	l.names[name] = true
	if exp.After(l.exp) {
		l.exp = exp
	}
}

// Expire removes learned addresses whose time is up and returns how many
// it removed.
func (s *Set) Expire() int {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for p, l := range s.learned {
		if now.Before(l.exp) {
			continue
		}
		delete(s.learned, p)
		n++
		if s.static[p] {
			continue
		}
		if err := s.m.DeleteBypass(p); err != nil {
			s.log.Warn("remove expired bypass address", "prefix", p, "err", err)
		}
	}
	return n
}

// Run expires learned entries every interval until ctx is done.
func (s *Set) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Expire()
		}
	}
}

// Learned returns the learned prefixes with their expiry.
func (s *Set) Learned() map[netip.Prefix]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[netip.Prefix]time.Time, len(s.learned))
	for p, l := range s.learned {
		out[p] = l.exp
	}
	return out
}

// BypassTarget says where a flow naming the bypass name name, sent to dst,
// goes direct (proxy.Policy).
//
// placeholder: replaced by the DNS-evidence implementation
func (s *Set) BypassTarget(ctx context.Context, name string, dst netip.AddrPort) (netip.AddrPort, error) {
	return dst, nil
}

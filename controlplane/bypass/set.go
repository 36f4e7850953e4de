package bypass

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/cloudsteer/cloudsteer/internal/destaddr"
)

// Map is the kernel's bypass map (dataplane/steer implements it).
type Map interface {
	AddBypass(p netip.Prefix) error
	DeleteBypass(p netip.Prefix) error
}

const (
	// MinDNSLearnTTL is the shortest life of a learned address, so a
	// client that caches an answer a little past its TTL still takes the
	// fast path.
	MinDNSLearnTTL = 30 * time.Second
	// MaxLearnTTL caps a learned entry's life.
	MaxLearnTTL = 24 * time.Hour
	// DefaultMaxPerName bounds the addresses held for one name.
	DefaultMaxPerName = 32
	// DefaultMaxLearned bounds the learned addresses overall. The kernel
	// map holds 65536 prefixes per address family (bpf/steer.c); the rest
	// stays free for bypass.cidrs.
	DefaultMaxLearned = 32768
	// LookupTimeout bounds an on-demand lookup made by BypassTarget.
	LookupTimeout = 5 * time.Second
	// ownAddrsTTL is how long the gateway's own addresses are cached.
	ownAddrsTTL = 5 * time.Second
)

// ErrNoAddress means that cloudsteer's resolver knows no address for a
// bypass name: a flow naming it is refused.
var ErrNoAddress = errors.New("no address known from DNS")

// Stats are the Set's counters since NewSet.
type Stats struct {
	Learned             int    // addresses held now (DNS evidence)
	LearnRefusedPerName uint64 // addresses not learned: the name holds DefaultMaxPerName already
	LearnRefusedFull    uint64 // addresses not learned: the map is full of addresses that may not be evicted
	LearnRefusedAddr    uint64 // answers ignored: not global unicast, or one of the gateway's own addresses
	Evicted             uint64 // admin names' addresses evicted for a system name's
	Lookups             uint64 // on-demand lookups made by BypassTarget
	LookupErrors        uint64 // on-demand lookups that failed
}

// Set is the live bypass state: which names bypass, which prefixes are
// configured, and which addresses cloudsteer's own resolver answered for
// bypass names (the DNS evidence) and until when. It keeps the kernel map
// equal to the union of configured prefixes and unexpired learned
// addresses. Addresses are learned only from DNS answers (Snoop), never
// from what a client names in a flow.
type Set struct {
	m   Map
	now func() time.Time
	log *slog.Logger

	maxPerName, maxLearned int

	lookup atomic.Pointer[func(ctx context.Context, name string) ([]netip.Addr, error)]
	own    atomic.Pointer[func(netip.Addr) bool]
	flight singleflight.Group

	mu      sync.Mutex
	matcher *Matcher
	system  *Matcher
	static  map[netip.Prefix]bool
	learned map[netip.Addr]*learned
	byName  map[string]map[netip.Addr]bool

	refusedPerName, refusedFull, refusedAddr, evicted, lookups, lookupErrs atomic.Uint64
}

// learned is an address held because of one or more names, each with the
// expiry its answer gave.
type learned struct {
	names  map[string]time.Time
	system int // how many of names are system names
}

// exp is when the last of the address's names lets it go.
func (l *learned) exp() time.Time {
	var e time.Time
	for _, t := range l.names {
		if t.After(e) {
			e = t
		}
	}
	return e
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
	s := &Set{
		m: m, now: now, log: log.With("component", "bypass"),
		maxPerName: DefaultMaxPerName, maxLearned: DefaultMaxLearned,
		system: NewMatcher(SystemDomains),
		static: map[netip.Prefix]bool{}, learned: map[netip.Addr]*learned{}, byName: map[string]map[netip.Addr]bool{},
	}
	own := (&destaddr.Local{TTL: ownAddrsTTL, Now: now}).Has
	s.SetOwnAddrs(own)
	s.SetDomains(domains)
	if err := s.SetPrefixes(prefixes); err != nil {
		return nil, err
	}
	return s, nil
}

// SetLimits changes the bounds on learned addresses: perName for one name,
// total overall (zero keeps a bound as it is). Addresses held beyond a new
// bound stay until they expire.
func (s *Set) SetLimits(perName, total int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if perName > 0 {
		s.maxPerName = perName
	}
	if total > 0 {
		s.maxLearned = total
	}
}

// SetLookup gives the Set its way to obtain a name's addresses now through
// cloudsteer's resolver (whose answers also reach Snoop). Without one,
// BypassTarget knows only the addresses already held.
func (s *Set) SetLookup(fn func(ctx context.Context, name string) ([]netip.Addr, error)) {
	s.lookup.Store(&fn)
}

// SetOwnAddrs replaces the test of the gateway's own addresses (by
// default the addresses of this network namespace's interfaces, read at
// most every few seconds). An own address is never learned nor a target.
func (s *Set) SetOwnAddrs(isOwn func(netip.Addr) bool) {
	s.own.Store(&isOwn)
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
	for n, addrs := range s.byName {
		if m.Match(n) {
			continue
		}
		for a := range addrs {
			s.forgetLocked(n, a)
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
		if !s.static[p] && !s.learnedPrefix(p) {
			if err := s.m.AddBypass(p); err != nil {
				errs = append(errs, err)
				continue
			}
		}
	}
	for p := range s.static {
		if !want[p] && !s.learnedPrefix(p) {
			errs = append(errs, s.m.DeleteBypass(p))
		}
	}
	s.static = want
	return errors.Join(errs...)
}

// learnedPrefix reports whether p is a single address held as learned.
func (s *Set) learnedPrefix(p netip.Prefix) bool {
	if !p.IsSingleIP() {
		return false
	}
	_, ok := s.learned[p.Addr()]
	return ok
}

// BypassName reports whether flows to name pass untouched.
func (s *Set) BypassName(name string) bool {
	s.mu.Lock()
	m := s.matcher
	s.mu.Unlock()
	return m.Match(name)
}

// Usable reports whether a may be learned or dialed on a client's behalf:
// global unicast, not an IPv4-mapped IPv6 form, not in 0.0.0.0/8, and not
// one of the gateway's own addresses.
func (s *Set) Usable(a netip.Addr) bool {
	if destaddr.Refusal(a) != "" {
		return false
	}
	if own := s.own.Load(); own != nil && (*own)(a) {
		return false
	}
	return true
}

// Snoop is the resolver's hook: the addresses of a bypass name go on the
// fast path for their TTL (at least MinDNSLearnTTL) and become the name's
// DNS evidence.
func (s *Set) Snoop(name string, addrs []netip.Addr, ttl time.Duration) {
	if !s.BypassName(name) {
		return
	}
	ttl = min(max(ttl, MinDNSLearnTTL), MaxLearnTTL)
	name = canonical(name)
	for _, a := range addrs {
		if !s.Usable(a) {
			s.refusedAddr.Add(1)
			s.log.Debug("ignored answer address for a bypass name", "name", name, "addr", a)
			continue
		}
		s.learn(name, a, ttl)
	}
}

func canonical(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) }

// learn holds addr for name until ttl from now, within the bounds.
func (s *Set) learn(name string, addr netip.Addr, ttl time.Duration) {
	exp := s.now().Add(ttl)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.matcher.Match(name) {
		return // the list changed since the caller looked
	}
	if l, ok := s.learned[addr]; ok {
		if old, had := l.names[name]; had {
			if exp.After(old) {
				l.names[name] = exp
			}
			return
		}
	}
	if len(s.byName[name]) >= s.maxPerName {
		s.refusedPerName.Add(1)
		s.log.Debug("bypass address refused: name holds the maximum", "name", name, "addr", addr, "max", s.maxPerName)
		return
	}
	l, had := s.learned[addr]
	if !had {
		if len(s.learned) >= s.maxLearned && !s.evictLocked(name) {
			s.refusedFull.Add(1)
			s.log.Debug("bypass address refused: learned addresses at the maximum", "name", name, "addr", addr, "max", s.maxLearned)
			return
		}
		p := netip.PrefixFrom(addr, addr.BitLen())
		if !s.static[p] {
			if err := s.m.AddBypass(p); err != nil {
				s.refusedFull.Add(1)
				s.log.Warn("add learned bypass address", "addr", addr, "name", name, "err", err)
				return
			}
			s.log.Debug("learned bypass address", "addr", addr, "name", name, "ttl", ttl)
		}
		l = &learned{names: map[string]time.Time{}}
		s.learned[addr] = l
	}
	l.names[name] = exp
	if s.system.Match(name) {
		l.system++
	}
	if s.byName[name] == nil {
		s.byName[name] = map[netip.Addr]bool{}
	}
	s.byName[name][addr] = true
}

// evictLocked makes room for an address of name: for a system name it
// evicts the admin-only address soonest to expire; an admin name's address
// never evicts another. It reports whether there is room now.
func (s *Set) evictLocked(name string) bool {
	if !s.system.Match(name) {
		return false
	}
	var victim netip.Addr
	var vexp time.Time
	for a, l := range s.learned {
		if l.system > 0 {
			continue
		}
		if e := l.exp(); !victim.IsValid() || e.Before(vexp) {
			victim, vexp = a, e
		}
	}
	if !victim.IsValid() {
		return false
	}
	for n := range s.learned[victim].names {
		s.forgetLocked(n, victim)
	}
	s.evicted.Add(1)
	s.log.Debug("evicted an admin name's bypass address for a system name's", "addr", victim, "for", name)
	return true
}

// forgetLocked drops the evidence that name has addr, and addr from the
// kernel map when no name holds it any more.
func (s *Set) forgetLocked(name string, addr netip.Addr) {
	l, ok := s.learned[addr]
	if !ok {
		return
	}
	if _, had := l.names[name]; had {
		delete(l.names, name)
		if s.system.Match(name) {
			l.system--
		}
	}
	if byName := s.byName[name]; byName != nil {
		delete(byName, addr)
		if len(byName) == 0 {
			delete(s.byName, name)
		}
	}
	if len(l.names) > 0 {
		return
	}
	delete(s.learned, addr)
	p := netip.PrefixFrom(addr, addr.BitLen())
	if s.static[p] {
		return
	}
	if err := s.m.DeleteBypass(p); err != nil {
		s.log.Warn("remove bypass address", "prefix", p, "err", err)
	}
}

// held returns the unexpired addresses cloudsteer's resolver gave for name.
func (s *Set) held(name string) []netip.Addr {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []netip.Addr
	for a := range s.byName[name] {
		if now.Before(s.learned[a].names[name]) {
			out = append(out, a)
		}
	}
	return out
}

// BypassTarget says where a flow that names the bypass name name, sent by the
// client to dst, goes direct: dst itself when dst's address is one that
// cloudsteer's resolver holds (or now obtains) for name, otherwise one of
// those addresses with dst's port. An error means no address is known for
// name: the flow is refused.
func (s *Set) BypassTarget(ctx context.Context, name string, dst netip.AddrPort) (netip.AddrPort, error) {
	name = canonical(name)
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if !s.BypassName(name) {
		return netip.AddrPort{}, fmt.Errorf("bypass target %s: not a bypass name", name)
	}
	cands := s.held(name)
	if slices.Contains(cands, dst.Addr()) && s.Usable(dst.Addr()) {
		return dst, nil
	}
	var lerr error
	if fn := s.lookup.Load(); fn != nil {
		var got []netip.Addr
		got, lerr = s.lookupNow(ctx, *fn, name)
		for _, a := range got {
			if s.Usable(a) && !slices.Contains(cands, a) {
				cands = append(cands, a)
			}
		}
	}
	cands = slices.DeleteFunc(cands, func(a netip.Addr) bool { return !s.Usable(a) })
	if slices.Contains(cands, dst.Addr()) {
		return dst, nil
	}
	if len(cands) == 0 {
		if lerr != nil {
			return netip.AddrPort{}, fmt.Errorf("bypass target %s: %w (lookup: %w)", name, ErrNoAddress, lerr)
		}
		return netip.AddrPort{}, fmt.Errorf("bypass target %s: %w", name, ErrNoAddress)
	}
	same := slices.DeleteFunc(slices.Clone(cands), func(a netip.Addr) bool { return a.Is4() != dst.Addr().Is4() })
	if len(same) > 0 {
		cands = same
	}
	return netip.AddrPortFrom(cands[rand.IntN(len(cands))], dst.Port()), nil
}

// lookupNow runs fn for name once for every caller that asks meanwhile,
// bounded by LookupTimeout; a caller whose ctx ends stops waiting.
func (s *Set) lookupNow(ctx context.Context, fn func(context.Context, string) ([]netip.Addr, error), name string) ([]netip.Addr, error) {
	ch := s.flight.DoChan(name, func() (any, error) {
		s.lookups.Add(1)
		lctx, cancel := context.WithTimeout(context.Background(), LookupTimeout)
		defer cancel()
		addrs, err := fn(lctx, name)
		if err != nil {
			s.lookupErrs.Add(1)
		}
		return addrs, err
	})
	select {
	case r := <-ch:
		addrs, _ := r.Val.([]netip.Addr)
		return addrs, r.Err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Expire removes the evidence whose time is up, and the addresses no name
// holds any more from the kernel map; it returns how many addresses left.
func (s *Set) Expire() int {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	before := len(s.learned)
	for a, l := range s.learned {
		for n, exp := range l.names {
			if !now.Before(exp) {
				s.forgetLocked(n, a)
			}
		}
	}
	return before - len(s.learned)
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
	for a, l := range s.learned {
		out[netip.PrefixFrom(a, a.BitLen())] = l.exp()
	}
	return out
}

// Stats returns a snapshot of the counters.
func (s *Set) Stats() Stats {
	s.mu.Lock()
	n := len(s.learned)
	s.mu.Unlock()
	return Stats{
		Learned:             n,
		LearnRefusedPerName: s.refusedPerName.Load(),
		LearnRefusedFull:    s.refusedFull.Load(),
		LearnRefusedAddr:    s.refusedAddr.Load(),
		Evicted:             s.evicted.Load(),
		Lookups:             s.lookups.Load(),
		LookupErrors:        s.lookupErrs.Load(),
	}
}

// Package bypass decides what passes the gateway untouched: the system
// domains of the cloud service's own agent, the admin's domains and CIDRs,
// and the addresses cloudsteer's own resolver answered for bypass names,
// which it keeps in the kernel's bypass map for as long as they live. A
// name a client asserts (TLS SNI, HTTP Host) never adds an address: a flow
// naming a bypass name goes direct only to an address DNS gave for it.
package bypass

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/idna"
)

// SystemDomains always bypass: the desktop agent talks to them, and a
// second proxy or TLS inspection in its path breaks its authentication.
var SystemDomains = []string{"*.akaetp.net", "*.akamai.com", "*.akamai-zt.com"}

var idnaProfile = idna.New(idna.MapForLookup(), idna.Transitional(false), idna.BidiRule(), idna.StrictDomainName(false))

// NormalizePattern checks a bypass domain pattern and returns its canonical
// form: lowercase ASCII (IDN converted to punycode), no trailing dot.
//
//   - "example.com" matches exactly example.com;
//   - "*.example.com" matches every name under example.com (a.example.com,
//     a.b.example.com), not example.com itself;
//   - ".example.com" matches example.com and every name under it.
func NormalizePattern(p string) (string, error) {
	s := strings.TrimSpace(p)
	prefix := ""
	switch {
	case strings.HasPrefix(s, "*."):
		prefix, s = "*.", s[2:]
	case strings.HasPrefix(s, "."):
		prefix, s = ".", s[1:]
	}
	name, err := NormalizeName(s)
	if err != nil {
		return "", fmt.Errorf("%q: %w", p, err)
	}
	if prefix != "" && !strings.Contains(name, ".") {
		return "", fmt.Errorf("%q: a wildcard needs at least two labels (e.g. *.example.com)", p)
	}
	return prefix + name, nil
}

// NormalizeName returns a DNS name in canonical lookup form, or an error
// when it is not a valid host name.
func NormalizeName(s string) (string, error) {
	s = strings.TrimSuffix(s, ".")
	if s == "" {
		return "", errors.New("empty name")
	}
	if strings.Contains(s, "*") {
		return "", errors.New("'*' is only allowed as the first label (*.example.com)")
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return "", errors.New("an IP address belongs in bypass CIDRs, not domains")
	}
	a, err := idnaProfile.ToASCII(s)
	if err != nil {
		return "", fmt.Errorf("not a valid domain name: %v", err)
	}
	a = strings.ToLower(a)
	if len(a) > 253 {
		return "", errors.New("name longer than 253 characters")
	}
	for _, l := range strings.Split(a, ".") {
		if l == "" || len(l) > 63 {
			return "", errors.New("empty or over-long label")
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", fmt.Errorf("character %q not allowed", c)
			}
		}
	}
	return a, nil
}

// ParsePrefix reads an address ("192.0.2.7", "2001:db8::1") or a prefix
// ("192.0.2.0/24") and returns it masked, IPv4-mapped IPv6 made IPv4.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q: zones are not supported", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR", s)
	}
	if p.Addr().Is4In6() {
		bits := p.Bits() - 96
		if bits < 0 {
			return netip.Prefix{}, fmt.Errorf("%q: mapped prefix shorter than ::ffff:0:0/96", s)
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), bits)
	}
	if p.Bits() == 0 {
		return netip.Prefix{}, fmt.Errorf("%q would bypass everything", s)
	}
	return p.Masked(), nil
}

// Matcher answers whether a name is on a bypass list. The zero Matcher
// matches nothing. It is immutable; build a new one to change the list.
type Matcher struct {
	exact   map[string]bool // "example.com"
	suffix  map[string]bool // "*.example.com" stored as "example.com"
	andSelf map[string]bool // ".example.com" stored as "example.com"
}

// NewMatcher builds a matcher from normalized patterns (see NormalizePattern).
func NewMatcher(patterns []string) *Matcher {
	m := &Matcher{exact: map[string]bool{}, suffix: map[string]bool{}, andSelf: map[string]bool{}}
	for _, p := range patterns {
		switch {
		case strings.HasPrefix(p, "*."):
			m.suffix[p[2:]] = true
		case strings.HasPrefix(p, "."):
			m.andSelf[p[1:]] = true
		default:
			m.exact[p] = true
		}
	}
	return m
}

// Match reports whether name (any case, with or without a trailing dot) is
// on the list. Names that do not normalize never match.
func (m *Matcher) Match(name string) bool {
	if m == nil {
		return false
	}
	n := strings.ToLower(strings.TrimSuffix(name, "."))
	if n == "" {
		return false
	}
	if m.exact[n] || m.andSelf[n] {
		return true
	}
	// Walk the parent domains: a.b.example.com → b.example.com → example.com → com.
	for i := strings.IndexByte(n, '.'); i >= 0; {
		parent := n[i+1:]
		if m.suffix[parent] || m.andSelf[parent] {
			return true
		}
		j := strings.IndexByte(parent, '.')
		if j < 0 {
			break
		}
		i += j + 1
	}
	return false
}

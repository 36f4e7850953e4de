// Package nameset matches DNS names against a set of names, each of which
// covers itself and every name under it ("dns.google" covers
// "x.dns.google" but not "notdns.google").
package nameset

import "strings"

// Set holds canonical names (lowercase, no trailing dot).
type Set map[string]struct{}

// New builds a set from names in any case, with or without a trailing
// dot; blank entries and the root are skipped.
func New(names []string) Set {
	s := make(Set, len(names))
	for _, n := range names {
		n = Canon(strings.TrimSpace(n))
		if n == "" {
			continue
		}
		s[n] = struct{}{}
	}
	return s
}

// Canon lowercases name and drops its trailing dot ("" for the root).
func Canon(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// Match reports whether name (canonical) is in the set or under one of its
// names: at most one map lookup per label.
func (s Set) Match(name string) bool {
	if len(s) == 0 {
		return false
	}
	for {
		if _, ok := s[name]; ok {
			return true
		}
		i := strings.IndexByte(name, '.')
		if i < 0 {
			return false
		}
		name = name[i+1:]
	}
}

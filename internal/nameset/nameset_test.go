package nameset

import "testing"

func TestMatch(t *testing.T) {
	s := New([]string{"Use-Application-DNS.net.", "dns.google", " ", "", "."})
	for name, want := range map[string]bool{
		"use-application-dns.net":     true,
		"a.b.use-application-dns.net": true,
		"dns.google":                  true,
		"x.dns.google":                true,
		"google":                      false,
		"notdns.google":               false, // a label, not a string suffix
		"application-dns.net":         false,
		"net":                         false,
		"":                            false,
	} {
		if got := s.Match(name); got != want {
			t.Errorf("Match(%q) = %v, want %v", name, got, want)
		}
	}
	if len(s) != 2 {
		t.Errorf("set has %d names, want 2 (blank and root entries skipped): %v", len(s), s)
	}
}

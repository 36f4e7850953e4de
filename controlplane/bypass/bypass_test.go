package bypass

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestNormalizePattern(t *testing.T) {
	tests := []struct {
		name, in, want, err string
	}{
		{"exact", "Example.COM.", "example.com", ""},
		{"wildcard", "*.Akaetp.net", "*.akaetp.net", ""},
		{"self and subdomains", ".example.com", ".example.com", ""},
		{"idn to punycode", "*.bücher.example", "*.xn--bcher-kva.example", ""},
		{"underscore label", "_dmarc.example.com", "_dmarc.example.com", ""},
		{"empty", "", "", "empty name"},
		{"star inside", "a.*.example.com", "", "first label"},
		{"bare wildcard tld", "*.com", "", "two labels"},
		{"wildcard needs two labels", "*.localhost", "", "two labels"},
		{"ip literal", "192.0.2.1", "", "CIDRs"},
		{"space inside", "exa mple.com", "", "not"},
		{"long label", strings.Repeat("a", 64) + ".com", "", "label"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NormalizePattern(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("NormalizePattern(%q) = %q, %v; want error containing %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NormalizePattern(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("NormalizePattern(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestMatcher(t *testing.T) {
	m := NewMatcher([]string{"*.akaetp.net", "bank.example", ".corp.example"})
	tests := []struct {
		name string
		want bool
	}{
		{"gw1.akaetp.net", true},
		{"a.b.akaetp.net.", true},
		{"GW1.AKAETP.NET", true},
		{"akaetp.net", false},
		{"notakaetp.net", false},
		{"bank.example", true},
		{"www.bank.example", false},
		{"corp.example", true},
		{"x.corp.example", true},
		{"xcorp.example", false},
		{"example", false},
		{"", false},
		{".", false},
	}
	for _, tt := range tests {
		if got := m.Match(tt.name); got != tt.want {
			t.Errorf("Match(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
	var zero *Matcher
	if zero.Match("bank.example") {
		t.Error("nil matcher matched")
	}
}

func TestParsePrefix(t *testing.T) {
	tests := []struct{ in, want string }{
		{"192.0.2.7", "192.0.2.7/32"},
		{"192.0.2.7/24", "192.0.2.0/24"},
		{"2001:db8::1", "2001:db8::1/128"},
		{"2001:db8::/32", "2001:db8::/32"},
		{"::ffff:192.0.2.0/120", "192.0.2.0/24"},
		{"0.0.0.0/0", ""},
		{"::/0", ""},
		{"192.0.2.300", ""},
		{"example.com", ""},
		{"fe80::1%eth0", ""},
	}
	for _, tt := range tests {
		got, err := ParsePrefix(tt.in)
		if tt.want == "" {
			if err == nil {
				t.Errorf("ParsePrefix(%q) = %v, want error", tt.in, got)
			}
			continue
		}
		if err != nil || got.String() != tt.want {
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
		}
	}
}

// fakeMap records the kernel map's content.
type fakeMap struct{ set map[netip.Prefix]bool }

func (f *fakeMap) AddBypass(p netip.Prefix) error    { f.set[p] = true; return nil }
func (f *fakeMap) DeleteBypass(p netip.Prefix) error { delete(f.set, p); return nil }

func TestSetLearnAndExpire(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	fm := &fakeMap{set: map[netip.Prefix]bool{}}
	static := netip.MustParsePrefix("198.51.100.0/24")
	same := netip.MustParsePrefix("192.0.2.9/32")
	s, err := NewSet(fm, []string{"bank.example"}, []netip.Prefix{static, same}, clock, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !fm.set[static] || !fm.set[same] {
		t.Fatalf("static prefixes not in map: %v", fm.set)
	}
	if !s.BypassName("gw1.akaetp.net") || !s.BypassName("bank.example") || s.BypassName("www.example.com") {
		t.Fatal("name matching wrong")
	}

	a := netip.MustParseAddr("203.0.113.40")
	s.Snoop("bank.example", []netip.Addr{a, netip.MustParseAddr("192.0.2.9")}, 5*time.Second)
	s.Snoop("www.example.com", []netip.Addr{netip.MustParseAddr("203.0.113.10")}, time.Hour)
	if !fm.set[netip.PrefixFrom(a, 32)] {
		t.Fatal("snooped bypass address not in map")
	}
	if fm.set[netip.MustParsePrefix("203.0.113.10/32")] {
		t.Fatal("non-bypass name learned")
	}
	// The TTL is raised to the minimum.
	now = now.Add(MinDNSLearnTTL - time.Second)
	if n := s.Expire(); n != 0 {
		t.Fatalf("expired %d entries before their time", n)
	}
	now = now.Add(2 * time.Second)
	if n := s.Expire(); n != 2 {
		t.Fatalf("expired %d entries, want 2", n)
	}
	if fm.set[netip.PrefixFrom(a, 32)] {
		t.Fatal("expired address still in map")
	}
	if !fm.set[same] {
		t.Fatal("a configured prefix left the map when a learned copy expired")
	}

	if err := s.SetPrefixes([]netip.Prefix{same}); err != nil {
		t.Fatal(err)
	}
	if fm.set[static] || !fm.set[same] {
		t.Fatalf("SetPrefixes did not update the map: %v", fm.set)
	}
	s.SetDomains(nil)
	if s.BypassName("bank.example") || !s.BypassName("x.akamai-zt.com") {
		t.Fatal("SetDomains: admin domain kept or system domain lost")
	}
}

func TestSetDomainsDropsLearned(t *testing.T) {
	fm := &fakeMap{set: map[netip.Prefix]bool{}}
	s, err := NewSet(fm, []string{"bank.example", "shop.example"}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	bank := netip.MustParseAddr("203.0.113.40")
	shared := netip.MustParseAddr("203.0.113.50")
	s.Snoop("bank.example", []netip.Addr{bank, shared}, time.Hour)
	s.Snoop("shop.example", []netip.Addr{shared}, time.Hour)
	s.Snoop("www.example.com", []netip.Addr{netip.MustParseAddr("203.0.113.10")}, time.Hour) // not a bypass name
	if len(fm.set) != 2 {
		t.Fatalf("map = %v, want the two bypass addresses", fm.set)
	}
	s.SetDomains([]string{"shop.example"})
	if fm.set[netip.PrefixFrom(bank, 32)] {
		t.Fatal("address of a removed domain still bypasses")
	}
	if !fm.set[netip.PrefixFrom(shared, 32)] {
		t.Fatal("address still claimed by a bypass domain was removed")
	}
	s.SetDomains(nil)
	if len(fm.set) != 0 {
		t.Fatalf("map = %v after removing every admin domain", fm.set)
	}
}

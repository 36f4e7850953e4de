package hostheader

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		addr string
		name string
		ok   bool
	}{
		{"10.10.0.1", "10.10.0.1", "", true},
		{"10.10.0.1:80", "10.10.0.1", "", true},
		{"10.10.0.1:", "10.10.0.1", "", true},
		{"[fd00:10::1]", "fd00:10::1", "", true},
		{"[fd00:10::1]:8080", "fd00:10::1", "", true},
		{"CloudSteer.LAN", "", "cloudsteer.lan", true},
		{"cloudsteer.lan.:80", "", "cloudsteer.lan", true},
		{"gw", "", "gw", true},
		{"xn--bcher-kva.lan", "", "xn--bcher-kva.lan", true},

		// From the admin API's former parser, now the same rules.
		{"10.10.0.1:9080", "10.10.0.1", "", true},
		{"[fd00:10::1]:9080", "fd00:10::1", "", true},
		{"GW.Office.LAN.", "", "gw.office.lan", true},
		{"localhost:", "", "localhost", true},
		{"[::ffff:10.10.0.1]:9080", "", "", false}, // mapped: browsers send the IPv4 form
		{"10.10.0.1.:9080", "", "", false},
		{"[fe80::1%eth0]:9080", "", "", false},
		{"evil.example:99999", "", "", false},
		{"evil.example:-1", "", "", false},
		{"a b", "", "", false},
		{"[", "", "", false},
		{"", "", "", false},
		{"evil.com@10.10.0.1", "", "", false},
		{"10.10.0.1@evil.com", "", "", false},
		{"10.10.0.1/..", "", "", false},
		{"10.10.0.1/evil.com", "", "", false},
		{"10.10.0.1\\evil.com", "", "", false},
		{"10.10.0.1\r\nSet-Cookie: a=b", "", "", false},
		{"10.10.0.1\n", "", "", false},
		{"10.10.0.1 evil.com", "", "", false},
		{"10.10.0.1#x", "", "", false},
		{"10.10.0.1?x", "", "", false},
		{"10.10.0.1:80:80", "", "", false},
		{"10.10.0.1:http", "", "", false},
		{"10.10.0.1:65536", "", "", false},
		{"10.10.0.1:+80", "", "", false},
		{"10.10.0.1:0000080", "", "", false},
		{"fd00::1", "", "", false},
		{"fd00::1:80", "", "", false},
		{"[fd00::1", "", "", false},
		{"[fd00::1]x", "", "", false},
		{"[fe80::1%25eth0]", "", "", false},
		{"[::ffff:10.10.0.1]", "", "", false},
		{"[10.10.0.1]", "", "", false},
		{"10.10.0.1.", "", "", false},
		{"10.1", "", "", false},
		{"0x7f.1", "", "", false},
		{"2130706433", "", "", false},
		{"a..b", "", "", false},
		{".lan", "", "", false},
		{"-a.lan", "", "", false},
		{"a_b.lan", "", "", false},
		{"ünï.lan", "", "", false},
		{strings.Repeat("a", 64) + ".lan", "", "", false},
		{strings.Repeat("a.", 130) + "lan", "", "", false},
	} {
		a, n, ok := Parse(tc.in)
		var want netip.Addr
		if tc.addr != "" {
			want = netip.MustParseAddr(tc.addr)
		}
		if ok != tc.ok || a != want || n != tc.name {
			t.Errorf("Parse(%q) = %v %q %v, want %v %q %v", tc.in, a, n, ok, want, tc.name, tc.ok)
		}
	}
}

// FuzzParse: any Host header parses without panicking, to exactly one of
// an address (no zone, not IPv4-mapped) or a valid lowercase name that
// parses back to itself.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"10.10.0.1:9080", "[fd00:10::1]:9080", "gw.office.lan.", "[fe80::1%eth0]", "a:b:c", "[", "x:99999",
		"Ünicode.example", "10.10.0.1.", "::1.", "[::ffff:10.10.0.1]", "0x7f.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		addr, name, ok := Parse(h)
		if !ok {
			if addr.IsValid() || name != "" {
				t.Fatalf("Parse(%q) refused but returned %v %q", h, addr, name)
			}
			return
		}
		if addr.IsValid() == (name != "") {
			t.Fatalf("Parse(%q) = %v, %q: want exactly one", h, addr, name)
		}
		if name != "" {
			if name != strings.ToLower(name) || !ValidName(name) {
				t.Fatalf("Parse(%q): name %q", h, name)
			}
			if _, again, ok := Parse(name); !ok || again != name {
				t.Fatalf("Parse(%q) = %q, %v", name, again, ok)
			}
		}
		if addr.Zone() != "" || addr.Is4In6() {
			t.Fatalf("Parse(%q) = %v: zone or mapped", h, addr)
		}
	})
}

package firewall

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
	"golang.org/x/sys/unix"
)

func sockaddr4(ip string, port uint16) []byte {
	b := make([]byte, sockaddrIn4Size)
	binary.NativeEndian.PutUint16(b[0:], unix.AF_INET)
	binary.BigEndian.PutUint16(b[2:], port)
	a := netip.MustParseAddr(ip).As4()
	copy(b[4:], a[:])
	return b
}

func sockaddr6(ip string, port uint16, scope uint32) []byte {
	b := make([]byte, sockaddrIn6Size)
	binary.NativeEndian.PutUint16(b[0:], unix.AF_INET6)
	binary.BigEndian.PutUint16(b[2:], port)
	a := netip.MustParseAddr(ip).As16()
	copy(b[8:], a[:])
	binary.NativeEndian.PutUint32(b[24:], scope)
	return b
}

func TestParseSockaddr(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    netip.AddrPort
		wantErr string
	}{
		{name: "ipv4", in: sockaddr4("203.0.113.10", 443), want: netip.MustParseAddrPort("203.0.113.10:443")},
		{name: "ipv6", in: sockaddr6("2001:db8:113::10", 80, 0), want: netip.MustParseAddrPort("[2001:db8:113::10]:80")},
		{name: "ipv6 global ignores scope", in: sockaddr6("2001:db8::1", 53, 7), want: netip.MustParseAddrPort("[2001:db8::1]:53")},
		{name: "ipv6 link-local keeps scope", in: sockaddr6("fe80::1", 443, 3), want: netip.MustParseAddrPort("[fe80::1%3]:443")},
		{name: "empty", in: nil, wantErr: "sockaddr of 0 bytes"},
		{name: "short ipv4", in: sockaddr4("10.0.0.1", 1)[:8], wantErr: "sockaddr_in of 8 bytes"},
		{name: "short ipv6", in: sockaddr6("::1", 1, 0)[:24], wantErr: "sockaddr_in6 of 24 bytes"},
		{name: "unknown family", in: []byte{0xff, 0x00, 0, 0}, wantErr: "address family"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSockaddr(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseSockaddr = %v, %v; want error with %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseSockaddr = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

// FuzzParseSockaddr checks that any bytes give an address or an error,
// never a panic, and that an accepted sockaddr round-trips.
func FuzzParseSockaddr(f *testing.F) {
	f.Add(sockaddr4("10.20.0.2", 443))
	f.Add(sockaddr6("fd00:20::2", 443, 0))
	f.Add(sockaddr6("fe80::1", 53, 2))
	f.Add([]byte{})
	f.Add([]byte{2})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := parseSockaddr(b)
		if err != nil {
			return
		}
		if !got.IsValid() {
			t.Fatalf("no error but invalid address from %x", b)
		}
		var again []byte
		if got.Addr().Is4() {
			again = sockaddr4(got.Addr().String(), got.Port())
		} else {
			scope := binary.NativeEndian.Uint32(b[24:28])
			again = sockaddr6(got.Addr().WithZone("").String(), got.Port(), scope)
		}
		if got2, err := parseSockaddr(again); err != nil || got2 != got {
			t.Fatalf("round trip %v -> %v, %v", got, got2, err)
		}
	})
}

func TestOriginalDstNotRedirected(t *testing.T) {
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "ip", "nft")
	ns := privtest.NewNetNS(t)
	to := netip.MustParseAddrPort("127.0.0.1:16000")

	// No conntrack hooks in the namespace yet: no entry to ask.
	ch := serveTCP(t, ns, "127.0.0.1:16000", "x")
	greeting(t, ns, to)
	if a := next(t, ch); a.origErr == nil || !strings.Contains(a.origErr.Error(), "no conntrack entry") {
		t.Errorf("without conntrack: OriginalDst = %v, %v; want a no-conntrack-entry error", a.orig, a.origErr)
	}

	// With the table (and so conntrack) in place, a flow that was not
	// redirected reports its own destination.
	newTable(t, ns, testConfig())
	for _, tc := range []struct{ listen, dial string }{
		{"127.0.0.1:16001", "127.0.0.1:16001"}, // AF_INET socket
		{":16002", "127.0.0.1:16002"},          // v4-mapped on a dual-stack socket
		{"[::1]:16003", "[::1]:16003"},         // AF_INET6
	} {
		ch := serveTCP(t, ns, tc.listen, "x")
		greeting(t, ns, netip.MustParseAddrPort(tc.dial))
		if a := next(t, ch); a.origErr != nil || a.orig != netip.MustParseAddrPort(tc.dial) {
			t.Errorf("listen %s: OriginalDst = %v, %v; want %s", tc.listen, a.orig, a.origErr, tc.dial)
		}
	}
}

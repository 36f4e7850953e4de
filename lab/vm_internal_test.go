package lab

import (
	"net/netip"
	"testing"
)

func TestParseLease(t *testing.T) {
	l, err := parseLease(map[string]string{"ip": "192.168.77.108", "mask": "24", "router": "192.168.77.1 192.168.77.2",
		"dns": "192.168.77.1 9.9.9.9", "serverid": "192.168.77.1"})
	if err != nil {
		t.Fatal(err)
	}
	if l.Addr != netip.MustParsePrefix("192.168.77.108/24") || l.Router != netip.MustParseAddr("192.168.77.1") ||
		len(l.DNS) != 2 || l.DNS[1] != netip.MustParseAddr("9.9.9.9") || l.Server != netip.MustParseAddr("192.168.77.1") {
		t.Fatalf("lease %+v", l)
	}
	for _, bad := range []map[string]string{
		{"ip": "", "mask": "24"},
		{"ip": "192.168.77.9", "mask": "33"},
		{"ip": "fd00::1", "mask": "64"},
		{"ip": "192.168.77.9", "mask": "24", "dns": "x"},
	} {
		if _, err := parseLease(bad); err == nil {
			t.Errorf("parseLease(%v) accepted", bad)
		}
	}
}

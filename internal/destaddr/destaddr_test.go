package destaddr

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestRefusal(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"203.0.113.10", true},
		{"10.10.0.20", true}, // private is still somebody else's unicast
		{"2001:db8:113::10", true},
		{"127.0.0.1", false},
		{"127.8.9.10", false},
		{"::1", false},
		{"0.0.0.0", false},
		{"::", false},
		{"0.1.2.3", false},
		{"169.254.1.1", false},
		{"fe80::1", false},
		{"fe80::1%lan0", false},
		{"224.0.0.251", false},
		{"239.1.2.3", false},
		{"ff02::1", false},
		{"ff05::2", false},
		{"255.255.255.255", false},
		{"::ffff:203.0.113.10", false}, // callers unmap kernel addresses first
		{"::ffff:127.0.0.1", false},
	} {
		why := Refusal(netip.MustParseAddr(tc.addr))
		if (why == "") != tc.ok {
			t.Errorf("Refusal(%s) = %q; want allowed = %v", tc.addr, why, tc.ok)
		}
	}
	if Refusal(netip.Addr{}) == "" {
		t.Error("the zero Addr is allowed")
	}
}

func TestLocal(t *testing.T) {
	now := time.Unix(1000, 0)
	reads := 0
	var fail bool
	addrs := []string{"10.10.0.1/24", "2001:db8:10::1/64"}
	l := &Local{
		TTL: time.Second,
		Now: func() time.Time { return now },
		List: func() ([]net.Addr, error) {
			reads++
			if fail {
				return nil, errors.New("netlink busy")
			}
			var out []net.Addr
			for _, s := range addrs {
				ip, n, _ := net.ParseCIDR(s)
				out = append(out, &net.IPNet{IP: ip, Mask: n.Mask})
			}
			return out, nil
		},
	}
	for _, tc := range []struct {
		addr string
		want bool
	}{{"10.10.0.1", true}, {"::ffff:10.10.0.1", true}, {"2001:db8:10::1", true}, {"10.10.0.2", false}} {
		if got := l.Has(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("Has(%s) = %v; want %v", tc.addr, got, tc.want)
		}
	}
	if reads != 1 {
		t.Errorf("%d readings within the TTL; want 1", reads)
	}
	// An address added later is seen once the TTL has passed.
	addrs = append(addrs, "10.10.0.2/24")
	if l.Has(netip.MustParseAddr("10.10.0.2")) {
		t.Error("new address seen before the TTL passed")
	}
	now = now.Add(time.Second)
	if !l.Has(netip.MustParseAddr("10.10.0.2")) {
		t.Error("new address not seen after the TTL")
	}
	// A failed reading keeps the last good one.
	fail = true
	now = now.Add(time.Second)
	if !l.Has(netip.MustParseAddr("10.10.0.1")) {
		t.Error("a failed reading forgot the gateway's addresses")
	}
}

func TestLocalReadsInterfaces(t *testing.T) {
	var l Local
	if !l.Has(netip.MustParseAddr("127.0.0.1")) {
		t.Fatal("loopback interface address not seen as own")
	}
	if l.Has(netip.MustParseAddr("203.0.113.99")) {
		t.Fatal("a foreign address seen as own")
	}
}

package steer

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func mustPrefix(tb testing.TB, s string) netip.Prefix {
	tb.Helper()
	p, err := netip.ParsePrefix(s)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		ifaces  []string
		wantErr string
	}{
		{"one", []string{"lan0"}, ""},
		{"two", []string{"lan0", "lan1"}, ""},
		{"none", nil, "no LAN interfaces"},
		{"empty name", []string{""}, "empty interface name"},
		{"too long", []string{"abcdefghijklmnop"}, "longer than 15"},
		{"duplicate", []string{"lan0", "lan0"}, "listed twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Config{Interfaces: tc.ifaces}.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Validate() = %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	_, err := New(context.Background(), Config{})
	if err == nil {
		t.Fatal("New with no interfaces succeeded")
	}
	_, err = New(context.Background(), Config{Interfaces: []string{"nosuch0"}})
	if err == nil || !strings.Contains(err.Error(), `"nosuch0"`) {
		t.Fatalf("New with a missing interface: %v, want an error naming it", err)
	}
}

func TestBypassMap(t *testing.T) {
	s := loadTestSteer(t)
	add := []string{
		"203.0.113.40/32",
		"198.18.7.9/16", // host bits are masked off
		"2001:db8:113::40/128",
		"2001:db8:beef::/48",
		"::ffff:192.0.2.0/120", // stored as IPv4
	}
	for _, p := range add {
		if err := s.AddBypass(mustPrefix(t, p)); err != nil {
			t.Fatalf("AddBypass(%s): %v", p, err)
		}
	}
	// Adding again is fine.
	if err := s.AddBypass(mustPrefix(t, "203.0.113.40/32")); err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		mustPrefix(t, "192.0.2.0/24"),
		mustPrefix(t, "198.18.0.0/16"),
		mustPrefix(t, "203.0.113.40/32"),
		mustPrefix(t, "2001:db8:113::40/128"),
		mustPrefix(t, "2001:db8:beef::/48"),
	}
	got, err := s.BypassPrefixes()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("BypassPrefixes() = %v, want %v", got, want)
	}

	for _, p := range []string{"::ffff:192.0.2.0/120", "2001:db8:beef::/48", "10.0.0.0/8", "2001:db8::/32"} {
		if err := s.DeleteBypass(mustPrefix(t, p)); err != nil {
			t.Fatalf("DeleteBypass(%s): %v", p, err)
		}
	}
	got, err = s.BypassPrefixes()
	if err != nil {
		t.Fatal(err)
	}
	want = []netip.Prefix{want[1], want[2], want[3]}
	if !slices.Equal(got, want) {
		t.Fatalf("after deletes, BypassPrefixes() = %v, want %v", got, want)
	}

	if err := s.AddBypass(netip.Prefix{}); err == nil {
		t.Error("AddBypass(invalid prefix) succeeded")
	}
	if err := s.DeleteBypass(netip.Prefix{}); err == nil {
		t.Error("DeleteBypass(invalid prefix) succeeded")
	}
}

func TestPauseSwitch(t *testing.T) {
	s := loadTestSteer(t)
	for _, want := range []bool{false, true, false} {
		if want {
			if err := s.SetPaused(true); err != nil {
				t.Fatal(err)
			}
		} else if err := s.SetPaused(false); err != nil {
			t.Fatal(err)
		}
		got, err := s.Paused()
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("Paused() = %v, want %v", got, want)
		}
	}
}

func TestMethodsAfterCloseFail(t *testing.T) {
	s := loadTestSteer(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.AddBypass(mustPrefix(t, "192.0.2.1/32")); err == nil {
		t.Error("AddBypass after Close succeeded")
	}
	if err := s.SetPaused(true); err == nil {
		t.Error("SetPaused after Close succeeded")
	}
	if _, err := s.Counters(); err == nil {
		t.Error("Counters after Close succeeded")
	}
	if _, err := s.BypassPrefixes(); err == nil {
		t.Error("BypassPrefixes after Close succeeded")
	}
	if got := s.Attached(); len(got) != 0 {
		t.Errorf("Attached after Close = %v", got)
	}
}

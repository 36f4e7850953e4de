package tcx

import (
	"strings"
	"testing"
)

func TestCheckInterfaces(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ifaces  []string
		wantErr string
	}{
		{"one", []string{"lan0"}, ""},
		{"two", []string{"lan0", "lan1"}, ""},
		{"none", nil, "x: no LAN interfaces given"},
		{"empty name", []string{""}, "x: empty interface name"},
		{"too long", []string{"abcdefghijklmnop"}, `x: interface name "abcdefghijklmnop" longer than 15 bytes`},
		{"twice", []string{"lan0", "lan0"}, `x: interface "lan0" listed twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckInterfaces("x", tc.ifaces)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("CheckInterfaces(%q) = %v, want nil", tc.ifaces, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("CheckInterfaces(%q) = %v, want %q", tc.ifaces, err, tc.wantErr)
			}
		})
	}
}

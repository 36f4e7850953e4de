package resolver

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

// TestDig asks the resolver with the real dig, over UDP and TCP.
func TestDig(t *testing.T) {
	privtest.RequireCommand(t, "dig")
	up := newFakeUpstream(t)
	r := startResolver(t, Config{Upstreams: []netip.AddrPort{up.addr}})
	tests := []struct {
		name string
		args []string
		want []string // substrings of dig's output
		not  []string
	}{
		{
			name: "A over UDP",
			args: []string{"www.example.com", "A"},
			want: []string{"status: NOERROR", "www.example.com. 300 IN A 203.0.113.10", "(UDP)"},
		},
		{
			name: "AAAA over TCP",
			args: []string{"www.example.com", "AAAA", "+tcp"},
			want: []string{"status: NOERROR", "2001:db8:113::10", "(TCP)"},
		},
		{
			name: "CNAME chain over TCP",
			args: []string{"ALIAS.example.com", "A", "+tcp"},
			want: []string{"ALIAS.example.com. IN A", "alias.example.com. 600 IN CNAME mid.example.net.", "203.0.113.10"},
		},
		{
			name: "NXDOMAIN",
			args: []string{"nx.example.com", "A"},
			want: []string{"status: NXDOMAIN", "example.com. 60 IN SOA"},
		},
		{
			name: "big answer without EDNS is truncated over UDP",
			args: []string{"big.example.com", "A", "+noedns", "+ignore"},
			want: []string{"flags: qr tc rd ra", "(UDP)"},
			not:  []string{"198.18.0.50"},
		},
		{
			name: "dig retries a truncated answer over TCP",
			args: []string{"big.example.com", "A", "+noedns"},
			want: []string{"Truncated, retrying in TCP mode", "198.18.0.50", "(TCP)"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			args := append([]string{"@" + r.addr.Addr().String(), "-p", fmt.Sprint(r.addr.Port()), "+tries=1", "+time=5"}, tc.args...)
			out, err := exec.CommandContext(ctx, "dig", args...).CombinedOutput()
			if err != nil {
				t.Fatalf("dig %v: %v\n%s", args, err, out)
			}
			// compare with runs of blanks as one space: dig aligns with tabs
			flat := strings.Join(strings.Fields(string(out)), " ")
			for _, w := range tc.want {
				if !strings.Contains(flat, w) {
					t.Errorf("dig output lacks %q:\n%s", w, out)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(flat, n) {
					t.Errorf("dig output has %q:\n%s", n, out)
				}
			}
		})
	}
}

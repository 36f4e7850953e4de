package config

import (
	"errors"
	"strings"
	"testing"
)

func TestLimitsDefaultsAndOff(t *testing.T) {
	c, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	want := "flows=8192 flows_per_client=512 new_flows_per_second_per_client=200 dns_tcp_per_client=16 dns_queries_per_second_per_client=200"
	if got := c.Limits.String(); got != want {
		t.Errorf("defaults %s, want %s", got, want)
	}
	c, err = Parse([]byte(good + "limits:\n  flows: 0\n  flows_per_client: 0\n  new_flows_per_second_per_client: 0\n  dns_tcp_per_client: 3\n"))
	if err != nil {
		t.Fatal(err)
	}
	want = "flows=0 flows_per_client=0 new_flows_per_second_per_client=0 dns_tcp_per_client=3 dns_queries_per_second_per_client=200"
	if got := c.Limits.String(); got != want {
		t.Errorf("explicit %s, want %s", got, want)
	}
	if Burst(*c.Limits.DNSQueriesPerSecondPerClient) != 400 {
		t.Errorf("burst of 200/s is %d, want 400", Burst(200))
	}
	// Per-client above the total is fine when the total is off.
	if _, err := Parse([]byte(good + "limits:\n  flows: 0\n  flows_per_client: 9000\n")); err != nil {
		t.Errorf("flows off, flows_per_client 9000: %v", err)
	}
}

func TestLimitsBad(t *testing.T) {
	for _, tt := range []struct{ name, doc, key, problem string }{
		{"negative", "limits:\n  flows_per_client: -1\n", "limits.flows_per_client", "-1 is outside 0 (off) to 1000000"},
		{"huge rate", "limits:\n  new_flows_per_second_per_client: 2000000\n", "limits.new_flows_per_second_per_client", "outside"},
		{"huge dns rate", "limits:\n  dns_queries_per_second_per_client: 1000001\n", "limits.dns_queries_per_second_per_client", "outside"},
		{"huge dns tcp", "limits:\n  dns_tcp_per_client: 1000001\n", "limits.dns_tcp_per_client", "outside"},
		{"negative flows", "limits:\n  flows: -5\n", "limits.flows", "outside"},
		{"per client above total", "limits:\n  flows: 100\n  flows_per_client: 200\n", "limits.flows_per_client", "200 is more than limits.flows (100)"},
		{"default per client above total", "limits:\n  flows: 100\n", "limits.flows_per_client", "512 is more than limits.flows (100)"},
		{"unknown key", "limits:\n  flows_per_host: 3\n", "(file)", `unknown key "flows_per_host"`},
		{"not a number", "limits:\n  flows: many\n", "(file)", "many"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(good + tt.doc))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("Parse: %v, want *config.Error", err)
			}
			if ce.Key != tt.key || !strings.Contains(ce.Problem, tt.problem) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q, want one line for key %s with %q", err, tt.key, tt.problem)
			}
		})
	}
}

package config

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestSplitConfig(t *testing.T) {
	doc := strings.Replace(good, "dns:\n", `dns:
  split:
    - domains: ["Corp.Example.", lan, 168.192.in-addr.arpa]
      servers: ["192.168.1.5", "[fd00::5]:5353"]
    - domains: [vpn.example]
      servers: ["10.8.0.1"]
`, 1)
	c, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	domains, servers := c.DNS.SplitZones()
	if len(domains) != 2 || !slices.Equal(domains[0], []string{"corp.example", "lan", "168.192.in-addr.arpa"}) || !slices.Equal(domains[1], []string{"vpn.example"}) {
		t.Errorf("domains %v", domains)
	}
	if len(servers) != 2 || servers[0][0].String() != "192.168.1.5:53" || servers[0][1].String() != "[fd00::5]:5353" || servers[1][0].String() != "10.8.0.1:53" {
		t.Errorf("servers %v", servers)
	}
	nx := c.DNS.LocalNXDomain()
	for _, want := range []string{"168.192.in-addr.arpa", "16.172.in-addr.arpa", "31.172.in-addr.arpa", "d.f.ip6.arpa", "home.arpa", "127.100.in-addr.arpa"} {
		if !slices.Contains(nx, want) {
			t.Errorf("local private zones lack %s", want)
		}
	}
	for _, not := range []string{"15.172.in-addr.arpa", "32.172.in-addr.arpa", "63.100.in-addr.arpa"} {
		if slices.Contains(nx, not) {
			t.Errorf("local private zones hold the public %s", not)
		}
	}
	c, err = Parse([]byte(strings.Replace(good, "dns:\n", "dns:\n  local_private_zones: false\n", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(c.DNS.LocalNXDomain(), "10.in-addr.arpa") {
		t.Error("local_private_zones: false ignored")
	}
}

func TestSplitConfigBad(t *testing.T) {
	split := func(body string) string { return strings.Replace(good, "dns:\n", "dns:\n  split:\n"+body, 1) }
	tests := []struct{ name, doc, key string }{
		{"no domains", split("    - servers: [\"192.0.2.1\"]\n"), "dns.split[0].domains"},
		{"no servers", split("    - domains: [corp.example]\n"), "dns.split[0].servers"},
		{"wildcard", split("    - domains: [\"*.corp.example\"]\n      servers: [\"192.0.2.1\"]\n"), "dns.split[0].domains[0]"},
		{"root", split("    - domains: [\".\"]\n      servers: [\"192.0.2.1\"]\n"), "dns.split[0].domains[0]"},
		{"twice", split("    - domains: [corp.example]\n      servers: [\"192.0.2.1\"]\n    - domains: [CORP.example.]\n      servers: [\"192.0.2.2\"]\n"), "dns.split[1].domains[0]"},
		{"bad server", split("    - domains: [corp.example]\n      servers: [\"nas.corp.example\"]\n"), "dns.split[0].servers[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			var ce *Error
			if !errors.As(err, &ce) || ce.Key != tt.key {
				t.Fatalf("err = %v, want a problem with %s", err, tt.key)
			}
		})
	}
}

package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/cloudsteer/cloudsteer/controlplane/dhcpnames"
)

func TestLANNameKeys(t *testing.T) {
	dnsKeys := func(extra string) string { return strings.Replace(good, "dns:\n", "dns:\n"+extra, 1) }
	c, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if !*c.DNS.DHCPHostNames || c.DNS.DHCPLeasesDir != dhcpnames.DefaultDir || c.DNS.LocalDomain != "lan" || !c.DNS.LocalDomainIsPrivate() {
		t.Fatalf("defaults: %v %q %q", *c.DNS.DHCPHostNames, c.DNS.DHCPLeasesDir, c.DNS.LocalDomain)
	}
	for domain, private := range map[string]bool{"Office.LAN.": true, "home.arpa": true, "corp": true, "office.example.com": false, "lanx": false} {
		c, err := Parse([]byte(dnsKeys("  local_domain: " + domain + "\n  dhcp_leases_dir: /run/leases\n")))
		if err != nil {
			t.Fatalf("%s: %v", domain, err)
		}
		if c.DNS.LocalDomain != strings.ToLower(strings.Trim(domain, ".")) || c.DNS.LocalDomainIsPrivate() != private || c.DNS.DHCPLeasesDir != "/run/leases" {
			t.Errorf("%s: domain %q private %v", domain, c.DNS.LocalDomain, c.DNS.LocalDomainIsPrivate())
		}
	}
	c, err = Parse([]byte(dnsKeys("  dhcp_host_names: false\n")))
	if err != nil || *c.DNS.DHCPHostNames || c.DNS.LocalDomainIsPrivate() {
		t.Fatalf("dhcp_host_names: false: %v", err)
	}
	for _, bad := range []string{"  local_domain: \"a b\"\n", "  local_domain: \"*.lan\"\n", "  dhcp_leases_dir: leases\n"} {
		_, err := Parse([]byte(dnsKeys(bad)))
		var ce *Error
		if !errors.As(err, &ce) || !strings.HasPrefix(ce.Key, "dns.") {
			t.Errorf("%q: %v, want a dns.* config error", bad, err)
		}
	}
}

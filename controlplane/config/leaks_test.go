package config

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestLeakDefaults(t *testing.T) {
	c, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	d := c.DNS
	if !*d.ApplicationDNSCanary || !*d.BlockDoH || !*d.RejectDoT {
		t.Errorf("defaults off: canary %v doh %v dot %v", *d.ApplicationDNSCanary, *d.BlockDoH, *d.RejectDoT)
	}
	nx := d.LocalNXDomain()
	if len(nx) != 1+len(PrivateZones())+len(DefaultDoHHostnames)+1 || nx[len(nx)-1] != "lan" || nx[0] != ApplicationDNSCanary || !slices.Contains(nx, "dns.google") || !slices.Contains(nx, "mask.icloud.com") {
		t.Errorf("LocalNXDomain = %v", nx)
	}
}

func TestLeakKeys(t *testing.T) {
	dns := func(extra string) string {
		return strings.Replace(good, "dns:\n", "dns:\n"+extra, 1)
	}
	c, err := Parse([]byte(dns("  local_private_zones: false\n  application_dns_canary: false\n  doh_hostnames: [\"DoH.Corp.Example.\", \"x.test\"]\n  reject_dot: false\n  dhcp_host_names: false\n")))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.DNS.LocalNXDomain(); !slices.Equal(got, []string{"doh.corp.example", "x.test"}) {
		t.Errorf("canary off, own list: LocalNXDomain = %v", got)
	}
	if *c.DNS.RejectDoT {
		t.Error("reject_dot: false ignored")
	}
	c, err = Parse([]byte(dns("  block_doh: false\n  local_private_zones: false\n  local_domain: office.example.com\n")))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.DNS.LocalNXDomain(); !slices.Equal(got, []string{ApplicationDNSCanary}) || c.DNS.RefusedDoHNames() != nil {
		t.Errorf("block_doh off: LocalNXDomain = %v, refused %v", got, c.DNS.RefusedDoHNames())
	}
	c, err = Parse([]byte(dns("  doh_hostnames: []\n")))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.DNS.RefusedDoHNames(); len(got) != 0 {
		t.Errorf("an empty list refuses %v", got)
	}
	for _, bad := range []string{`["*.dns.google"]`, `["com"]`, `[""]`, `["a..b"]`, `["dns google.x"]`} {
		_, err := Parse([]byte(dns("  doh_hostnames: " + bad + "\n")))
		var ce *Error
		if !errors.As(err, &ce) || ce.Key != "dns.doh_hostnames[0]" {
			t.Errorf("doh_hostnames %s: err = %v, want a problem with dns.doh_hostnames[0]", bad, err)
		}
	}
}

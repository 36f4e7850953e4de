package config

import (
	"path/filepath"
	"strings"

	"github.com/miekg/dns"

	"github.com/cloudsteer/cloudsteer/controlplane/dhcpnames"
)

// The LAN's DHCP host names (dns.dhcp_host_names): the resolver answers
// the names LAN devices gave the gateway's DHCP server (systemd-networkd's,
// as on the image) under dns.local_domain, and their PTR records, never
// asking the cloud resolvers.

func (d *DNS) setLANNameDefaults() {
	if d.DHCPHostNames == nil {
		on := true
		d.DHCPHostNames = &on
	}
	if d.DHCPLeasesDir == "" {
		d.DHCPLeasesDir = dhcpnames.DefaultDir
	}
	if d.LocalDomain == "" {
		d.LocalDomain = dhcpnames.DefaultDomain
	}
}

// validateLANNames checks dns.local_domain and dns.dhcp_leases_dir and
// keeps the domain canonical.
func (d *DNS) validateLANNames() error {
	dom := strings.ToLower(strings.Trim(d.LocalDomain, "."))
	if _, ok := dns.IsDomainName(dom); !ok || dom == "" || strings.ContainsAny(dom, " *\\") {
		return bad("dns.local_domain", "%q is not a domain name", d.LocalDomain)
	}
	d.LocalDomain = dom
	if !filepath.IsAbs(d.DHCPLeasesDir) {
		return bad("dns.dhcp_leases_dir", "%q is not an absolute path", d.DHCPLeasesDir)
	}
	return nil
}

// privateUseTLDs never exist in the public DNS: a name under one of them
// that no lease holds is answered NXDOMAIN by the gateway instead of being
// sent to the cloud (RFC 8375 home.arpa, ICANN's .internal, and the names
// ICANN will not delegate).
var privateUseTLDs = []string{"lan", "home.arpa", "internal", "localdomain", "home", "corp", "mail", "private"}

// LocalDomainIsPrivate reports whether dns.local_domain is under a
// private-use name, so the gateway answers all of it (with dns.dhcp_host_names on).
func (d *DNS) LocalDomainIsPrivate() bool {
	if d.DHCPHostNames == nil || !*d.DHCPHostNames {
		return false
	}
	for _, t := range privateUseTLDs {
		if d.LocalDomain == t || strings.HasSuffix(d.LocalDomain, "."+t) {
			return true
		}
	}
	return false
}

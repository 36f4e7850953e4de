package config

import (
	"fmt"
	"strings"
)

// Keeping LAN clients' DNS in the gateway's hands.
//
// Browsers and devices can resolve around the gateway: Firefox turns on
// DNS over HTTPS by itself unless the network's resolver answers its
// canary domain with NXDOMAIN; Chrome, Edge and others use DoH to a
// public service when configured to; Android's Private DNS and some
// devices use DNS over TLS (TCP 853). Each defence is on unless the
// config turns it off:
//   - dns.application_dns_canary: use-application-dns.net gets NXDOMAIN.
//   - dns.block_doh: the names in dns.doh_hostnames (DefaultDoHHostnames
//     when the key is left out) and every name under them get NXDOMAIN,
//     and TLS flows naming them are refused by SNI at the proxy, so
//     browsers fall back to the system resolver — the gateway.
//   - dns.reject_dot: LAN TCP 853 (DoT) is reset and UDP 853 (DoQ) gets
//     port unreachable at once, except to bypass destinations (the
//     desktop agent's own DoT to *.akaetp.net keeps working).

// ApplicationDNSCanary is Firefox's canary domain.
const ApplicationDNSCanary = "use-application-dns.net"

// DefaultDoHHostnames are well-known public DNS-over-HTTPS services, and
// the names Apple's iCloud Private Relay needs (Apple documents NXDOMAIN
// for them as the way a network turns Private Relay off, which would
// otherwise carry Safari's traffic around the cloud proxy). Each entry
// also covers the names under it.
var DefaultDoHHostnames = []string{
	"dns.google", "dns64.dns.google", // Google Public DNS
	"cloudflare-dns.com", "one.one.one.one", "1dot1dot1dot1.cloudflare-dns.com", // Cloudflare (mozilla., chrome., security., family. under it)
	"dns.quad9.net", "dns9.quad9.net", "dns10.quad9.net", "dns11.quad9.net", // Quad9
	"doh.opendns.com", "doh.familyshield.opendns.com", "doh.umbrella.com", // Cisco OpenDNS / Umbrella
	"dns.nextdns.io", "firefox.dns.nextdns.io", // NextDNS
	"doh.cleanbrowsing.org",                                                                          // CleanBrowsing
	"dns.adguard.com", "dns.adguard-dns.com", "unfiltered.adguard-dns.com", "family.adguard-dns.com", // AdGuard
	"doh.dns.sb",                         // DNS.SB
	"dns.mullvad.net", "doh.mullvad.net", // Mullvad
	"freedns.controld.com", "dns.controld.com", // Control D
	"dns.alidns.com", "doh.pub", "doh.360.cn", // services popular in Asia
	"doh.xfinity.com", "doh-01.spectrum.com", // ISPs' public DoH
	"mask.icloud.com", "mask-h2.icloud.com", // iCloud Private Relay
}

func (d *DNS) setLeakDefaults() {
	for _, p := range []**bool{&d.ApplicationDNSCanary, &d.BlockDoH, &d.RejectDoT, &d.LocalPrivateZones} {
		if *p == nil {
			on := true
			*p = &on
		}
	}
}

// validateLeaks checks dns.doh_hostnames and keeps them canonical.
func (d *DNS) validateLeaks() error {
	list := d.DoHHostnames
	if list == nil {
		list = DefaultDoHHostnames
	}
	d.dohNames = d.dohNames[:0]
	for i, s := range list {
		name := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(s), "."))
		if err := checkHostname(name); err != nil {
			return bad(fmt.Sprintf("dns.doh_hostnames[%d]", i), "%q: %v", s, err)
		}
		d.dohNames = append(d.dohNames, name)
	}
	return nil
}

// checkHostname accepts a DNS name of at least two labels (a single label
// would cover a whole top-level domain) made of letters, digits, '-' and
// '_'.
func checkHostname(name string) error {
	if name == "" {
		return fmt.Errorf("empty name")
	}
	if len(name) > 253 {
		return fmt.Errorf("longer than 253 characters")
	}
	labels := strings.Split(name, ".")
	if len(labels) < 2 {
		return fmt.Errorf("a single label would cover a whole top-level domain")
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return fmt.Errorf("label %q is empty or longer than 63 characters", l)
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return fmt.Errorf("label %q has %q (wildcards are not needed: every name under an entry is covered)", l, r)
			}
		}
	}
	return nil
}

// LocalNXDomain is what the resolver answers NXDOMAIN itself: the canary,
// the private zones and the DoH host names, as far as they are on (a
// split zone wins over them in the resolver).
func (d *DNS) LocalNXDomain() []string {
	var names []string
	if d.ApplicationDNSCanary != nil && *d.ApplicationDNSCanary {
		names = append(names, ApplicationDNSCanary)
	}
	if d.LocalPrivateZones != nil && *d.LocalPrivateZones {
		names = append(names, PrivateZones()...)
	}
	names = append(names, d.RefusedDoHNames()...)
	if d.LocalDomainIsPrivate() {
		names = append(names, d.LocalDomain)
	}
	return names
}

// RefusedDoHNames are the DoH host names refused (nil when
// dns.block_doh is off).
func (d *DNS) RefusedDoHNames() []string {
	if d.BlockDoH == nil || !*d.BlockDoH {
		return nil
	}
	return d.dohNames
}

package config

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/cloudsteer/cloudsteer/dataplane/resolver/transport"
)

// Split DNS: dns.split lists an office's internal zones and the resolvers
// that answer them (on the LAN or behind a VPN interface); names under a
// zone never go to the cloud resolvers. dns.local_private_zones (on unless
// turned off) answers the names that only a LAN can know — the reverse
// zones of private, shared, link-local and loopback addresses (RFC 6303),
// home.arpa (RFC 8375) and local (mDNS) — with NXDOMAIN at the gateway
// instead of sending them to the cloud, unless a split zone covers them.

// SplitZone is one dns.split entry.
type SplitZone struct {
	// Domains are suffixes ("corp.example", "lan", "168.192.in-addr.arpa");
	// each covers itself and every name under it.
	Domains []string `yaml:"domains"`
	// Servers are the internal resolvers, "IP" or "IP:port", in order.
	Servers []string `yaml:"servers"`

	domains []string
	servers []netip.AddrPort
}

// maxSplitZones bounds dns.split (and so the suffix index).
const maxSplitZones = 64

// PrivateZones are the zones dns.local_private_zones answers locally.
func PrivateZones() []string {
	z := []string{
		"10.in-addr.arpa", "168.192.in-addr.arpa", "254.169.in-addr.arpa", "127.in-addr.arpa", "0.in-addr.arpa",
		"d.f.ip6.arpa", "c.f.ip6.arpa", // fc00::/7 (unique local)
		"8.e.f.ip6.arpa", "9.e.f.ip6.arpa", "a.e.f.ip6.arpa", "b.e.f.ip6.arpa", // fe80::/10 (link local)
		"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa", // ::1
		"home.arpa", "local",
	}
	for i := 16; i <= 31; i++ { // 172.16.0.0/12
		z = append(z, fmt.Sprintf("%d.172.in-addr.arpa", i))
	}
	for i := 64; i <= 127; i++ { // 100.64.0.0/10 (shared address space)
		z = append(z, fmt.Sprintf("%d.100.in-addr.arpa", i))
	}
	return z
}

func (d *DNS) validateSplit() error {
	if len(d.Split) > maxSplitZones {
		return bad("dns.split", "%d zones, at most %d", len(d.Split), maxSplitZones)
	}
	seen := map[string]string{}
	for i := range d.Split {
		z := &d.Split[i]
		key := fmt.Sprintf("dns.split[%d]", i)
		if len(z.Domains) == 0 {
			return bad(key+".domains", "required: the zone's domain suffixes")
		}
		if len(z.Servers) == 0 {
			return bad(key+".servers", "required: the internal resolvers that answer the zone")
		}
		z.domains, z.servers = nil, nil
		for j, s := range z.Domains {
			name := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(s), "."))
			if err := checkZoneName(name); err != nil {
				return bad(fmt.Sprintf("%s.domains[%d]", key, j), "%q: %v", s, err)
			}
			if other, dup := seen[name]; dup {
				return bad(fmt.Sprintf("%s.domains[%d]", key, j), "%s is already in %s", name, other)
			}
			seen[name] = key
			z.domains = append(z.domains, name)
		}
		for j, s := range z.Servers {
			ap, err := transport.ParsePlain(s)
			if err != nil {
				return bad(fmt.Sprintf("%s.servers[%d]", key, j), "%v", err)
			}
			z.servers = append(z.servers, ap)
		}
	}
	return nil
}

// checkZoneName accepts a domain name of one or more labels (a single
// label such as "lan" is a zone too) of letters, digits, '-' and '_'.
func checkZoneName(name string) error {
	if name == "" {
		return fmt.Errorf("empty (the root would take every name from the cloud resolvers)")
	}
	if len(name) > 253 {
		return fmt.Errorf("longer than 253 characters")
	}
	for _, l := range strings.Split(name, ".") {
		if l == "" || len(l) > 63 {
			return fmt.Errorf("label %q is empty or longer than 63 characters", l)
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return fmt.Errorf("label %q has %q (no wildcards: every name under a domain is covered)", l, r)
			}
		}
	}
	return nil
}

// SplitZones returns the validated zones: suffixes and resolver addresses.
func (d *DNS) SplitZones() (domains [][]string, servers [][]netip.AddrPort) {
	for _, z := range d.Split {
		domains = append(domains, z.domains)
		servers = append(servers, z.servers)
	}
	return domains, servers
}

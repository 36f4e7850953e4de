package config

import (
	"crypto/x509"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sort"

	"github.com/cloudsteer/cloudsteer/dataplane/resolver/transport"
)

// validateUpstreams parses dns.upstreams, dns.bootstrap and dns.ca_file.
// An encrypted upstream named by a host name takes its addresses from
// dns.bootstrap; without them the config is refused, since looking the
// name up would send a plain query.
func (d *DNS) validateUpstreams() error {
	boot := map[string][]netip.Addr{}
	keys := make([]string, 0, len(d.Bootstrap))
	for k := range d.Bootstrap {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		key := "dns.bootstrap." + k
		name, err := transport.NormalizeName(k)
		if err != nil {
			return bad(key, "%q is not a host name", k)
		}
		if _, err := netip.ParseAddr(name); err == nil {
			return bad(key, "%q is an address: an upstream written by address needs no bootstrap", k)
		}
		if _, dup := boot[name]; dup {
			return bad(key, "%s is listed twice", name)
		}
		if len(d.Bootstrap[k]) == 0 {
			return bad(key, "no addresses")
		}
		var addrs []netip.Addr
		for i, s := range d.Bootstrap[k] {
			a, err := netip.ParseAddr(s)
			if err != nil || a.Zone() != "" {
				return bad(fmt.Sprintf("%s[%d]", key, i), "%q is not an IP address", s)
			}
			a = a.Unmap()
			if slices.Contains(addrs, a) {
				return bad(fmt.Sprintf("%s[%d]", key, i), "%s is listed twice", a)
			}
			addrs = append(addrs, a)
		}
		boot[name] = addrs
	}
	d.servers = nil
	used := map[string]bool{}
	encrypted := false
	for i, s := range d.Upstreams {
		key := fmt.Sprintf("dns.upstreams[%d]", i)
		sp, err := transport.Parse(s)
		if err != nil {
			return bad(key, "%v", err)
		}
		if sp.Kind != transport.Plain {
			encrypted = true
		}
		if len(sp.Addrs) == 0 {
			addrs, ok := boot[sp.Host]
			if !ok {
				return bad(key, "%s is named by a host name: give its addresses in dns.bootstrap (%s: [IP, ...]); it is never looked up over plain DNS", sp, sp.Host)
			}
			sp.Addrs = addrs
			used[sp.Host] = true
		}
		d.servers = append(d.servers, sp)
	}
	for _, k := range keys {
		if n, _ := transport.NormalizeName(k); !used[n] {
			return bad("dns.bootstrap."+k, "no upstream in dns.upstreams is named %s", n)
		}
	}
	d.roots = nil
	if d.CAFile != "" {
		if !encrypted {
			return bad("dns.ca_file", "only used by tls://, https:// and quic:// upstreams")
		}
		pem, err := os.ReadFile(d.CAFile)
		if err != nil {
			return bad("dns.ca_file", "%v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return bad("dns.ca_file", "%s holds no PEM certificate", d.CAFile)
		}
		d.roots = pool
	}
	return nil
}

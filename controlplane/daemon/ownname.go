package daemon

import (
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// The gateway's own names resolve locally: the names in admin.hostnames
// (the console's and API's names) and the machine's host name, each
// answered by the resolver with the gateway's LAN addresses (the ones the
// console serves on), so https://gateway.example/ works from any LAN
// device without another DNS server. They are never sent to the cloud.

// systemHostname is the machine's host name when it can name the gateway
// on the LAN ("" for none, "localhost" or one that is not a DNS name).
func systemHostname() string {
	h, err := os.Hostname()
	if err != nil {
		return ""
	}
	h = strings.ToLower(strings.TrimSuffix(h, "."))
	if h == "" || h == "localhost" || strings.HasPrefix(h, "localhost.") {
		return ""
	}
	if _, ok := dns.IsDomainName(h); !ok {
		return ""
	}
	return h
}

// ownName is the resolver's LocalAddrs: true, with the LAN addresses, for
// an own name.
func (d *Daemon) ownName(name string) ([]netip.Addr, bool) {
	own := name == d.hostname && name != ""
	if !own {
		if p := d.hosts.names.Load(); p != nil {
			own = slices.Contains(*p, name)
		}
	}
	if !own {
		return nil, false
	}
	return d.consoleAddrs(), true
}

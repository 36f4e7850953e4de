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

// The LAN's DHCP host names (dns.dhcp_host_names) come next: a device
// that leased an address from the gateway's DHCP server under a host name
// is found by that name alone and under dns.local_domain, and its address
// by PTR (controlplane/dhcpnames). A device cannot take one of the
// gateway's own names, nor wpad or isatap.

// ownNames are the gateway's own names (canonical).
func (d *Daemon) ownNames() []string {
	var names []string
	if d.hostname != "" {
		names = append(names, d.hostname)
	}
	if p := d.hosts.names.Load(); p != nil {
		names = append(names, *p...)
	}
	return names
}

// ownName is the resolver's LocalAddrs: true, with the LAN addresses, for
// an own name; true, with the leased addresses, for a LAN host name.
func (d *Daemon) ownName(name string) ([]netip.Addr, bool) {
	if name != "" && slices.Contains(d.ownNames(), name) {
		return d.consoleAddrs(), true
	}
	if d.lanNames != nil {
		return d.lanNames.Lookup(name)
	}
	return nil, false
}

// lanPTR is the resolver's LocalPTR: the name of a leased LAN address.
func (d *Daemon) lanPTR(a netip.Addr) (string, bool) {
	if d.lanNames == nil {
		return "", false
	}
	return d.lanNames.Table().Reverse(a)
}

// Package dhcpnames reads the host names LAN devices gave the gateway's
// DHCP server, so the resolver can answer them locally ("nas" and
// "nas.lan" resolve to the address the NAS leased).
//
// The leases are systemd-networkd's: with [DHCPServer] PersistLeases=yes
// (the default since systemd 256) networkd keeps each interface's bound
// leases in a JSON file in /var/lib/systemd/network/dhcp-server-lease/,
// rewritten whenever a lease changes:
//
//	{"BootID": "…", "Address": [192,168,77,1], "PrefixLength": 24,
//	 "Leases": [{"ClientId": […], "Address": [192,168,77,23],
//	             "Hostname": "nas", "ExpirationUSec": …,
//	             "ExpirationRealtimeUSec": 1785791504658855}, …]}
//
// A device chooses its own DHCP host name, so a name is only taken when it
// is one DNS label, and never for names that would let a device capture
// other devices' traffic: wpad (proxy auto-discovery), isatap, localhost,
// and whatever the caller reserves (the gateway's own names).
package dhcpnames

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// DefaultDir is where systemd-networkd keeps its DHCP servers' leases.
const DefaultDir = "/var/lib/systemd/network/dhcp-server-lease"

// DefaultDomain is the LAN's domain: a lease for "nas" answers "nas.lan".
const DefaultDomain = "lan"

// MaxFileSize bounds one lease file; a larger one is refused, not read.
const MaxFileSize = 4 << 20

// Lease is one bound lease that names its device.
type Lease struct {
	Name    string     // the host name, one lowercase DNS label
	Addr    netip.Addr // the leased address
	Expires time.Time  // zero when the file gives no wall-clock expiry
}

// reservedNames are never taken from a lease: a device calling itself
// "wpad" would otherwise become every browser's proxy auto-configuration
// server (dnsmasq refuses the same names).
var reservedNames = []string{"wpad", "isatap", "localhost"}

// leaseFile is the part of networkd's lease file that is read; unknown
// keys are ignored.
type leaseFile struct {
	Leases []struct {
		Address                json.RawMessage `json:"Address"`
		Hostname               string          `json:"Hostname"`
		ExpirationRealtimeUSec *uint64         `json:"ExpirationRealtimeUSec"`
	} `json:"Leases"`
}

// Parse reads one lease file. Leases without a usable host name or
// address are skipped, and counted in skipped; a file that is not a lease
// file is an error.
func Parse(b []byte) (leases []Lease, skipped int, err error) {
	if len(b) > MaxFileSize {
		return nil, 0, fmt.Errorf("parse lease file: %d bytes, more than %d", len(b), MaxFileSize)
	}
	var f leaseFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, 0, fmt.Errorf("parse lease file: %w", err)
	}
	for _, l := range f.Leases {
		name, ok := hostLabel(l.Hostname)
		addr, aok := parseAddr(l.Address)
		if !ok || !aok {
			skipped++
			continue
		}
		le := Lease{Name: name, Addr: addr}
		if u := l.ExpirationRealtimeUSec; u != nil && *u > 0 && *u < 1<<62 {
			le.Expires = time.UnixMicro(int64(*u))
		}
		leases = append(leases, le)
	}
	return leases, skipped, nil
}

// parseAddr reads an address written as networkd does (an array of 4 or
// 16 bytes) or as a string.
func parseAddr(raw json.RawMessage) (netip.Addr, bool) {
	var bs []int
	if err := json.Unmarshal(raw, &bs); err == nil {
		if len(bs) != 4 && len(bs) != 16 {
			return netip.Addr{}, false
		}
		b := make([]byte, len(bs))
		for i, v := range bs {
			if v < 0 || v > 255 {
				return netip.Addr{}, false
			}
			b[i] = byte(v)
		}
		a, ok := netip.AddrFromSlice(b)
		return a.Unmap(), ok && a.IsValid() && !a.IsUnspecified()
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" || a.IsUnspecified() {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// hostLabel is a device's host name as one lowercase DNS label (RFC 1123:
// letters, digits and inner hyphens, at most 63), with a trailing dot
// allowed. Anything else (dots inside, underscores, spaces) is refused.
func hostLabel(s string) (string, bool) {
	s = strings.ToLower(strings.TrimSuffix(s, "."))
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return "", false
		}
	}
	if slices.Contains(reservedNames, s) {
		return "", false
	}
	return s, true
}

// Table answers names and addresses from a set of leases.
type Table struct {
	domain string
	byName map[string][]netip.Addr
	byAddr map[netip.Addr]string
}

// NewTable indexes the leases unexpired at now under domain (canonical,
// no trailing dot; "" answers bare names only). Names in reserved
// (canonical) are left out, with or without the domain. Of two leases
// for one address, the later expiring names it.
func NewTable(leases []Lease, domain string, reserved []string, now time.Time) *Table {
	domain = strings.ToLower(strings.Trim(domain, "."))
	t := &Table{domain: domain, byName: map[string][]netip.Addr{}, byAddr: map[netip.Addr]string{}}
	expiry := map[netip.Addr]time.Time{}
	for _, l := range leases {
		if !l.Expires.IsZero() && !l.Expires.After(now) {
			continue
		}
		if slices.Contains(reserved, l.Name) || (domain != "" && slices.Contains(reserved, l.Name+"."+domain)) {
			continue
		}
		if e, ok := expiry[l.Addr]; ok {
			if !l.Expires.IsZero() && (e.IsZero() || !l.Expires.After(e)) {
				continue
			}
			old := t.byAddr[l.Addr]
			t.byName[old] = slices.DeleteFunc(t.byName[old], func(a netip.Addr) bool { return a == l.Addr })
			if len(t.byName[old]) == 0 {
				delete(t.byName, old)
			}
		}
		expiry[l.Addr] = l.Expires
		t.byAddr[l.Addr] = l.Name
		t.byName[l.Name] = append(t.byName[l.Name], l.Addr)
	}
	for _, as := range t.byName {
		slices.SortFunc(as, func(a, b netip.Addr) int { return a.Compare(b) })
	}
	return t
}

// Len is the number of names in the table.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return len(t.byName)
}

// Lookup answers a canonical name (lowercase, no trailing dot): a leased
// host name alone or under the table's domain.
func (t *Table) Lookup(name string) ([]netip.Addr, bool) {
	if t == nil {
		return nil, false
	}
	label := name
	if t.domain != "" {
		if l, ok := strings.CutSuffix(name, "."+t.domain); ok {
			label = l
		}
	}
	if strings.Contains(label, ".") {
		return nil, false
	}
	as, ok := t.byName[label]
	return as, ok
}

// Reverse is the name a leased address answers a PTR query with: the host
// name under the table's domain.
func (t *Table) Reverse(a netip.Addr) (string, bool) {
	if t == nil {
		return "", false
	}
	n, ok := t.byAddr[a.Unmap()]
	if !ok {
		return "", false
	}
	if t.domain != "" {
		n += "." + t.domain
	}
	return n, true
}

// Names lists the table's names with their addresses, sorted (for status).
func (t *Table) Names() map[string][]netip.Addr {
	out := map[string][]netip.Addr{}
	if t == nil {
		return out
	}
	for n, as := range t.byName {
		out[n] = slices.Clone(as)
	}
	return out
}

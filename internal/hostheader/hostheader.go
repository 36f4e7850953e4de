// Package hostheader parses the Host header of requests to the gateway's
// own HTTP servers (the admin API, the web console and its plain-HTTP
// redirect), strictly: one parser, so that every Host check and the
// redirect agree on what a host is.
package hostheader

import (
	"net/netip"
	"strconv"
	"strings"
)

// Parse parses a Host header value: "name[:port]", "a.b.c.d[:port]"
// or "[v6][:port]". It returns the address (unmapped, no zone) or the
// lowercased name without a trailing dot, and false for anything else:
// empty, over 255 bytes, userinfo, a path, control characters, an
// unbracketed IPv6 address, a zone, a bad port, or a name whose last
// label is numeric (which URL parsers would read as an IPv4 address).
func Parse(h string) (addr netip.Addr, name string, ok bool) {
	if h == "" || len(h) > 255 {
		return netip.Addr{}, "", false
	}
	host := h
	if h[0] == '[' {
		end := strings.IndexByte(h, ']')
		if end < 0 || !validPort(h[end+1:]) {
			return netip.Addr{}, "", false
		}
		a, err := netip.ParseAddr(h[1:end])
		if err != nil || !a.Is6() || a.Zone() != "" || a.Is4In6() {
			return netip.Addr{}, "", false
		}
		return a, "", true
	}
	if i := strings.IndexByte(h, ':'); i >= 0 {
		if !validPort(h[i:]) {
			return netip.Addr{}, "", false
		}
		host = h[:i]
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if !a.Is4() {
			return netip.Addr{}, "", false
		}
		return a, "", true
	}
	n := strings.TrimSuffix(strings.ToLower(host), ".")
	if !ValidName(n) {
		return netip.Addr{}, "", false
	}
	return netip.Addr{}, n, true
}

// validPort accepts "" or ":" followed by up to five digits ≤ 65535.
// ValidName reports whether n (lowercase, no trailing dot) is a
// letters-digits-hyphens host name whose last label is not numeric (so it
// cannot be read as an IPv4 address by a URL parser).
func ValidName(n string) bool {
	if n == "" || len(n) > 253 {
		return false
	}
	labels := strings.Split(n, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	last := labels[len(labels)-1]
	if strings.HasPrefix(last, "0x") || strings.Trim(last, "0123456789") == "" {
		return false
	}
	return true
}

func validPort(p string) bool {
	if p == "" {
		return true
	}
	if p[0] != ':' || len(p) > 6 {
		return false
	}
	d := p[1:]
	if d == "" {
		return true // "host:" is allowed by RFC 3986
	}
	for i := 0; i < len(d); i++ {
		if d[i] < '0' || d[i] > '9' {
			return false
		}
	}
	n, _ := strconv.Atoi(d)
	return n <= 65535
}

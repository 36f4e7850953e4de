package tlscert

import (
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
)

// Redirector is the handler for the console's plain-HTTP LAN port: every
// request is answered 308 Permanent Redirect to https on the same host
// with the port set to HTTPSPort (none in the URL when it is 443 or 0),
// the path and query kept as sent. The Host must be an IP literal or a
// DNS name (with an optional port); anything else (userinfo, paths,
// control characters, zones) is 400, so the redirect can only point at
// the host the client already reached.
type Redirector struct {
	// HTTPSPort is the console's HTTPS port (0 means 443).
	HTTPSPort int
	// Allow, if set, must accept the host (addr valid for an IP literal,
	// else the lowercased name) or the answer is 400; use it to redirect
	// only for the gateway's own LAN names and addresses.
	Allow func(addr netip.Addr, name string) bool
}

func (rd Redirector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	addr, name, ok := ParseHost(r.Host)
	if !ok || rd.Allow != nil && !rd.Allow(addr, name) {
		http.Error(w, "bad Host header", http.StatusBadRequest)
		return
	}
	w.Header().Set("Location", rd.target(addr, name, r))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusPermanentRedirect)
}

// target builds the absolute https URL; the host part comes only from
// ParseHost's result, never from the raw header or the request-target.
func (rd Redirector) target(addr netip.Addr, name string, r *http.Request) string {
	var b strings.Builder
	b.WriteString("https://")
	switch {
	case addr.Is6():
		b.WriteString("[" + addr.String() + "]")
	case addr.IsValid():
		b.WriteString(addr.String())
	default:
		b.WriteString(name)
	}
	if rd.HTTPSPort != 0 && rd.HTTPSPort != 443 {
		b.WriteString(":" + strconv.Itoa(rd.HTTPSPort))
	}
	path := r.URL.EscapedPath()
	if !strings.HasPrefix(path, "/") { // "*" of OPTIONS, or empty
		path = "/"
	}
	b.WriteString(path)
	if q := r.URL.RawQuery; q != "" {
		// RawQuery is what the client sent; it cannot hold CR, LF or
		// space (net/http rejects such a request line), but escape any
		// byte that is not safe in a header anyway.
		b.WriteString("?" + escapeQuery(q))
	}
	return b.String()
}

func escapeQuery(q string) string {
	var b strings.Builder
	for i := 0; i < len(q); i++ {
		c := q[i]
		if c <= ' ' || c >= 0x7f || c == '#' {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// ParseHost parses a Host header value: "name[:port]", "a.b.c.d[:port]"
// or "[v6][:port]". It returns the address (unmapped, no zone) or the
// lowercased name without a trailing dot, and false for anything else:
// empty, over 255 bytes, userinfo, a path, control characters, an
// unbracketed IPv6 address, a zone, a bad port, or a name whose last
// label is numeric (which URL parsers would read as an IPv4 address).
func ParseHost(h string) (addr netip.Addr, name string, ok bool) {
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
	if !validDNSName(n) {
		return netip.Addr{}, "", false
	}
	return netip.Addr{}, n, true
}

// validPort accepts "" or ":" followed by up to five digits ≤ 65535.
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

package api

import (
	"net/http"
	"net/netip"
	"strconv"
	"strings"
)

// HostOf parses a Host header value as a client sends it: "name",
// "name:port", "a.b.c.d[:port]", "[v6][:port]" (an IPv6 zone is not
// accepted). It returns either the address or the lowercased name
// without a trailing dot, and false when the value is none of these.
func HostOf(h string) (addr netip.Addr, name string, ok bool) {
	if h == "" || len(h) > 300 {
		return netip.Addr{}, "", false
	}
	host := h
	if strings.HasPrefix(h, "[") {
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return netip.Addr{}, "", false
		}
		host = h[1:end]
		rest := h[end+1:]
		if rest != "" && !validPort(strings.TrimPrefix(rest, ":"), rest[0] == ':') {
			return netip.Addr{}, "", false
		}
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return netip.Addr{}, "", false
		}
		return a.Unmap(), "", true
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		if strings.Count(h, ":") > 1 {
			return netip.Addr{}, "", false // an unbracketed IPv6 address
		}
		if !validPort(h[i+1:], true) {
			return netip.Addr{}, "", false
		}
		host = h[:i]
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return netip.Addr{}, "", false
		}
		return a.Unmap(), "", true
	}
	n := strings.TrimSuffix(strings.ToLower(host), ".")
	if n == "" || len(n) > 253 {
		return netip.Addr{}, "", false
	}
	if a, err := netip.ParseAddr(n); err == nil { // "10.10.0.1."
		if a.Zone() != "" || a.Is6() && !a.Is4In6() {
			return netip.Addr{}, "", false
		}
		return a.Unmap(), "", true
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 {
			return netip.Addr{}, "", false
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return netip.Addr{}, "", false
			}
		}
	}
	return netip.Addr{}, n, true
}

func validPort(p string, hadColon bool) bool {
	if !hadColon {
		return false
	}
	if p == "" {
		return true // "host:" is allowed by RFC 3986
	}
	n, err := strconv.Atoi(p)
	return err == nil && n >= 0 && n <= 65535 && p[0] != '+' && p[0] != '-'
}

// hostAllowed checks r's Host against Options.AllowHost; no check without
// one.
func (s *Server) hostAllowed(r *http.Request) bool {
	if s.opts.AllowHost == nil {
		return true
	}
	addr, name, ok := HostOf(r.Host)
	return ok && s.opts.AllowHost(addr, name)
}

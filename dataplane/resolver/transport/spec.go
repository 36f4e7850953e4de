// Package transport holds the resolver's clients for encrypted upstream
// DNS: DNS over TLS (RFC 7858, queries pipelined on one connection by
// message ID, RFC 7766), DNS over HTTPS (RFC 8484: HTTP/2 streams on one
// TLS connection for https://, HTTP/3 request streams on one QUIC
// connection for h3://) and DNS over QUIC (RFC 9250, a stream per query on
// one QUIC connection). HTTP/3 is used only when written h3://: an
// https:// upstream stays on HTTP/2 whatever Alt-Svc its server sends, so
// the transport (TCP 443 or UDP 443) is the one configured. Each Transport keeps one connection to its server, opened
// on the first query and again after the server or IdleTimeout closed it;
// it never falls back to plain DNS, and it never looks a name up: a server
// given by name is dialled at the addresses of its Spec (the bootstrap).
//
// Plain DNS (UDP, then TCP on truncation) stays in the resolver package;
// a Spec of Kind Plain is only parsed here.
package transport

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// Kind is an upstream's transport.
type Kind uint8

// The transports.
const (
	Plain Kind = iota // UDP, TCP on truncation (port 53)
	TLS               // DNS over TLS, tls://host[:853]
	HTTPS             // DNS over HTTPS over HTTP/2, https://host[:443]/path
	QUIC              // DNS over QUIC, quic://host[:853]
	HTTP3             // DNS over HTTPS over HTTP/3, h3://host[:443]/path
)

func (k Kind) String() string {
	switch k {
	case Plain:
		return "plain"
	case TLS:
		return "tls"
	case HTTPS:
		return "https"
	case QUIC:
		return "quic"
	case HTTP3:
		return "h3"
	}
	return fmt.Sprintf("kind%d", uint8(k))
}

// Default ports.
const (
	PlainPort = 53
	TLSPort   = 853
	HTTPSPort = 443
	QUICPort  = 853
)

// Spec is one configured upstream.
type Spec struct {
	Kind Kind
	// Host is the server's name, verified against its certificate, or an
	// IP address literal (then verified against the certificate's IP
	// addresses). For Plain it is the address.
	Host string
	Port uint16
	// Path is the DoH (and DoH3) request path, "/dns-query" by default.
	Path string
	// Addrs are the addresses dialled, in order: Host itself when it is
	// an address, else the bootstrap addresses given for it.
	Addrs []netip.Addr
}

// String is the upstream as written in the configuration, normalised:
// "192.0.2.1:53", "[2001:db8::1]:53", "tls://dns.example:853",
// "https://dns.example:443/dns-query", "quic://dns.example:853".
func (s Spec) String() string {
	hp := net.JoinHostPort(s.Host, strconv.Itoa(int(s.Port)))
	switch s.Kind {
	case Plain:
		return hp
	case HTTPS:
		return "https://" + hp + s.Path
	case HTTP3:
		return "h3://" + hp + s.Path
	}
	return s.Kind.String() + "://" + hp
}

// HostIsAddr reports whether Host is an IP address literal.
func (s Spec) HostIsAddr() bool {
	_, err := netip.ParseAddr(s.Host)
	return err == nil
}

// Dial returns the address:port pairs to dial, in order.
func (s Spec) Dial() []netip.AddrPort {
	out := make([]netip.AddrPort, len(s.Addrs))
	for i, a := range s.Addrs {
		out[i] = netip.AddrPortFrom(a, s.Port)
	}
	return out
}

// Parse reads an upstream: "IP", "IP:port", "[v6]:port" (plain DNS),
// "tls://host[:port]", "https://host[:port]/path", "h3://host[:port]/path"
// or "quic://host[:port]".
// A Spec whose Host is a name has no Addrs: the caller adds the
// bootstrap addresses.
func Parse(s string) (Spec, error) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		ap, err := parsePlain(s)
		if err != nil {
			return Spec{}, err
		}
		return Spec{Kind: Plain, Host: ap.Addr().String(), Port: ap.Port(), Addrs: []netip.Addr{ap.Addr()}}, nil
	}
	var sp Spec
	switch strings.ToLower(scheme) {
	case "tls":
		sp = Spec{Kind: TLS, Port: TLSPort}
	case "https":
		sp = Spec{Kind: HTTPS, Port: HTTPSPort, Path: "/dns-query"}
	case "quic":
		sp = Spec{Kind: QUIC, Port: QUICPort}
	case "udp", "tcp", "dns":
		return Spec{}, fmt.Errorf("%q: plain DNS is written as IP or IP:port, without a scheme", s)
	case "h3":
		sp = Spec{Kind: HTTP3, Port: HTTPSPort, Path: "/dns-query"}
	default:
		return Spec{}, fmt.Errorf("%q: unknown scheme %q (want tls://, https://, h3:// or quic://, or a plain IP[:port])", s, scheme)
	}
	u, err := url.Parse(strings.ToLower(scheme) + "://" + rest)
	if err != nil {
		return Spec{}, fmt.Errorf("%q: %w", s, err)
	}
	switch {
	case u.User != nil:
		return Spec{}, fmt.Errorf("%q: user information is not allowed", s)
	case u.Fragment != "" || strings.Contains(rest, "#"):
		return Spec{}, fmt.Errorf("%q: a #fragment is not allowed (bootstrap addresses go in dns.bootstrap)", s)
	case u.RawQuery != "" || u.ForceQuery:
		return Spec{}, fmt.Errorf("%q: a ?query is not allowed", s)
	case u.Hostname() == "":
		return Spec{}, fmt.Errorf("%q: no host", s)
	}
	if sp.Kind == HTTPS || sp.Kind == HTTP3 {
		if u.Path != "" {
			sp.Path = u.EscapedPath()
		}
	} else if u.Path != "" && u.Path != "/" {
		return Spec{}, fmt.Errorf("%q: a path is only for https:// and h3://", s)
	}
	if p := u.Port(); p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return Spec{}, fmt.Errorf("%q: bad port %q", s, p)
		}
		sp.Port = uint16(n)
	} else if strings.HasSuffix(u.Host, ":") {
		return Spec{}, fmt.Errorf("%q: empty port", s)
	}
	host := u.Hostname()
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return Spec{}, fmt.Errorf("%q: zones are not supported", s)
		}
		a = a.Unmap()
		sp.Host, sp.Addrs = a.String(), []netip.Addr{a}
		return sp, nil
	}
	if strings.Contains(u.Host, "[") {
		return Spec{}, fmt.Errorf("%q: %q is not an IPv6 address", s, host)
	}
	name, err := normalizeName(host)
	if err != nil {
		return Spec{}, fmt.Errorf("%q: %w", s, err)
	}
	sp.Host = name
	return sp, nil
}

func parsePlain(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if ap.Port() == 0 {
			return netip.AddrPort{}, fmt.Errorf("port 0 in %q", s)
		}
		if ap.Addr().Zone() != "" {
			return netip.AddrPort{}, fmt.Errorf("%q: zones are not supported", s)
		}
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is not an IP address or IP:port, nor tls://, https:// or quic://", s)
	}
	if a.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("%q: zones are not supported", s)
	}
	return netip.AddrPortFrom(a.Unmap(), PlainPort), nil
}

// normalizeName lowercases a host name, drops one trailing dot and checks
// it is letters, digits, hyphens and underscores in dot-separated labels.
func normalizeName(h string) (string, error) {
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	if h == "" || len(h) > 253 {
		return "", errors.New("bad host name")
	}
	for _, l := range strings.Split(h, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return "", fmt.Errorf("bad host name %q", h)
		}
		for _, c := range []byte(l) {
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return "", fmt.Errorf("bad host name %q", h)
			}
		}
	}
	return h, nil
}

// NormalizeName is the form of a host name that Spec.Host holds, for
// matching bootstrap entries.
func NormalizeName(h string) (string, error) { return normalizeName(h) }

// ParsePlain reads a plain DNS server, "IP", "IP:port" or "[v6]:port"
// (port 53 by default).
func ParsePlain(s string) (netip.AddrPort, error) { return parsePlain(s) }

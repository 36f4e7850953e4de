package tlscert

import (
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/cloudsteer/cloudsteer/internal/hostheader"
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
	addr, name, ok := hostheader.Parse(r.Host)
	if !ok || rd.Allow != nil && !rd.Allow(addr, name) {
		http.Error(w, "bad Host header", http.StatusBadRequest)
		return
	}
	w.Header().Set("Location", rd.target(addr, name, r))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusPermanentRedirect)
}

// target builds the absolute https URL; the host part comes only from
// hostheader.Parse's result, never from the raw header or the request-target.
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

package tlscert

import (
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/cloudsteer/cloudsteer/internal/hostheader"
)

// FuzzRedirectHost checks that whatever Host a client sends, the redirect
// either is refused or points at exactly the parsed host: an https URL
// with no userinfo, the fixed port and the request's path.
func FuzzRedirectHost(f *testing.F) {
	for _, s := range []string{
		"10.10.0.1", "10.10.0.1:80", "[fd00:10::1]:8080", "cloudsteer.lan", "CloudSteer.LAN.:80",
		"evil.com@10.10.0.1", "10.10.0.1/..", "10.10.0.1\r\nX: y", "[fe80::1%25eth0]", "fd00::1",
		"0x7f.1", "10.1", "a..b", "[::ffff:10.10.0.1]", "10.10.0.1:65536", "host:", "[", "]", ":",
	} {
		f.Add(s)
	}
	rd := Redirector{HTTPSPort: 8443}
	f.Fuzz(func(t *testing.T, host string) {
		addr, name, ok := hostheader.Parse(host)
		if !ok {
			if addr.IsValid() || name != "" {
				t.Fatalf("refused %q but returned %v %q", host, addr, name)
			}
			return
		}
		if addr.IsValid() == (name != "") {
			t.Fatalf("%q: want exactly one of addr/name, got %v %q", host, addr, name)
		}
		if addr.Zone() != "" || addr.Is4In6() {
			t.Fatalf("%q: zoned or mapped address %v", host, addr)
		}
		if name != "" && !hostheader.ValidName(name) {
			t.Fatalf("%q: invalid name %q", host, name)
		}
		r := httptest.NewRequest("GET", "http://x/p/q?a=b", nil)
		r.Host = host
		w := httptest.NewRecorder()
		rd.ServeHTTP(w, r)
		loc := w.Header().Get("Location")
		if w.Code != 308 {
			t.Fatalf("%q: status %d", host, w.Code)
		}
		u, err := url.Parse(loc)
		if err != nil {
			t.Fatalf("%q: Location %q does not parse: %v", host, loc, err)
		}
		want := name
		if addr.IsValid() {
			want = addr.String()
		}
		if u.Scheme != "https" || u.User != nil || u.Hostname() != want || u.Port() != "8443" ||
			u.EscapedPath() != "/p/q" || u.RawQuery != "a=b" || u.Fragment != "" {
			t.Fatalf("%q: Location %q is not https://%s:8443/p/q?a=b", host, loc, want)
		}
		if strings.ContainsAny(loc, "\r\n\\@ ") {
			t.Fatalf("%q: Location %q holds a forbidden byte", host, loc)
		}
		// Parsing is stable: the host part of the Location parses the same.
		a2, n2, ok2 := hostheader.Parse(u.Host)
		if !ok2 || a2 != addr || n2 != name {
			t.Fatalf("%q: Location host %q parses as %v %q %v", host, u.Host, a2, n2, ok2)
		}
	})
}

package servers

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"

	"github.com/cloudsteer/cloudsteer/lab"
)

func x509VerifyOptions(ca *CA) x509.VerifyOptions {
	return x509.VerifyOptions{Roots: ca.Pool()}
}

func FuzzProxyCredentials(f *testing.F) {
	for _, s := range []string{"", basic(lab.EntitlementCode, ""), basic(lab.ChainUser, lab.ChainPassword), "Basic", "Basic ", "basic Og==", "Bearer x", "Basic !!"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		user, ok := proxyCredentials(h)
		if ok && user != lab.EntitlementCode && user != lab.ChainUser {
			t.Fatalf("accepted user %q", user)
		}
	})
}

// FuzzProxyTarget parses raw request heads as the proxy's HTTP server
// would and checks the target it derives.
func FuzzProxyTarget(f *testing.F) {
	for _, s := range []string{
		"CONNECT www.example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n",
		"CONNECT [2001:db8::1]:443 HTTP/1.1\r\n\r\n",
		"GET http://www.example.com/ HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET https://bank.example:8443/a?b HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"CONNECT :0 HTTP/1.1\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			return
		}
		host, hostport, err := targetOf(r)
		if err != nil {
			return
		}
		if host == "" || !strings.Contains(hostport, host) {
			t.Fatalf("host %q, target %q for %q", host, hostport, b)
		}
		s := newSiteTable(lab.Sites)
		_, _ = s.lookup(host)
	})
}

func FuzzReadLine(f *testing.F) {
	f.Add([]byte("hello\n"), 16)
	f.Add([]byte("no newline"), 4)
	f.Add([]byte("\r\n"), 1)
	f.Fuzz(func(t *testing.T, b []byte, max int) {
		if max < 0 || max > 1<<16 {
			return
		}
		line, err := readLine(bytes.NewReader(b), max)
		if len(line) > max {
			t.Fatalf("line of %d bytes with max %d", len(line), max)
		}
		if err == nil && strings.Contains(line, "\n") {
			t.Fatalf("line contains newline: %q", line)
		}
	})
}

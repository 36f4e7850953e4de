package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/gateway"
)

// TestSquidAsCloudProxy runs the steering cases against Squid configured as
// the cloud proxy (basic auth, a "sports" deny ACL), the way the provider
// documents proxy chaining from Squid.
func TestSquidAsCloudProxy(t *testing.T) {
	e := newEnv(t, true)
	// Squid refuses Basic credentials with an empty password, so the code
	// goes as the user name with the password the lab's Squid expects.
	e.startGateway(gateway.Options{
		ProxyURL: fmt.Sprintf("http://%s:%d", lab.SquidV4, lab.SquidPort),
		Username: lab.EntitlementCode, Password: lab.SquidCodePassword,
	})
	www := site(t, "www.example.com")

	squidSaw := func(t *testing.T, since time.Time, match func(lab.SquidRecord) bool) *lab.SquidRecord {
		t.Helper()
		var hit *lab.SquidRecord
		// Squid writes its access log line when a transaction ends.
		eventually(5*time.Second, func() bool {
			recs, err := e.lab.SquidLog()
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				if !r.Time.Before(since.Truncate(time.Second)) && match(r) {
					hit = &r
					return true
				}
			}
			return false
		})
		return hit
	}

	for _, tc := range []struct{ fam, addr, client string }{{"v4", www.V4.String(), clientV4}, {"v6", www.V6.String(), clientV6}} {
		t.Run("https/"+tc.fam, func(t *testing.T) {
			start := time.Now()
			body, err := e.curl("https://www.example.com/?case=squid-"+tc.fam, "www.example.com", tc.addr)
			if err != nil || !strings.Contains(body, "hello from www.example.com via https") {
				t.Fatalf("client got %q, %v", body, err)
			}
			r := squidSaw(t, start, func(r lab.SquidRecord) bool {
				return r.Method == "CONNECT" && r.URL == "www.example.com:443" && r.XFF == tc.client
			})
			if r == nil {
				recs, _ := e.lab.SquidLog()
				t.Fatalf("Squid saw no CONNECT www.example.com:443 with XFF %s: %+v", tc.client, recs)
			}
			if r.User != lab.EntitlementCode || r.Status != 200 {
				t.Fatalf("Squid record %+v: want user = the entitlement code, status 200", *r)
			}
		})
	}

	t.Run("http", func(t *testing.T) {
		start := time.Now()
		news := site(t, "news.example.com")
		body, err := e.curl("http://news.example.com/?case=squid-http", "news.example.com", news.V4.String())
		if err != nil || !strings.Contains(body, "hello from news.example.com via http") {
			t.Fatalf("client got %q, %v", body, err)
		}
		r := squidSaw(t, start, func(r lab.SquidRecord) bool {
			return r.Method == "GET" && r.URL == "http://news.example.com/?case=squid-http" && r.XFF == clientV4
		})
		if r == nil || r.User != lab.EntitlementCode {
			recs, _ := e.lab.SquidLog()
			t.Fatalf("Squid saw no absolute-form GET with credentials: %+v", recs)
		}
	})

	t.Run("sports blocked", func(t *testing.T) {
		start := time.Now()
		sports := site(t, "scores.sports.example")
		if _, err := e.curl("https://scores.sports.example/", "scores.sports.example", sports.V4.String()); err == nil {
			t.Fatal("HTTPS to a blocked site succeeded through Squid")
		}
		if squidSaw(t, start, func(r lab.SquidRecord) bool { return r.Method == "CONNECT" && r.Status == 403 }) == nil {
			t.Fatal("Squid did not record the refused CONNECT")
		}
	})
}

// TestCloudProxyVariants covers an https:// cloud proxy verified against a
// configured CA, and user/password proxy-chaining credentials.
func TestCloudProxyVariants(t *testing.T) {
	e := newEnv(t, false)
	www := site(t, "www.example.com")
	check := func(t *testing.T, o gateway.Options, wantUser string, wantTLS bool) {
		g := e.startGateway(o)
		defer g.Stop()
		start := time.Now()
		body, err := e.curl("https://www.example.com/", "www.example.com", www.V4.String())
		if err != nil || !strings.Contains(body, "hello from www.example.com") {
			t.Fatalf("client got %q, %v\n%s", body, err, g.Log())
		}
		ok := eventually(2*time.Second, func() bool {
			for _, r := range e.proxyLog(start) {
				if r.Method == "CONNECT" && r.AuthOK && r.User == wantUser && r.TLS == wantTLS && r.XFF == clientV4 {
					return true
				}
			}
			return false
		})
		if !ok {
			t.Fatalf("cloud proxy records: %+v", e.proxyLog(start))
		}
		if strings.Contains(g.Log(), lab.ChainPassword) || strings.Contains(g.Log(), lab.EntitlementCode) {
			t.Fatal("a secret reached the log")
		}
	}
	t.Run("https proxy with CA", func(t *testing.T) {
		check(t, gateway.Options{
			Name:     "https",
			ProxyURL: fmt.Sprintf("https://proxy.cloud.example:%d", lab.CloudProxyHTTPSPort),
			CAFile:   e.lab.CAFile(),
		}, lab.EntitlementCode, true)
	})
	t.Run("user and password", func(t *testing.T) {
		check(t, gateway.Options{Name: "userpass", Username: lab.ChainUser, Password: lab.ChainPassword}, lab.ChainUser, false)
	})
}

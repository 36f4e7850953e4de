package e2e

import (
	"fmt"
	"net/netip"
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

	// Per family: the LAN client's flows, and the gateway reaching Squid
	// at its address of that family (a gateway for each).
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			// Squid refuses Basic credentials with an empty password, so the code
			// goes as the user name with the password the lab's Squid expects.
			e.gatewayFor(t, gateway.Options{
				Name:     "squid-" + fam.name,
				ProxyURL: fam.proxyURL(lab.SquidV4, lab.SquidV6, lab.SquidPort),
				Username: lab.EntitlementCode, Password: lab.SquidCodePassword,
			})
			gwWAN := netip.MustParseAddr(fam.gwWAN())

			t.Run("https", func(t *testing.T) {
				start := time.Now()
				body, err := e.curl("https://www.example.com/?case=squid-"+fam.name, "www.example.com", fam.dst(www))
				if err != nil || !strings.Contains(body, "hello from www.example.com via https") {
					t.Fatalf("client got %q, %v", body, err)
				}
				r := squidSaw(t, start, func(r lab.SquidRecord) bool {
					return r.Method == "CONNECT" && r.URL == "www.example.com:443" && r.XFF == fam.client()
				})
				if r == nil {
					recs, _ := e.lab.SquidLog()
					t.Fatalf("Squid saw no CONNECT www.example.com:443 with XFF %s: %+v", fam.client(), recs)
				}
				if r.User != lab.EntitlementCode || r.Status != 200 || r.Client != gwWAN {
					t.Fatalf("Squid record %+v: want user = the entitlement code, status 200, from the gateway's %s WAN address %s", *r, fam.name, gwWAN)
				}
			})

			t.Run("http", func(t *testing.T) {
				start := time.Now()
				news := site(t, "news.example.com")
				url := "http://news.example.com/?case=squid-http-" + fam.name
				body, err := e.curl(url, "news.example.com", fam.dst(news))
				if err != nil || !strings.Contains(body, "hello from news.example.com via http") {
					t.Fatalf("client got %q, %v", body, err)
				}
				r := squidSaw(t, start, func(r lab.SquidRecord) bool {
					return r.Method == "GET" && r.URL == url && r.XFF == fam.client()
				})
				if r == nil || r.User != lab.EntitlementCode || r.Client != gwWAN {
					recs, _ := e.lab.SquidLog()
					t.Fatalf("Squid saw no absolute-form GET with credentials from %s: %+v", gwWAN, recs)
				}
			})

			t.Run("sports blocked", func(t *testing.T) {
				start := time.Now()
				sports := site(t, "scores.sports.example")
				if _, err := e.curl("https://scores.sports.example/", "scores.sports.example", fam.dst(sports)); err == nil {
					t.Fatal("HTTPS to a blocked site succeeded through Squid")
				}
				if squidSaw(t, start, func(r lab.SquidRecord) bool {
					return r.Method == "CONNECT" && r.Status == 403 && r.XFF == fam.client()
				}) == nil {
					t.Fatal("Squid did not record the refused CONNECT")
				}
			})
		})
	}
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

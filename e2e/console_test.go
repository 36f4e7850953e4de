package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/controlplane/console/tlscert"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
	"github.com/cloudsteer/cloudsteer/controlplane/store"
	"github.com/cloudsteer/cloudsteer/internal/privtest"
	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/gateway"
)

// setupLinkRE finds the setup link the daemon logs at start.
var setupLinkRE = regexp.MustCompile(`msg="console setup link" .*url="?(https://[^" ]+/setup\?token=[A-Za-z0-9_-]{43})`)

// httpCode fetches url from role with curl (-k: the console's certificate
// is self-signed; its fingerprint is checked separately) and returns the
// status (0 when nothing answered), the headers and the body.
func (e *env) httpCode(role, url string, extra ...string) (int, string, string) {
	e.t.Helper()
	args := append([]string{"curl", "-sk", "--max-time", "5", "-D", "/dev/stderr", "-o", "-", "-w", "\n%{http_code}"}, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := e.lab.Command(ctx, role, append(args, url)...)
	var out, hdr strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &hdr
	_ = cmd.Run()
	s := out.String()
	i := strings.LastIndex(s, "\n")
	var status int
	fmt.Sscan(s[i+1:], &status)
	return status, strings.ToLower(hdr.String()), s[:max(i, 0)]
}

// servedFingerprint makes a TLS handshake with addr from the LAN client's
// namespace and returns the fingerprint of the certificate it was shown.
func (e *env) servedFingerprint(t *testing.T, addr string) string {
	t.Helper()
	var fp string
	privtest.InNetNS(t, e.lab.NS(lab.RoleLAN), func() {
		d := &net.Dialer{Timeout: 5 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
		if err != nil {
			t.Errorf("TLS to %s: %v", addr, err)
			return
		}
		defer c.Close()
		fp = tlscert.Fingerprint(c.ConnectionState().PeerCertificates[0].Raw)
		// TLS 1.1 must be refused.
		old, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
		if err == nil {
			old.Close()
			t.Errorf("%s accepted TLS 1.1", addr)
		}
	})
	return fp
}

// writeDERCA writes a CA certificate, DER, as the provider's cacert.cer.
func writeDERCA(t *testing.T, path string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "Lab Inspection CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, der, 0o644); err != nil {
		t.Fatal(err)
	}
	return der
}

// TestConsole runs the real daemon in the lab and checks the web
// console's wiring: HTTPS on the LAN addresses with the certificate the
// CLI names, TLS 1.2 or later, the Host check; plain HTTP only
// redirecting (the CA download apart); nothing of it reachable from the
// WAN side; the setup link in the log at first start and the root-only
// console commands (refused over the network API); reset-admin; and no
// setup link in the log once an admin exists.
func TestConsole(t *testing.T) {
	e := newEnv(t, false)
	sock := gateway.SocketPath(e.lab, "gw")
	g := e.startGateway(gateway.Options{})

	var info api.ConsoleInfo
	t.Run("setup link in the log at first start", func(t *testing.T) {
		var m []string
		eventually(3*time.Second, func() bool { m = setupLinkRE.FindStringSubmatch(g.Log()); return m != nil })
		if m == nil {
			t.Fatalf("no setup link in the log:\n%s", g.Log())
		}
		if !strings.HasPrefix(m[1], "https://10.10.0.1/setup?token=") {
			t.Fatalf("setup link %s is not on the first LAN IPv4 address", m[1])
		}
		e.cliJSON(sock, &info, "console", "info")
		if !info.Enabled || info.AdminSetUp || !info.SetupLinkPending || len(info.URLs) == 0 || info.URLs[0] != "https://10.10.0.1/" {
			t.Fatalf("console info: %+v", info)
		}
		out, _, code := e.cli(sock, "console")
		if code != 0 || !strings.Contains(out, info.Fingerprint) || !strings.Contains(out, "https://10.10.0.1/") || !strings.Contains(out, "not set up") {
			t.Fatalf("cloudsteer console: exit %d\n%s", code, out)
		}
		if out, _, _ := e.cli(sock, "status"); !strings.Contains(out, "Console: https://10.10.0.1/") {
			t.Fatalf("status lacks the console:\n%s", out)
		}
	})

	t.Run("https on the LAN with the fingerprint the CLI prints", func(t *testing.T) {
		for _, addr := range []string{"10.10.0.1:443", "[fd00:10::1]:443"} {
			if fp := e.servedFingerprint(t, addr); fp != info.Fingerprint || fp == "" {
				t.Fatalf("%s serves certificate %s, the CLI says %s", addr, fp, info.Fingerprint)
			}
		}
		for _, url := range []string{"https://10.10.0.1/", "https://[fd00:10::1]/"} {
			status, hdr, _ := e.httpCode(lab.RoleLAN, url)
			if status == 0 || !strings.Contains(hdr, "content-security-policy:") || !strings.Contains(hdr, "strict-transport-security:") {
				t.Fatalf("%s: status %d, headers:\n%s", url, status, hdr)
			}
		}
		// A Host that is not the gateway's (DNS rebinding): 421.
		if status, _, _ := e.httpCode(lab.RoleLAN, "https://10.10.0.1/", "-H", "Host: evil.example"); status != 421 {
			t.Fatalf("foreign Host: %d, want 421", status)
		}
	})

	t.Run("plain http redirects except the CA", func(t *testing.T) {
		for url, want := range map[string]string{
			"http://10.10.0.1/status?x=1": "https://10.10.0.1/status?x=1",
			"http://[fd00:10::1]/":        "https://[fd00:10::1]/",
		} {
			status, hdr, _ := e.httpCode(lab.RoleLAN, url)
			if status != 308 || !strings.Contains(hdr, "location: "+want) {
				t.Fatalf("%s: %d, want 308 to %s; headers:\n%s", url, status, want, hdr)
			}
		}
		for _, p := range []string{"/ca.cer", "/ca"} {
			if status, hdr, _ := e.httpCode(lab.RoleLAN, "http://10.10.0.1"+p); status != 404 || strings.Contains(hdr, "location:") {
				t.Fatalf("%s without a CA: %d, want 404 (not a redirect)", p, status)
			}
		}
	})

	t.Run("nothing from the WAN", func(t *testing.T) {
		// Control: a listener of the test's own on the gateway answers the
		// WAN host at every address tried, so a refusal below is cloudsteer's.
		const controlPort = 15998
		privtest.ServeTCP(t, e.lab.NS(lab.RoleGW), fmt.Sprintf(":%d", controlPort), func(c net.Conn) { c.Close() })
		targets := []netip.Addr{lab.GWWANV4.Addr(), lab.GWLANV4.Addr(), lab.GWWANV6.Addr(), lab.GWLANV6.Addr()}
		privtest.InNetNS(t, e.lab.NS(lab.RoleInet), func() {
			for _, a := range targets {
				if ok, err := tryOnce(context.Background(), "tcp", netip.AddrPortFrom(a, controlPort), nil, 3*time.Second); !ok {
					t.Fatalf("control %v from the WAN: %v", a, err)
				}
				for _, port := range []uint16{443, 80} {
					if ok, _ := tryOnce(context.Background(), "tcp", netip.AddrPortFrom(a, port), nil, time.Second); ok {
						t.Errorf("the console's port %v answered the WAN host", netip.AddrPortFrom(a, port))
					}
				}
			}
		})
	})

	t.Run("setup link by the CLI, refused over the network", func(t *testing.T) {
		out, errOut, code := e.cli(sock, "console", "setup-link")
		if code != 0 || !regexp.MustCompile(`https://10\.10\.0\.1/setup\?token=[A-Za-z0-9_-]{43}`).MatchString(out) {
			t.Fatalf("setup-link: exit %d %q %q", code, out, errOut)
		}
		tokOut, _, _ := e.cli(sock, "token", "--state-dir", e.lab.Path("state-gw"))
		auth := "Authorization: Bearer " + strings.TrimSpace(tokOut)
		for _, url := range []string{"http://10.10.0.1:9080/api/v1/console/setup-link", "https://10.10.0.1/api/v1/console/setup-link",
			"http://10.10.0.1:9080/api/v1/console/reset-admin", "https://10.10.0.1/api/v1/console/reset-admin"} {
			status, _, body := e.httpCode(lab.RoleLAN, url, "-X", "POST", "-H", auth)
			if status != 403 || strings.Contains(body, "token=") {
				t.Fatalf("POST %s with the API token: %d %s", url, status, body)
			}
		}
		// The network API itself works with that token (so the 403 is the route's).
		if status, _, _ := e.httpCode(lab.RoleLAN, "http://10.10.0.1:9080/api/v1/status", "-H", auth); status != 200 {
			t.Fatalf("status with the token: %d", status)
		}
	})

	// With the daemon stopped, create an admin in its state (as the setup
	// page does, through the store) and name a provider CA in the config.
	if err := g.Stop(); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), e.lab.Path("state-gw"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := st.CreateSetupToken(time.Hour)
	if err == nil {
		err = st.SetupAdmin(tok, model.AdminAccount{User: "office", PasswordHash: "$argon2id$placeholder", Created: time.Now()})
	}
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	caPath := filepath.Join(e.lab.Dir(), "cacert.cer")
	caDER := writeDERCA(t, caPath)
	g = e.startGateway(gateway.Options{Extra: "console:\n  inspection_ca: " + caPath + "\n"})

	t.Run("no setup link once an admin exists", func(t *testing.T) {
		time.Sleep(500 * time.Millisecond)
		if strings.Contains(g.Log(), "console setup link") || strings.Contains(g.Log(), "token=") {
			t.Fatalf("setup link logged with an admin set up:\n%s", g.Log())
		}
		var after api.ConsoleInfo
		e.cliJSON(sock, &after, "console", "info")
		if !after.AdminSetUp || after.User != "office" || after.Fingerprint != info.Fingerprint {
			t.Fatalf("console info with an admin: %+v (fingerprint before restart %s)", after, info.Fingerprint)
		}
		if _, errOut, code := e.cli(sock, "console", "setup-link"); code != 1 || !strings.Contains(errOut, "already set up") {
			t.Fatalf("setup-link with an admin: exit %d %q", code, errOut)
		}
	})

	t.Run("ca download on plain http", func(t *testing.T) {
		status, hdr, body := e.httpCode(lab.RoleLAN, "http://10.10.0.1/ca.cer")
		if status != 200 || body != string(caDER) {
			t.Fatalf("/ca.cer: %d, %d bytes (want %d), headers:\n%s", status, len(body), len(caDER), hdr)
		}
	})

	t.Run("reset-admin", func(t *testing.T) {
		if _, _, code := e.cli(sock, "console", "reset-admin"); code != 1 {
			t.Fatalf("reset-admin without confirmation (no stdin): exit %d, want 1", code)
		}
		var still api.ConsoleInfo
		e.cliJSON(sock, &still, "console", "info")
		if !still.AdminSetUp {
			t.Fatal("an unconfirmed reset-admin deleted the admin")
		}
		out, errOut, code := e.cli(sock, "console", "reset-admin", "--yes")
		if code != 0 || !strings.Contains(out, "https://10.10.0.1/setup?token=") {
			t.Fatalf("reset-admin --yes: exit %d %q %q", code, out, errOut)
		}
		var after api.ConsoleInfo
		e.cliJSON(sock, &after, "console", "info")
		if after.AdminSetUp || after.User != "" || !after.SetupLinkPending {
			t.Fatalf("after reset-admin: %+v", after)
		}
	})
}

package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/console"
	"github.com/cloudsteer/cloudsteer/controlplane/console/tlscert"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
	"github.com/cloudsteer/cloudsteer/controlplane/store"
)

// withConsole gives a test daemon a console state (certificate only; the
// console's pages are not needed here).
func withConsole(t *testing.T, d *Daemon) {
	t.Helper()
	cert, err := tlscert.LoadOrCreate(t.TempDir(), nil, []netip.Addr{netip.MustParseAddr("192.0.2.1")}, d.now)
	if err != nil {
		t.Fatal(err)
	}
	c, err := console.New(consoleBackend{d.ctrl}, console.Options{AllowHost: d.allowHost, Now: d.now})
	if err != nil {
		t.Fatal(err)
	}
	d.consoleSt = &consoleState{cert: cert, c: c}
}

func tokenOf(t *testing.T, link string) string {
	t.Helper()
	u, err := url.Parse(link)
	if err != nil || u.Scheme != "https" || u.Path != "/setup" {
		t.Fatalf("setup link %q", link)
	}
	return u.Query().Get("token")
}

func TestConsoleAdminCommands(t *testing.T) {
	d, _, _, _ := newTestDaemon(t, testConfig)
	ctx := context.Background()
	if info, err := d.ctrl.ConsoleInfo(ctx); err != nil || info.Enabled {
		t.Fatalf("console off: %+v %v", info, err)
	}
	if _, err := d.ctrl.ConsoleSetupLink(ctx); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("setup link with the console off: %v", err)
	}
	withConsole(t, d)
	b := consoleBackend{d.ctrl}

	first, err := d.ctrl.ConsoleSetupLink(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !first.Expires.Equal(d.now().Add(24 * time.Hour)) {
		t.Fatalf("expires %v, want now + console.setup_link_ttl", first.Expires)
	}
	second, err := d.ctrl.ConsoleSetupLink(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.CheckSetupToken(ctx, tokenOf(t, first.URL)); !errors.Is(err, store.ErrSetupToken) {
		t.Fatalf("a replaced link still works: %v", err)
	}
	tok := tokenOf(t, second.URL)
	if err := b.CheckSetupToken(ctx, tok); err != nil {
		t.Fatalf("the new link: %v", err)
	}
	info, err := d.ctrl.ConsoleInfo(ctx)
	if err != nil || !info.Enabled || info.AdminSetUp || !info.SetupLinkPending || info.Fingerprint != d.consoleSt.cert.Fingerprint() {
		t.Fatalf("info before setup: %+v %v", info, err)
	}
	if err := b.SetupAdmin(ctx, tok, model.AdminAccount{User: "office", PasswordHash: "$argon2id$x"}); err != nil {
		t.Fatal(err)
	}
	if a, ok, err := b.Admin(ctx); !ok || err != nil || a.User != "office" {
		t.Fatalf("admin after setup: %+v %v %v", a, ok, err)
	}
	if _, err := d.ctrl.ConsoleSetupLink(ctx); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("setup link with an admin: %v", err)
	}
	info, _ = d.ctrl.ConsoleInfo(ctx)
	if !info.AdminSetUp || info.User != "office" || info.SetupLinkPending {
		t.Fatalf("info after setup: %+v", info)
	}
	reset, err := d.ctrl.ConsoleResetAdmin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := b.Admin(ctx); ok {
		t.Fatal("reset-admin left the admin")
	}
	if err := b.CheckSetupToken(ctx, tokenOf(t, reset.URL)); err != nil {
		t.Fatalf("the link from reset-admin: %v", err)
	}
}

func TestConsoleSetupLinkHost(t *testing.T) {
	d, _, _, _ := newTestDaemon(t, testConfig+"admin:\n  hostnames: [gw.office.lan]\nconsole:\n  port: 8443\n")
	// No interface lan0 here: the first admin hostname, with the port.
	if h := d.setupLinkHost(); h != "gw.office.lan" {
		t.Fatalf("host %q", h)
	}
	if u := d.consoleURL("fd00::1"); u != "https://[fd00::1]:8443/" {
		t.Fatalf("url %q", u)
	}
	if u := d.consoleURL("10.0.0.1"); u != "https://10.0.0.1:8443/" {
		t.Fatalf("url %q", u)
	}
}

func caPEM(t *testing.T) ([]byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestConsoleInspectionCA(t *testing.T) {
	d, _, _, _ := newTestDaemon(t, testConfig)
	withConsole(t, d)
	ctx := context.Background()
	b := consoleBackend{d.ctrl}
	c, err := console.New(b, console.Options{AllowHost: d.allowHost, Now: d.now})
	if err != nil {
		t.Fatal(err)
	}
	ca := c.CAHandler() // what the plain-HTTP port serves for /ca.cer
	get := func(method, host string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(method, "http://x/ca.cer", nil)
		r.Host = host
		ca.ServeHTTP(rec, r)
		return rec
	}
	if _, _, ok := b.InspectionCA(ctx); ok {
		t.Fatal("a CA before any")
	}
	if rec := get("GET", "localhost"); rec.Code != http.StatusNotFound {
		t.Fatalf("no CA: %d", rec.Code)
	}
	der, p := caPEM(t)
	if err := b.SetInspectionCA(ctx, []byte("junk")); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("junk upload: %v", err)
	}
	if err := b.SetInspectionCA(ctx, p); err != nil {
		t.Fatal(err)
	}
	if got, src, ok := b.InspectionCA(ctx); !ok || src != "upload" || string(got) != string(der) {
		t.Fatalf("uploaded CA: ok %v source %q", ok, src)
	}
	rec := get("GET", "localhost")
	if rec.Code != http.StatusOK || rec.Body.String() != string(der) || rec.Header().Get("Content-Type") != "application/pkix-cert" {
		t.Fatalf("download: %d %q", rec.Code, rec.Header())
	}
	if rec := get("POST", "localhost"); rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", rec.Code)
	}
	if rec := get("GET", "evil.example"); rec.Code != http.StatusMisdirectedRequest {
		t.Fatalf("foreign host: %d", rec.Code)
	}
	// Named in the config: that one is shown, uploads are refused.
	d.cfg.Console.InspectionCA = "/etc/cloudsteer/cacert.cer"
	cfgDER, _ := caPEM(t)
	d.consoleSt.caConfig = cfgDER
	if err := b.SetInspectionCA(ctx, p); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("upload with the config naming a CA: %v", err)
	}
	if got, src, ok := b.InspectionCA(ctx); !ok || src != "config" || string(got) != string(cfgDER) {
		t.Fatalf("config CA: ok %v source %q", ok, src)
	}
}

func TestConsoleCountersEventsInfo(t *testing.T) {
	d, _, _, clock := newTestDaemon(t, testConfig)
	withConsole(t, d)
	ctx := context.Background()
	b := consoleBackend{d.ctrl}
	start := *clock
	d.flows.add(d.flowCounters())
	d.blocks.Add(3)
	*clock = start.Add(10 * time.Minute)
	c := b.LastHour(ctx)
	if c.Blocked != 3 || c.Steered != 0 || !c.Since.Equal(start) {
		t.Fatalf("last hour: %+v", c)
	}
	if _, ok := b.LastReport(ctx); ok {
		t.Fatal("a report before any quick test")
	}
	d.lastReport.Store(&model.Report{OK: true})
	if r, ok := b.LastReport(ctx); !ok || !r.OK {
		t.Fatalf("last report: %+v %v", r, ok)
	}
	d.events = newEvents(d)
	b.RecordEvent(ctx, model.Event{Client: "10.10.0.10", Proto: "console", Reason: "login_failed"})
	select {
	case ev := <-d.events.ch:
		if ev.Reason != "login_failed" || !ev.Time.Equal(*clock) {
			t.Fatalf("event %+v", ev)
		}
	default:
		t.Fatal("RecordEvent queued nothing")
	}
	i := b.Info(ctx)
	if i.CloudProxy != "198.51.100.10:8080" || strings.Join(i.DNSUpstreams, ",") != "198.51.100.53:53" || i.ConsoleFingerprint != d.consoleSt.cert.Fingerprint() || i.Version == "" {
		t.Fatalf("info: %+v", i)
	}
}

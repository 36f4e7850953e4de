package browser_test

import (
	"bytes"
	"context"
	"encoding/pem"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
	"github.com/cloudsteer/cloudsteer/lab/browser"
)

// TestSPKIHash: the hash is the one chromium's documentation computes with
// openssl (public key, DER, SHA-256, base64).
func TestSPKIHash(t *testing.T) {
	privtest.RequireCommand(t, "openssl")
	cert := selfSigned(t)
	pemCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
	cmd := exec.Command("sh", "-c",
		"openssl x509 -noout -pubkey | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64")
	cmd.Stdin = bytes.NewReader(pemCert)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl: %v", err)
	}
	if got, want := browser.SPKIHash(cert.Leaf), strings.TrimSpace(string(out)); got != want {
		t.Errorf("SPKIHash = %s, openssl says %s", got, want)
	}
	if browser.SPKIHash(cert.Leaf) == browser.SPKIHash(selfSigned(t).Leaf) {
		t.Error("two keys, one hash")
	}
}

// TestStartBadBrowser: a browser that cannot start is an error that says
// why, not a hang.
func TestStartBadBrowser(t *testing.T) {
	browser.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := browser.Start(ctx, browser.Options{Chromium: "/nonexistent/chromium"})
	if err == nil {
		b.Close()
		t.Fatal("started with a missing browser binary")
	}
	if !strings.Contains(err.Error(), "launch /nonexistent/chromium") {
		t.Errorf("error %q does not name the launch", err)
	}
}

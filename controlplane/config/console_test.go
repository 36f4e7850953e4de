package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConsoleDefaults(t *testing.T) {
	c, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	k := c.Console
	if !k.On() || k.Port != DefaultConsolePort || k.PlainHTTPPort() != DefaultConsoleHTTPPort ||
		k.SetupLinkTTL.D() != DefaultSetupLinkTTL || k.CertFile != "" || k.InspectionCA != "" {
		t.Fatalf("console defaults: %+v (http %d)", k, k.PlainHTTPPort())
	}
	off, err := Parse([]byte(good + "console:\n  enabled: false\n  http_port: 0\n  port: 8443\n  setup_link_ttl: 1h\n"))
	if err != nil {
		t.Fatal(err)
	}
	if off.Console.On() || off.Console.PlainHTTPPort() != 0 || off.Console.Port != 8443 || off.Console.SetupLinkTTL.D() != time.Hour {
		t.Fatalf("console keys not read: %+v", off.Console)
	}
	// Disabled, its ports do not clash with anything.
	if _, err := Parse([]byte(good + "admin:\n  port: 443\nconsole:\n  enabled: false\n")); err != nil {
		t.Fatalf("disabled console's port clashes: %v", err)
	}
}

// writeCA writes a PEM certificate (CA or not) and returns its path.
func writeCA(t *testing.T, dir string, isCA bool) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		BasicConstraintsValid: true, IsCA: isCA}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "ca.pem")
	if !isCA {
		p = filepath.Join(dir, "leaf.pem")
	}
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConsoleFiles(t *testing.T) {
	dir := t.TempDir()
	ca, leaf := writeCA(t, dir, true), writeCA(t, dir, false)
	cert := filepath.Join(dir, "c.crt")
	key := filepath.Join(dir, "c.key")
	loose := filepath.Join(dir, "loose.key")
	for p, mode := range map[string]os.FileMode{cert: 0o644, key: 0o600, loose: 0o640} {
		if err := os.WriteFile(p, []byte("x"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	doc := func(lines string) string { return good + "console:\n" + lines }
	ok, err := Parse([]byte(doc("  inspection_ca: " + ca + "\n  cert_file: " + cert + "\n  key_file: " + key + "\n")))
	if err != nil {
		t.Fatalf("good console files: %v", err)
	}
	if ok.Console.InspectionCA != ca || ok.Console.KeyFile != key {
		t.Fatalf("paths not kept: %+v", ok.Console)
	}
	if der, err := LoadInspectionCA(ca); err != nil || len(der) == 0 {
		t.Fatalf("LoadInspectionCA: %v", err)
	}
	for _, tt := range []struct{ name, doc, key, want string }{
		{"key mode", doc("  cert_file: " + cert + "\n  key_file: " + loose + "\n"), "console.key_file", "chmod 600"},
		{"key missing", doc("  cert_file: " + cert + "\n  key_file: " + dir + "/none.key\n"), "console.key_file", "no such file"},
		{"key without cert", doc("  key_file: " + key + "\n"), "console.cert_file", "required"},
		{"cert without key", doc("  cert_file: " + cert + "\n"), "console.key_file", "required"},
		{"relative cert", doc("  cert_file: c.crt\n  key_file: " + key + "\n"), "console.cert_file", "absolute"},
		{"ca not a CA", doc("  inspection_ca: " + leaf + "\n"), "console.inspection_ca", "not a CA"},
		{"ca not a cert", doc("  inspection_ca: " + cert + "\n"), "console.inspection_ca", "not a certificate"},
		{"ca missing", doc("  inspection_ca: " + dir + "/none.cer\n"), "console.inspection_ca", "no such file"},
		{"ttl too short", doc("  setup_link_ttl: 10s\n"), "console.setup_link_ttl", "between"},
		{"ttl too long", doc("  setup_link_ttl: 2000h\n"), "console.setup_link_ttl", "between"},
		{"port is admin port", doc("  port: 9080\n"), "console.port", "admin.port"},
		{"http port is tls listener", doc("  http_port: 15443\n"), "console.http_port", "listen.tls_port"},
		{"both ports equal", doc("  port: 8080\n  http_port: 8080\n"), "console.http_port", "console.port"},
		{"admin on 80", good + "admin:\n  port: 80\n", "console.http_port", "admin.port"},
		{"unknown key", doc("  portt: 1\n"), "(file)", "unknown key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			var ce *Error
			if !errors.As(err, &ce) || ce.Key != tt.key || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want key %s containing %q", err, tt.key, tt.want)
			}
		})
	}
}

func TestConsoleKeyOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root to chown the key file")
		}
		t.Skip("needs root to chown the key file")
	}
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key")
	for _, p := range []string{cert, key} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	doc := good + "console:\n  cert_file: " + cert + "\n  key_file: " + key + "\n"
	if _, err := Parse([]byte(doc)); err != nil {
		t.Fatalf("root-owned key: %v", err)
	}
	if err := os.Chown(key, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := Parse([]byte(doc)); err == nil || !strings.Contains(err.Error(), "not root") {
		t.Fatalf("key owned by nobody: err = %v", err)
	}

	// A daemon run as its own user (the packaged service) reads only a
	// key of its own: a root-owned one is refused with the fix.
	geteuid = func() int { return 65534 }
	defer func() { geteuid = os.Geteuid }()
	if _, err := Parse([]byte(doc)); err != nil {
		t.Fatalf("key owned by the daemon's uid: %v", err)
	}
	if err := os.Chown(key, 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := Parse([]byte(doc)); err == nil || !strings.Contains(err.Error(), "cloudsteer runs as uid 65534, which cannot read it: run chown 65534 "+key) {
		t.Fatalf("root-owned key, non-root daemon: err = %v", err)
	}
}

package upgrade

import (
	"bytes"
	"crypto/ed25519"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

func TestGenerateKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	pub, err := GenerateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{PrivateKeyFile: 0o600, PublicKeyFile: 0o644, ".": 0o700} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s mode %04o, want %04o", name, fi.Mode().Perm(), mode)
		}
	}
	priv, err := LoadPrivateKey(filepath.Join(dir, PrivateKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	pub2, err := LoadPublicKey(filepath.Join(dir, PublicKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(pub2) || !pub.Equal(priv.Public()) {
		t.Fatal("the key files do not hold the pair GenerateKey returned")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, PublicKeyFile)); !bytes.HasPrefix(b, []byte("-----BEGIN PUBLIC KEY-----\n")) {
		t.Fatalf("upgrade.pub: %q", b)
	}
	// Never overwrites a key.
	if _, err := GenerateKey(dir); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("second GenerateKey: %v", err)
	}
	if p, _ := LoadPublicKey(filepath.Join(dir, PublicKeyFile)); !p.Equal(pub) {
		t.Fatal("the second GenerateKey changed the key")
	}
}

func TestLoadPrivateKeyRefusesOpenMode(t *testing.T) {
	dir := t.TempDir()
	if _, err := GenerateKey(dir); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, PrivateKeyFile)
	if err := os.Chmod(p, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPrivateKey(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("LoadPrivateKey of a 0640 key: %v", err)
	}
}

func TestParseKeyRefuses(t *testing.T) {
	dir := t.TempDir()
	pub, _ := GenerateKey(dir)
	pubPEM, _ := PublicKeyPEM(pub)
	if _, err := ParsePrivateKey(pubPEM); err == nil {
		t.Error("ParsePrivateKey took a public key")
	}
	if _, err := ParsePublicKey([]byte("not pem")); err == nil {
		t.Error("ParsePublicKey took garbage")
	}
	privPEM, _ := os.ReadFile(filepath.Join(dir, PrivateKeyFile))
	if _, err := ParsePublicKey(privPEM); err == nil {
		t.Error("ParsePublicKey took a private key")
	}
}

// TestOpenSSLKeys: keys made by openssl work, both ways.
func TestOpenSSLKeys(t *testing.T) {
	privtest.RequireCommand(t, "openssl")
	dir := t.TempDir()
	key, pubf := filepath.Join(dir, "k.pem"), filepath.Join(dir, "p.pem")
	for _, args := range [][]string{
		{"genpkey", "-algorithm", "ed25519", "-out", key},
		{"pkey", "-in", key, "-pubout", "-out", pubf},
	} {
		if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %v: %v: %s", args, err, out)
		}
	}
	os.Chmod(key, 0o600)
	priv, err := LoadPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := LoadPublicKey(pubf)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("manifest")
	if !ed25519.Verify(pub, msg, ed25519.Sign(priv, msg)) {
		t.Fatal("openssl key pair does not verify")
	}
	// And openssl reads ours.
	kd := t.TempDir()
	if _, err := GenerateKey(kd); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("openssl", "pkey", "-pubin", "-in", filepath.Join(kd, PublicKeyFile), "-noout", "-text").CombinedOutput(); err != nil || !strings.Contains(string(out), "ED25519") {
		t.Fatalf("openssl reading upgrade.pub: %v: %s", err, out)
	}
}

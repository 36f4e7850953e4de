package upgrade

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
)

// Key file names that GenerateKey writes.
const (
	PrivateKeyFile = "upgrade.key"
	PublicKeyFile  = "upgrade.pub"
)

// Key files are PEM, as OpenSSL writes them, so that
// `openssl genpkey -algorithm ed25519 -out upgrade.key` and
// `openssl pkey -in upgrade.key -pubout -out upgrade.pub` make keys this
// package reads:
//
//	upgrade.key  "PRIVATE KEY": PKCS #8 (x509.MarshalPKCS8PrivateKey), mode 0600
//	upgrade.pub  "PUBLIC KEY":  PKIX (x509.MarshalPKIXPublicKey), mode 0644
const (
	pemPrivate = "PRIVATE KEY"
	pemPublic  = "PUBLIC KEY"
)

// GenerateKey makes a new ed25519 key pair in dir (created 0700 if
// missing): upgrade.key (0600) and upgrade.pub. It refuses to overwrite
// either file.
func GenerateKey(dir string) (ed25519.PublicKey, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	pk8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	pkix, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	keyPath, pubPath := filepath.Join(dir, PrivateKeyFile), filepath.Join(dir, PublicKeyFile)
	for _, p := range []string{keyPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return nil, fmt.Errorf("generate key: %s exists (not overwriting a key)", p)
		}
	}
	if err := writeNew(keyPath, pem.EncodeToMemory(&pem.Block{Type: pemPrivate, Bytes: pk8}), 0o600); err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	if err := writeNew(pubPath, pem.EncodeToMemory(&pem.Block{Type: pemPublic, Bytes: pkix}), 0o644); err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return pub, nil
}

// writeNew creates path (it must not exist) with mode, writes b and syncs.
func writeNew(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	// The umask may have taken bits away; never added any.
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// LoadPrivateKey reads an ed25519 private key file. It refuses a file
// that group or others may read or write (chmod 600 it).
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("load private key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("load private key: %s has mode %04o: group and others must have no access (chmod 600 %s)", path, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load private key: %w", err)
	}
	k, err := ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("load private key %s: %w", path, err)
	}
	return k, nil
}

// ParsePrivateKey parses a PEM "PRIVATE KEY" (PKCS #8) ed25519 key.
func ParsePrivateKey(b []byte) (ed25519.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != pemPrivate {
		return nil, fmt.Errorf("want a PEM %q block (PKCS #8, as openssl genpkey -algorithm ed25519 writes)", pemPrivate)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse PKCS #8: %w", err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key is %T, want ed25519", k)
	}
	return ek, nil
}

// LoadPublicKey reads an ed25519 public key file.
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load public key: %w", err)
	}
	k, err := ParsePublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("load public key %s: %w", path, err)
	}
	return k, nil
}

// ParsePublicKey parses a PEM "PUBLIC KEY" (PKIX) ed25519 key.
func ParsePublicKey(b []byte) (ed25519.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != pemPublic {
		return nil, fmt.Errorf("want a PEM %q block (PKIX, as openssl pkey -pubout writes)", pemPublic)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse PKIX: %w", err)
	}
	ek, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("key is %T, want ed25519", k)
	}
	return ek, nil
}

// PublicKeyPEM encodes pub as upgrade.pub holds it.
func PublicKeyPEM(pub ed25519.PublicKey) ([]byte, error) {
	pkix, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPublic, Bytes: pkix}), nil
}

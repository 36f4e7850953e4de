package browser

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// SPKIHash returns the base64 SHA-256 of cert's SubjectPublicKeyInfo: the
// form chromium's --ignore-certificate-errors-spki-list takes, and
// Options.SPKIPins.
func SPKIHash(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// ArtifactsDir returns the directory screenshots go to, created when
// missing: the CLOUDSTEER_ARTIFACTS environment variable, else
// e2e/out/screenshots of the module the working directory is in.
func ArtifactsDir() (string, error) {
	dir := os.Getenv("CLOUDSTEER_ARTIFACTS")
	if dir == "" {
		root, err := moduleRoot()
		if err != nil {
			return "", fmt.Errorf("find artifacts dir: %w", err)
		}
		dir = filepath.Join(root, "e2e", "out", "screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create artifacts dir: %w", err)
	}
	return dir, nil
}

// DriverDir returns the directory holding driver.mjs: dir when not empty,
// else the CLOUDSTEER_BROWSER_DRIVER environment variable, else
// e2e/browser of the module the working directory is in. It checks that
// driver.mjs and playwright-core are there.
func DriverDir(dir string) (string, error) { return driverDir(dir) }

func driverDir(dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv("CLOUDSTEER_BROWSER_DRIVER")
	}
	if dir == "" {
		root, err := moduleRoot()
		if err != nil {
			return "", fmt.Errorf("find browser driver: %w", err)
		}
		dir = filepath.Join(root, "e2e", "browser")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("find browser driver: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "driver.mjs")); err != nil {
		return "", fmt.Errorf("find browser driver: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core", "package.json")); err != nil {
		return "", fmt.Errorf("find playwright-core in %s (run scripts/install-deps.sh): %w", dir, err)
	}
	return dir, nil
}

// moduleRoot returns the nearest directory at or above the working
// directory that holds a go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod at or above the working directory")
		}
		dir = parent
	}
}

// Package tlscert provides the web console's HTTPS certificate and its
// plain-HTTP redirect.
//
// The console is served over HTTPS on the gateway's LAN addresses only,
// with either a certificate the gateway makes for itself at first start
// (LoadOrCreate: ECDSA P-256, self-signed, its SHA-256 fingerprint shown
// by the CLI so an admin can check what the browser shows) or a PEM pair
// the admin provides (LoadProvided). A Cert hands out a tls.Config whose
// GetCertificate reads the current certificate, so Replace swaps it for
// new connections without restarting the listener. Redirector is the
// handler for the plain-HTTP LAN port: it redirects to HTTPS on the same
// host and nothing else.
//
// The self-made certificate is valid for two years (Validity). Browsers
// cap publicly trusted certificates at 398 days, but that rule is for
// certificates chaining to a public root; a self-signed LAN certificate is
// accepted by an explicit exception or pinned by its fingerprint, and
// every change of it makes each admin re-accept and re-check the
// fingerprint. Two years keeps that rare while still bounding the life of
// a key that sits on a box in an office. It is renewed automatically at
// start when fewer than RenewBefore (30 days) remain.
package tlscert

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cloudsteer/cloudsteer/internal/hostheader"
)

const (
	// KeyFile and CertFile are the names of the self-made pair in the
	// directory given to LoadOrCreate.
	KeyFile  = "console.key"
	CertFile = "console.crt"

	// Validity is the lifetime of a self-made certificate (see the
	// package comment for why two years).
	Validity = 2 * 365 * 24 * time.Hour
	// RenewBefore: a self-made certificate expiring within this is
	// replaced at the next LoadOrCreate.
	RenewBefore = 30 * 24 * time.Hour
	// backdate covers a client clock slightly behind the gateway's.
	backdate = time.Hour
)

// Cert is the console's serving certificate. It is safe for concurrent
// use; Replace swaps what new handshakes get.
type Cert struct {
	cur atomic.Pointer[state]
}

type state struct {
	pair tls.Certificate
	leaf *x509.Certificate
	fp   string
}

// TLSConfig returns a server configuration (TLS 1.2 or later) whose
// GetCertificate returns the current certificate, so a Replace takes
// effect for the next handshake.
func (c *Cert) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return &c.cur.Load().pair, nil
		},
	}
}

// Replace makes c serve the certificate of n from the next handshake on.
func (c *Cert) Replace(n *Cert) { c.cur.Store(n.cur.Load()) }

// Fingerprint is the SHA-256 of the leaf certificate's DER bytes in the
// usual upper-case colon-hex form ("AB:CD:...").
func (c *Cert) Fingerprint() string { return c.cur.Load().fp }

// NotAfter is when the leaf certificate expires.
func (c *Cert) NotAfter() time.Time { return c.cur.Load().leaf.NotAfter }

// DNSNames are the leaf certificate's DNS subject alternative names.
func (c *Cert) DNSNames() []string { return slices.Clone(c.cur.Load().leaf.DNSNames) }

// IPAddresses are the leaf certificate's IP subject alternative names.
func (c *Cert) IPAddresses() []netip.Addr {
	var out []netip.Addr
	for _, ip := range c.cur.Load().leaf.IPAddresses {
		if a, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// Leaf returns the parsed leaf certificate (do not modify it).
func (c *Cert) Leaf() *x509.Certificate { return c.cur.Load().leaf }

// Fingerprint formats the SHA-256 of a DER certificate as upper-case
// colon-separated hex.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	var b strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(h[i : i+2])
	}
	return b.String()
}

// FingerprintFile returns the Fingerprint of the first certificate in a
// PEM file (for the CLI, which reads the certificate, never the key).
func FingerprintFile(certFile string) (string, error) {
	data, err := os.ReadFile(certFile)
	if err != nil {
		return "", fmt.Errorf("read certificate: %w", err)
	}
	ders, err := certBlocks(certFile, data)
	if err != nil {
		return "", err
	}
	return Fingerprint(ders[0]), nil
}

// VerifyPinned returns a tls.Config.VerifyPeerCertificate function that
// accepts only a peer whose leaf certificate has the given fingerprint
// (as Fingerprint prints it; case and separators are ignored). Use it with
// InsecureSkipVerify, which turns off only the chain check it replaces.
func VerifyPinned(fingerprint string) func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
	want := normFP(fingerprint)
	return func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
		if len(rawCerts) == 0 {
			return errors.New("tlscert: peer sent no certificate")
		}
		if got := Fingerprint(rawCerts[0]); normFP(got) != want {
			return fmt.Errorf("tlscert: peer certificate fingerprint %s is not the pinned one", got)
		}
		return nil
	}
}

func normFP(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= '0' && r <= '9', r >= 'A' && r <= 'F':
			return r
		case r >= 'a' && r <= 'f':
			return r - 'a' + 'A'
		}
		return -1
	}, s)
}

// LoadOrCreate returns the gateway's own console certificate kept in dir
// (KeyFile, mode 0600, and CertFile, mode 0644), valid for exactly names
// (DNS names such as "cloudsteer.lan") and addrs (the LAN addresses).
//
// At first start, or when the pair on disk no longer fits, it makes a new
// ECDSA P-256 self-signed certificate with a random serial, valid for
// Validity, and writes both files atomically (temp file and rename),
// replacing the old ones. "No longer fits" is: the names or addresses
// differ from those asked for (in either direction, so a cert never
// claims an address the gateway gave up), it expires within RenewBefore
// or is not yet valid by now(), or one file of the pair is missing or the
// key does not match the certificate (what a crash between the two
// renames leaves). A key file readable by group or others is refused, and
// a file that is not valid PEM is an error naming it (delete the pair to
// have a new one made); neither is overwritten. now nil means time.Now.
func LoadOrCreate(dir string, names []string, addrs []netip.Addr, now func() time.Time) (*Cert, error) {
	if now == nil {
		now = time.Now
	}
	names, addrs, err := normSANs(names, addrs)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create certificate dir: %w", err)
	}
	keyPath, certPath := filepath.Join(dir, KeyFile), filepath.Join(dir, CertFile)
	c, err := loadPair(certPath, keyPath)
	switch {
	case errors.Is(err, errMissing), errors.Is(err, errMismatch):
		// made again below
	case err != nil:
		return nil, err
	default:
		leaf := c.Leaf()
		t := now()
		if slices.Equal(leaf.DNSNames, names) && slices.Equal(c.IPAddresses(), addrs) &&
			!t.Before(leaf.NotBefore) && t.Add(RenewBefore).Before(leaf.NotAfter) {
			return c, nil
		}
	}
	return create(certPath, keyPath, names, addrs, now())
}

var (
	errMissing  = errors.New("missing")
	errMismatch = errors.New("mismatched pair")
)

// normSANs validates, lowercases, sorts and deduplicates the SANs in the
// order x509 will hold them, so they compare with a loaded certificate.
func normSANs(names []string, addrs []netip.Addr) ([]string, []netip.Addr, error) {
	var ns []string
	for _, n := range names {
		n = strings.TrimSuffix(strings.ToLower(n), ".")
		if !hostheader.ValidName(n) {
			return nil, nil, fmt.Errorf("tlscert: %q is not a valid DNS name for the certificate", n)
		}
		ns = append(ns, n)
	}
	var as []netip.Addr
	for _, a := range addrs {
		if !a.IsValid() || a.Zone() != "" {
			return nil, nil, fmt.Errorf("tlscert: %q is not an address a certificate can hold", a)
		}
		as = append(as, a.Unmap())
	}
	if len(ns)+len(as) == 0 {
		return nil, nil, errors.New("tlscert: a certificate needs at least one LAN address or name")
	}
	slices.Sort(ns)
	slices.SortFunc(as, netip.Addr.Compare)
	return slices.Compact(ns), slices.Compact(as), nil
}

// loadPair reads the self-made pair; errMissing when either file is
// absent, errMismatch when the key is not the certificate's.
func loadPair(certPath, keyPath string) (*Cert, error) {
	keyPEM, err := readKey(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errMissing
	}
	if err != nil {
		return nil, err
	}
	certPEM, err := os.ReadFile(certPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errMissing
	}
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	hint := "; delete " + certPath + " and " + keyPath + " to have a new pair made at next start"
	c, err := parsePair(certPath, certPEM, keyPath, keyPEM)
	if errors.Is(err, errMismatch) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%w%s", err, hint)
	}
	return c, nil
}

// readKey reads a private key file, refusing one that group or others
// may read (secrets are 0600). The mode is taken from the opened file.
func readKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("open key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("tlscert: key %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("tlscert: key %s has mode %04o, readable by group or others; private keys must be 0600 (chmod 600 %s)", path, perm, path)
	}
	var b bytes.Buffer
	if _, err := b.ReadFrom(f); err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	return b.Bytes(), nil
}

// certBlocks returns the DER of every CERTIFICATE block, leaf first.
func certBlocks(certPath string, data []byte) ([][]byte, error) {
	var ders [][]byte
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			ders = append(ders, b.Bytes)
		}
	}
	if len(ders) == 0 {
		return nil, fmt.Errorf("tlscert: %s holds no PEM CERTIFICATE block", certPath)
	}
	return ders, nil
}

// parsePair checks both files' PEM and that the key is the certificate's.
// Errors name the file and never include key material.
func parsePair(certPath string, certPEM []byte, keyPath string, keyPEM []byte) (*Cert, error) {
	ders, err := certBlocks(certPath, certPEM)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(ders[0])
	if err != nil {
		return nil, fmt.Errorf("tlscert: %s: parse certificate: %w", certPath, err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil || !strings.HasSuffix(kb.Type, "PRIVATE KEY") {
		return nil, fmt.Errorf("tlscert: %s holds no PEM PRIVATE KEY block", keyPath)
	}
	key, err := parseKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("tlscert: %s: parse private key: %w", keyPath, err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(leaf.PublicKey) {
		return nil, fmt.Errorf("tlscert: key %s is not the key of certificate %s (%w)", keyPath, certPath, errMismatch)
	}
	c := &Cert{}
	c.cur.Store(&state{
		pair: tls.Certificate{Certificate: ders, PrivateKey: key, Leaf: leaf},
		leaf: leaf,
		fp:   Fingerprint(ders[0]),
	})
	return c, nil
}

func parseKey(der []byte) (crypto.Signer, error) {
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
		return nil, errors.New("unsupported key type")
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	return nil, errors.New("not a PKCS#8, SEC 1 (EC) or PKCS#1 (RSA) key")
}

// LoadProvided loads an admin-provided PEM pair: certFile (the leaf
// first, then any intermediates) and keyFile (PKCS#8, EC or RSA). It
// checks that the key is the certificate's, that the certificate is valid
// now (not expired, not yet valid is an error too), and that the key file
// is not readable by group or others.
func LoadProvided(certFile, keyFile string) (*Cert, error) {
	keyPEM, err := readKey(keyFile)
	if err != nil {
		return nil, err
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	c, err := parsePair(certFile, certPEM, keyFile, keyPEM)
	if err != nil {
		return nil, err
	}
	leaf, t := c.Leaf(), time.Now()
	if t.After(leaf.NotAfter) {
		return nil, fmt.Errorf("tlscert: certificate %s expired on %s", certFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if t.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("tlscert: certificate %s is not valid before %s", certFile, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return c, nil
}

// create makes and writes a new self-signed pair (key first, so a crash
// between the renames leaves a mismatch that the next start repairs).
func create(certPath, keyPath string, names []string, addrs []netip.Addr, t time.Time) (*Cert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}
	serial.Add(serial, big.NewInt(1)) // positive, never zero
	cn := "cloudsteer console"
	if len(names) > 0 {
		cn = names[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"cloudsteer gateway (self-signed)"}},
		NotBefore:             t.Add(-backdate),
		NotAfter:              t.Add(Validity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              names,
	}
	for _, a := range addrs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, a.AsSlice())
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := writeAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("write key: %w", err)
	}
	if err := writeAtomic(certPath, certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("write certificate: %w", err)
	}
	return parsePair(certPath, certPEM, keyPath, keyPEM)
}

// writeAtomic writes data to a temp file in path's directory with mode,
// syncs it and renames it over path, then syncs the directory.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

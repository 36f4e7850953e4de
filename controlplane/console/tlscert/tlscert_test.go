package tlscert

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	lanAddrs = []netip.Addr{netip.MustParseAddr("10.10.0.1"), netip.MustParseAddr("fd00:10::1")}
	lanNames = []string{"cloudsteer.lan", "gw.office.lan"}
	t0       = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
)

func clock(t time.Time) func() time.Time { return func() time.Time { return t } }

func mustLoad(tb testing.TB, dir string, names []string, addrs []netip.Addr, now time.Time) *Cert {
	tb.Helper()
	c, err := LoadOrCreate(dir, names, addrs, clock(now))
	if err != nil {
		tb.Fatalf("LoadOrCreate: %v", err)
	}
	return c
}

func fileMode(tb testing.TB, path string) os.FileMode {
	tb.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestCreateThenReuse(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "console")
	c1 := mustLoad(t, dir, lanNames, lanAddrs, t0)

	leaf := c1.Leaf()
	if !slices.Equal(c1.DNSNames(), lanNames) {
		t.Errorf("DNS SANs = %v, want %v", c1.DNSNames(), lanNames)
	}
	if !slices.Equal(c1.IPAddresses(), lanAddrs) {
		t.Errorf("IP SANs = %v, want %v", c1.IPAddresses(), lanAddrs)
	}
	if k, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("public key %T, want ECDSA P-256", leaf.PublicKey)
	}
	if got := c1.NotAfter().Sub(t0); got != Validity {
		t.Errorf("validity from now = %v, want %v", got, Validity)
	}
	if !leaf.NotBefore.Before(t0) {
		t.Errorf("NotBefore %v not before now %v", leaf.NotBefore, t0)
	}
	if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() < 64 {
		t.Errorf("serial %v is not a large positive random number", leaf.SerialNumber)
	}
	if err := leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature); err != nil ||
		string(leaf.RawIssuer) != string(leaf.RawSubject) {
		t.Errorf("not self-signed: %v", err)
	}
	if len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || leaf.IsCA {
		t.Errorf("ExtKeyUsage %v IsCA %v, want server auth leaf", leaf.ExtKeyUsage, leaf.IsCA)
	}
	if m := fileMode(t, filepath.Join(dir, KeyFile)); m != 0o600 {
		t.Errorf("key mode %04o, want 0600", m)
	}
	if m := fileMode(t, filepath.Join(dir, CertFile)); m != 0o644 {
		t.Errorf("cert mode %04o, want 0644", m)
	}
	if fp, err := FingerprintFile(filepath.Join(dir, CertFile)); err != nil || fp != c1.Fingerprint() {
		t.Errorf("FingerprintFile = %q, %v; want %q", fp, err, c1.Fingerprint())
	}
	if len(c1.Fingerprint()) != 32*3-1 || strings.Count(c1.Fingerprint(), ":") != 31 {
		t.Errorf("fingerprint %q is not colon-hex SHA-256", c1.Fingerprint())
	}

	// Later starts (unordered, duplicated, differently cased input) reuse it.
	c2 := mustLoad(t, dir, []string{"GW.office.lan.", "cloudsteer.lan", "cloudsteer.lan"},
		[]netip.Addr{lanAddrs[1], lanAddrs[0], netip.MustParseAddr("::ffff:10.10.0.1")}, t0.Add(300*24*time.Hour))
	if c2.Fingerprint() != c1.Fingerprint() {
		t.Errorf("second start made a new certificate: %s != %s", c2.Fingerprint(), c1.Fingerprint())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Errorf("dir holds %d entries, want only the pair (no temp files left)", len(ents))
	}
}

func TestRegenerated(t *testing.T) {
	for _, tc := range []struct {
		name  string
		names []string
		addrs []netip.Addr
		at    time.Time
	}{
		{"address added", lanNames, append(slices.Clone(lanAddrs), netip.MustParseAddr("10.20.0.1")), t0},
		{"address changed", lanNames, []netip.Addr{netip.MustParseAddr("10.10.0.2"), lanAddrs[1]}, t0},
		{"address removed", lanNames, lanAddrs[:1], t0},
		{"name changed", []string{"cloudsteer.lan"}, lanAddrs, t0},
		{"expires within 30 days", lanNames, lanAddrs, t0.Add(Validity - RenewBefore + time.Minute)},
		{"expired", lanNames, lanAddrs, t0.Add(Validity + time.Hour)},
		{"not yet valid (clock went back)", lanNames, lanAddrs, t0.Add(-2 * backdate)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			c1 := mustLoad(t, dir, lanNames, lanAddrs, t0)
			c2 := mustLoad(t, dir, tc.names, tc.addrs, tc.at)
			if c2.Fingerprint() == c1.Fingerprint() {
				t.Fatal("certificate was reused")
			}
			wantNames, wantAddrs, _ := normSANs(tc.names, tc.addrs)
			if !slices.Equal(c2.DNSNames(), wantNames) || !slices.Equal(c2.IPAddresses(), wantAddrs) {
				t.Errorf("new SANs %v %v, want %v %v", c2.DNSNames(), c2.IPAddresses(), wantNames, wantAddrs)
			}
			if c2.NotAfter() != tc.at.Add(Validity) {
				t.Errorf("NotAfter %v, want %v", c2.NotAfter(), tc.at.Add(Validity))
			}
			// The files now hold the new pair, and a next start keeps it.
			c3 := mustLoad(t, dir, tc.names, tc.addrs, tc.at)
			if c3.Fingerprint() != c2.Fingerprint() {
				t.Errorf("files do not hold the new certificate")
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 2 {
				t.Errorf("dir holds %d entries, want 2", len(ents))
			}
		})
	}
	t.Run("just outside the renewal window is kept", func(t *testing.T) {
		dir := t.TempDir()
		c1 := mustLoad(t, dir, lanNames, lanAddrs, t0)
		c2 := mustLoad(t, dir, lanNames, lanAddrs, t0.Add(Validity-RenewBefore-time.Minute))
		if c2.Fingerprint() != c1.Fingerprint() {
			t.Error("renewed too early")
		}
	})
}

func TestPartialPairRepaired(t *testing.T) {
	for _, remove := range []string{KeyFile, CertFile} {
		t.Run("without "+remove, func(t *testing.T) {
			dir := t.TempDir()
			c1 := mustLoad(t, dir, lanNames, lanAddrs, t0)
			os.Remove(filepath.Join(dir, remove))
			if c2 := mustLoad(t, dir, lanNames, lanAddrs, t0); c2.Fingerprint() == c1.Fingerprint() {
				t.Error("old certificate kept although a file was missing")
			}
		})
	}
	t.Run("key of another pair (crash between renames)", func(t *testing.T) {
		dir, other := t.TempDir(), t.TempDir()
		c1 := mustLoad(t, dir, lanNames, lanAddrs, t0)
		mustLoad(t, other, lanNames, lanAddrs, t0)
		copyFile(t, filepath.Join(other, KeyFile), filepath.Join(dir, KeyFile), 0o600)
		c2 := mustLoad(t, dir, lanNames, lanAddrs, t0)
		if c2.Fingerprint() == c1.Fingerprint() {
			t.Error("mismatched pair kept")
		}
	})
}

func copyFile(tb testing.TB, from, to string, mode os.FileMode) {
	tb.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		tb.Fatal(err)
	}
	if err := os.Chmod(to, mode); err != nil {
		tb.Fatal(err)
	}
}

func TestKeyPermissionsRefused(t *testing.T) {
	for _, mode := range []os.FileMode{0o640, 0o604, 0o666} {
		dir := t.TempDir()
		c1 := mustLoad(t, dir, lanNames, lanAddrs, t0)
		key := filepath.Join(dir, KeyFile)
		before, _ := os.ReadFile(key)
		os.Chmod(key, mode)
		_, err := LoadOrCreate(dir, lanNames, lanAddrs, clock(t0))
		if err == nil || !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "0600") {
			t.Errorf("mode %04o: err = %v, want a refusal naming %s and 0600", mode, err, key)
		}
		// Refused, not replaced: the admin's fix (chmod) brings it back.
		if after, _ := os.ReadFile(key); string(after) != string(before) {
			t.Errorf("mode %04o: key file was overwritten", mode)
		}
		os.Chmod(key, 0o600)
		if c2 := mustLoad(t, dir, lanNames, lanAddrs, t0); c2.Fingerprint() != c1.Fingerprint() {
			t.Errorf("mode %04o: after chmod 600 the pair was not reused", mode)
		}
	}
}

func TestCorruptFiles(t *testing.T) {
	for _, tc := range []struct {
		file, content string
		want          string
	}{
		{CertFile, "garbage\n", "no PEM CERTIFICATE block"},
		{CertFile, "", "no PEM CERTIFICATE block"},
		{CertFile, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "parse certificate"},
		{KeyFile, "garbage\n", "no PEM PRIVATE KEY block"},
		{KeyFile, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "parse private key"},
		{KeyFile, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "no PEM PRIVATE KEY block"},
	} {
		t.Run(tc.file+" "+tc.want, func(t *testing.T) {
			dir := t.TempDir()
			mustLoad(t, dir, lanNames, lanAddrs, t0)
			path := filepath.Join(dir, tc.file)
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadOrCreate(dir, lanNames, lanAddrs, clock(t0))
			if err == nil {
				t.Fatal("corrupt file accepted")
			}
			for _, w := range []string{path, tc.want, "delete"} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if b, _ := os.ReadFile(path); string(b) != tc.content {
				t.Error("corrupt file was overwritten")
			}
		})
	}
}

func TestBadInput(t *testing.T) {
	for _, tc := range []struct {
		names []string
		addrs []netip.Addr
	}{
		{nil, nil},
		{[]string{"evil.com/x"}, nil},
		{[]string{"10.10.0.1"}, nil},
		{nil, []netip.Addr{{}}},
		{nil, []netip.Addr{netip.MustParseAddr("fe80::1%eth0")}},
	} {
		dir := t.TempDir()
		if _, err := LoadOrCreate(dir, tc.names, tc.addrs, nil); err == nil {
			t.Errorf("%v %v accepted", tc.names, tc.addrs)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("%v %v: files written for refused input", tc.names, tc.addrs)
		}
	}
}

// writePair makes a self-signed RSA-free ECDSA pair with the given
// validity window in dir and returns the file paths.
func writePair(tb testing.TB, dir string, notBefore, notAfter time.Time) (certFile, keyFile string) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "console.example.lan"},
		DNSNames: []string{"console.example.lan"}, NotBefore: notBefore, NotAfter: notAfter,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "admin.crt"), filepath.Join(dir, "admin.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600)
	return certFile, keyFile
}

func TestLoadProvided(t *testing.T) {
	now := time.Now()
	t.Run("good", func(t *testing.T) {
		cf, kf := writePair(t, t.TempDir(), now.Add(-time.Hour), now.Add(90*24*time.Hour))
		c, err := LoadProvided(cf, kf)
		if err != nil {
			t.Fatal(err)
		}
		if fp, _ := FingerprintFile(cf); c.Fingerprint() != fp || !slices.Equal(c.DNSNames(), []string{"console.example.lan"}) {
			t.Errorf("fingerprint %s (file %s), names %v", c.Fingerprint(), fp, c.DNSNames())
		}
	})
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) (cf, kf string)
		want  string
	}{
		{"key of another certificate", func(t *testing.T) (string, string) {
			cf, _ := writePair(t, t.TempDir(), now.Add(-time.Hour), now.Add(time.Hour))
			_, kf := writePair(t, t.TempDir(), now.Add(-time.Hour), now.Add(time.Hour))
			return cf, kf
		}, "is not the key of certificate"},
		{"expired", func(t *testing.T) (string, string) {
			return writePair(t, t.TempDir(), now.Add(-48*time.Hour), now.Add(-time.Hour))
		}, "expired on"},
		{"not yet valid", func(t *testing.T) (string, string) {
			return writePair(t, t.TempDir(), now.Add(time.Hour), now.Add(48*time.Hour))
		}, "not valid before"},
		{"key readable by group", func(t *testing.T) (string, string) {
			cf, kf := writePair(t, t.TempDir(), now.Add(-time.Hour), now.Add(time.Hour))
			os.Chmod(kf, 0o640)
			return cf, kf
		}, "must be 0600"},
		{"cert and key swapped", func(t *testing.T) (string, string) {
			cf, kf := writePair(t, t.TempDir(), now.Add(-time.Hour), now.Add(time.Hour))
			os.Chmod(cf, 0o600)
			return kf, cf
		}, "no PEM"},
		{"missing key", func(t *testing.T) (string, string) {
			cf, kf := writePair(t, t.TempDir(), now.Add(-time.Hour), now.Add(time.Hour))
			os.Remove(kf)
			return cf, kf
		}, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cf, kf := tc.setup(t)
			_, err := LoadProvided(cf, kf)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// listenTLS serves c on a loopback port: each connection completes the
// handshake and gets "hello\n".
func listenTLS(tb testing.TB, c *Cert) string {
	tb.Helper()
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tln := tls.NewListener(ln, c.TLSConfig())
	tb.Cleanup(func() { tln.Close() })
	go func() {
		for {
			conn, err := tln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(2 * time.Second))
				if err := conn.(*tls.Conn).Handshake(); err == nil {
					io.WriteString(conn, "hello\n")
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func dialPinned(addr, fp string, maxVersion uint16) (string, error) {
	d := tls.Dialer{
		NetDialer: &net.Dialer{Timeout: 2 * time.Second},
		Config: &tls.Config{
			InsecureSkipVerify:    true, // replaced by the pin below
			VerifyPeerCertificate: VerifyPinned(fp),
			ServerName:            "cloudsteer.lan",
			MinVersion:            tls.VersionTLS10,
			MaxVersion:            maxVersion,
		},
	}
	d.NetDialer.SetMultipathTCP(false)
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	b, err := io.ReadAll(conn)
	if err != nil && !errors.Is(err, io.EOF) {
		return string(b), err
	}
	return strings.TrimSpace(string(b)), nil
}

func TestHandshakePinned(t *testing.T) {
	c := mustLoad(t, t.TempDir(), lanNames, []netip.Addr{netip.MustParseAddr("127.0.0.1")}, time.Now())
	other := mustLoad(t, t.TempDir(), lanNames, lanAddrs, time.Now())
	addr := listenTLS(t, c)

	if got, err := dialPinned(addr, c.Fingerprint(), 0); err != nil || got != "hello" {
		t.Fatalf("pinned to the served fingerprint: %q, %v", got, err)
	}
	// Case and separators of the pin do not matter.
	if _, err := dialPinned(addr, strings.ToLower(strings.ReplaceAll(c.Fingerprint(), ":", "")), 0); err != nil {
		t.Errorf("pin without colons, lower case: %v", err)
	}
	if got, err := dialPinned(addr, other.Fingerprint(), 0); err == nil || !strings.Contains(err.Error(), "not the pinned one") {
		t.Errorf("pinned to another fingerprint: %q, %v; want a pin failure", got, err)
	}
	if _, err := dialPinned(addr, "", 0); err == nil {
		t.Error("empty pin accepted")
	}
	// Go's own server default is TLS 1.2 too; turn that default off so the
	// test sees what the package's MinVersion does.
	t.Setenv("GODEBUG", "tls10server=1")
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		if _, err := dialPinned(addr, c.Fingerprint(), v); err == nil {
			t.Errorf("TLS version %x client accepted", v)
		}
	}
	if _, err := dialPinned(addr, c.Fingerprint(), tls.VersionTLS12); err != nil {
		t.Errorf("TLS 1.2 client refused: %v", err)
	}

	// A reload swaps the certificate for new handshakes on the same listener.
	old := c.Fingerprint()
	c.Replace(other)
	if _, err := dialPinned(addr, other.Fingerprint(), 0); err != nil {
		t.Errorf("after Replace, pinned to the new certificate: %v", err)
	}
	if _, err := dialPinned(addr, old, 0); err == nil {
		t.Error("after Replace, the old certificate is still served")
	}
	if c.Fingerprint() != other.Fingerprint() {
		t.Errorf("Fingerprint() after Replace = %s, want %s", c.Fingerprint(), other.Fingerprint())
	}
}

package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/dataplane/resolver/transport"
)

const encDNS = `
dns:
  upstreams: ["tls://dns.example", "https://DoH.Example/dns-query", "quic://192.0.2.9:8853", "198.51.100.53"]
  bootstrap:
    dns.example: [192.0.2.1, "2001:db8::1"]
    doh.example.: [192.0.2.2]
`

func encDoc(dns string) string {
	return strings.Replace(good, "dns:\n  upstreams: [\"198.51.100.53\", \"[2001:db8:51::53]:5353\"]\n", strings.TrimPrefix(dns, "\n"), 1)
}

func TestParseEncryptedUpstreams(t *testing.T) {
	c, err := Parse([]byte(encDoc(encDNS)))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"tls://dns.example:853", "https://doh.example:443/dns-query", "quic://192.0.2.9:8853", "198.51.100.53:53"}
	if got := strings.Join(c.DNS.UpstreamNames(), " "); got != strings.Join(want, " ") {
		t.Fatalf("upstreams = %s", got)
	}
	sv := c.DNS.Servers()
	if sv[0].Kind != transport.TLS || len(sv[0].Addrs) != 2 || sv[0].Addrs[1].String() != "2001:db8::1" {
		t.Errorf("tls upstream = %+v", sv[0])
	}
	if sv[1].Kind != transport.HTTPS || len(sv[1].Addrs) != 1 || sv[1].Addrs[0].String() != "192.0.2.2" {
		t.Errorf("https upstream = %+v", sv[1])
	}
	if sv[2].Kind != transport.QUIC || sv[2].Addrs[0].String() != "192.0.2.9" {
		t.Errorf("quic upstream = %+v", sv[2])
	}
	if c.DNS.RootCAs() != nil {
		t.Errorf("roots without ca_file")
	}
}

func TestParseCAFile(t *testing.T) {
	dir := t.TempDir()
	pemPath := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(pemPath, testCAPEM(t), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Parse([]byte(encDoc(encDNS + "  ca_file: " + pemPath + "\n")))
	if err != nil {
		t.Fatal(err)
	}
	if c.DNS.RootCAs() == nil {
		t.Fatal("no roots from dns.ca_file")
	}
	junk := filepath.Join(dir, "junk.pem")
	os.WriteFile(junk, []byte("not pem"), 0o644)
	if _, err := Parse([]byte(encDoc(encDNS + "  ca_file: " + junk + "\n"))); err == nil || !strings.Contains(err.Error(), "dns.ca_file") {
		t.Fatalf("junk ca_file: %v", err)
	}
}

func TestParseEncryptedUpstreamsBad(t *testing.T) {
	for _, tc := range []struct{ name, dns, key, says string }{
		{"no bootstrap", "dns:\n  upstreams: [\"tls://dns.example\"]\n", "dns.upstreams[0]", "dns.bootstrap"},
		{"bootstrap for another name", "dns:\n  upstreams: [\"tls://dns.example\"]\n  bootstrap:\n    other.example: [192.0.2.1]\n", "dns.upstreams[0]", "never looked up"},
		{"unused bootstrap", "dns:\n  upstreams: [\"tls://192.0.2.1\"]\n  bootstrap:\n    dns.example: [192.0.2.1]\n", "dns.bootstrap.dns.example", "no upstream"},
		{"bad bootstrap address", "dns:\n  upstreams: [\"tls://dns.example\"]\n  bootstrap:\n    dns.example: [dns.example]\n", "dns.bootstrap.dns.example[0]", "not an IP"},
		{"empty bootstrap", "dns:\n  upstreams: [\"tls://dns.example\"]\n  bootstrap:\n    dns.example: []\n", "dns.bootstrap.dns.example", "no addresses"},
		{"address as bootstrap key", "dns:\n  upstreams: [\"tls://192.0.2.1\"]\n  bootstrap:\n    192.0.2.1: [192.0.2.1]\n", "dns.bootstrap.192.0.2.1", "address"},
		{"unknown scheme", "dns:\n  upstreams: [\"198.51.100.53\", \"dnscrypt://x\"]\n", "dns.upstreams[1]", "unknown scheme"},
		{"h3 without bootstrap", "dns:\n  upstreams: [\"h3://dns.example/dns-query\"]\n", "dns.upstreams[0]", "dns.bootstrap"},
		{"path on tls", "dns:\n  upstreams: [\"tls://192.0.2.1/dns-query\"]\n", "dns.upstreams[0]", "path"},
		{"fragment bootstrap", "dns:\n  upstreams: [\"tls://dns.example#192.0.2.1\"]\n", "dns.upstreams[0]", "dns.bootstrap"},
		{"ca file for plain", "dns:\n  upstreams: [\"198.51.100.53\"]\n  ca_file: /etc/hostname\n", "dns.ca_file", "only used"},
		{"missing ca file", "dns:\n  upstreams: [\"tls://192.0.2.1\"]\n  ca_file: /nonexistent/ca.pem\n", "dns.ca_file", "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(encDoc(tc.dns)))
			e, ok := err.(*Error)
			if !ok || e.Key != tc.key || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("got %v, want key %s saying %q", err, tc.key, tc.says)
			}
		})
	}
}

// testCAPEM makes a self-signed CA certificate in PEM.
func testCAPEM(tb testing.TB) []byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

package store

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

func TestClientNames(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	for client, name := range map[string]string{
		"192.0.2.7":         "front desk",
		"::ffff:192.0.2.8":  "printer",
		"AA:BB:CC:DD:EE:0F": "受付のPC",
		"2001:db8::1":       "nas",
	} {
		if err := s.SetClientName(client, name); err != nil {
			t.Fatalf("SetClientName(%s): %v", client, err)
		}
	}
	got, err := s.ClientNames()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"192.0.2.7": "front desk", "192.0.2.8": "printer", "aa:bb:cc:dd:ee:0f": "受付のPC", "2001:db8::1": "nas"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("names = %v, want %v", got, want)
	}
	if err := s.SetClientName("192.0.2.7", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.SetClientName("aa-bb-cc-dd-ee-0f", "reception"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openStore(t, dir)
	got, _ = s.ClientNames()
	if _, ok := got["192.0.2.7"]; ok || got["aa:bb:cc:dd:ee:0f"] != "reception" || len(got) != 3 {
		t.Fatalf("after remove and rename, reopened: %v", got)
	}
	for _, tc := range []struct{ client, name string }{
		{"pc.example", "x"},
		{"fe80::1%eth0", "x"},
		{"", "x"},
		{"192.0.2.9", strings.Repeat("n", MaxClientNameLen+1)},
		{"192.0.2.9", " padded"},
		{"192.0.2.9", "line\nbreak"},
		{"192.0.2.9", "bidi\u202ename"},
		{"192.0.2.9", "\xff"},
	} {
		if err := s.SetClientName(tc.client, tc.name); !errors.Is(err, model.ErrInvalid) {
			t.Errorf("SetClientName(%q, %q) = %v, want ErrInvalid", tc.client, tc.name, err)
		}
	}
	if err := s.SetClientName("192.0.2.9", strings.Repeat("名", MaxClientNameLen)); err != nil {
		t.Errorf("a name of %d characters: %v", MaxClientNameLen, err)
	}
}

func TestClientNamesBounded(t *testing.T) {
	s := openStore(t, t.TempDir())
	for i := range MaxClientNames {
		if err := s.SetClientName(fmt.Sprintf("10.0.%d.%d", i/256, i%256), "c"); err != nil {
			t.Fatalf("name %d: %v", i, err)
		}
	}
	if err := s.SetClientName("10.9.9.9", "one too many"); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("name %d: err = %v, want ErrInvalid", MaxClientNames+1, err)
	}
	if err := s.SetClientName("10.0.0.0", "renamed"); err != nil {
		t.Fatalf("renaming at the bound: %v", err)
	}
}

func testCert(t *testing.T, isCA bool) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "Inspection CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		BasicConstraintsValid: true, IsCA: isCA}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestInspectionCA(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	if _, ok, err := s.InspectionCA(); ok || err != nil {
		t.Fatalf("fresh store has a CA: %v %v", ok, err)
	}
	ca, leaf := testCert(t, true), testCert(t, false)
	pemCA := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca})
	for name, bad := range map[string][]byte{
		"leaf":        leaf,
		"garbage":     []byte("not a cert"),
		"empty":       nil,
		"two in PEM":  append(append([]byte{}, pemCA...), pemCA...),
		"key in PEM":  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}),
		"too large":   make([]byte, model.MaxCACertBytes+1),
		"trailing":    append(append([]byte{}, pemCA...), "junk"...),
		"leaf in PEM": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf}),
	} {
		if _, err := s.PutInspectionCA(bad); !errors.Is(err, model.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
	if _, ok, _ := s.InspectionCA(); ok {
		t.Fatal("a refused upload was stored")
	}
	for name, in := range map[string][]byte{"PEM": pemCA, "DER": ca} {
		der, err := s.PutInspectionCA(in)
		if err != nil || string(der) != string(ca) {
			t.Fatalf("%s upload: %v", name, err)
		}
	}
	s.Close()
	s = openStore(t, dir)
	if der, ok, err := s.InspectionCA(); !ok || err != nil || string(der) != string(ca) {
		t.Fatalf("reopened: ok %v err %v same %v", ok, err, string(der) == string(ca))
	}
}

func TestCheckSetupToken(t *testing.T) {
	s := openStore(t, t.TempDir())
	now := t0
	s.now = func() time.Time { return now }
	if err := s.CheckSetupToken("x"); !errors.Is(err, ErrSetupToken) {
		t.Fatalf("no token made: %v", err)
	}
	tok, err := s.CreateSetupToken(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // checking does not use it up
		if err := s.CheckSetupToken(tok); err != nil {
			t.Fatalf("live token: %v", err)
		}
	}
	// The last character changed (to another one: a token ending in "A"
	// made this check pass the real token once in 64 runs, CI saw it).
	wrong := tok[:len(tok)-1] + "A"
	if tok[len(tok)-1] == 'A' {
		wrong = tok[:len(tok)-1] + "B"
	}
	if err := s.CheckSetupToken(wrong); !errors.Is(err, ErrSetupToken) || !errors.Is(err, model.ErrForbidden) {
		t.Fatalf("wrong token: %v", err)
	}
	if err := s.CheckSetupToken(""); !errors.Is(err, ErrSetupToken) {
		t.Fatalf("empty token: %v", err)
	}
	now = t0.Add(time.Hour)
	if err := s.CheckSetupToken(tok); !errors.Is(err, ErrSetupToken) {
		t.Fatalf("expired token: %v", err)
	}
	now = t0
	if err := s.SetupAdmin(tok, testAdmin()); err != nil {
		t.Fatalf("SetupAdmin after checks: %v", err)
	}
	if err := s.CheckSetupToken(tok); !errors.Is(err, ErrAdminExists) {
		t.Fatalf("after setup: %v", err)
	}
}

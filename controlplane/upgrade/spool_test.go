package upgrade

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReceiveAndInstallSpool(t *testing.T) {
	pub, priv := testKey(t)
	fs := newFakeSystem(t, "a", "1")
	spool := filepath.Join(t.TempDir(), "upgrade")
	m, err := Receive(context.Background(), spool, bytes.NewReader(writeBundle(t, priv, "2", "amd64", testPayload())), pub, nil)
	if err != nil || m.Version != "2" {
		t.Fatalf("Receive: %v %v", m, err)
	}
	if st, ok, _ := ReadSpoolState(spool); !ok || st.State != SpoolReceived || st.Version != "2" {
		t.Fatalf("state after Receive: %+v %v", st, ok)
	}
	if _, err := Receive(context.Background(), spool, bytes.NewReader(nil), pub, nil); err == nil || !strings.Contains(err.Error(), "already waiting") {
		t.Fatalf("second Receive: %v", err)
	}
	// A link planted where root writes its state is replaced, not followed.
	victim := filepath.Join(t.TempDir(), "victim")
	must(t, os.WriteFile(victim, []byte("keep"), 0o644))
	os.Remove(filepath.Join(spool, SpoolResult))
	must(t, os.Symlink(victim, filepath.Join(spool, SpoolResult)))

	if err := InstallSpool(context.Background(), fs.System, spool, pub, InstallOptions{}); err != nil {
		t.Fatalf("InstallSpool: %v", err)
	}
	if !fs.rebooted() {
		t.Fatal("no reboot")
	}
	if _, err := os.Lstat(filepath.Join(spool, SpoolBundle)); err == nil {
		t.Fatal("the bundle is still in the spool (the path unit would start again)")
	}
	if st, ok, _ := ReadSpoolState(spool); !ok || st.State != SpoolRebooting || st.Version != "2" {
		t.Fatalf("state after InstallSpool: %+v", st)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Fatalf("the planted link was followed: victim holds %q", b)
	}
	if fi, _ := os.Lstat(filepath.Join(spool, SpoolResult)); !fi.Mode().IsRegular() {
		t.Fatal("result.json is not a regular file")
	}
	if got := strings.Join(fs.entries(t), " "); got != "cloudsteer-a.conf cloudsteer-b+3.conf" {
		t.Fatalf("entries %s", got)
	}
}

func TestReceiveRefusesBadBundle(t *testing.T) {
	pub, _ := testKey(t)
	_, other := testKeyFrom(t, "other")
	spool := t.TempDir()
	if _, err := Receive(context.Background(), spool, bytes.NewReader(writeBundle(t, other, "2", "amd64", testPayload())), pub, nil); err == nil || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("Receive of another key's bundle: %v", err)
	}
	des, _ := os.ReadDir(spool)
	if len(des) != 0 {
		t.Fatalf("left in the spool: %v", des)
	}
}

func TestInstallSpoolRefusesLinkAndRecordsFailure(t *testing.T) {
	pub, priv := testKey(t)
	fs := newFakeSystem(t, "a", "1")
	spool := t.TempDir()
	// A link to a bundle elsewhere is not followed.
	elsewhere := filepath.Join(t.TempDir(), "b.upgrade")
	must(t, os.WriteFile(elsewhere, writeBundle(t, priv, "2", "amd64", testPayload()), 0o644))
	must(t, os.Symlink(elsewhere, filepath.Join(spool, SpoolBundle)))
	if err := InstallSpool(context.Background(), fs.System, spool, pub, InstallOptions{}); err == nil {
		t.Fatal("InstallSpool followed a link")
	}
	os.Remove(filepath.Join(spool, SpoolBundle))
	// A bundle that fails to install: the failure is recorded.
	ms := signedMembers(t, priv, testPayload())
	ms[4].data = []byte("initrd image bytes, a few morE")
	must(t, os.WriteFile(filepath.Join(spool, SpoolBundle), rawBundle(t, ms), 0o644))
	if err := InstallSpool(context.Background(), fs.System, spool, pub, InstallOptions{}); err == nil {
		t.Fatal("InstallSpool of a corrupt bundle succeeded")
	}
	st, ok, err := ReadSpoolState(spool)
	if !ok || err != nil || st.State != SpoolFailed || !strings.Contains(st.Error, "initrd.img sha256") {
		t.Fatalf("state %+v %v %v", st, ok, err)
	}
	if fs.rebooted() {
		t.Fatal("rebooted")
	}
}

func TestReceiveCheckRefusesEarly(t *testing.T) {
	pub, priv := testKey(t)
	spool := t.TempDir()
	b := writeBundle(t, priv, "2", "amd64", testPayload())
	// Only the manifest and signature (the first 2 KiB) may be read before
	// check refuses.
	r := io.MultiReader(bytes.NewReader(b[:2048]), failReader{t})
	_, err := Receive(context.Background(), spool, r, pub, func(m *Manifest) error {
		if m.Version != "2" {
			t.Errorf("check saw %+v", m)
		}
		return errors.New("not newer")
	})
	if err == nil || !strings.Contains(err.Error(), "not newer") {
		t.Fatalf("Receive: %v", err)
	}
	if des, _ := os.ReadDir(spool); len(des) != 0 {
		t.Fatalf("left in the spool: %v", des)
	}
}

package daemon

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
	"github.com/cloudsteer/cloudsteer/controlplane/upgrade"
)

// testImage points d at an image on files (slot a, version 1) and returns
// a function making signed bundles of a version.
func testImage(t *testing.T, d *Daemon) func(version string) []byte {
	t.Helper()
	dir := t.TempDir()
	sys := &upgrade.System{Cmdline: filepath.Join(dir, "cmdline"), OSRelease: filepath.Join(dir, "os-release"),
		ESP: filepath.Join(dir, "efi"), PartDir: filepath.Join(dir, "parts"), Arch: "amd64"}
	os.WriteFile(sys.Cmdline, []byte(upgrade.EntryOptions("a", "amd64")), 0o644)
	os.WriteFile(sys.OSRelease, []byte("IMAGE_VERSION=1\n"), 0o644)
	keys := filepath.Join(dir, "keys")
	if _, err := upgrade.GenerateKey(keys); err != nil {
		t.Fatal(err)
	}
	d.image = imageState{sys: sys, key: filepath.Join(keys, upgrade.PublicKeyFile)}
	priv, err := upgrade.LoadPrivateKey(filepath.Join(keys, upgrade.PrivateKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"r", "k", "i"} {
		os.WriteFile(filepath.Join(dir, n), []byte("file "+n), 0o644)
	}
	return func(v string) []byte {
		var b bytes.Buffer
		if _, err := upgrade.Write(&b, priv, upgrade.WriteOptions{Version: v, Arch: "amd64"}, filepath.Join(dir, "r"), filepath.Join(dir, "k"), filepath.Join(dir, "i")); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
}

func TestReceiveUpgrade(t *testing.T) {
	d, _, _, _ := newTestDaemon(t, testConfig)
	b := consoleBackend{d.ctrl}
	ctx := context.Background()
	// Off the image: refused, and Status has no image.
	if _, err := b.ReceiveUpgrade(ctx, bytes.NewReader(nil)); !errors.Is(err, model.ErrForbidden) {
		t.Fatalf("off the image: %v", err)
	}
	if d.imageStatus() != nil {
		t.Fatal("image status off the image")
	}
	bundle := testImage(t, d)
	if img := d.imageStatus(); img == nil || img.Slot != "a" || img.Version != "1" || img.EntriesError == "" {
		t.Fatalf("image status %+v", img)
	}
	if _, err := b.ReceiveUpgrade(ctx, bytes.NewReader(bundle("1"))); !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), "version 1 is not newer than the running 1") {
		t.Fatalf("same version: %v", err)
	}
	bad := bundle("2")
	bad[len(bad)-1024-512] ^= 1
	if _, err := b.ReceiveUpgrade(ctx, bytes.NewReader(bad)); !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), "initrd.img sha256") {
		t.Fatalf("corrupt bundle: %v", err)
	}
	if _, err := os.Stat(filepath.Join(d.spoolDir(), upgrade.SpoolBundle)); err == nil {
		t.Fatal("a refused bundle was left for the root unit")
	}
	v, err := b.ReceiveUpgrade(ctx, bytes.NewReader(bundle("2")))
	if err != nil || v != "2" {
		t.Fatalf("ReceiveUpgrade: %q %v", v, err)
	}
	if got, _ := os.ReadFile(filepath.Join(d.spoolDir(), upgrade.SpoolBundle)); !bytes.Equal(got, bundle("2")) {
		t.Fatal("the spooled bundle differs from the upload")
	}
	if st, ok := b.UpgradeState(ctx); !ok || st.State != upgrade.SpoolReceived || st.Version != "2" {
		t.Fatalf("state %+v %v", st, ok)
	}
}

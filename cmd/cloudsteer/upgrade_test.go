package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
	"github.com/cloudsteer/cloudsteer/controlplane/upgrade"
)

// runCLIImage runs the CLI as root with sys as the slots and inspect as
// the image state reader.
func runCLIImage(tb testing.TB, sock string, stdin []byte, sys *upgrade.System, inspect func() (*model.ImageStatus, error), args ...string) result {
	tb.Helper()
	var out, errb bytes.Buffer
	c := &cli{
		stdout: &out, stderr: &errb, stdin: bytes.NewReader(stdin),
		socket: sock, now: func() time.Time { return t0 }, loc: time.UTC,
		geteuid: func() int { return 0 }, upgradeSys: sys, inspect: inspect,
	}
	code := c.run(context.Background(), args)
	return result{code, out.String(), errb.String()}
}

func TestHealth(t *testing.T) {
	d := startDaemon(t)
	want(t, d.run(t, "health"), exitOK, "healthy: protected\n", "")

	d.fake.SetStatus(model.Status{State: model.NotProtected, Reasons: []model.Reason{{Code: model.ReasonNoCode, Message: "no code"}}})
	want(t, d.run(t, "health"), exitOK, "healthy: dataplane up, failing open (no_entitlement_code)\n", "")

	d.fake.SetStatus(model.Status{State: model.NotProtected, Reasons: []model.Reason{
		{Code: model.ReasonNoCode, Message: "no code"},
		{Code: model.ReasonNotAttached, Message: "program not attached on lan0"}}})
	want(t, d.run(t, "health"), exitFail, "", "cloudsteer: not healthy: program_not_attached: program not attached on lan0\n")

	d.fake.SetStatus(model.Status{State: model.NotProtected, Reasons: []model.Reason{{Code: model.ReasonNoFirewallTable, Message: "table missing"}}})
	want(t, d.run(t, "health", "--wait", "300ms", "--interval", "50ms"), exitFail, "", "cloudsteer: not healthy after 300ms: nftables_table_missing: table missing\n")

	d.fake.SetStatus(model.Status{State: model.NotProtected})
	want(t, d.run(t, "health"), exitFail, "", "not protected, and the status names no reason")

	// Becoming healthy while waiting.
	d.fake.SetStatus(model.Status{State: model.NotProtected, Reasons: []model.Reason{{Code: model.ReasonNotAttached, Message: "x"}}})
	go func() {
		time.Sleep(300 * time.Millisecond)
		d.fake.SetStatus(model.Status{State: model.Protected})
	}()
	start := time.Now()
	want(t, d.run(t, "health", "--wait", "10s", "--interval", "50ms"), exitOK, "healthy: protected\n", "")
	if el := time.Since(start); el < 250*time.Millisecond || el > 5*time.Second {
		t.Errorf("health --wait returned after %s", el)
	}
}

func TestHealthNotRunning(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	start := time.Now()
	r := runCLIWith(t, sock, "", 0, "health", "--wait", "200ms", "--interval", "50ms")
	want(t, r, exitFail, "", "cloudsteer: not healthy after 200ms: cloudsteer is not running (no socket at "+sock+")\n")
	if time.Since(start) < 200*time.Millisecond {
		t.Error("health gave up before --wait")
	}
}

// imageSys is an image on files: slot a running version 1, root-b a
// 1 MiB file, an ESP directory, a reboot that leaves a mark.
func imageSys(t *testing.T) (*upgrade.System, string) {
	t.Helper()
	dir := t.TempDir()
	sys := &upgrade.System{
		Cmdline: filepath.Join(dir, "cmdline"), PartDir: filepath.Join(dir, "parts"), ESP: filepath.Join(dir, "efi"),
		OSRelease: filepath.Join(dir, "os-release"), Arch: "amd64",
		Reboot: []string{"sh", "-c", "echo x > " + filepath.Join(dir, "rebooted")},
	}
	for p, b := range map[string]string{
		sys.Cmdline:                          upgrade.EntryOptions("a", "amd64") + "\n",
		sys.OSRelease:                        "IMAGE_ID=cloudsteer\nIMAGE_VERSION=1\n",
		filepath.Join(sys.PartDir, "root-a"): "running root",
		filepath.Join(sys.PartDir, "root-b"): strings.Repeat("\x00", 1<<20),
		filepath.Join(sys.ESP, "loader", "entries", "cloudsteer-a.conf"): upgrade.EntryText("a", "1", "amd64"),
	} {
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, []byte(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return sys, dir
}

// bundleFile writes a signed bundle of version v with a new key in dir
// and returns the bundle and the public key's path.
func bundleFile(t *testing.T, dir, v string) (string, string) {
	t.Helper()
	keys := filepath.Join(dir, "keys-"+v)
	if _, err := upgrade.GenerateKey(keys); err != nil {
		t.Fatal(err)
	}
	priv, err := upgrade.LoadPrivateKey(filepath.Join(keys, upgrade.PrivateKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"r", "k", "i"} {
		os.WriteFile(filepath.Join(dir, n), []byte("payload "+n), 0o644)
	}
	out := filepath.Join(dir, "cloudsteer-"+v+"-amd64.upgrade")
	f, _ := os.Create(out)
	defer f.Close()
	if _, err := upgrade.Write(f, priv, upgrade.WriteOptions{Version: v, Arch: "amd64"}, filepath.Join(dir, "r"), filepath.Join(dir, "k"), filepath.Join(dir, "i")); err != nil {
		t.Fatal(err)
	}
	return out, filepath.Join(keys, upgrade.PublicKeyFile)
}

func TestUpgrade(t *testing.T) {
	t.Run("file, no reboot", func(t *testing.T) {
		sys, dir := imageSys(t)
		b, pub := bundleFile(t, dir, "2")
		r := runCLIImage(t, "", nil, sys, nil, "upgrade", b, "--no-reboot", "--pub", pub, "--tries", "2")
		want(t, r, exitOK, "*", "")
		if !strings.HasSuffix(r.stdout, "cloudsteer 2 is in slot b; reboot to start it (it has 2 tries to come up healthy, else the gateway goes back to slot a)\n") ||
			!strings.Contains(r.stdout, "signature verified") || !strings.Contains(r.stdout, "read back: sha256 matches") {
			t.Errorf("stdout:\n%s", r.stdout)
		}
		if _, err := os.Stat(filepath.Join(sys.ESP, "loader", "entries", "cloudsteer-b+2.conf")); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(filepath.Join(dir, "rebooted")); err == nil {
			t.Error("rebooted with --no-reboot")
		}
	})
	t.Run("stdin, reboot", func(t *testing.T) {
		sys, dir := imageSys(t)
		b, pub := bundleFile(t, dir, "2")
		data, _ := os.ReadFile(b)
		r := runCLIImage(t, "", data, sys, nil, "upgrade", "--pub", pub, "-")
		want(t, r, exitOK, "*", "")
		if _, err := os.Stat(filepath.Join(dir, "rebooted")); err != nil {
			t.Errorf("no reboot: %v\n%s", err, r.stdout)
		}
	})
	t.Run("url", func(t *testing.T) {
		sys, dir := imageSys(t)
		b, pub := bundleFile(t, dir, "2")
		srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
		defer srv.Close()
		want(t, runCLIImage(t, "", nil, sys, nil, "upgrade", "--no-reboot", "--pub", pub, srv.URL+"/"+filepath.Base(b)), exitOK, "*", "")
		want(t, runCLIImage(t, "", nil, sys, nil, "upgrade", "--no-reboot", "--pub", pub, srv.URL+"/nope"), exitFail, "", "HTTP 404")
	})
	t.Run("refusals", func(t *testing.T) {
		sys, dir := imageSys(t)
		b, pub := bundleFile(t, dir, "2")
		_, otherPub := bundleFile(t, t.TempDir(), "3")
		want(t, runCLIImage(t, "", nil, sys, nil, "upgrade", b, "--pub", otherPub), exitFail, "", "signature does not verify with the upgrade key")
		want(t, runCLIImage(t, "", nil, sys, nil, "upgrade", b, "--pub", pub, "--tries", "0"), exitConfig, "", "--tries must be from 1 to 10")
		want(t, runCLIImage(t, "", nil, sys, nil, "upgrade", "--pub", pub), exitConfig, "", "usage: cloudsteer upgrade")
		want(t, runCLIImage(t, "", nil, sys, nil, "upgrade", b, "--pub", filepath.Join(dir, "nokey")), exitFail, "", "load public key")
		var out, errb bytes.Buffer
		c := &cli{stdout: &out, stderr: &errb, now: time.Now, loc: time.UTC, geteuid: func() int { return 1000 }, upgradeSys: sys}
		if code := c.run(context.Background(), []string{"upgrade", b, "--pub", pub}); code != exitFail || !strings.Contains(errb.String(), "must be run as root") {
			t.Errorf("as a user: %d %s", code, errb.String())
		}
		if _, err := os.Stat(filepath.Join(dir, "rebooted")); err == nil {
			t.Error("rebooted after a refusal")
		}
	})
}

func TestStatusImage(t *testing.T) {
	d := startDaemon(t)
	rolledBack := &model.ImageStatus{Version: "1", Slot: "a", RolledBack: true, Upgrade: "upgrade to 2 failed to come up healthy; rolled back to 1"}
	r := runCLIImage(t, d.sock, nil, nil, func() (*model.ImageStatus, error) { return rolledBack, nil }, "status")
	want(t, r, exitOK, `State:             Protected
Entitlement code:  3315…a8e3
Cloud proxy:       http://198.51.100.10:8080
LAN interfaces:    lan0 (attached)
Version:           test
Image:             cloudsteer 1 (slot a)
Upgrade:           upgrade to 2 failed to come up healthy; rolled back to 1
Running since:     2026-11-25 11:00:00 UTC
Last check:        2026-11-25 12:00:00 UTC
Reasons:           none
`, "")
	r = runCLIImage(t, d.sock, nil, nil, func() (*model.ImageStatus, error) { return rolledBack, nil }, "status", "--json")
	if !strings.Contains(r.stdout, `"image":{"version":"1","slot":"a","rolled_back":true,"upgrade":"upgrade to 2 failed to come up healthy; rolled back to 1"}`) {
		t.Errorf("json: %s", r.stdout)
	}
	// The daemon's own view (it cannot read the ESP) when not root-readable.
	d.fake.SetStatus(model.Status{State: model.Protected, Image: &model.ImageStatus{Version: "1", Slot: "a", EntriesError: "read boot entries: permission denied"}})
	r = runCLIImage(t, d.sock, nil, nil, func() (*model.ImageStatus, error) { return nil, upgrade.ErrNotImage }, "status")
	if !strings.Contains(r.stdout, "Image:             cloudsteer 1 (slot a)\nUpgrade:           unknown (read boot entries: permission denied; run as root)\n") {
		t.Errorf("stdout:\n%s", r.stdout)
	}
}

func TestUpgradeWriteState(t *testing.T) {
	sys, dir := imageSys(t)
	sys.StateFile = filepath.Join(dir, "run", "cloudsteer-image.json")
	os.WriteFile(filepath.Join(sys.ESP, "loader", "entries", "cloudsteer-b+0-3.conf"), []byte(upgrade.EntryText("b", "2", "amd64")), 0o600)
	want(t, runCLIImage(t, "", nil, sys, nil, "upgrade", "--write-state"), exitOK, "", "")
	st, err := upgrade.ReadState(sys.StateFile)
	if err != nil || !st.RolledBack || st.Slot != "a" {
		t.Fatalf("state %+v %v", st, err)
	}
	want(t, runCLIImage(t, "", nil, sys, nil, "upgrade", "--write-state", "extra"), exitConfig, "", "usage")
}

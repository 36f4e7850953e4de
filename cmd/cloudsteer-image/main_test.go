package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestKeygenBundleVerify(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	if code, _, e := runCmd(t, "keygen", "--out", keys); code != 0 {
		t.Fatalf("keygen: %d %s", code, e)
	}
	for _, n := range []string{"root", "vmlinuz", "initrd"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("content of "+n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, "cloudsteer-2-amd64.upgrade")
	t.Setenv("SOURCE_DATE_EPOCH", "1764720000")
	args := []string{"bundle", "--key", filepath.Join(keys, "upgrade.key"), "--version", "2", "--arch", "amd64",
		"--root", filepath.Join(dir, "root"), "--kernel", filepath.Join(dir, "vmlinuz"), "--initrd", filepath.Join(dir, "initrd"), "--out", out}
	if code, o, e := runCmd(t, args...); code != 0 || !strings.Contains(o, "root.squashfs") {
		t.Fatalf("bundle: %d %s %s", code, o, e)
	}
	first, _ := os.ReadFile(out)
	if code, _, e := runCmd(t, args...); code != 0 {
		t.Fatalf("bundle again: %s", e)
	}
	if again, _ := os.ReadFile(out); !bytes.Equal(first, again) {
		t.Fatal("two bundles of the same inputs differ")
	}
	if code, o, e := runCmd(t, "verify", "--pub", filepath.Join(keys, "upgrade.pub"), out); code != 0 || !strings.Contains(o, "ok: cloudsteer 2 amd64") {
		t.Fatalf("verify: %d %s %s", code, o, e)
	}
	// Another key: refused.
	other := filepath.Join(dir, "other")
	runCmd(t, "keygen", "--out", other)
	if code, _, e := runCmd(t, "verify", out, "--pub", filepath.Join(other, "upgrade.pub")); code != 1 || !strings.Contains(e, "signature does not verify") {
		t.Fatalf("verify with another key: %d %s", code, e)
	}
	// A changed byte: refused.
	b := bytes.Clone(first)
	b[len(b)-1024-512] ^= 1 // the first byte of initrd.img
	os.WriteFile(out, b, 0o644)
	if code, _, e := runCmd(t, "verify", "--pub", filepath.Join(keys, "upgrade.pub"), out); code != 1 || !strings.Contains(e, "sha256") {
		t.Fatalf("verify of a changed bundle: %d %s", code, e)
	}
	// An open private key: refused.
	os.Chmod(filepath.Join(keys, "upgrade.key"), 0o644)
	if code, _, e := runCmd(t, args...); code != 1 || !strings.Contains(e, "chmod 600") {
		t.Fatalf("bundle with a 0644 key: %d %s", code, e)
	}
	// keygen never overwrites.
	if code, _, e := runCmd(t, "keygen", "--out", keys); code != 1 || !strings.Contains(e, "exists") {
		t.Fatalf("keygen over a key: %d %s", code, e)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"nope"}, {"keygen"}, {"bundle", "--key", "k"}, {"verify", "--pub", "p"}} {
		if code, _, _ := runCmd(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}

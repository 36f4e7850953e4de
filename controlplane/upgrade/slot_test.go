package upgrade

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// fakeSystem is a System on plain files: the partitions are files of
// partSize bytes, the ESP a directory, the reboot command writes a file.
type fakeSystem struct {
	System
	dir string
}

const partSize = 1 << 20

func newFakeSystem(t *testing.T, slot, version string) *fakeSystem {
	t.Helper()
	dir := t.TempDir()
	fs := &fakeSystem{dir: dir}
	fs.System = System{
		Cmdline:   filepath.Join(dir, "cmdline"),
		PartDir:   filepath.Join(dir, "by-partlabel"),
		ESP:       filepath.Join(dir, "efi"),
		OSRelease: filepath.Join(dir, "os-release"),
		Reboot:    []string{"sh", "-c", "echo rebooted >> " + filepath.Join(dir, "rebooted")},
		Arch:      "amd64",
		StateFile: filepath.Join(dir, "run", "cloudsteer-image.json"),
	}
	must(t, os.WriteFile(fs.Cmdline, []byte("BOOT_IMAGE=x "+EntryOptions(slot, "amd64")+" quiet\n"), 0o644))
	must(t, os.WriteFile(fs.OSRelease, []byte("ID=debian\nIMAGE_ID=cloudsteer\nIMAGE_VERSION="+version+"\n"), 0o644))
	must(t, os.MkdirAll(fs.PartDir, 0o755))
	for _, s := range Slots {
		must(t, os.WriteFile(filepath.Join(fs.PartDir, "root-"+s), bytes.Repeat([]byte{'0' + byte(s[0]-'a')}, partSize), 0o600))
	}
	must(t, os.MkdirAll(filepath.Join(fs.ESP, "loader", "entries"), 0o700))
	fs.entry(t, "cloudsteer-"+slot+".conf", slot, version)
	must(t, os.MkdirAll(filepath.Join(fs.ESP, slot), 0o700))
	must(t, os.WriteFile(filepath.Join(fs.ESP, slot, KernelName), []byte("running kernel"), 0o600))
	return fs
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (fs *fakeSystem) entry(t *testing.T, name, slot, version string) {
	must(t, os.WriteFile(filepath.Join(fs.ESP, "loader", "entries", name), []byte(EntryText(slot, version, "amd64")), 0o600))
}

func (fs *fakeSystem) entries(t *testing.T) []string {
	des, err := os.ReadDir(filepath.Join(fs.ESP, "loader", "entries"))
	must(t, err)
	var out []string
	for _, de := range des {
		out = append(out, de.Name())
	}
	sort.Strings(out)
	return out
}

func (fs *fakeSystem) part(t *testing.T, slot string) []byte {
	b, err := os.ReadFile(filepath.Join(fs.PartDir, "root-"+slot))
	must(t, err)
	return b
}

func (fs *fakeSystem) rebooted() bool {
	_, err := os.Stat(filepath.Join(fs.dir, "rebooted"))
	return err == nil
}

func TestInstall(t *testing.T) {
	pub, priv := testKey(t)
	p := testPayload()
	fs := newFakeSystem(t, "a", "1")
	// A failed earlier upgrade's entry of slot b is replaced.
	fs.entry(t, "cloudsteer-b+0-3.conf", "b", "0.9")
	before := fs.part(t, "a")
	res, err := fs.Install(context.Background(), bytes.NewReader(writeBundle(t, priv, "2", "amd64", p)), pub, InstallOptions{})
	if err != nil {
		t.Fatalf("Install: %v", err)
	}
	if res.From != "a" || res.To != "b" || !res.Rebooted || !fs.rebooted() {
		t.Fatalf("result %+v, rebooted %v", res, fs.rebooted())
	}
	if got := fs.part(t, "b"); !bytes.Equal(got[:len(p.root)], p.root) {
		t.Fatal("root-b does not start with root.squashfs")
	}
	if !bytes.Equal(fs.part(t, "a"), before) {
		t.Fatal("the running slot's partition changed")
	}
	for name, want := range map[string][]byte{KernelName: p.kernel, InitrdName: p.initrd} {
		got, err := os.ReadFile(filepath.Join(fs.ESP, "b", name))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("ESP b/%s: %v %q", name, err, got)
		}
	}
	if got := fs.entries(t); strings.Join(got, " ") != "cloudsteer-a.conf cloudsteer-b+3.conf" {
		t.Fatalf("entries %v", got)
	}
	b, _ := os.ReadFile(filepath.Join(fs.ESP, "loader", "entries", "cloudsteer-b+3.conf"))
	want := `title cloudsteer 2 (slot b)
sort-key cloudsteer
version 2
linux /b/vmlinuz
initrd /b/initrd.img
options root=PARTLABEL=root-b rootfstype=squashfs ro cloudsteer.slot=b console=tty0 console=ttyS0,115200
`
	if string(b) != want {
		t.Fatalf("entry:\n%s\nwant:\n%s", b, want)
	}
	// No temporary files left on the ESP.
	filepath.WalkDir(fs.ESP, func(p string, _ os.DirEntry, _ error) error {
		if strings.HasSuffix(p, ".tmp") {
			t.Errorf("left behind: %s", p)
		}
		return nil
	})
	// Status: pending until the reboot.
	st, err := ReadState(fs.StateFile)
	must(t, err)
	if st.Other == nil || st.Other.File != "cloudsteer-b+3.conf" {
		t.Fatalf("state file after Install: %+v", st)
	}
	st, err = fs.Inspect()
	must(t, err)
	if st.Slot != "a" || st.Version != "1" || st.Other == nil || st.Other.State != model.SlotTrial || st.Upgrade != "upgrade to 2 installed in slot b; it starts at the next reboot" {
		t.Fatalf("inspect %+v", st)
	}
}

func TestInstallFromBToAWithTries(t *testing.T) {
	pub, priv := testKey(t)
	fs := newFakeSystem(t, "b", "2")
	fs.Arch = "arm64"
	res, err := fs.Install(context.Background(), bytes.NewReader(writeBundle(t, priv, "3", "arm64", testPayload())), pub, InstallOptions{Tries: 5, NoReboot: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.To != "a" || res.Rebooted || fs.rebooted() {
		t.Fatalf("result %+v", res)
	}
	b, err := os.ReadFile(filepath.Join(fs.ESP, "loader", "entries", "cloudsteer-a+5.conf"))
	must(t, err)
	if !strings.Contains(string(b), "cloudsteer.slot=a console=tty0 console=ttyAMA0\n") {
		t.Fatalf("entry %s", b)
	}
}

// TestInstallRefuses: each refusal leaves the running slot untouched and
// no new entry; the ones caught before writing leave the other slot too.
func TestInstallRefuses(t *testing.T) {
	pub, priv := testKey(t)
	_, otherPriv := testKeyFrom(t, "another key")
	p := testPayload()
	big := p
	big.root = bytes.Repeat([]byte("x"), partSize+1)
	corruptKernel := signedMembers(t, priv, p)
	corruptKernel[3].data = []byte("kernel image bytez")
	cases := []struct {
		name       string
		bundle     []byte
		opts       InstallOptions
		setup      func(fs *fakeSystem)
		want       string
		otherTouch bool // the other slot was already being written
	}{
		{name: "wrong key", bundle: writeBundle(t, otherPriv, "2", "amd64", p), want: "signature does not verify"},
		{name: "bigger than the partition", bundle: writeBundle(t, priv, "2", "amd64", big), want: "root.squashfs is 1048577 bytes, the partition root-b only 1048576"},
		{name: "other arch", bundle: writeBundle(t, priv, "2", "arm64", p), want: "the bundle is for arm64, this machine is amd64"},
		{name: "same version", bundle: writeBundle(t, priv, "1", "amd64", p), want: "version 1 is not newer than the running 1"},
		{name: "older version", bundle: writeBundle(t, priv, "0.9", "amd64", p), want: "not newer"},
		{name: "tries 0 is default, 11 too many", bundle: writeBundle(t, priv, "2", "amd64", p), opts: InstallOptions{Tries: 11}, want: "tries 11 out of range"},
		{name: "not the image", bundle: writeBundle(t, priv, "2", "amd64", p), setup: func(fs *fakeSystem) {
			os.WriteFile(fs.Cmdline, []byte("root=/dev/sda1 ro quiet\n"), 0o644)
		}, want: "not running the cloudsteer image"},
		{name: "no partition", bundle: writeBundle(t, priv, "2", "amd64", p), setup: func(fs *fakeSystem) {
			os.Remove(filepath.Join(fs.PartDir, "root-b"))
		}, want: "open slot"},
		{name: "other label is the running partition", bundle: writeBundle(t, priv, "2", "amd64", p), setup: func(fs *fakeSystem) {
			os.Remove(filepath.Join(fs.PartDir, "root-b"))
			os.Symlink("root-a", filepath.Join(fs.PartDir, "root-b"))
		}, want: "is the running slot's partition"},
		{name: "corrupt kernel", bundle: rawBundle(t, corruptKernel), want: "vmlinuz sha256", otherTouch: true},
		{name: "truncated", bundle: func() []byte { b := writeBundle(t, priv, "2", "amd64", p); return b[:len(b)-1100] }(), want: "truncated", otherTouch: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs := newFakeSystem(t, "a", "1")
			fs.entry(t, "cloudsteer-b.conf", "b", "0.9")
			if c.setup != nil {
				c.setup(fs)
			}
			partA := fs.part(t, "a")
			_, err := fs.Install(context.Background(), bytes.NewReader(c.bundle), pub, c.opts)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Install: %v, want %q", err, c.want)
			}
			if fs.rebooted() {
				t.Fatal("rebooted after a failed install")
			}
			if !bytes.Equal(fs.part(t, "a"), partA) {
				t.Fatal("the running slot changed")
			}
			ents := strings.Join(fs.entries(t), " ")
			if c.otherTouch {
				// The old entry of b went before b was written; no new one.
				if ents != "cloudsteer-a.conf" {
					t.Fatalf("entries %s", ents)
				}
				return
			}
			if ents != "cloudsteer-a.conf cloudsteer-b.conf" {
				t.Fatalf("entries %s", ents)
			}
			if fi, err := os.Lstat(filepath.Join(fs.PartDir, "root-b")); err == nil && fi.Mode().IsRegular() && !bytes.Equal(fs.part(t, "b"), bytes.Repeat([]byte{'1'}, partSize)) {
				t.Fatal("root-b was written before the refusal")
			}
		})
	}
}

func TestInstallStopsOnCancel(t *testing.T) {
	pub, priv := testKey(t)
	fs := newFakeSystem(t, "a", "1")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := fs.Install(ctx, bytes.NewReader(writeBundle(t, priv, "2", "amd64", testPayload())), pub, InstallOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Install with a cancelled context: %v", err)
	}
}

func TestSlotFromCmdline(t *testing.T) {
	for in, want := range map[string]string{
		"ro cloudsteer.slot=a quiet":                "a",
		"cloudsteer.slot=a cloudsteer.slot=b":       "b",
		"root=PARTLABEL=root-b cloudsteer.slot=b\n": "b",
		"cloudsteer.slotx=a":                        "",
		"xcloudsteer.slot=a":                        "",
		"quiet":                                     "",
	} {
		got, err := slotFromCmdline(in)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("slotFromCmdline(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := slotFromCmdline("cloudsteer.slot=c"); err == nil || IsNotImage(err) {
		t.Errorf("slot c: %v", err)
	}
}

func TestInspect(t *testing.T) {
	cases := []struct {
		name, slot, version string
		entries             map[string][2]string // file -> slot, version
		wantUpgrade         string
		rolledBack          bool
		bootState           string
	}{
		{"fresh image", "a", "1", map[string][2]string{"cloudsteer-a.conf": {"a", "1"}}, "", false, model.SlotGood},
		{"rolled back", "a", "1", map[string][2]string{"cloudsteer-a.conf": {"a", "1"}, "cloudsteer-b+0-3.conf": {"b", "2"}},
			"upgrade to 2 failed to come up healthy; rolled back to 1", true, model.SlotGood},
		{"on trial", "b", "2", map[string][2]string{"cloudsteer-a.conf": {"a", "1"}, "cloudsteer-b+2-1.conf": {"b", "2"}},
			"running 2 on trial: not yet marked good (2 boot tries left)", false, model.SlotTrial},
		{"marked good", "b", "2", map[string][2]string{"cloudsteer-a.conf": {"a", "1"}, "cloudsteer-b.conf": {"b", "2"}}, "", false, model.SlotGood},
		{"picked the old one by hand", "a", "1", map[string][2]string{"cloudsteer-a.conf": {"a", "1"}, "cloudsteer-b+1-2.conf": {"b", "2"}},
			"upgrade to 2 in slot b failed to come up 2 times (1 tries left); running 1", false, model.SlotGood},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs := newFakeSystem(t, c.slot, c.version)
			os.RemoveAll(filepath.Join(fs.ESP, "loader", "entries"))
			os.MkdirAll(filepath.Join(fs.ESP, "loader", "entries"), 0o700)
			for f, sv := range c.entries {
				fs.entry(t, f, sv[0], sv[1])
			}
			st, err := fs.Inspect()
			must(t, err)
			if st.Upgrade != c.wantUpgrade || st.RolledBack != c.rolledBack || st.Boot == nil || st.Boot.State != c.bootState || st.Version != c.version || st.Slot != c.slot {
				t.Fatalf("Inspect: %+v (boot %+v)", st, st.Boot)
			}
		})
	}
	// Unreadable entries: version and slot still, with the reason.
	fs := newFakeSystem(t, "a", "1")
	os.RemoveAll(filepath.Join(fs.ESP, "loader"))
	st, err := fs.Inspect()
	if err != nil || st.Slot != "a" || st.Version != "1" || st.EntriesError == "" || st.Boot != nil {
		t.Fatalf("Inspect without entries: %+v %v", st, err)
	}
	// Not the image.
	os.WriteFile(fs.Cmdline, []byte("quiet"), 0o644)
	if _, err := fs.Inspect(); !IsNotImage(err) {
		t.Fatalf("Inspect off the image: %v", err)
	}
}

// TestInspectFromStateFile: where the entries cannot be read (the daemon:
// the ESP is root-only), what root recorded at boot is used, for the same
// slot only.
func TestInspectFromStateFile(t *testing.T) {
	fs := newFakeSystem(t, "a", "1")
	fs.entry(t, "cloudsteer-b+0-3.conf", "b", "2")
	fs.StateFile = filepath.Join(t.TempDir(), "run", "cloudsteer-image.json")
	rec, err := fs.Inspect()
	must(t, err)
	must(t, WriteState(fs.StateFile, rec))
	if fi, err := os.Stat(fs.StateFile); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("state file: %v %v", fi, err)
	}
	must(t, os.RemoveAll(filepath.Join(fs.ESP, "loader")))
	st, err := fs.Inspect()
	must(t, err)
	if !st.RolledBack || st.Upgrade != "upgrade to 2 failed to come up healthy; rolled back to 1" || st.EntriesError != "" {
		t.Fatalf("Inspect from the state file: %+v", st)
	}
	// A record of the other slot (an earlier boot's) is not used.
	rec.Slot = "b"
	must(t, WriteState(fs.StateFile, rec))
	st, err = fs.Inspect()
	must(t, err)
	if st.RolledBack || st.EntriesError == "" {
		t.Fatalf("Inspect used another slot's record: %+v", st)
	}
}

// TestInstallLocked: a second install while one holds the lock is refused
// before it touches anything.
func TestInstallLocked(t *testing.T) {
	pub, priv := testKey(t)
	fs := newFakeSystem(t, "a", "1")
	fs.LockFile = filepath.Join(fs.dir, "upgrade.lock")
	fs.entry(t, "cloudsteer-b.conf", "b", "0.9")
	unlock, err := lockFile(fs.LockFile)
	must(t, err)
	b := writeBundle(t, priv, "2", "amd64", testPayload())
	if _, err := fs.Install(context.Background(), bytes.NewReader(b), pub, InstallOptions{NoReboot: true}); err == nil || !strings.Contains(err.Error(), "another upgrade is running") {
		t.Fatalf("Install while locked: %v", err)
	}
	if got := strings.Join(fs.entries(t), " "); got != "cloudsteer-a.conf cloudsteer-b.conf" {
		t.Fatalf("entries %s", got)
	}
	unlock()
	if _, err := fs.Install(context.Background(), bytes.NewReader(b), pub, InstallOptions{NoReboot: true}); err != nil {
		t.Fatalf("Install after the lock went: %v", err)
	}
}

package upgrade

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

// run runs a command and fails the test when it fails.
func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// loopDisk makes a disk image of size MiB and attaches one loop device
// per partition (each partMiB, from 1 MiB on, as a GPT disk would lay them
// out; one loop device per partition because partition scanning of loop
// devices does not work on every machine this runs on). It returns the
// devices; they are detached when the test ends.
func loopDisk(t *testing.T, size, partMiB int, labels ...string) []string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(img)
	must(t, err)
	must(t, f.Truncate(int64(size)<<20))
	f.Close()
	var parts []string
	for i := range labels {
		off := (1 + i*partMiB) << 20
		dev := run(t, "losetup", "--find", "--show", "--offset", strconv.Itoa(off), "--sizelimit", strconv.Itoa(partMiB<<20), img)
		t.Cleanup(func() {
			if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
				t.Logf("losetup --detach %s: %v: %s", dev, err, out)
			}
		})
		parts = append(parts, dev)
	}
	return parts
}

// fakeSysBlock makes a /sys/dev/block stand-in in which each device of
// disks[i] is a partition of disk i.
func fakeSysBlock(t *testing.T, disks ...[]string) string {
	t.Helper()
	dir := t.TempDir()
	devs := filepath.Join(dir, "devices")
	sb := filepath.Join(dir, "dev-block")
	must(t, os.MkdirAll(sb, 0o755))
	for i, parts := range disks {
		for _, p := range parts {
			var st unix.Stat_t
			must(t, unix.Stat(p, &st))
			pd := filepath.Join(devs, "disk"+strconv.Itoa(i), filepath.Base(p))
			must(t, os.MkdirAll(pd, 0o755))
			must(t, os.Symlink(pd, filepath.Join(sb, strconv.Itoa(int(unix.Major(st.Rdev)))+":"+strconv.Itoa(int(unix.Minor(st.Rdev))))))
		}
	}
	return sb
}

// TestInstallLoopDevices writes a real squashfs into a GPT partition of a
// loop device and its kernel, initrd and entry onto the ESP (a directory:
// this machine's kernel has no vfat, so FAT itself is left to the boot
// test), then mounts the written slot and reads a file from it.
func TestInstallLoopDevices(t *testing.T) {
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "losetup", "mksquashfs", "mount", "umount")
	pub, priv := testKey(t)
	parts := loopDisk(t, 20, 8, "root-a", "root-b")

	// A real root: a squashfs with an os-release.
	tree := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(tree, "usr/lib"), 0o755))
	must(t, os.WriteFile(filepath.Join(tree, "usr/lib/os-release"), []byte("IMAGE_ID=cloudsteer\nIMAGE_VERSION=2\n"), 0o644))
	filler := make([]byte, 3<<20)
	rand.Read(filler)
	must(t, os.WriteFile(filepath.Join(tree, "filler"), filler, 0o644))
	sq := filepath.Join(t.TempDir(), "root.squashfs")
	run(t, "mksquashfs", tree, sq, "-noappend", "-quiet", "-comp", "gzip")
	root, err := os.ReadFile(sq)
	must(t, err)

	fs := newFakeSystem(t, "a", "1")
	fs.entry(t, "cloudsteer-b+0-3.conf", "b", "1.5")
	fs.SysBlock = fakeSysBlock(t, parts)
	must(t, os.RemoveAll(fs.PartDir))
	must(t, os.MkdirAll(fs.PartDir, 0o755))
	must(t, os.Symlink(parts[0], filepath.Join(fs.PartDir, "root-a")))
	must(t, os.Symlink(parts[1], filepath.Join(fs.PartDir, "root-b")))
	aBefore := readDev(t, parts[0], 1<<20)

	p := testPayload()
	p.root = root
	start := time.Now()
	res, err := fs.Install(context.Background(), bytes.NewReader(writeBundle(t, priv, "2", "amd64", p)), pub, InstallOptions{Tries: 3})
	if err != nil {
		t.Fatalf("Install: %v", err)
	}
	t.Logf("installed %d bytes in %s", len(root), time.Since(start).Round(time.Millisecond))
	if !res.Rebooted || !fs.rebooted() {
		t.Fatal("no reboot")
	}
	if got := readDev(t, parts[1], len(root)); !bytes.Equal(got, root) {
		t.Fatal("root-b does not hold the squashfs")
	}
	if !bytes.Equal(readDev(t, parts[0], 1<<20), aBefore) {
		t.Fatal("root-a changed")
	}
	if got := strings.Join(fs.entries(t), " "); got != "cloudsteer-a.conf cloudsteer-b+3.conf" {
		t.Fatalf("entries on the ESP: %s", got)
	}
	for name, want := range map[string][]byte{KernelName: p.kernel, InitrdName: p.initrd} {
		if got, err := os.ReadFile(filepath.Join(fs.ESP, "b", name)); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("ESP b/%s: %v", name, err)
		}
	}
	// The slot mounts, as the kernel will mount it.
	mnt := t.TempDir()
	run(t, "mount", "-t", "squashfs", "-o", "ro", parts[1], mnt)
	defer run(t, "umount", mnt)
	if b, err := os.ReadFile(filepath.Join(mnt, "usr/lib/os-release")); err != nil || !strings.Contains(string(b), "IMAGE_VERSION=2") {
		t.Fatalf("os-release in the written slot: %v %q", err, b)
	}
}

// readDev reads n bytes from a device, past the page cache.
func readDev(t *testing.T, dev string, n int) []byte {
	t.Helper()
	f, err := os.Open(dev)
	must(t, err)
	defer f.Close()
	_ = unix.IoctlSetInt(int(f.Fd()), unix.BLKFLSBUF, 0)
	b := make([]byte, n)
	_, err = f.ReadAt(b, 0)
	must(t, err)
	return b
}

// TestInstallRefusesOtherDisk: root-b on another disk than the running
// root-a (a second disk with the image on it) is refused.
func TestInstallRefusesOtherDisk(t *testing.T) {
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "losetup")
	pub, priv := testKey(t)
	d1 := loopDisk(t, 10, 4, "root-a", "root-b")
	d2 := loopDisk(t, 10, 4, "root-a", "root-b")
	fs := newFakeSystem(t, "a", "1")
	fs.SysBlock = fakeSysBlock(t, d1, d2)
	must(t, os.RemoveAll(fs.PartDir))
	must(t, os.MkdirAll(fs.PartDir, 0o755))
	must(t, os.Symlink(d1[0], filepath.Join(fs.PartDir, "root-a")))
	must(t, os.Symlink(d2[1], filepath.Join(fs.PartDir, "root-b")))
	_, err := fs.Install(context.Background(), bytes.NewReader(writeBundle(t, priv, "2", "amd64", testPayload())), pub, InstallOptions{NoReboot: true})
	if err == nil || !strings.Contains(err.Error(), "another disk with the image is attached") {
		t.Fatalf("Install across disks: %v", err)
	}
	if got := strings.Join(fs.entries(t), " "); got != "cloudsteer-a.conf" {
		t.Fatalf("entries %s", got)
	}
}

// TestInstallReadBackCatchesLostWrites: when what is on the device
// differs from what was written (here: changed behind the loop device's
// back, in its backing file, after the sync), the read-back fails and no
// entry is written. The read-back must bypass the page cache to see it.
func TestInstallReadBackCatchesLostWrites(t *testing.T) {
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "losetup")
	pub, priv := testKey(t)
	img := filepath.Join(t.TempDir(), "slot.img")
	f, err := os.Create(img)
	must(t, err)
	must(t, f.Truncate(4<<20))
	f.Close()
	dev := run(t, "losetup", "--find", "--show", img)
	t.Cleanup(func() { exec.Command("losetup", "--detach", dev).Run() })
	fs := newFakeSystem(t, "a", "1")
	must(t, os.Remove(filepath.Join(fs.PartDir, "root-b")))
	must(t, os.Symlink(dev, filepath.Join(fs.PartDir, "root-b")))
	fs.afterWrite = func() {
		// Flip one byte on the medium, as a failing disk would.
		bf, err := os.OpenFile(img, os.O_RDWR, 0)
		must(t, err)
		defer bf.Close()
		bf.WriteAt([]byte{'#'}, 4096)
		must(t, bf.Sync())
	}
	_, err = fs.Install(context.Background(), bytes.NewReader(writeBundle(t, priv, "2", "amd64", testPayload())), pub, InstallOptions{})
	if err == nil || !strings.Contains(err.Error(), "read back: sha256") {
		t.Fatalf("Install onto a device whose data changed: %v", err)
	}
	if fs.rebooted() {
		t.Fatal("rebooted")
	}
	if got := strings.Join(fs.entries(t), " "); got != "cloudsteer-a.conf" {
		t.Fatalf("entries %s", got)
	}
}

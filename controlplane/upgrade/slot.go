package upgrade

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// System is where the slots live. The zero value is not usable; Default
// returns the appliance's paths, tests point them at files or loop
// devices.
type System struct {
	// Cmdline is the kernel command line (/proc/cmdline); it names the
	// booted slot in cloudsteer.slot=a|b.
	Cmdline string
	// PartDir holds the partitions by label (/dev/disk/by-partlabel):
	// root-a and root-b.
	PartDir string
	// ESP is where the EFI system partition is mounted (/efi): kernels in
	// /a and /b, entries in /loader/entries.
	ESP string
	// OSRelease is the running root's os-release (/usr/lib/os-release),
	// with IMAGE_VERSION.
	OSRelease string
	// Reboot is the command that reboots (systemctl reboot).
	Reboot []string
	// Arch is the machine's architecture, in Go's terms (runtime.GOARCH).
	Arch string
	// SysBlock is /sys/dev/block, to check that both slots are on the same
	// disk; empty skips that check.
	SysBlock string
	// StateFile is where `cloudsteer upgrade --write-state` (root, at
	// boot) records the slots' state for the daemon, which cannot read
	// the ESP (/run/cloudsteer-image.json).
	StateFile string
	// LockFile is locked (flock) for the whole install, so that the CLI
	// and the console's unit never write a slot at once
	// (/run/cloudsteer-upgrade.lock); empty: no lock.
	LockFile string
	Log      *slog.Logger

	// afterWrite, in tests, runs between the root's sync and its read-back.
	afterWrite func()
}

// Default is the appliance image's System.
func Default() System {
	return System{
		Cmdline:   "/proc/cmdline",
		PartDir:   "/dev/disk/by-partlabel",
		ESP:       "/efi",
		OSRelease: "/usr/lib/os-release",
		Reboot:    []string{"systemctl", "reboot"},
		Arch:      runtime.GOARCH,
		SysBlock:  "/sys/dev/block",
		StateFile: "/run/cloudsteer-image.json",
		LockFile:  "/run/cloudsteer-upgrade.lock",
	}
}

func (s System) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log.With("component", "upgrade")
}

// Slots are the root slot names.
var Slots = []string{"a", "b"}

// ErrNotImage is returned (wrapped) when the kernel command line names no
// slot: this is not the appliance image.
var ErrNotImage = errors.New("not running the cloudsteer image (no cloudsteer.slot= on the kernel command line)")

// CurrentSlot returns the booted slot from the kernel command line.
func (s System) CurrentSlot() (string, error) {
	b, err := os.ReadFile(s.Cmdline)
	if err != nil {
		return "", fmt.Errorf("read kernel command line: %w", err)
	}
	return slotFromCmdline(string(b))
}

func slotFromCmdline(cmdline string) (string, error) {
	slot := ""
	for _, f := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(f, "cloudsteer.slot="); ok {
			slot = v // the last one counts, as with the kernel's own
		}
	}
	switch slot {
	case "a", "b":
		return slot, nil
	case "":
		return "", ErrNotImage
	}
	return "", fmt.Errorf("kernel command line: cloudsteer.slot=%q is neither a nor b", clip(slot))
}

// Other returns the slot that is not slot.
func Other(slot string) string {
	if slot == "a" {
		return "b"
	}
	return "a"
}

// ImageVersion reads IMAGE_VERSION from os-release ("" when absent).
func (s System) ImageVersion() (string, error) {
	f, err := os.Open(s.OSRelease)
	if err != nil {
		return "", fmt.Errorf("read os-release: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 64<<10))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok || k != "IMAGE_VERSION" {
			continue
		}
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		} else {
			v = strings.Trim(v, `'"`)
		}
		return v, nil
	}
	return "", sc.Err()
}

// EntryOptions is the kernel command line of slot's boot entry on arch.
func EntryOptions(slot, arch string) string {
	serial := "console=ttyS0,115200"
	if arch == "arm64" {
		serial = "console=ttyAMA0"
	}
	return "root=PARTLABEL=root-" + slot + " rootfstype=squashfs ro cloudsteer.slot=" + slot + " console=tty0 " + serial
}

// EntryText is the Boot Loader Specification entry of slot holding
// version.
func EntryText(slot, version, arch string) string {
	return "title cloudsteer " + version + " (slot " + slot + ")\n" +
		"sort-key cloudsteer\n" +
		"version " + version + "\n" +
		"linux /" + slot + "/vmlinuz\n" +
		"initrd /" + slot + "/initrd.img\n" +
		"options " + EntryOptions(slot, arch) + "\n"
}

// InstallOptions tune Install.
type InstallOptions struct {
	// Tries is the boot counter of the new entry: how many boots it gets
	// to come up healthy before systemd-boot falls back (default 3).
	Tries int
	// NoReboot leaves the reboot to the admin.
	NoReboot bool
	// Progress, when set, gets a line for each step.
	Progress func(format string, a ...any)
}

// MaxTries bounds InstallOptions.Tries.
const MaxTries = 10

// Result is what Install did.
type Result struct {
	Manifest *Manifest
	From, To string // slots
	Entry    string // the entry file written
	Rebooted bool
	Took     time.Duration
}

// Install writes the bundle read from r into the slot that is not running:
// the root to its partition (read back and compared), the kernel and
// initrd to the ESP, then its boot-counted entry, and reboots unless
// opts.NoReboot. The signature is checked before anything is written; the
// other slot's old entry is removed before its partition is touched, and
// the new entry is written only when everything else verified, so a
// failure at any point leaves no bootable half-written slot.
func (s System) Install(ctx context.Context, r io.Reader, pub ed25519.PublicKey, opts InstallOptions) (*Result, error) {
	start := time.Now()
	say := opts.Progress
	if say == nil {
		say = func(string, ...any) {}
	}
	tries := opts.Tries
	if tries == 0 {
		tries = 3
	}
	if tries < 1 || tries > MaxTries {
		return nil, fmt.Errorf("install upgrade: tries %d out of range (1..%d)", tries, MaxTries)
	}
	cur, err := s.CurrentSlot()
	if err != nil {
		return nil, fmt.Errorf("install upgrade: %w", err)
	}
	other := Other(cur)
	if s.LockFile != "" {
		unlock, err := lockFile(s.LockFile)
		if err != nil {
			return nil, fmt.Errorf("install upgrade: %w", err)
		}
		defer unlock()
	}
	running, err := s.ImageVersion()
	if err != nil {
		return nil, fmt.Errorf("install upgrade: %w", err)
	}
	br, err := Open(&ctxReader{ctx, r}, pub)
	if err != nil {
		return nil, fmt.Errorf("install upgrade: %w", err)
	}
	m := br.Manifest()
	say("bundle %s (%s) signature verified", m.Version, m.Arch)
	if m.Arch != s.Arch {
		return nil, fmt.Errorf("install upgrade: the bundle is for %s, this machine is %s", m.Arch, s.Arch)
	}
	if running != "" && CompareVersions(m.Version, running) <= 0 {
		return nil, fmt.Errorf("install upgrade: version %s is not newer than the running %s (systemd-boot boots the newest version first, so it would never start)", m.Version, running)
	}
	rootFile, _ := m.File(RootName)
	part := filepath.Join(s.PartDir, "root-"+other)
	dev, size, err := s.openSlot(part, cur)
	if err != nil {
		return nil, fmt.Errorf("install upgrade: %w", err)
	}
	defer dev.Close()
	if rootFile.Size > size {
		return nil, fmt.Errorf("install upgrade: root.squashfs is %d bytes, the partition root-%s only %d", rootFile.Size, other, size)
	}
	res := &Result{Manifest: m, From: cur, To: other}
	log := s.log()
	log.Info("upgrade starts", "version", m.Version, "from_slot", cur, "to_slot", other, "running", running)

	// From here on the other slot is being overwritten: first make sure
	// nothing boots it.
	if err := s.removeEntries(other); err != nil {
		return nil, fmt.Errorf("install upgrade: %w", err)
	}

	f, fr, err := br.Next()
	if err != nil {
		return nil, fmt.Errorf("install upgrade: %w", err)
	}
	say("writing %s (%d MiB) to %s", f.Name, f.Size>>20, part)
	if _, err := dev.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("install upgrade: %w", err)
	}
	if n, err := io.Copy(onlyWriter{dev}, fr); err != nil {
		return nil, fmt.Errorf("install upgrade: write root-%s: %w", other, err)
	} else if n != f.Size {
		return nil, fmt.Errorf("install upgrade: wrote %d of %d bytes to root-%s", n, f.Size, other)
	}
	if err := dev.Sync(); err != nil {
		return nil, fmt.Errorf("install upgrade: sync root-%s: %w", other, err)
	}
	if s.afterWrite != nil {
		s.afterWrite()
	}
	if err := readBack(dev, f); err != nil {
		return nil, fmt.Errorf("install upgrade: root-%s: %w", other, err)
	}
	say("root-%s read back: sha256 matches", other)

	kdir := filepath.Join(s.ESP, other)
	if err := os.MkdirAll(kdir, 0o700); err != nil {
		return nil, fmt.Errorf("install upgrade: %w", err)
	}
	for range 2 {
		f, fr, err := br.Next()
		if err != nil {
			return nil, fmt.Errorf("install upgrade: %w", err)
		}
		dst := filepath.Join(kdir, f.Name)
		if err := writeVerified(dst, fr, f); err != nil {
			return nil, fmt.Errorf("install upgrade: %w", err)
		}
		say("%s copied to %s", f.Name, dst)
	}
	if _, _, err := br.Next(); !errors.Is(err, io.EOF) {
		if err == nil {
			err = errors.New("read bundle: more files than the manifest lists")
		}
		return nil, fmt.Errorf("install upgrade: %w", err)
	}
	if err := syncDir(kdir); err != nil {
		return nil, fmt.Errorf("install upgrade: %w", err)
	}

	name := fmt.Sprintf("cloudsteer-%s+%d.conf", other, tries)
	entries := filepath.Join(s.ESP, "loader", "entries")
	if err := os.MkdirAll(entries, 0o700); err != nil {
		return nil, fmt.Errorf("install upgrade: %w", err)
	}
	if err := writeFileSync(filepath.Join(entries, name), []byte(EntryText(other, m.Version, m.Arch))); err != nil {
		return nil, fmt.Errorf("install upgrade: write boot entry: %w", err)
	}
	res.Entry = filepath.Join(entries, name)
	say("boot entry %s written (%d tries)", name, tries)
	if s.StateFile != "" {
		// So that status shows the pending upgrade until the reboot.
		if st, err := s.Inspect(); err == nil {
			if err := WriteState(s.StateFile, st); err != nil {
				log.Warn("record slot state", "err", err)
			}
		}
	}
	log.Info("upgrade written", "version", m.Version, "slot", other, "entry", name, "took", time.Since(start).Round(time.Millisecond))
	res.Took = time.Since(start)
	if opts.NoReboot {
		return res, nil
	}
	say("rebooting into slot %s", other)
	if _, err := s.reboot(ctx); err != nil {
		return res, fmt.Errorf("install upgrade: %w", err)
	}
	res.Rebooted = true
	return res, nil
}

// reboot runs the reboot command.
func (s System) reboot(ctx context.Context) (bool, error) {
	if len(s.Reboot) == 0 {
		return false, errors.New("reboot: no reboot command")
	}
	out, err := exec.CommandContext(ctx, s.Reboot[0], s.Reboot[1:]...).CombinedOutput()
	if err != nil {
		return false, fmt.Errorf("reboot (%s): %w: %s", strings.Join(s.Reboot, " "), err, bytes.TrimSpace(out))
	}
	return true, nil
}

// lockFile takes an exclusive lock on path, failing at once when another
// process holds it.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, errors.New("another upgrade is running")
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// openSlot opens the inactive slot's partition for writing and returns its
// size. It refuses the running slot's device, and (for block devices) a
// partition on another disk than the running slot's: a second disk with
// the image on it (the USB stick it was flashed from) carries the same
// labels.
func (s System) openSlot(part, cur string) (*os.File, int64, error) {
	dev, err := os.OpenFile(part, os.O_RDWR, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("open slot: %w", err)
	}
	fail := func(err error) (*os.File, int64, error) {
		dev.Close()
		return nil, 0, err
	}
	fi, err := dev.Stat()
	if err != nil {
		return fail(fmt.Errorf("open slot: %w", err))
	}
	if fi.Mode().IsDir() {
		return fail(fmt.Errorf("open slot: %s is a directory", part))
	}
	curPath := filepath.Join(s.PartDir, "root-"+cur)
	if cfi, err := os.Stat(curPath); err == nil && os.SameFile(fi, cfi) {
		return fail(fmt.Errorf("open slot: %s is the running slot's partition", part))
	}
	if fi.Mode()&os.ModeDevice != 0 && s.SysBlock != "" {
		if err := s.sameDisk(dev, curPath); err != nil {
			return fail(fmt.Errorf("open slot: %w", err))
		}
	}
	size, err := dev.Seek(0, io.SeekEnd)
	if err != nil {
		return fail(fmt.Errorf("open slot: size of %s: %w", part, err))
	}
	return dev, size, nil
}

// sameDisk checks that dev and the partition at curPath are on one disk.
func (s System) sameDisk(dev *os.File, curPath string) error {
	disk := func(rdev uint64) (string, error) {
		p, err := filepath.EvalSymlinks(filepath.Join(s.SysBlock, fmt.Sprintf("%d:%d", unix.Major(rdev), unix.Minor(rdev))))
		if err != nil {
			return "", err
		}
		return filepath.Dir(p), nil // .../block/sda/sda3 -> .../block/sda
	}
	var st, ct unix.Stat_t
	if err := unix.Fstat(int(dev.Fd()), &st); err != nil {
		return err
	}
	if err := unix.Stat(curPath, &ct); err != nil {
		// No running slot's partition by label: nothing to compare with.
		return nil
	}
	if ct.Mode&unix.S_IFMT != unix.S_IFBLK {
		return nil
	}
	a, err := disk(st.Rdev)
	if err != nil {
		return fmt.Errorf("find the disk of %s: %w", dev.Name(), err)
	}
	b, err := disk(ct.Rdev)
	if err != nil {
		return fmt.Errorf("find the disk of %s: %w", curPath, err)
	}
	if a != b {
		return fmt.Errorf("%s is on %s, the running slot on %s: another disk with the image is attached (remove it and try again)", dev.Name(), filepath.Base(a), filepath.Base(b))
	}
	return nil
}

// readBack drops the cached pages of dev and reads f.Size bytes from its
// start, comparing the hash with the manifest's.
func readBack(dev *os.File, f File) error {
	fd := int(dev.Fd())
	// Read what is on the device, not the page cache: BLKFLSBUF for a
	// block device (ENOTTY on a file), fadvise for both.
	_ = unix.IoctlSetInt(fd, unix.BLKFLSBUF, 0)
	_ = unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED)
	h := sha256.New()
	n, err := io.Copy(h, io.NewSectionReader(dev, 0, f.Size))
	if err != nil {
		return fmt.Errorf("read back: %w", err)
	}
	if n != f.Size {
		return fmt.Errorf("read back: %d of %d bytes", n, f.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != f.SHA256 {
		return fmt.Errorf("read back: sha256 %s, the manifest says %s (the write did not stick)", got, f.SHA256)
	}
	return nil
}

// writeVerified copies a payload file into dst through a temporary file,
// renamed over dst only once the bundle reader verified it.
func writeVerified(dst string, r io.Reader, f File) error {
	tmp := dst + ".tmp"
	_ = os.Remove(tmp)
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		os.Remove(tmp)
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// writeFileSync writes b to path through a temporary file in the same
// directory, synced and renamed, and syncs the directory.
func writeFileSync(path string, b []byte) error {
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	if err := writeNew(tmp, b, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

// syncDir fsyncs a directory (vfat accepts it; EINVAL from a file system
// that does not is ignored).
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// entryRE is a cloudsteer entry's file name: slot, then the boot counter
// (+LEFT or +LEFT-DONE) while it is on trial.
var entryRE = regexp.MustCompile(`^cloudsteer-([ab])(?:\+(\d{1,4})(?:-(\d{1,4}))?)?\.conf$`)

// removeEntries deletes every entry of slot (counted or not).
func (s System) removeEntries(slot string) error {
	dir := filepath.Join(s.ESP, "loader", "entries")
	des, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove old entries: %w", err)
	}
	removed := false
	for _, de := range des {
		m := entryRE.FindStringSubmatch(de.Name())
		if m == nil || m[1] != slot {
			continue
		}
		if err := os.Remove(filepath.Join(dir, de.Name())); err != nil {
			return fmt.Errorf("remove old entry: %w", err)
		}
		s.log().Info("old boot entry removed", "entry", de.Name())
		removed = true
	}
	if removed {
		return syncDir(dir)
	}
	return nil
}

// onlyWriter hides a file's ReadFrom so io.Copy goes through the bundle
// reader's Read, which is where the verification happens.
type onlyWriter struct{ w io.Writer }

func (o onlyWriter) Write(p []byte) (int, error) { return o.w.Write(p) }

// ctxReader stops reading when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

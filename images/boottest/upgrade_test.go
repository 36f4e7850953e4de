//go:build boottest

package boottest

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
	"github.com/cloudsteer/cloudsteer/lab"
)

// Upgrade bundles the boot test makes from the image it boots: a second
// build (the same root with IMAGE_VERSION bumped) and a broken one (its
// cloudsteer fails, so the health gate fails and the boot counter runs
// out), both signed with the build's key and bundled by cloudsteer-image.
type bundles struct {
	base, good, broken   string // versions
	goodFile, brokenFile string
	err                  error
	took                 time.Duration
}

// Bounds of the upgrade steps.
const (
	rebootWait    = 6 * time.Minute // the upgrade command → the new slot answers
	rollbackWait  = 8 * time.Minute // → the broken slot failed and the good one is back
	brokenHealthy = "10s"           // the broken build's health gate wait
)

// upgradeKey is the build's signing key: $UPGRADE_KEY or
// images/out/keys/upgrade.key (what make image uses).
func upgradeKey() string {
	if k := os.Getenv("UPGRADE_KEY"); k != "" {
		return k
	}
	k, _ := filepath.Abs(filepath.Join("..", "out", "keys", "upgrade.key"))
	return k
}

// imageTool is the cloudsteer-image binary: $CLOUDSTEER_IMAGE_TOOL, or
// the one TestMain built from ./cmd/cloudsteer-image.
func imageTool() string {
	if p := os.Getenv("CLOUDSTEER_IMAGE_TOOL"); p != "" {
		return p
	}
	return bins.image
}

// requireUpgradeTools stops the test unless bundles can be made: a
// failure under CI=true, a skip elsewhere.
func requireUpgradeTools(t *testing.T) {
	t.Helper()
	privtest.RequireCommand(t, "unsquashfs", "mksquashfs")
	var missing []string
	if tool := imageTool(); tool == "" {
		missing = append(missing, "cloudsteer-image (./cmd/cloudsteer-image or $CLOUDSTEER_IMAGE_TOOL)")
	}
	if _, err := os.Stat(upgradeKey()); err != nil {
		missing = append(missing, "the signing key ("+upgradeKey()+" or $UPGRADE_KEY)")
	}
	if len(missing) > 0 {
		msg := "upgrade test needs " + strings.Join(missing, " and ")
		if privtest.InCI() {
			t.Fatal(msg + " (CI=true: not skipping)")
		}
		t.Skip(msg)
	}
}

// makeBundles extracts slot a's root, kernel and initrd from the
// decompressed disk (before its first boot) and builds the two bundles in
// dir. It runs while the VM boots; wait on the returned channel.
func makeBundles(ctx context.Context, disk, dir, arch string) <-chan *bundles {
	ch := make(chan *bundles, 1)
	root := filepath.Join(dir, "root-a.squashfs")
	kernel := filepath.Join(dir, "vmlinuz")
	initrd := filepath.Join(dir, "initrd.img")
	b := &bundles{}
	// The copies are made now (synchronously): the VM will write the
	// disk once it runs.
	b.err = func() error {
		if err := extractSquashfs(disk, "root-a", root); err != nil {
			return err
		}
		for path, src := range map[string]string{kernel: "/a/vmlinuz", initrd: "/a/initrd.img"} {
			data, err := ReadESP(ctx, disk, src)
			if err != nil {
				return err
			}
			if err := os.WriteFile(path, data, 0o600); err != nil {
				return err
			}
		}
		return nil
	}()
	if b.err != nil {
		ch <- b
		return ch
	}
	go func() {
		start := time.Now()
		b.err = b.build(ctx, dir, root, kernel, initrd, arch)
		b.took = time.Since(start)
		ch <- b
	}()
	return ch
}

func (b *bundles) build(ctx context.Context, dir, root, kernel, initrd, arch string) error {
	tree := filepath.Join(dir, "rootfs")
	if out, err := exec.CommandContext(ctx, "unsquashfs", "-no-progress", "-quiet", "-d", tree, root).CombinedOutput(); err != nil {
		return fmt.Errorf("unsquashfs: %w: %s", err, out)
	}
	osRelease := filepath.Join(tree, "usr", "lib", "os-release")
	rel, err := os.ReadFile(osRelease)
	if err != nil {
		return fmt.Errorf("read the image's os-release: %w", err)
	}
	m := regexp.MustCompile(`(?m)^IMAGE_VERSION="?([^"\n]+)"?$`).FindSubmatch(rel)
	if m == nil {
		return fmt.Errorf("the image's os-release has no IMAGE_VERSION:\n%s", rel)
	}
	// A ".N" segment more: newer than the base for systemd-boot and
	// cloudsteer upgrade alike (strverscmp_improved), .2 newer than .1.
	b.base = string(m[1])
	b.good, b.broken = b.base+".1", b.base+".2"
	setVersion := func(v string) error {
		out := regexp.MustCompile(`(?m)^IMAGE_VERSION=.*$`).ReplaceAll(rel, []byte("IMAGE_VERSION="+v))
		if err := os.Remove(osRelease); err != nil { // it may be a hard link
			return err
		}
		return os.WriteFile(osRelease, out, 0o644)
	}
	pack := func(version, out string) error {
		sq := filepath.Join(dir, version+".squashfs")
		// gzip at level 1: quick, and every kernel's squashfs reads it.
		if out, err := exec.CommandContext(ctx, "mksquashfs", tree, sq, "-noappend", "-quiet", "-no-progress",
			"-comp", "gzip", "-Xcompression-level", "1", "-processors", "1").CombinedOutput(); err != nil {
			return fmt.Errorf("mksquashfs: %w: %s", err, out)
		}
		defer os.Remove(sq)
		cmd := exec.CommandContext(ctx, imageTool(), "bundle", "--key", upgradeKey(), "--version", version, "--arch", arch,
			"--root", sq, "--kernel", kernel, "--initrd", initrd, "--out", out)
		if o, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("cloudsteer-image bundle %s: %w: %s", version, err, o)
		}
		return nil
	}
	if err := setVersion(b.good); err != nil {
		return err
	}
	b.goodFile = filepath.Join(dir, "good.upgrade")
	if err := pack(b.good, b.goodFile); err != nil {
		return err
	}
	// The broken build: cloudsteer exits at once, and its health gate
	// waits only brokenHealthy for it (the real command, a shorter wait).
	if err := setVersion(b.broken); err != nil {
		return err
	}
	dropIns := map[string]string{
		"cloudsteer.service.d/zz-boottest-broken.conf":  "[Service]\nExecStart=\nExecStart=/bin/sh -c 'echo \"boottest: this cloudsteer is broken on purpose\"; exit 1'\n",
		"cloudsteer-healthy.service.d/zz-boottest.conf": "[Service]\nExecStart=\nExecStart=/usr/bin/cloudsteer health --wait " + brokenHealthy + "\n",
	}
	for name, text := range dropIns {
		p := filepath.Join(tree, "usr", "lib", "systemd", "system", name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			return err
		}
	}
	b.brokenFile = filepath.Join(dir, "broken.upgrade")
	if err := pack(b.broken, b.brokenFile); err != nil {
		return err
	}
	return os.RemoveAll(tree)
}

// extractSquashfs copies the squashfs in the named partition of disk to
// dst (its bytes_used long, not the whole partition).
func extractSquashfs(disk, part, dst string) error {
	p, err := FindPartition(disk, part)
	if err != nil {
		return err
	}
	f, err := os.Open(disk)
	if err != nil {
		return err
	}
	defer f.Close()
	sb := make([]byte, 96)
	if _, err := f.ReadAt(sb, p.Offset()); err != nil {
		return fmt.Errorf("read %s superblock: %w", part, err)
	}
	if string(sb[:4]) != "hsqs" {
		return fmt.Errorf("%s holds no squashfs", part)
	}
	used := int64(binary.LittleEndian.Uint64(sb[40:]))
	if max := int64(p.EndLBA-p.FirstLBA+1) * 512; used <= 0 || used > max {
		return fmt.Errorf("%s: squashfs size %d out of the partition's %d", part, used, max)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	if _, err := io.Copy(out, io.NewSectionReader(f, p.Offset(), used)); err != nil {
		return fmt.Errorf("copy %s: %w", part, err)
	}
	return out.Close()
}

// sshStdin is ssh with a file as the remote command's standard input.
func (r *vmRun) sshStdin(timeout time.Duration, stdin, command string) (string, error) {
	ctx, cancel := context.WithTimeout(r.ctx, timeout)
	defer cancel()
	f, err := os.Open(stdin)
	if err != nil {
		return "", err
	}
	defer f.Close()
	cmd := r.lab.Command(ctx, lab.RoleLAN, "ssh", "-i", sshKeys[r.t.Name()], "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
		"-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "root@"+r.router.String(), command)
	cmd.Stdin = f
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	return out.String(), err
}

var linuxBootRE = bootMarkers[0].re

// installBundle pipes a bundle into `cloudsteer upgrade --tries N -` over
// SSH (with --no-reboot unless reboot) and returns its output.
func (r *vmRun) installBundle(bundle string, tries int, reboot bool) (string, error) {
	cmd := fmt.Sprintf("cloudsteer upgrade --tries %d -", tries)
	if !reboot {
		cmd = fmt.Sprintf("cloudsteer upgrade --no-reboot --tries %d -", tries)
	}
	return r.sshStdin(3*time.Minute, bundle, cmd)
}

// upgradeTo pipes a bundle into `cloudsteer upgrade` over SSH and waits
// for the VM to reboot boots times (the serial console shows each) and
// answer SSH again; it returns the boot's /proc/cmdline and os-release,
// and the serial console's line count when the upgrade began.
func (r *vmRun) upgradeTo(t *testing.T, bundle string, tries, boots int, wait time.Duration, label string) (cmdline, osRelease string, serialFrom int) {
	t.Helper()
	serialFrom = r.con.Len()
	start := time.Now()
	out, err := r.installBundle(bundle, tries, true)
	// The VM reboots at the end: ssh may lose its connection.
	if !strings.Contains(out, "rebooting into slot") {
		r.fatalf(t, "cloudsteer upgrade: %v\n%s", err, out)
	}
	t.Logf("cloudsteer upgrade (%s):\n%s", time.Since(start).Round(time.Second), out)
	r.tl.Mark("upgrade " + label + ": bundle written")
	cmdline, osRelease = r.awaitBoots(t, serialFrom, boots, wait, label)
	return cmdline, osRelease, serialFrom
}

// awaitBoots waits (at most wait) for boots boots on the serial console
// from line from on, then for SSH; it returns the boot's /proc/cmdline and
// os-release.
func (r *vmRun) awaitBoots(t *testing.T, from, boots int, wait time.Duration, label string) (cmdline, osRelease string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(r.ctx, wait)
	defer cancel()
	for i := range boots {
		l, err := r.con.WaitFrom(ctx, from, linuxBootRE)
		if err != nil {
			r.fatalf(t, "upgrade %s: reboot %d of %d not seen on the serial console within %s: %v", label, i+1, boots, wait, err)
		}
		r.tl.MarkAt(fmt.Sprintf("upgrade %s: shutdown + firmware (boot %d)", label, i+1), l.At)
		from = r.con.Len()
		r.followPhases(from, fmt.Sprintf(" [%s boot %d]", label, i+1), bootMarkers[1:])
	}
	ok := eventually(time.Until(deadline(ctx)), 3*time.Second, func() bool {
		out, err := r.ssh(20*time.Second, "cat /proc/cmdline; echo ----; cat /usr/lib/os-release")
		if err != nil {
			return false
		}
		cmdline, osRelease, _ = strings.Cut(out, "----")
		return true
	})
	if !ok {
		r.fatalf(t, "upgrade %s: the VM did not answer SSH within %s of the upgrade", label, wait)
	}
	r.tl.Mark("upgrade " + label + ": back on ssh")
	return cmdline, osRelease
}

// serialSequence checks that the serial console, from line from on, has
// lines matching each pattern in that order.
func (r *vmRun) serialSequence(from int, patterns ...string) error {
	for _, p := range patterns {
		i, _, ok := r.con.FindIndex(from, regexp.MustCompile(p))
		if !ok {
			return fmt.Errorf("no line matching %q after line %d", p, from)
		}
		from = i + 1
	}
	return nil
}

func deadline(ctx context.Context) time.Time {
	d, ok := ctx.Deadline()
	if !ok {
		return time.Now().Add(time.Minute)
	}
	return d
}

// slotOf reads cloudsteer.slot= from a kernel command line.
func slotOf(cmdline string) string {
	m := regexp.MustCompile(`cloudsteer\.slot=([ab])`).FindStringSubmatch(cmdline)
	if m == nil {
		return ""
	}
	return m[1]
}

// imageVersion reads IMAGE_VERSION from an os-release text.
func imageVersion(osRelease string) string {
	m := regexp.MustCompile(`(?m)^IMAGE_VERSION="?([^"\n]+)"?$`).FindStringSubmatch(osRelease)
	if m == nil {
		return ""
	}
	return m[1]
}

// checkUpgrades upgrades the running VM to the second build, then to the
// broken one, which must roll back to the second by itself. during (the
// WAN scan) runs while the second build is written to the inactive slot:
// SSH on the LAN and a scan from the internet side do not touch each
// other, and the scan is otherwise a minute the VM mostly idles. It runs
// whether or not the bundles could be made.
func (r *vmRun) checkUpgrades(ready <-chan *bundles, during func()) {
	ran := false
	defer func() {
		if !ran {
			during()
		}
	}()
	var b *bundles
	r.step("upgrade bundles built", func(t *testing.T) {
		select {
		case b = <-ready:
		case <-r.ctx.Done():
			t.Fatal("bundles not built within the test's budget")
		}
		if b.err != nil {
			t.Fatalf("make upgrade bundles: %v", b.err)
		}
		t.Logf("bundles %s and %s (broken) built in %s (beside the boot)", b.good, b.broken, b.took.Round(time.Second))
	})
	if b == nil || b.err != nil {
		return
	}
	type install struct {
		out  string
		err  error
		took time.Duration
	}
	from := r.con.Len()
	done := make(chan install, 1)
	go func() {
		start := time.Now()
		out, err := r.installBundle(b.goodFile, 3, false)
		done <- install{out, err, time.Since(start)}
	}()
	ran = true
	during()
	var in install
	select {
	case in = <-done:
	case <-r.ctx.Done():
		in.err = r.ctx.Err()
	}
	r.tl.Mark("upgrade good: bundle written (beside the WAN scan)")
	goodOK := r.step("upgrade to a second build", func(t *testing.T) {
		if in.err != nil || !strings.Contains(in.out, "is in slot b; reboot to start it") {
			r.fatalf(t, "cloudsteer upgrade --no-reboot: %v\n%s", in.err, in.out)
		}
		t.Logf("cloudsteer upgrade --no-reboot (%s, beside the WAN scan):\n%s", in.took.Round(time.Second), in.out)
		// The connection may drop as the VM goes down.
		_, _ = r.ssh(30*time.Second, "systemctl reboot")
		cmdline, rel := r.awaitBoots(t, from, 1, rebootWait, "good")
		if v := imageVersion(rel); v != b.good || slotOf(cmdline) != "b" {
			r.fatalf(t, "after the upgrade: IMAGE_VERSION %q slot %q, want %q on slot b", v, slotOf(cmdline), b.good)
		}
		// Marked good once healthy: systemd-bless-boot drops the counter
		// from the entry's name.
		var entries string
		ok := eventually(3*time.Minute, 3*time.Second, func() bool {
			entries, _ = r.ssh(20*time.Second, "ls /efi/loader/entries")
			return strings.Contains(entries, "cloudsteer-b.conf")
		})
		if !ok {
			r.fatalf(t, "slot b was not marked good (no cloudsteer-b.conf): %s", entries)
		}
		r.tl.Mark("upgrade good: slot b blessed")
		status, _ := r.ssh(20*time.Second, "cloudsteer status")
		if !strings.Contains(status, b.good) {
			t.Errorf("cloudsteer status does not name the version %s:\n%s", b.good, status)
		}
	})
	if !goodOK {
		return
	}
	r.step("upgrade to a broken build rolls back", func(t *testing.T) {
		// One try: the broken slot boots once, fails its health gate
		// (FailureAction=reboot) and systemd-boot then boots the good one.
		cmdline, rel, from := r.upgradeTo(t, b.brokenFile, 1, 2, rollbackWait, "broken")
		if v := imageVersion(rel); v != b.good || slotOf(cmdline) != "b" {
			r.fatalf(t, "after the broken upgrade: IMAGE_VERSION %q slot %q, want the good %q on slot b", v, slotOf(cmdline), b.good)
		}
		// The serial console, in order, from the upgrade on: a boot of
		// slot a, its cloudsteer failing (systemd's status line), then a
		// boot of slot b.
		if err := r.serialSequence(from, `Command line: .*cloudsteer\.slot=a\b`, `\[FAILED\] Failed to start cloudsteer\.service`,
			`Command line: .*cloudsteer\.slot=b\b`); err != nil {
			t.Errorf("the serial console does not show the broken slot booting and failing before slot b: %v", err)
		}
		// The journal of the broken boot is not read: the image now asks
		// for a persistent journal, but in the run of 21:18 on 2026-12-03
		// "journalctl -b -1" after the rollback showed nothing of slot a.
		// The boot counter in the ESP: the broken entry used its one try
		// and was never blessed; it names the broken version.
		entries, _ := r.ssh(20*time.Second, "ls /efi/loader/entries; echo ----; cat '/efi/loader/entries/cloudsteer-a+0-1.conf'")
		if !regexp.MustCompile(`cloudsteer-a\+0-1\.conf`).MatchString(entries) || !regexp.MustCompile(`(?m)^version\s+`+regexp.QuoteMeta(b.broken)+`\s*$`).MatchString(entries) {
			t.Errorf("the broken slot's entry is not marked bad (cloudsteer-a+0-1.conf, version %s): %s", b.broken, entries)
		}
		status, _ := r.ssh(20*time.Second, "cloudsteer status")
		if !strings.Contains(status, "rolled back") {
			t.Errorf("cloudsteer status does not report the rollback:\n%s", status)
		}
		t.Logf("status after the rollback:\n%s", status)
	})
}

// TestMakeBundles checks the bundle making on its own (no VM): both
// bundles verify with the build's public key and carry the versions.
func TestMakeBundles(t *testing.T) {
	privtest.RequireRoot(t)
	requireUpgradeTools(t)
	img := findImage(t, "amd64")
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	if err := Decompress(t.Context(), img, disk, 0); err != nil {
		t.Fatal(err)
	}
	b := <-makeBundles(t.Context(), disk, t.TempDir(), "amd64")
	if b.err != nil {
		t.Fatal(b.err)
	}
	t.Logf("built %s and %s in %s", b.good, b.broken, b.took.Round(time.Second))
	pub := strings.TrimSuffix(upgradeKey(), ".key") + ".pub"
	for file, v := range map[string]string{b.goodFile: b.good, b.brokenFile: b.broken} {
		out, err := exec.Command(imageTool(), "verify", "--pub", pub, file).CombinedOutput()
		if err != nil || !strings.Contains(string(out), v) {
			t.Fatalf("cloudsteer-image verify %s: %v\n%s", file, err, out)
		}
	}
}

//go:build boottest

package boottest

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
	"github.com/cloudsteer/cloudsteer/lab"
)

// bins are the binaries TestMain builds once.
var bins struct{ lab, image string }

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		if privtest.InCI() {
			fmt.Fprintln(os.Stderr, "boottest: needs root (CI=true: failing, not skipping)")
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, "boottest: skipped, needs root")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "cloudsteer-boottest-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins.lab = filepath.Join(dir, "cloudsteer-lab")
	build := map[string]string{bins.lab: "./cmd/cloudsteer-lab"}
	// The upgrade bundles' tool (the upgrade tests need it; without it
	// they fail under CI=true).
	if _, err := os.Stat("../../cmd/cloudsteer-image"); err == nil {
		bins.image = filepath.Join(dir, "cloudsteer-image")
		build[bins.image] = "./cmd/cloudsteer-image"
	}
	for out, pkg := range build {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = "../.."
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, b)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Bounds of a boot test. TCG on a loaded 2-core machine is slow: the waits
// are generous, but each is bounded and the whole test is bounded by
// testBudget.
const (
	testBudget  = 15 * time.Minute
	bootWait    = 8 * time.Minute // qemu start → a DHCP lease on the LAN
	healthyWait = 4 * time.Minute // lease → the console answers
	// arm64 is emulated instruction by instruction (TCG, no host of that
	// architecture): its smaller test gets longer bounds.
	arm64Budget      = 20 * time.Minute
	arm64BootWait    = 14 * time.Minute
	arm64HealthyWait = 5 * time.Minute
	diskSize         = 3 << 30 // the scratch disk: the image grown for the data partition
	serialTailLines  = 60
)

// imageEnv names the environment variable that overrides the image of an
// architecture.
var imageEnv = map[string]string{"amd64": "CLOUDSTEER_IMAGE", "arm64": "CLOUDSTEER_IMAGE_ARM64"}

// findImage returns the image to boot: $CLOUDSTEER_IMAGE (arm64:
// $CLOUDSTEER_IMAGE_ARM64), else the newest images/out/cloudsteer-*-ARCH.img.xz.
// Without one the test fails under CI=true and is skipped elsewhere.
func findImage(t *testing.T, arch string) string {
	t.Helper()
	if p := os.Getenv(imageEnv[arch]); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("$%s: %v", imageEnv[arch], err)
		}
		return p
	}
	matches, _ := filepath.Glob(filepath.Join("..", "out", "cloudsteer-*-"+arch+".img.xz"))
	if len(matches) == 0 {
		msg := fmt.Sprintf("no %s image: build one (make image) or set $%s", arch, imageEnv[arch])
		if privtest.InCI() {
			t.Fatal(msg + " (CI=true: not skipping)")
		}
		t.Skip(msg)
	}
	sort.Slice(matches, func(i, j int) bool {
		a, _ := os.Stat(matches[i])
		b, _ := os.Stat(matches[j])
		return a.ModTime().After(b.ModTime())
	})
	p, err := filepath.Abs(matches[0])
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// vmRun is one VM booted as the gateway of a namespace lab.
type vmRun struct {
	t       *testing.T
	ctx     context.Context // the test's whole budget
	lab     *lab.Lab
	tl      *Timeline
	m       Machine
	con     *Console
	exited  <-chan error // qemu's exit
	lease   lab.Lease
	router  netip.Addr // the VM's LAN address (the lease's router)
	started time.Time  // qemu started (the last boot)
	arch    string
}

// bootOptions say what to boot.
type bootOptions struct {
	arch  string
	image string
	// esp are files written to the ESP before the first boot; espFunc,
	// when set, makes them from the decompressed disk (it may read the
	// image's own ESP first).
	esp     []ESPFile
	espFunc func(disk string) ([]ESPFile, error)
	// mem is the VM's memory in MiB (default 1024).
	mem int
	// bootWait bounds qemu's start → a DHCP lease (default bootWait).
	bootWait time.Duration
}

// serial console lines that end boot phases, in boot order; a phase whose
// line does not show is left out of the timeline.
type bootMarker struct {
	phase string
	re    *regexp.Regexp
}

var bootMarkers = []bootMarker{
	{"firmware + boot loader", regexp.MustCompile(`Linux version [0-9]|Booting Linux on`)},
	{"kernel (to /init)", regexp.MustCompile(`Run /init as init process|Run /sbin/init`)},
	{"initramfs (to systemd)", regexp.MustCompile(`systemd\[1\]: |Welcome to `)},
	{"systemd (to multi-user.target)", regexp.MustCompile(`Reached target .*[Mm]ulti-[Uu]ser`)},
}

// boot brings up the lab with a VM gateway, writes the ESP files into a
// scratch copy of the image and boots it, then waits for a DHCP lease on
// the LAN client. Everything is torn down in t.Cleanup.
func boot(t *testing.T, o bootOptions) *vmRun {
	t.Helper()
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "ip", "xz", "mcopy", "mmd", "mdir", "udhcpc", "curl", "dig", "squid", QemuBinary[o.arch])
	for _, f := range []string{Firmwares[o.arch].Code, Firmwares[o.arch].Vars} {
		if _, err := os.Stat(f); err != nil {
			if privtest.InCI() {
				t.Fatalf("firmware: %v (install ovmf / qemu-efi-aarch64; CI=true: not skipping)", err)
			}
			t.Skipf("firmware: %v", err)
		}
	}
	budget := testBudget
	if o.arch == "arm64" {
		budget = arm64Budget
	}
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	t.Cleanup(cancel)
	r := &vmRun{t: t, ctx: ctx, tl: NewTimeline(), arch: o.arch}
	t.Cleanup(func() { t.Logf("timeline (%s, %s):\n%s", o.arch, filepath.Base(o.image), r.tl) })

	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	if err := Decompress(ctx, o.image, disk, diskSize); err != nil {
		t.Fatal(err)
	}
	r.tl.Mark("decompress image")
	if o.espFunc != nil {
		files, err := o.espFunc(disk)
		if err != nil {
			t.Fatal(err)
		}
		o.esp = append(o.esp, files...)
	}
	if len(o.esp) > 0 {
		if err := WriteESP(ctx, disk, dir, o.esp); err != nil {
			t.Fatal(err)
		}
		r.tl.Mark("write router.conf to the ESP")
	}

	prefix := privtest.Unique("csb")
	lctx, lcancel := context.WithTimeout(ctx, 90*time.Second)
	l, err := lab.Up(lctx, lab.Options{Prefix: prefix, Dir: filepath.Join(dir, "lab"), LabBinary: bins.lab, Squid: true, VMGateway: true})
	lcancel()
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	r.lab = l
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
		if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), prefix) {
			t.Errorf("namespaces left behind: %s", out)
		}
	})
	r.tl.Mark("lab up (namespaces, servers, Squid)")

	r.m = Machine{Arch: o.arch, Disk: disk, Dir: dir, MemMiB: o.mem, WANTap: lab.TapWAN, LANTap: lab.TapLAN}
	if err := r.m.Prepare(); err != nil {
		t.Fatal(err)
	}
	r.con = FollowConsole(r.m.SerialLog())
	t.Cleanup(r.con.Close)
	t.Cleanup(func() {
		// The run directory goes with the test: keep the whole serial log
		// of a failed run.
		if !t.Failed() {
			return
		}
		keep := filepath.Join(os.TempDir(), fmt.Sprintf("cloudsteer-boottest-%s-%s-serial.log", o.arch, prefix))
		if b, err := os.ReadFile(r.m.SerialLog()); err == nil && os.WriteFile(keep, b, 0o600) == nil {
			t.Logf("serial console log kept in %s", keep)
		}
	})
	r.start()
	wait := o.bootWait
	switch {
	case wait != 0:
	case o.arch == "arm64":
		wait = arm64BootWait
	default:
		wait = bootWait
	}
	r.waitLease(wait)
	return r
}

// start starts qemu (again, after a poweroff) and follows the boot phases
// on the serial console in the background.
func (r *vmRun) start() {
	t := r.t
	t.Helper()
	args, err := r.m.Command()
	if err != nil {
		t.Fatal(err)
	}
	from := r.con.Len()
	cmd, exited, err := r.lab.StartVM(filepath.Join(r.m.Dir, "qemu.log"), args...)
	if err != nil {
		t.Fatal(err)
	}
	r.exited = exited
	r.started = time.Now()
	t.Cleanup(func() {
		// lab.Close ends every process in the namespaces too; stop qemu
		// first so the serial log is complete.
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				t.Errorf("qemu (pid %d) did not exit after SIGKILL", cmd.Process.Pid)
			}
		}
	})
	r.followPhases(from, "", bootMarkers)
}

// followPhases marks the boot phases of markers as their serial console
// lines show (from line index from on), with suffix appended to the phase
// names.
func (r *vmRun) followPhases(from int, suffix string, markers []bootMarker) {
	go func() {
		for _, m := range markers {
			l, err := r.con.WaitFrom(r.ctx, from, m.re)
			if err != nil {
				return
			}
			r.tl.MarkAt(m.phase+suffix, l.At)
		}
	}()
}

// fatalf fails t (the boot test or one of its subtests) with the serial
// console's last lines.
func (r *vmRun) fatalf(t testing.TB, format string, args ...any) {
	t.Helper()
	t.Fatalf("%s\n--- serial console (%s), last %d lines ---\n%s", fmt.Sprintf(format, args...), r.m.SerialLog(), serialTailLines, r.con.Tail(serialTailLines))
}

// waitLease waits (at most wait) until the LAN client has a DHCP lease
// from the VM, and points the client's resolver at the lease's DNS.
func (r *vmRun) waitLease(wait time.Duration) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.ctx, wait)
	defer cancel()
	go func() {
		select {
		case err := <-r.exited:
			r.t.Logf("qemu exited: %v", err)
			cancel()
		case <-ctx.Done():
		}
	}()
	lease, err := r.lab.DHCPLease(ctx, lab.RoleLAN)
	if err != nil {
		r.fatalf(r.t, "no DHCP lease from the VM within %s of qemu's start: %v", wait, err)
	}
	r.lease = lease
	r.router = lease.Router
	if !r.router.IsValid() {
		r.router = lease.Server
	}
	if len(lease.DNS) > 0 {
		if err := r.lab.SetResolvers(lab.RoleLAN, lease.DNS); err != nil {
			r.t.Fatal(err)
		}
	}
	r.tl.Mark("systemd to networkd (DHCP lease)")
	r.t.Logf("lease %s router %s dns %v after %s", lease.Addr, lease.Router, lease.DNS, time.Since(r.started).Round(time.Second))
}

// run runs a command in the namespace of role with a deadline and returns
// its standard output.
func (r *vmRun) run(role string, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(r.ctx, timeout)
	defer cancel()
	cmd := r.lab.Command(ctx, role, args...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out.String(), nil
}

// eventually polls cond every interval until it holds or timeout passes.
func eventually(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}

// step runs one check as a subtest and marks its end in the timeline.
func (r *vmRun) step(name string, fn func(t *testing.T)) bool {
	ok := r.t.Run(name, fn)
	r.tl.Mark("check: " + name)
	return ok
}

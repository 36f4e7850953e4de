package packaging

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

// bootScript runs inside `unshare --pid --fork --mount --net --uts`: it
// moves itself into a cgroup of its own (removed by the test) and boots
// the Debian root's systemd as PID 1 (pivot_root, as a container manager
// does) in a cgroup namespace rooted there.
const bootScript = `set -e
R=$1 CG=$2
mount --make-rprivate /
mkdir -p "$CG"
mount -t cgroup2 none "$CG"
mkdir "$CG/$3"
echo $$ > "$CG/$3/cgroup.procs"
umount "$CG"
mount --bind "$R" "$R"
mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys"
mount -t tmpfs -o mode=0755 tmpfs "$R/run"
# A /dev of its own (the host's devtmpfs is never mounted: systemd would
# change it), made as a container manager makes one.
mount -t tmpfs -o mode=0755 tmpfs "$R/dev"
mknod -m 666 "$R/dev/null" c 1 3
mknod -m 666 "$R/dev/zero" c 1 5
mknod -m 666 "$R/dev/full" c 1 7
mknod -m 666 "$R/dev/random" c 1 8
mknod -m 666 "$R/dev/urandom" c 1 9
mknod -m 666 "$R/dev/tty" c 5 0
mkdir -m 755 "$R/dev/pts"
mkdir -m 1777 "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mount -t tmpfs -o mode=1777 tmpfs "$R/dev/shm"
ln -s /proc/self/fd "$R/dev/fd"
# No logins on the host's virtual terminals.
ln -sf /dev/null "$R/etc/systemd/system/getty.target"
ln -sf /dev/null "$R/etc/systemd/system/console-getty.service"
ip link set lo up
mkdir -p "$R/.oldroot"
exec unshare --cgroup sh -c 'mount -t cgroup2 none "$0/sys/fs/cgroup" && cd "$0" && pivot_root . .oldroot &&
	/.oldroot/usr/bin/umount -l /.oldroot && rmdir /.oldroot &&
	exec /usr/bin/env container=cloudsteer-test /lib/systemd/systemd --system' "$R"
`

// booted is a systemd running as PID 1 in namespaces of the test's own.
type booted struct {
	t    *testing.T
	pid  int // systemd, as the host sees it
	root string
}

// boot starts the root's systemd and waits until it runs.
func boot(t *testing.T, root string) *booted {
	t.Helper()
	cgMount := filepath.Join(t.TempDir(), "cg")
	cgName := privtest.Unique("cloudsteer-test-")
	cmd := exec.Command("unshare", "--pid", "--fork", "--mount", "--net", "--uts", "sh", "-c", bootScript, "boot", root, cgMount, cgName)
	log := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &booted{t: t, root: root}
	t.Cleanup(func() {
		// PID 1 of the namespace dies of SIGKILL only; the rest with it.
		if b.pid != 0 {
			syscall.Kill(b.pid, syscall.SIGKILL)
		}
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		removeCgroup(t, cgName)
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		if b.pid == 0 {
			if kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid)); err == nil {
				if f := strings.Fields(string(kids)); len(f) > 0 {
					if comm, _ := os.ReadFile("/proc/" + f[0] + "/comm"); strings.TrimSpace(string(comm)) == "systemd" {
						b.pid, _ = strconv.Atoi(f[0])
					}
				}
			}
		}
		if b.pid != 0 {
			out, _ := b.exec("systemctl", "is-system-running")
			if s := strings.TrimSpace(out); s == "running" || s == "degraded" {
				return b
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("systemd did not come up in 60s (pid %d):\n%s", b.pid, log)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// removeCgroup removes the test's cgroup subtree (systemd leaves its
// slices and scopes there), once the killed processes have left it.
func removeCgroup(t *testing.T, name string) {
	dir := t.TempDir()
	script := `mount -t cgroup2 none "$0" || exit 1
test -d "$0/$1" || exit 0
find "$0/$1" -depth -type d -exec rmdir {} +; r=$?; umount "$0"; exit $r`
	var out []byte
	var err error
	for range 40 {
		if out, err = exec.Command("unshare", "--mount", "sh", "-c", script, dir, name).CombinedOutput(); err == nil {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Errorf("remove cgroup %s: %v\n%s", name, err, out)
}

// exec runs a command in the booted system's namespaces and root.
func (b *booted) exec(args ...string) (string, error) {
	full := append([]string{"-t", strconv.Itoa(b.pid), "-m", "-p", "-n", "-u", "-r", "-w",
		"/usr/bin/env", "-i", rootPath, "LANG=C"}, args...)
	cmd := exec.Command("nsenter", full...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (b *booted) must(args ...string) string {
	b.t.Helper()
	out, err := b.exec(args...)
	if err != nil {
		b.t.Fatalf("%s: %v\n%s\njournal:\n%s", strings.Join(args, " "), err, out, b.journal())
	}
	return out
}

// net runs a host command (ip, nft) in the booted system's network
// namespace.
func (b *booted) net(args ...string) string {
	b.t.Helper()
	out, err := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(b.pid), "-n"}, args...)...).CombinedOutput()
	if err != nil {
		b.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (b *booted) journal() string {
	out, _ := b.exec("journalctl", "--no-pager", "-o", "cat", "-u", "cloudsteer.service")
	return out
}

// show returns systemctl show's properties of the unit.
func (b *booted) show(props ...string) map[string]string {
	b.t.Helper()
	out := b.must("systemctl", "show", "cloudsteer.service", "-p", strings.Join(props, ","))
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

// serviceConfig is a config for the booted system: one LAN interface (a
// veth whose peer stays in the namespace), and a cloud proxy and resolver on loopback (nobody answers
// there; nothing leaves the namespace).
const serviceConfig = `lan_interfaces: [lan0]
cloud_proxy:
  url: http://127.0.0.1:3128
  entitlement_code: 3315471d-b831-48ed-a621-17042a74a8e3
dns:
  upstreams: ["127.0.0.1:5353"]
health:
  probe_target: 127.0.0.1:443
bypass:
  domains: [bank.example]
`

// TestServiceUnderSystemd installs the package into a Debian root, boots
// that root's systemd (PID 1 of a pid, mount, network and cgroup
// namespace of the test's own) and runs the service as shipped: started
// (Type=notify: start returns once the daemon said READY=1), running as
// the cloudsteer user with only the unit's capabilities, no new
// privileges and the system call filter, its nftables table installed,
// the root CLI over the admin socket, `systemctl reload` applying a
// changed bypass list in the same process, and `systemctl stop` removing
// the table.
func TestServiceUnderSystemd(t *testing.T) {
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "mmdebstrap", "dpkg-deb", "make", "chroot", "unshare", "nsenter", "ip", "nft")
	start := time.Now()
	deb := buildDeb(t)
	root := debianRoot(t)
	b, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "tmp/cloudsteer.deb"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	mustInRoot(t, root, "dpkg", "-i", "/tmp/cloudsteer.deb")
	cfg := filepath.Join(root, "etc/cloudsteer/cloudsteer.yaml")
	fi, err := os.Stat(cfg)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if err := os.WriteFile(cfg, []byte(serviceConfig), 0o600); err != nil {
		t.Fatal(err)
	}

	sys := boot(t, root)
	t.Logf("package installed and systemd up in %s", time.Since(start).Round(time.Second))
	sys.net("ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan0peer")
	sys.net("ip", "addr", "add", "10.99.0.1/24", "dev", "lan0")
	sys.net("ip", "link", "set", "lan0", "up")
	sys.net("ip", "link", "set", "lan0peer", "up")

	sys.must("systemctl", "start", "cloudsteer.service")
	p := sys.show("ActiveState", "SubState", "MainPID", "Type", "NRestarts")
	if p["ActiveState"] != "active" || p["SubState"] != "running" || p["NRestarts"] != "0" {
		t.Fatalf("after start: %v\n%s", p, sys.journal())
	}
	if !strings.Contains(sys.journal(), "msg=steering") {
		t.Fatalf("active before steering:\n%s", sys.journal())
	}
	status := map[string]string{}
	for _, line := range strings.Split(sys.must("cat", "/proc/"+p["MainPID"]+"/status"), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			status[k] = strings.TrimSpace(v)
		}
	}
	uid := strconv.Itoa(int(st.Uid))
	if f := strings.Fields(status["Uid"]); len(f) != 4 || f[0] != uid || f[1] != uid {
		t.Errorf("daemon Uid %q, want cloudsteer's %s", status["Uid"], uid)
	}
	// CAP_NET_ADMIN (12), CAP_PERFMON (38), CAP_BPF (39),
	// CAP_NET_BIND_SERVICE (10).
	const wantCaps = "000000c000001400"
	for _, k := range []string{"CapEff", "CapPrm", "CapBnd", "CapAmb"} {
		if status[k] != wantCaps {
			t.Errorf("%s = %s, want %s", k, status[k], wantCaps)
		}
	}
	if status["NoNewPrivs"] != "1" || status["Seccomp"] != "2" {
		t.Errorf("NoNewPrivs %q Seccomp %q, want 1 and 2 (filter)", status["NoNewPrivs"], status["Seccomp"])
	}
	if tabs := sys.net("nft", "list", "tables"); !strings.Contains(tabs, "inet cloudsteer") {
		t.Fatalf("no cloudsteer table: %s", tabs)
	}
	var s struct {
		State string `json:"state"`
	}
	out, _ := sys.exec("cloudsteer", "status", "--json")
	if err := json.Unmarshal([]byte(out), &s); err != nil || s.State == "" {
		t.Fatalf("cloudsteer status --json as root: %v\n%s", err, out)
	}
	list := sys.must("cloudsteer", "bypass", "list")
	if !strings.Contains(list, "bank.example") {
		t.Fatalf("bypass list:\n%s", list)
	}

	// systemctl reload: SIGHUP, RELOADING=1, READY=1; same process.
	if err := os.WriteFile(cfg, []byte(strings.Replace(serviceConfig, "[bank.example]", "[bank.example, pay.example]", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	sys.must("systemctl", "reload", "cloudsteer.service")
	if !strings.Contains(sys.must("cloudsteer", "bypass", "list"), "pay.example") {
		t.Fatalf("reload did not apply the new bypass entry:\n%s", sys.journal())
	}
	if q := sys.show("ActiveState", "MainPID"); q["ActiveState"] != "active" || q["MainPID"] != p["MainPID"] {
		t.Fatalf("after reload: %v (was pid %s)", q, p["MainPID"])
	}
	if !strings.Contains(sys.journal(), "config reloaded") {
		t.Fatalf("no reload in the journal:\n%s", sys.journal())
	}

	sys.must("systemctl", "stop", "cloudsteer.service")
	if q := sys.show("ActiveState", "Result"); q["ActiveState"] != "inactive" || q["Result"] != "success" {
		t.Fatalf("after stop: %v\n%s", q, sys.journal())
	}
	if tabs := sys.net("nft", "list", "tables"); strings.Contains(tabs, "cloudsteer") {
		t.Fatalf("table left after stop: %s", tabs)
	}
	t.Logf("service test took %s", time.Since(start).Round(time.Second))
}

// Package sdcontainer boots a Debian root's systemd as PID 1 in
// namespaces of a test's own, as a container manager would, for tests of
// what runs under systemd (the packaged service, the appliance's units).
//
// The system gets a pid, mount, UTS and cgroup namespace, a cgroup of its
// own (removed when the test ends), a /dev made of a few device nodes (the
// host's devtmpfs is never mounted: systemd would change it), /sys
// read-only (no udev runs, nothing can write the host's devices) and no
// logins on the host's terminals. Its network namespace is a fresh one or
// one the test made (the router's NICs already in it).
package sdcontainer

import (
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

// bootScript runs inside unshare: it moves itself into a cgroup of its own
// and pivots into the root to exec its systemd. Arguments: root, a
// directory to mount cgroup2 on, the cgroup's name.
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
mount -t sysfs -o ro sysfs "$R/sys"
mount -t tmpfs -o mode=0755 tmpfs "$R/run"
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
ln -sf /dev/null "$R/etc/systemd/system/getty.target"
ln -sf /dev/null "$R/etc/systemd/system/console-getty.service"
ip link set lo up
mkdir -p "$R/.oldroot"
exec unshare --cgroup sh -c 'mount -t cgroup2 none "$0/sys/fs/cgroup" && cd "$0" && pivot_root . .oldroot &&
	/.oldroot/usr/bin/umount -l /.oldroot && rmdir /.oldroot &&
	exec /usr/bin/env container=cloudsteer-test /lib/systemd/systemd --system' "$R"
`

// RootPath is the PATH commands run with inside the system.
const RootPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Options say where the system boots.
type Options struct {
	// NetNS is the named network namespace (ip netns) it runs in; empty
	// gives it a fresh one with only lo.
	NetNS string
	// Timeout bounds the boot (until systemctl is-system-running says
	// running or degraded); zero means 90 s.
	Timeout time.Duration
}

// System is a booted root's systemd.
type System struct {
	t   *testing.T
	PID int // systemd, as the host sees it
}

// Boot starts the root's systemd and waits until it runs; the test's
// cleanup kills it and removes its cgroup.
func Boot(t *testing.T, root string, o Options) *System {
	t.Helper()
	cgMount := filepath.Join(t.TempDir(), "cg")
	cgName := privtest.Unique("cs-systemd-")
	args := []string{"unshare", "--pid", "--fork", "--mount", "--uts"}
	if o.NetNS == "" {
		args = append(args, "--net")
	} else {
		args = append([]string{"ip", "netns", "exec", o.NetNS}, args...)
	}
	args = append(args, "sh", "-c", bootScript, "boot", root, cgMount, cgName)
	cmd := exec.Command(args[0], args[1:]...)
	log := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &System{t: t}
	t.Cleanup(func() {
		// PID 1 of the namespace dies of SIGKILL only; the rest with it.
		if s.PID != 0 {
			syscall.Kill(s.PID, syscall.SIGKILL)
		}
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		removeCgroup(t, cgName)
	})
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 90 * time.Second
	}
	deadline := time.Now().Add(timeout)
	for {
		if s.PID == 0 {
			s.PID = findSystemd(cmd.Process.Pid)
		}
		if s.PID != 0 {
			out, _ := s.Exec("systemctl", "is-system-running")
			if st := strings.TrimSpace(out); st == "running" || st == "degraded" {
				return s
			}
		}
		if time.Now().After(deadline) {
			jobs := ""
			if s.PID != 0 {
				jobs, _ = s.Exec("systemctl", "list-jobs")
			}
			t.Fatalf("systemd did not come up in %s (pid %d):\n%s\n%s", timeout, s.PID, log, jobs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// findSystemd returns the pid of the systemd below pid (ip netns exec →
// unshare → sh → systemd), 0 while there is none.
func findSystemd(pid int) int {
	for range 4 {
		kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		f := strings.Fields(string(kids))
		if err != nil || len(f) == 0 {
			return 0
		}
		pid, _ = strconv.Atoi(f[0])
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) == "systemd" {
			return pid
		}
	}
	return 0
}

// removeCgroup removes the test's cgroup subtree (systemd leaves its
// slices and scopes there), once the killed processes have left it.
func removeCgroup(t *testing.T, name string) {
	dir := t.TempDir()
	script := `mount -t cgroup2 none "$0" || exit 1
test -d "$0/$1" || { umount "$0"; exit 0; }
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

// Exec runs a command in the system's namespaces and root.
func (s *System) Exec(args ...string) (string, error) {
	full := append([]string{"-t", strconv.Itoa(s.PID), "-m", "-p", "-n", "-u", "-r", "-w",
		"/usr/bin/env", "-i", RootPath, "LANG=C"}, args...)
	out, err := exec.Command("nsenter", full...).CombinedOutput()
	return string(out), err
}

// Must is Exec, failing the test (with the journal's end) on an error.
func (s *System) Must(args ...string) string {
	s.t.Helper()
	out, err := s.Exec(args...)
	if err != nil {
		j, _ := s.Exec("journalctl", "--no-pager", "-b", "-n", "80")
		s.t.Fatalf("%s: %v\n%s\njournal:\n%s", strings.Join(args, " "), err, out, j)
	}
	return out
}

// Net runs a host command (ip, nft) in the system's network namespace.
func (s *System) Net(args ...string) string {
	s.t.Helper()
	out, err := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(s.PID), "-n"}, args...)...).CombinedOutput()
	if err != nil {
		s.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

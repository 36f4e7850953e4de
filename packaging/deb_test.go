package packaging

import (
	"bufio"
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

// suite is the Debian release the package is tested on (Debian 12, the
// target's).
const suite = "bookworm"

// rootPath is PATH inside the Debian root.
const rootPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// debianMirror is the machine's configured Debian mirror (apt's sources),
// or deb.debian.org when none is found.
func debianMirror(t *testing.T) string {
	t.Helper()
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	files = append(files, "/etc/apt/sources.list")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			var uris []string
			switch {
			case len(fs) >= 2 && fs[0] == "URIs:":
				uris = fs[1:]
			case len(fs) >= 3 && fs[0] == "deb":
				uris = fs[1:2]
				if strings.HasPrefix(uris[0], "[") { // deb [opts] uri
					for i, w := range fs {
						if strings.HasSuffix(w, "]") && i+1 < len(fs) {
							uris = fs[i+1 : i+2]
							break
						}
					}
				}
			}
			for _, u := range uris {
				if strings.HasSuffix(strings.TrimSuffix(u, "/"), "/debian") {
					return u
				}
			}
		}
	}
	return "http://deb.debian.org/debian"
}

// debianRoot returns a fresh Debian root (minbase with adduser, procps
// and systemd, for systemd-analyze) in a temporary directory. The root is
// made once with mmdebstrap and kept as a tarball in bin/cache/.
func debianRoot(t *testing.T) string {
	t.Helper()
	cache, err := filepath.Abs(filepath.Join("..", "bin", "cache"))
	if err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(cache, "debian-"+suite+"-minbase-cloudsteer.tar")
	if _, err := os.Stat(tarball); err != nil {
		if err := os.MkdirAll(cache, 0o755); err != nil {
			t.Fatal(err)
		}
		mirror := debianMirror(t)
		start := time.Now()
		tmp := tarball + ".part"
		cmd := exec.Command("mmdebstrap", "--variant=minbase", "--format=tar", "--include=adduser,procps,systemd", "--quiet",
			// No documentation or translations: a smaller, faster root.
			"--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/doc/*",
			"--dpkgopt=path-exclude=/usr/share/locale/*", "--dpkgopt=path-exclude=/usr/share/info/*",
			suite, tmp, mirror)
		if out, err := cmd.CombinedOutput(); err != nil {
			os.Remove(tmp)
			t.Fatalf("mmdebstrap %s from %s: %v\n%s", suite, mirror, err, out)
		}
		if err := os.Rename(tmp, tarball); err != nil {
			t.Fatal(err)
		}
		t.Logf("made the %s root from %s in %s (cached in %s)", suite, mirror, time.Since(start).Round(time.Second), tarball)
	}
	root := t.TempDir()
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "", "tar", "-C", root, "--numeric-owner", "-xpf", tarball, "--exclude=./dev/*")
	return root
}

// run runs a command (in dir when not "") and returns its output; a
// failure fails the test.
func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// inRoot runs a command chrooted into root.
func inRoot(t *testing.T, root string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("chroot", append([]string{root}, args...)...)
	cmd.Env = []string{rootPath, "LANG=C", "DEBIAN_FRONTEND=noninteractive"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustInRoot(t *testing.T, root string, args ...string) string {
	t.Helper()
	out, err := inRoot(t, root, args...)
	if err != nil {
		t.Fatalf("in the Debian root: %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// owner is a file's mode bits and numeric owner and group.
type owner struct {
	mode     os.FileMode
	uid, gid uint32
}

func stat(t *testing.T, path string) owner {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return owner{fi.Mode().Perm(), st.Uid, st.Gid}
}

// buildDeb runs `make deb` into a directory of the test's own and
// returns the package's path.
func buildDeb(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	run(t, "..", "make", "--no-print-directory", "deb", "BIN="+bin)
	debs, _ := filepath.Glob(filepath.Join(bin, "cloudsteer_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %v", debs)
	}
	return debs[0]
}

// TestDebianPackage builds the package with `make deb`, installs it into
// a fresh Debian 12 root made with mmdebstrap, and checks its files,
// modes, conffile, system user, maintainer scripts (nothing started
// without a running systemd; daemon-reload and, on upgrade only,
// try-restart with one) and the unit (systemd-analyze verify in the
// root), then an admin's edit surviving a reinstall, and purge.
func TestDebianPackage(t *testing.T) {
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "mmdebstrap", "dpkg-deb", "make", "chroot", "systemd-analyze", "tar")
	start := time.Now()

	deb := buildDeb(t)
	t.Logf("make deb: %s in %s", filepath.Base(deb), time.Since(start).Round(time.Second))
	fields := run(t, "", "dpkg-deb", "-f", deb, "Package", "Architecture", "Depends")
	for _, want := range []string{"Package: cloudsteer", "Depends: adduser, procps"} {
		if !strings.Contains(fields, want) {
			t.Fatalf("control fields lack %q:\n%s", want, fields)
		}
	}
	listing := run(t, "", "dpkg-deb", "-c", deb)
	for _, want := range []string{
		"-rwxr-xr-x root/root", "./usr/bin/cloudsteer",
		"-rw-r--r-- root/root", "./lib/systemd/system/cloudsteer.service",
		"-rw------- root/root", "./etc/cloudsteer/cloudsteer.yaml",
		"drwxr-x--- root/root", "./etc/cloudsteer/",
	} {
		if !strings.Contains(listing, want) {
			t.Fatalf("package contents lack %q:\n%s", want, listing)
		}
	}

	t0 := time.Now()
	root := debianRoot(t)
	t.Logf("Debian root ready in %s", time.Since(t0).Round(time.Second))
	// systemctl records its calls: the maintainer scripts must make none
	// in a root where systemd does not run.
	fake := filepath.Join(root, "usr/local/sbin/systemctl")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho \"$*\" >>/systemctl.calls\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	calls := func() string {
		b, _ := os.ReadFile(filepath.Join(root, "systemctl.calls"))
		os.Remove(filepath.Join(root, "systemctl.calls"))
		return strings.TrimSpace(string(b))
	}
	b, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "tmp/cloudsteer.deb"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	mustInRoot(t, root, "dpkg", "-i", "/tmp/cloudsteer.deb")
	if c := calls(); c != "" {
		t.Fatalf("the install called systemctl in a root without systemd: %s", c)
	}

	// The system user.
	pw := strings.Split(strings.TrimSpace(mustInRoot(t, root, "getent", "passwd", "cloudsteer")), ":")
	if len(pw) != 7 || pw[5] != "/var/lib/cloudsteer" || !strings.HasSuffix(pw[6], "nologin") {
		t.Fatalf("passwd entry %q", pw)
	}
	uid64, err1 := strconv.ParseUint(pw[2], 10, 32)
	gid64, err2 := strconv.ParseUint(pw[3], 10, 32)
	if err1 != nil || err2 != nil {
		t.Fatalf("passwd entry %q", pw)
	}
	uid, gid := uint32(uid64), uint32(gid64)
	if uid == 0 || uid >= 1000 {
		t.Fatalf("cloudsteer's uid %d is not a system uid", uid)
	}
	if g := strings.Split(strings.TrimSpace(mustInRoot(t, root, "getent", "group", "cloudsteer")), ":"); len(g) < 3 || g[2] != pw[3] {
		t.Fatalf("group entry %q for gid %s", g, pw[3])
	}

	// Files and modes as installed.
	for path, want := range map[string]owner{
		"usr/bin/cloudsteer":                    {0o755, 0, 0},
		"lib/systemd/system/cloudsteer.service": {0o644, 0, 0},
		"etc/cloudsteer":                        {0o750, 0, gid},
		"etc/cloudsteer/cloudsteer.yaml":        {0o600, uid, gid},
	} {
		if got := stat(t, filepath.Join(root, path)); got != want {
			t.Errorf("/%s: mode %04o uid %d gid %d, want %04o %d %d", path, got.mode, got.uid, got.gid, want.mode, want.uid, want.gid)
		}
	}
	unit, err := os.ReadFile(filepath.Join(root, "lib/systemd/system/cloudsteer.service"))
	if err != nil || string(unit) != Unit {
		t.Fatalf("installed unit differs from packaging/cloudsteer.service (%v)", err)
	}
	example, _ := os.ReadFile("cloudsteer.yaml")
	if got, _ := os.ReadFile(filepath.Join(root, "etc/cloudsteer/cloudsteer.yaml")); string(got) != string(example) {
		t.Fatal("installed config differs from packaging/cloudsteer.yaml")
	}
	if cf := mustInRoot(t, root, "cat", "/var/lib/dpkg/info/cloudsteer.conffiles"); strings.TrimSpace(cf) != "/etc/cloudsteer/cloudsteer.yaml" {
		t.Fatalf("conffiles: %q", cf)
	}
	if v := mustInRoot(t, root, "/usr/bin/cloudsteer", "version"); !strings.HasPrefix(v, "cloudsteer ") {
		t.Fatalf("cloudsteer version: %q", v)
	}
	// The user reads its config: check-config gets past the file (to the
	// interface the example names, which this root has not).
	out, _ := inRoot(t, root, "setpriv", "--reuid=cloudsteer", "--regid=cloudsteer", "--clear-groups",
		"/usr/bin/cloudsteer", "check-config", "--config", "/etc/cloudsteer/cloudsteer.yaml")
	if !strings.Contains(out, `lan_interfaces[0]: no interface "lan0"`) {
		t.Fatalf("check-config as the cloudsteer user:\n%s", out)
	}

	// The installed unit verifies in the root it was installed in.
	if out, err := exec.Command("systemd-analyze", "verify", "--root="+root, "cloudsteer.service").CombinedOutput(); err != nil || len(out) != 0 {
		t.Fatalf("systemd-analyze verify --root: %v\n%s", err, out)
	}

	// An admin's edit survives a reinstall (an upgrade of the same
	// version); with a running systemd the upgrade reloads it and
	// restarts a running service, a first install does not start it.
	cfgPath := filepath.Join(root, "etc/cloudsteer/cloudsteer.yaml")
	edited := strings.Replace(string(example), "lan_interfaces: [lan0]", "lan_interfaces: [br-lan]", 1)
	if err := os.WriteFile(cfgPath, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "run/systemd/system"), 0o755); err != nil {
		t.Fatal(err)
	}
	// State an earlier cloudsteer run as root left becomes the user's.
	oldState := filepath.Join(root, "var/lib/cloudsteer/state.db")
	if err := os.MkdirAll(filepath.Dir(oldState), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(oldState, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustInRoot(t, root, "dpkg", "-i", "--force-confold", "/tmp/cloudsteer.deb")
	for _, p := range []string{filepath.Dir(oldState), oldState} {
		if got := stat(t, p); got.uid != uid || got.gid != gid {
			t.Fatalf("%s after the upgrade: %+v, want the cloudsteer user's", p, got)
		}
	}
	if got, _ := os.ReadFile(cfgPath); string(got) != edited {
		t.Fatal("the reinstall replaced the admin's config")
	}
	if got := stat(t, cfgPath); got != (owner{0o600, uid, gid}) {
		t.Fatalf("config after reinstall: %+v", got)
	}
	if c := calls(); c != "--system daemon-reload\ntry-restart cloudsteer.service" {
		t.Fatalf("systemctl calls on upgrade with systemd running: %q", c)
	}

	// Purge removes the config and the state, keeps the user.
	mustInRoot(t, root, "dpkg", "--purge", "cloudsteer")
	for _, gone := range []string{"usr/bin/cloudsteer", "etc/cloudsteer", "var/lib/cloudsteer", "lib/systemd/system/cloudsteer.service"} {
		if _, err := os.Lstat(filepath.Join(root, gone)); err == nil {
			t.Errorf("/%s is still there after purge", gone)
		}
	}
	if c := calls(); c != "stop cloudsteer.service\n--system daemon-reload" {
		t.Fatalf("systemctl calls on purge with systemd running: %q", c)
	}
	// A first install with systemd running reloads it and starts nothing
	// (the example config must be edited first).
	mustInRoot(t, root, "dpkg", "-i", "/tmp/cloudsteer.deb")
	if c := calls(); c != "--system daemon-reload" {
		t.Fatalf("systemctl calls on a first install with systemd running: %q", c)
	}
	t.Logf("package test took %s", time.Since(start).Round(time.Second))
}

package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/gateway"
	"github.com/cloudsteer/cloudsteer/packaging"
)

// nonrootUID is the unprivileged uid (and gid) the daemon runs as here; no
// account needs to exist for it.
const nonrootUID = 64531

// capBits are the capability numbers of the names packaging.Capabilities
// uses (linux/capability.h).
var capBits = map[string]uint{"net_admin": 12, "net_raw": 13, "net_bind_service": 10, "bpf": 39, "perfmon": 38, "sys_resource": 24}

// unitCaps are the packaged unit's capabilities in setpriv's spelling.
func unitCaps(t *testing.T) []string {
	var out []string
	for _, c := range packaging.Capabilities {
		name := strings.ToLower(strings.TrimPrefix(c, "CAP_"))
		if _, ok := capBits[name]; !ok {
			t.Fatalf("no capability number for %s", c)
		}
		out = append(out, name)
	}
	return out
}

// nonrootBinary copies the daemon to where the unprivileged uid may run it
// (the test's build directory is root's).
func nonrootBinary(t *testing.T, e *env) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "cloudsteer")
	src, err := os.Open(bins.cloudsteer)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, src); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}

// procStatus returns the named fields of /proc/PID/status.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

// capMask is the bit mask of caps as /proc/PID/status shows it.
func capMask(caps []string) string {
	var m uint64
	for _, c := range caps {
		m |= 1 << capBits[c]
	}
	return fmt.Sprintf("%016x", m)
}

// notifySocket listens as systemd does for a Type=notify service (the
// socket is the non-root uid's, so it may send) and returns a function
// that waits for the next notification.
func notifySocket(t *testing.T, path string) func() string {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := os.Chown(path, nonrootUID, nonrootUID); err != nil {
		t.Fatal(err)
	}
	return func() string {
		t.Helper()
		buf := make([]byte, 4096)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(buf[:n])
	}
}

// TestNonRoot runs the real daemon as an unprivileged uid with exactly the
// packaged unit's capabilities (and no new privileges), and checks that
// steering, DNS, bypass, the console port and the root CLI over the admin
// socket work, that its state belongs to that uid, and that the daemon
// refuses to start, saying which capability is missing, without each one.
func TestNonRoot(t *testing.T) {
	// A routing gateway with no ruleset of its own: the fast path (and
	// untracking) only run while cloudsteer's table is alone.
	e := newLabEnv(t, lab.Options{Firewall: lab.FirewallNone})
	caps := unitCaps(t)
	bin := nonrootBinary(t, e)
	// t.TempDir's per-test parent of the lab directory is 0700 (the lab
	// directory itself is opened by gateway.Start).
	if err := os.Chmod(filepath.Dir(e.lab.Dir()), 0o711); err != nil {
		t.Fatal(err)
	}
	user := &gateway.User{UID: nonrootUID, GID: nonrootUID, Caps: caps}
	www := site(t, "www.example.com")

	t.Run("works with the unit's capabilities", func(t *testing.T) {
		notes := notifySocket(t, filepath.Join(e.lab.Dir(), "notify-nonroot"))
		o := gateway.Options{Bin: bin, Lab: e.lab, User: user, Name: "nonroot",
			Env: []string{"NOTIFY_SOCKET=" + filepath.Join(e.lab.Dir(), "notify-nonroot")}}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		g, err := gateway.Start(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		stopped := false
		defer func() {
			if !stopped {
				g.Stop()
			}
			if t.Failed() {
				t.Logf("cloudsteer output:\n%s", g.Log())
			}
		}()
		// systemd hears READY=1 once everything is attached and serving
		// (gateway.Start returned on the "steering" line, logged last).
		if n := notes(); !strings.HasPrefix(n, "READY=1\n") {
			t.Fatalf("first notification %q, want READY=1", n)
		}
		// Everything attached, the kernel DNS answerer too (its verifier
		// rules differ for a process without CAP_SYS_ADMIN).
		for _, bad := range []string{"kernel DNS cache off", "level=WARN", " WARN "} {
			if strings.Contains(g.Log(), bad) {
				t.Errorf("the non-root daemon logged %q:\n%s", bad, g.Log())
			}
		}
		st := procStatus(t, g.Pid())
		uid := strconv.Itoa(nonrootUID)
		if st["Uid"] != strings.Join([]string{uid, uid, uid, uid}, "\t") || st["Gid"] != strings.Join([]string{uid, uid, uid, uid}, "\t") {
			t.Fatalf("daemon runs as Uid %q Gid %q", st["Uid"], st["Gid"])
		}
		want := capMask(caps)
		for _, k := range []string{"CapEff", "CapPrm", "CapBnd", "CapAmb"} {
			if st[k] != want {
				t.Fatalf("%s = %s, want %s (%v)", k, st[k], want, caps)
			}
		}
		if st["NoNewPrivs"] != "1" {
			t.Fatalf("NoNewPrivs = %q", st["NoNewPrivs"])
		}

		sock := gateway.Socket(o)
		var status model.Status
		if !eventually(10*time.Second, func() bool {
			e.cliJSON(sock, &status, "status")
			return status.State == model.Protected
		}) {
			t.Fatalf("status over the admin socket as root: %+v", status)
		}
		if got := e.pathOf(t, "www.example.com", www.V4.String(), "nonroot-proxy"); got != "proxy" {
			t.Fatalf("https flow went %s, want proxy", got)
		}
		if ans, err := e.dig(lab.NobodyDNSV4.String(), "www.example.com", "A"); err != nil || strings.TrimSpace(ans) != www.V4.String() {
			t.Fatalf("dig through cloudsteer = %q, %v", ans, err)
		}
		if _, errOut, code := e.cli(sock, "bypass", "add", "www.example.com"); code != 0 {
			t.Fatalf("bypass add: %d %s", code, errOut)
		}
		time.Sleep(time.Second)
		if ans, err := e.dig(lab.NobodyDNSV4.String(), "www.example.com", "A"); err != nil || strings.TrimSpace(ans) != www.V4.String() {
			t.Fatalf("dig = %q, %v", ans, err)
		}
		if got := e.pathOf(t, "www.example.com", www.V4.String(), "nonroot-bypass"); got != "bypass" {
			t.Fatalf("bypassed flow went %s", got)
		}
		// /proc/net/ip_tables_names is root's: where it exists (ip_tables
		// loaded or built in, as on this kernel) the daemon cannot tell
		// whether legacy iptables has tables, so it keeps tracking every
		// flow; where it does not, it untracks as root does.
		_, noLegacy := e.run(lab.RoleGW, 5*time.Second, "test", "-e", "/proc/net/ip_tables_names")
		wantUntrack := 0.0
		if noLegacy != nil {
			wantUntrack = 1
		} else if !strings.Contains(g.Log(), "iptables-legacy tables unknown") {
			t.Error("no log line says legacy iptables tables cannot be seen")
		}
		if got := e.metric(t, "cloudsteer_untracking_unsteered"); got != wantUntrack {
			t.Errorf("cloudsteer_untracking_unsteered = %v, want %v", got, wantUntrack)
		}
		// The console on 443 (CAP_NET_BIND_SERVICE) answers on the LAN.
		if code, _, _ := e.httpCode(lab.RoleLAN, "https://10.10.0.1/"); code == 0 {
			t.Fatal("the console on port 443 does not answer")
		}
		// SIGHUP re-reads the (uid-owned, 0600) config as that uid.
		if err := g.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		if n := notes(); !strings.HasPrefix(n, "RELOADING=1\nMONOTONIC_USEC=") {
			t.Fatalf("notification at SIGHUP %q, want RELOADING=1", n)
		}
		if n := notes(); !strings.HasPrefix(n, "READY=1\n") {
			t.Fatalf("notification after the reload %q, want READY=1", n)
		}
		if !eventually(2*time.Second, func() bool { return strings.Contains(g.Log(), "config reloaded") }) {
			t.Fatalf("no reload logged")
		}
		// What the daemon wrote is its own and private.
		tok := filepath.Join(e.lab.Dir(), "state-nonroot", api.TokenFileName)
		fi, err := os.Stat(tok)
		if err != nil {
			t.Fatal(err)
		}
		if s := fi.Sys().(*syscall.Stat_t); s.Uid != nonrootUID || fi.Mode().Perm() != 0o600 {
			t.Fatalf("token file: uid %d mode %v", s.Uid, fi.Mode())
		}
		// Root's CLI reads the uid's 0600 token file.
		if out, errOut, code := e.cli(sock, "token", "--state-dir", filepath.Dir(tok)); code != 0 || len(strings.TrimSpace(out)) < 20 {
			t.Fatalf("cloudsteer token as root: exit %d %q %s", code, out, errOut)
		}
		sfi, err := os.Stat(sock)
		if err != nil {
			t.Fatal(err)
		}
		if s := sfi.Sys().(*syscall.Stat_t); s.Uid != nonrootUID || sfi.Mode().Perm() != 0o600 {
			t.Fatalf("admin socket: uid %d mode %v", s.Uid, sfi.Mode())
		}
		stopped = true
		if err := g.Stop(); err != nil {
			t.Fatalf("stop: %v", err)
		}
		if n := notes(); n != "STOPPING=1" {
			t.Fatalf("notification at SIGTERM %q, want STOPPING=1", n)
		}
	})
	if t.Failed() {
		return
	}
	if ks := e.kernelState(); ks.tcx != 0 || strings.Contains(ks.tables, "cloudsteer") {
		t.Fatalf("the non-root daemon left kernel state: %+v", ks)
	}

	// Without each capability the daemon does not start, and says why.
	for _, missing := range caps {
		t.Run("without "+missing, func(t *testing.T) {
			less := &gateway.User{UID: nonrootUID, GID: nonrootUID, Caps: slices.DeleteFunc(slices.Clone(caps), func(c string) bool { return c == missing })}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			g, err := gateway.Start(ctx, gateway.Options{Bin: bin, Lab: e.lab, User: less, Name: "less-" + missing})
			if err == nil {
				g.Stop()
				t.Fatalf("started without %s", missing)
			}
			want := "CAP_" + strings.ToUpper(missing)
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("the failure does not name %s:\n%v", want, err)
			}
			if ks := e.kernelState(); ks.tcx != 0 || strings.Contains(ks.tables, "cloudsteer") {
				t.Fatalf("a failed start left kernel state: %+v", ks)
			}
		})
	}
}

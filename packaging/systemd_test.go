package packaging

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
	"github.com/cloudsteer/cloudsteer/internal/sdcontainer"
)

// booted is a systemd running as PID 1 in namespaces of the test's own
// (internal/sdcontainer).
type booted struct {
	*sdcontainer.System
	t *testing.T
}

// boot starts the root's systemd and waits until it runs.
func boot(t *testing.T, root string) *booted {
	t.Helper()
	return &booted{System: sdcontainer.Boot(t, root, sdcontainer.Options{Timeout: 60 * time.Second}), t: t}
}

func (b *booted) journal() string {
	out, _ := b.Exec("journalctl", "--no-pager", "-o", "cat", "-u", "cloudsteer.service")
	return out
}

// show returns systemctl show's properties of the unit.
func (b *booted) show(props ...string) map[string]string {
	b.t.Helper()
	out := b.Must("systemctl", "show", "cloudsteer.service", "-p", strings.Join(props, ","))
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
	sys.Net("ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan0peer")
	sys.Net("ip", "addr", "add", "10.99.0.1/24", "dev", "lan0")
	sys.Net("ip", "link", "set", "lan0", "up")
	sys.Net("ip", "link", "set", "lan0peer", "up")

	sys.Must("systemctl", "start", "cloudsteer.service")
	p := sys.show("ActiveState", "SubState", "MainPID", "Type", "NRestarts")
	if p["ActiveState"] != "active" || p["SubState"] != "running" || p["NRestarts"] != "0" {
		t.Fatalf("after start: %v\n%s", p, sys.journal())
	}
	if !strings.Contains(sys.journal(), "msg=steering") {
		t.Fatalf("active before steering:\n%s", sys.journal())
	}
	status := map[string]string{}
	for _, line := range strings.Split(sys.Must("cat", "/proc/"+p["MainPID"]+"/status"), "\n") {
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
	if tabs := sys.Net("nft", "list", "tables"); !strings.Contains(tabs, "inet cloudsteer") {
		t.Fatalf("no cloudsteer table: %s", tabs)
	}
	var s struct {
		State string `json:"state"`
	}
	out, _ := sys.Exec("cloudsteer", "status", "--json")
	if err := json.Unmarshal([]byte(out), &s); err != nil || s.State == "" {
		t.Fatalf("cloudsteer status --json as root: %v\n%s", err, out)
	}
	list := sys.Must("cloudsteer", "bypass", "list")
	if !strings.Contains(list, "bank.example") {
		t.Fatalf("bypass list:\n%s", list)
	}

	// systemctl reload: SIGHUP, RELOADING=1, READY=1; same process.
	if err := os.WriteFile(cfg, []byte(strings.Replace(serviceConfig, "[bank.example]", "[bank.example, pay.example]", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	sys.Must("systemctl", "reload", "cloudsteer.service")
	if !strings.Contains(sys.Must("cloudsteer", "bypass", "list"), "pay.example") {
		t.Fatalf("reload did not apply the new bypass entry:\n%s", sys.journal())
	}
	if q := sys.show("ActiveState", "MainPID"); q["ActiveState"] != "active" || q["MainPID"] != p["MainPID"] {
		t.Fatalf("after reload: %v (was pid %s)", q, p["MainPID"])
	}
	if !strings.Contains(sys.journal(), "config reloaded") {
		t.Fatalf("no reload in the journal:\n%s", sys.journal())
	}

	sys.Must("systemctl", "stop", "cloudsteer.service")
	if q := sys.show("ActiveState", "Result"); q["ActiveState"] != "inactive" || q["Result"] != "success" {
		t.Fatalf("after stop: %v\n%s", q, sys.journal())
	}
	if tabs := sys.Net("nft", "list", "tables"); strings.Contains(tabs, "cloudsteer") {
		t.Fatalf("table left after stop: %s", tabs)
	}
	t.Logf("service test took %s", time.Since(start).Round(time.Second))
}

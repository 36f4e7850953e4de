package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cloudsteer/cloudsteer/controlplane/config"
	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

// maxExposure is the highest `systemd-analyze security` exposure (0 is
// best, 10 worst) the unit may have; it scores 2.0 (what is left:
// CAP_NET_ADMIN and CAP_NET_BIND_SERVICE, the host's network, no IP
// allow list, no private users: a gateway needs each).
const maxExposure = 2.0

// unitValues returns every value of key in the unit, in order.
func unitValues(key string) []string {
	var out []string
	for _, line := range strings.Split(Unit, "\n") {
		if v, ok := strings.CutPrefix(line, key+"="); ok {
			out = append(out, v)
		}
	}
	return out
}

func TestUnitDirectives(t *testing.T) {
	for key, want := range map[string]string{
		"Type":                    "notify",
		"NotifyAccess":            "main",
		"ExecStart":               "/usr/bin/cloudsteer run --config /etc/cloudsteer/cloudsteer.yaml",
		"ExecReload":              "/bin/kill -HUP $MAINPID",
		"Restart":                 "on-failure",
		"User":                    "cloudsteer",
		"StateDirectory":          "cloudsteer",
		"RuntimeDirectory":        "cloudsteer",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
		"SystemCallFilter":        "@system-service bpf",
		"MemoryDenyWriteExecute":  "yes",
		"LockPersonality":         "yes",
		"UMask":                   "0077",
	} {
		if got := unitValues(key); len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	// The daemon's defaults are the directories systemd makes for it.
	if config.DefaultStateDir != "/var/lib/"+unitValues("StateDirectory")[0] ||
		filepath.Dir(config.DefaultAdminSocket) != "/run/"+unitValues("RuntimeDirectory")[0] {
		t.Errorf("state dir %s / admin socket %s are not the unit's directories", config.DefaultStateDir, config.DefaultAdminSocket)
	}
	want := []string{"CAP_NET_ADMIN", "CAP_BPF", "CAP_PERFMON", "CAP_NET_BIND_SERVICE"}
	if !slices.Equal(Capabilities, want) {
		t.Errorf("AmbientCapabilities = %v, want %v", Capabilities, want)
	}
	if b := unitValues("CapabilityBoundingSet"); len(b) != 1 || !slices.Equal(strings.Fields(b[0]), Capabilities) {
		t.Errorf("CapabilityBoundingSet = %q, want the ambient set %v", b, Capabilities)
	}
}

// TestUnitVerify runs `systemd-analyze verify` on the unit, with its
// ExecStart pointing at an executable that exists here (the package's
// unit is verified inside a Debian root by TestDebianPackage).
func TestUnitVerify(t *testing.T) {
	privtest.RequireCommand(t, "systemd-analyze")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(t.TempDir(), "cloudsteer.service")
	text := strings.ReplaceAll(Unit, "/usr/bin/cloudsteer ", self+" ")
	if err := os.WriteFile(unit, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", unit).CombinedOutput()
	if err != nil || len(out) != 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// A mistake is caught (the test can fail).
	if err := os.WriteFile(unit, []byte(strings.Replace(text, "Type=notify", "Type=notifyy", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("systemd-analyze", "verify", unit).CombinedOutput(); err == nil && len(out) == 0 {
		t.Fatal("systemd-analyze verify took Type=notifyy")
	}
}

var exposureRE = regexp.MustCompile(`Overall exposure level for cloudsteer\.service: ([0-9.]+)`)

// TestUnitSecurity scores the unit with `systemd-analyze security`
// offline and fails when the exposure rises above maxExposure.
func TestUnitSecurity(t *testing.T) {
	privtest.RequireCommand(t, "systemd-analyze")
	unit := filepath.Join(t.TempDir(), "cloudsteer.service")
	if err := os.WriteFile(unit, []byte(Unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "security", "--offline=true", "--no-pager", unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := exposureRE.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no overall exposure in:\n%s", out)
	}
	score, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("systemd-analyze security: overall exposure %.1f", score)
	if score > maxExposure {
		t.Fatalf("exposure %.1f is above %.1f:\n%s", score, maxExposure, out)
	}
}

// TestExampleConfig loads the packaged example config as the daemon
// would (it must be valid, and private).
func TestExampleConfig(t *testing.T) {
	b, err := os.ReadFile("cloudsteer.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "cloudsteer.yaml")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(p)
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	if cfg.StateDir != config.DefaultStateDir || cfg.Admin.Socket != config.DefaultAdminSocket {
		t.Fatalf("example config moves state_dir %s or admin.socket %s away from the unit's directories", cfg.StateDir, cfg.Admin.Socket)
	}
}

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
	"github.com/cloudsteer/cloudsteer/dataplane/tcx"
	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/gateway"
)

// TestStopAndCrashLeaveNothing checks case h: after SIGTERM and after
// SIGKILL the gateway namespace is exactly as before, LAN traffic flows by
// plain routing, and a restart steers again.
func TestStopAndCrashLeaveNothing(t *testing.T) {
	e := newEnv(t, false)
	www := site(t, "www.example.com")
	before := e.kernelState()
	if !before.cleanBesides(e.labTables()) {
		t.Fatalf("lab gateway not clean before start: %+v", before)
	}
	legacy := attachMode(t) == tcx.ModeLegacy
	sock := gateway.SocketPath(e.lab, "gw")

	steered := func(t *testing.T, tag string) {
		t.Helper()
		start := time.Now()
		if _, err := e.curl("https://www.example.com/?case="+tag, "www.example.com", www.V4.String()); err != nil {
			t.Fatal(err)
		}
		ok := eventually(2*time.Second, func() bool {
			for _, r := range e.proxyLog(start) {
				if r.Target == "www.example.com:443" && r.XFF == clientV4 {
					return true
				}
			}
			return false
		})
		if !ok {
			t.Fatalf("%s: flow not steered through the cloud proxy", tag)
		}
	}
	direct := func(t *testing.T, tag string) {
		t.Helper()
		start := time.Now()
		path := "/?case=" + tag
		if _, err := e.curl("https://www.example.com"+path, "www.example.com", www.V4.String()); err != nil {
			t.Fatalf("%s: client cannot reach the origin by plain routing: %v", tag, err)
		}
		ok := eventually(2*time.Second, func() bool {
			for _, r := range e.originLog(start) {
				if r.Path == path && hostOf(r.Remote) == e.seenAs(clientV4) {
					return true
				}
			}
			return false
		})
		if !ok {
			t.Fatalf("%s: origin did not see the client directly: %+v", tag, e.originLog(start))
		}
		if recs := e.proxyLog(start); len(recs) != 0 {
			t.Fatalf("%s: cloud proxy still saw traffic: %+v", tag, recs)
		}
		// DNS goes where the client sent it again: nobody answers 192.0.2.53.
		if ans, err := e.dig(lab.NobodyDNSV4.String(), "www.example.com", "A"); err == nil && strings.TrimSpace(ans) != "" {
			t.Fatalf("%s: DNS to an address nobody runs was still answered: %q", tag, ans)
		}
	}
	sameAsBefore := func(t *testing.T, tag string) {
		t.Helper()
		var after kernelState
		ok := eventually(3*time.Second, func() bool {
			after = e.kernelState()
			return after == before
		})
		if !ok {
			t.Fatalf("%s: kernel state differs.\nbefore: %+v\nafter:  %+v", tag, before, after)
		}
	}

	direct(t, "h-before")
	g := e.startGateway(gateway.Options{})
	steered(t, "h-run1")
	if err := g.Stop(); err != nil {
		t.Fatalf("SIGTERM: exit %v\n%s", err, g.Log())
	}
	sameAsBefore(t, "after SIGTERM")
	direct(t, "h-after-term")

	g = e.startGateway(gateway.Options{})
	steered(t, "h-run2")
	// The name is now in the kernel DNS cache too: after SIGKILL it must
	// not be answered from there (direct checks).
	if ans, err := e.dig(lab.NobodyDNSV4.String(), "www.example.com", "A"); err != nil || strings.TrimSpace(ans) != www.V4.String() {
		t.Fatalf("h-run2: dig = %q, %v", ans, err)
	}
	var st model.Status
	e.cliJSON(sock, &st, "status")
	if st.AttachMode != string(attachMode(t)) {
		t.Fatalf("status attach_mode = %q, want %q", st.AttachMode, attachMode(t))
	}
	if err := g.Kill(); err != nil {
		t.Fatal(err)
	}
	if !legacy {
		sameAsBefore(t, "after SIGKILL")
		direct(t, "h-after-kill")
		e.startGateway(gateway.Options{})
		steered(t, "h-run3")
		return
	}

	// Legacy mode: the cls_bpf filters outlive the process (the owner
	// table does not); once the owner lease has run out they neither
	// forward nor answer DNS, and the LAN goes direct.
	ks := e.kernelState()
	if ks.filters == 0 || strings.TrimSpace(ks.tables) != e.labTables() {
		t.Fatalf("after SIGKILL in legacy mode: %+v, want the filters kept and no nftables table but the lab's", ks)
	}
	time.Sleep(tcx.LeaseTime + 100*time.Millisecond)
	direct(t, "h-after-kill")

	// The next start replaces them ...
	g = e.startGateway(gateway.Options{})
	steered(t, "h-run3")
	if !strings.Contains(g.Log(), "removed a filter a killed cloudsteer left") {
		t.Fatalf("the restart did not say it replaced the stale filters:\n%s", g.Log())
	}
	if got := e.kernelState(); got.filters != ks.filters {
		t.Fatalf("after the restart %d filters, want %d (each stale one replaced)", got.filters, ks.filters)
	}
	// ... and cleanup removes them, but only once the daemon is gone.
	if _, errOut, code := e.cleanup(sock); code == 0 || !strings.Contains(errOut, "stop it first") {
		t.Fatalf("cleanup with the daemon running: exit %d, %q", code, errOut)
	}
	if err := g.Kill(); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := e.cleanup(sock)
	if code != 0 || !strings.Contains(out, "removed filter cloudsteer-classifier") || !strings.Contains(out, "removed filter cloudsteer-dnscache") {
		t.Fatalf("cleanup: exit %d\n%s%s", code, out, errOut)
	}
	sameAsBefore(t, "after SIGKILL and cleanup")
	direct(t, "h-after-cleanup")
	if out, _, code := e.cleanup(sock); code != 0 || !strings.Contains(out, "nothing to clean up") {
		t.Fatalf("second cleanup: exit %d, %q", code, out)
	}
	e.startGateway(gateway.Options{})
	steered(t, "h-run4")
}

// cleanup runs `cloudsteer cleanup --socket sock` in the gateway namespace.
func (e *env) cleanup(sock string) (string, string, int) {
	e.t.Helper()
	cmd := e.lab.Command(e.t.Context(), lab.RoleGW, bins.cloudsteer, "cleanup", "--socket", sock)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("run cloudsteer cleanup: %v", err)
	}
	return out.String(), errb.String(), code
}

// TestWrongEntitlementCode checks case i: a code the cloud proxy refuses is
// a clear error in the log, and the daemon keeps running.
func TestWrongEntitlementCode(t *testing.T) {
	e := newEnv(t, false)
	www := site(t, "www.example.com")
	// failure_mode closed: with the default (open) a refused code sends
	// the web direct, which TestCloudFailOpen covers.
	g := e.startGateway(gateway.Options{Code: "00000000-0000-4000-8000-000000000000", CloudProxy: []string{"failure_mode: closed"}})
	if _, err := e.curl("https://www.example.com/", "www.example.com", www.V4.String()); err == nil {
		t.Fatal("HTTPS worked with a refused entitlement code")
	}
	if !eventually(3*time.Second, func() bool { return strings.Contains(g.Log(), "rejected the tenant credentials") }) {
		t.Fatalf("no clear error in the log:\n%s", g.Log())
	}
	if strings.Contains(g.Log(), "00000000-0000-4000-8000-000000000000") {
		t.Fatal("the entitlement code was logged")
	}
	if !g.Running() {
		t.Fatalf("daemon died:\n%s", g.Log())
	}
	// DNS still works: the resolver does not depend on the proxy.
	if ans, err := e.dig(lab.NobodyDNSV4.String(), "www.example.com", "A"); err != nil || strings.TrimSpace(ans) != www.V4.String() {
		t.Fatalf("dig = %q, %v", ans, err)
	}
}

// TestBadConfig checks that a bad config is one clear line naming the key,
// exit status 2, and nothing attached.
func TestBadConfig(t *testing.T) {
	e := newEnv(t, false)
	for _, tc := range []struct{ name, config, key string }{
		{"missing interface", strings.Replace(gateway.ConfigYAML(gateway.Options{}), "[lan0]", "[lan9]", 1), "lan_interfaces[0]"},
		{"bad code", strings.Replace(gateway.ConfigYAML(gateway.Options{}), lab.EntitlementCode, "not-a-code", 1), "cloud_proxy.entitlement_code"},
		{"unknown key", gateway.ConfigYAML(gateway.Options{}) + "steer_everything: yes\n", "(file)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(e.lab.Dir(), "bad.yaml")
			if err := os.WriteFile(p, []byte(tc.config), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := e.lab.Command(t.Context(), lab.RoleGW, bins.cloudsteer, "run", "--config", p)
			out, err := cmd.CombinedOutput()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 2 {
				t.Fatalf("exit = %v, want status 2; output %q", err, out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], tc.key) {
				t.Fatalf("output %q: want one line naming %s", out, tc.key)
			}
			if ks := e.kernelState(); !ks.cleanBesides(e.labTables()) {
				t.Fatalf("kernel state after a bad config: %+v", ks)
			}
		})
	}
}

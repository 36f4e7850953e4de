package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/gateway"
)

// codeB and codeC are entitlement codes other than the lab's.
const (
	codeB = "bbbbbbbb-1111-4222-8333-444455556666"
	codeC = "cccccccc-1111-4222-8333-444455556666"
)

// configSourceGW runs cloudsteer with Squid as the cloud proxy (the code
// as the user name, as the provider documents proxy chaining from Squid)
// and a config file it rewrites between runs.
type configSourceGW struct {
	e    *env
	t    *testing.T
	path string // the config file
	g    *gateway.Gateway
	sock string
}

// config renders the file: the bypass domains and CIDRs, and an
// entitlement_code (besides the chaining credentials) when code is set.
func (c *configSourceGW) config(domains []string, cidrs []string, code, extra string) string {
	s := gateway.ConfigYAML(gateway.Options{
		Lab:      c.e.lab,
		ProxyURL: fmt.Sprintf("http://%s:%d", lab.SquidV4, lab.SquidPort),
		Username: lab.EntitlementCode, Password: lab.SquidCodePassword,
		BypassDomains: domains, BypassCIDRs: cidrs,
		Extra: extra,
	})
	if code != "" {
		s = strings.Replace(s, "cloud_proxy:\n", fmt.Sprintf("cloud_proxy:\n  entitlement_code: %q\n", code), 1)
	}
	return s
}

func (c *configSourceGW) write(text string) {
	c.t.Helper()
	if err := os.WriteFile(c.path, []byte(text), 0o600); err != nil {
		c.t.Fatal(err)
	}
}

// start writes text and starts the daemon with it.
func (c *configSourceGW) start(text string) {
	c.t.Helper()
	c.write(text)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g, err := gateway.StartWithConfig(ctx, bins.cloudsteer, c.e.lab, c.path, c.e.lab.Path("gw.log"))
	if err != nil {
		c.t.Fatal(err)
	}
	c.g = g
	c.t.Cleanup(func() {
		if g.Running() {
			if err := g.Stop(); err != nil {
				c.t.Errorf("stop cloudsteer: %v", err)
			}
		}
		if c.t.Failed() {
			c.t.Logf("cloudsteer output:\n%s", g.Log())
		}
	})
}

func (c *configSourceGW) stop() {
	c.t.Helper()
	if err := c.g.Stop(); err != nil {
		c.t.Fatal(err)
	}
}

// reload rewrites the file, sends SIGHUP and waits for the daemon to log
// the outcome (want: "config reloaded" or "config reload refused").
func (c *configSourceGW) reload(text, want string) {
	c.t.Helper()
	c.write(text)
	before := strings.Count(c.g.Log(), want)
	if err := c.g.Signal(syscall.SIGHUP); err != nil {
		c.t.Fatal(err)
	}
	if !eventually(5*time.Second, func() bool { return strings.Count(c.g.Log(), want) > before }) {
		c.t.Fatalf("no %q in the log after SIGHUP:\n%s", want, c.g.Log())
	}
}

// list is `cloudsteer bypass list --json` without the system entries.
func (c *configSourceGW) list() map[string]model.BypassEntry {
	c.t.Helper()
	var bl api.BypassList
	c.e.cliJSON(c.sock, &bl, "bypass", "list")
	m := map[string]model.BypassEntry{}
	for _, en := range bl.Entries {
		if !en.System {
			m[en.Value] = en
		}
	}
	return m
}

func (c *configSourceGW) status() model.Status {
	c.t.Helper()
	var st model.Status
	c.e.cliJSON(c.sock, &st, "status")
	return st
}

// squidConnects counts the CONNECTs to name:443 for the LAN client in
// Squid's access log.
func (e *env) squidConnects(t *testing.T, name string) int {
	t.Helper()
	recs, err := e.lab.SquidLog()
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	n := 0
	for _, r := range recs {
		if r.Method == "CONNECT" && r.URL == name+":443" && r.XFF == clientV4 {
			n++
		}
	}
	return n
}

// squidPathOf makes one HTTPS flow to name from the LAN client (the name
// resolved through the gateway first, as a client would) and says where
// it went: "squid" when Squid logged its CONNECT, "direct" when the origin
// saw the client or the gateway's WAN address and Squid logged nothing.
func (e *env) squidPathOf(t *testing.T, name, tag string) string {
	t.Helper()
	s := site(t, name)
	if ans, err := e.dig(lab.NobodyDNSV4.String(), name, "A"); err != nil || strings.TrimSpace(ans) != s.V4.String() {
		return fmt.Sprintf("dig %s = %q, %v", name, ans, err)
	}
	time.Sleep(300 * time.Millisecond) // Squid's line for an earlier tunnel is written
	before := e.squidConnects(t, name)
	start := time.Now()
	path := "/?case=" + tag
	if _, err := e.curl("https://"+name+path, name, s.V4.String()); err != nil {
		return "failed: " + err.Error()
	}
	remote := e.originRemote(start, path)
	if eventually(3*time.Second, func() bool { return e.squidConnects(t, name) > before }) {
		return "squid"
	}
	switch remote {
	case clientV4, lab.GWWANV4.Addr().String(): // routed (or masqueraded), or spliced by the gateway
		return "direct"
	}
	return "origin saw " + remote
}

// TestConfigSource: the config file means what it says. Bypass entries and
// the entitlement code from the file follow it across restarts and on
// SIGHUP; run-time changes meet them by the documented rule; Squid is the
// cloud proxy throughout. It runs with the gateway routing the LAN's
// addresses and with it masquerading them (NAT, where a bypassed flow
// reaches the origin from the gateway's WAN address).
func TestConfigSource(t *testing.T) {
	eachNAT(t, testConfigSource)
}

func testConfigSource(t *testing.T, nat bool) {
	e := newLabEnv(t, lab.Options{Squid: true, Firewall: firewallFor(nat)})
	c := &configSourceGW{e: e, t: t, path: e.lab.Path("gw.yaml"), sock: gateway.SocketPath(e.lab, "gw")}
	withBank := c.config([]string{"bank.example"}, nil, lab.EntitlementCode, "")
	withoutBank := c.config(nil, nil, lab.EntitlementCode, "")

	c.start(withBank)
	t.Run("config entry bypasses", func(t *testing.T) {
		if en := c.list()["bank.example"]; en.Source != "config" || !en.Enabled {
			t.Fatalf("bank.example listed as %+v", en)
		}
		if got := e.squidPathOf(t, "bank.example", "cfg1"); got != "direct" {
			t.Fatalf("bank.example from the config went %s, want direct", got)
		}
		if got := e.squidPathOf(t, "www.example.com", "cfg1-www"); got != "squid" {
			t.Fatalf("www.example.com went %s, want squid", got)
		}
	})

	t.Run("API meets config", func(t *testing.T) {
		_, errOut, code := e.cli(c.sock, "bypass", "rm", "bank.example")
		if code != 1 || !strings.Contains(errOut, "bank.example comes from the config file: remove it there") {
			t.Fatalf("rm a config entry: exit %d %q", code, errOut)
		}
		_, errOut, code = e.cli(c.sock, "bypass", "add", "bank.example")
		if code != 1 || !strings.Contains(errOut, "comes from the config file") {
			t.Fatalf("add a config entry: exit %d %q", code, errOut)
		}
		if _, errOut, code := e.cli(c.sock, "bypass", "disable", "bank.example"); code != 0 {
			t.Fatalf("disable: %d %s", code, errOut)
		}
		out, _, _ := e.cli(c.sock, "bypass", "list")
		if !strings.Contains(out, "config (disabled at run time)") {
			t.Fatalf("bypass list does not show the override:\n%s", out)
		}
		if got := e.squidPathOf(t, "bank.example", "disabled"); got != "squid" {
			t.Fatalf("disabled config entry: flow went %s, want squid", got)
		}
		if _, errOut, code := e.cli(c.sock, "bypass", "add", "news.example.com"); code != 0 {
			t.Fatalf("add a run-time entry: %d %s", code, errOut)
		}
	})

	t.Run("override kept across a restart", func(t *testing.T) {
		c.stop()
		c.start(withBank)
		l := c.list()
		if en := l["bank.example"]; en.Source != "config" || en.Enabled || en.Override != "disabled" {
			t.Fatalf("bank.example after restart: %+v", en)
		}
		if l["news.example.com"].Source != "api" {
			t.Fatalf("run-time entry after restart: %+v", l)
		}
		if _, errOut, code := e.cli(c.sock, "bypass", "enable", "bank.example"); code != 0 {
			t.Fatalf("enable: %d %s", code, errOut)
		}
	})

	t.Run("activate with chaining credentials", func(t *testing.T) {
		out, errOut, code := e.cli(c.sock, "activate", codeB)
		if code != 0 || !strings.Contains(out, "stored; not used for authentication: cloud_proxy.username is set") || strings.Contains(out, "accepted") {
			t.Fatalf("activate: exit %d %q %q", code, out, errOut)
		}
		if st := c.status(); st.Code != model.MaskCode(codeB) || st.CodeSource != "activate" {
			t.Fatalf("status after activate: code %q from %q", st.Code, st.CodeSource)
		}
	})

	t.Run("removed from the config: gone after restart", func(t *testing.T) {
		c.stop()
		c.start(withoutBank)
		l := c.list()
		if _, ok := l["bank.example"]; ok {
			t.Fatalf("bank.example still listed after leaving the config: %+v", l["bank.example"])
		}
		out, _, _ := e.cli(c.sock, "bypass", "list")
		if strings.Contains(out, "bank.example") {
			t.Fatalf("bypass list table still shows bank.example:\n%s", out)
		}
		if l["news.example.com"].Source != "api" {
			t.Fatalf("run-time entry lost: %+v", l)
		}
		if got := e.squidPathOf(t, "bank.example", "removed"); got != "squid" {
			t.Fatalf("bank.example after leaving the config went %s, want squid", got)
		}
		// The activation stands: the file's code did not change.
		if st := c.status(); st.Code != model.MaskCode(codeB) || st.CodeSource != "activate" {
			t.Fatalf("status: code %q from %q, want the activated one", st.Code, st.CodeSource)
		}
	})

	t.Run("SIGHUP reload", func(t *testing.T) {
		c.reload(c.config([]string{"bank.example"}, nil, codeC, ""), "config reloaded")
		if en := c.list()["bank.example"]; en.Source != "config" || !en.Enabled {
			t.Fatalf("bank.example after reload: %+v", en)
		}
		if got := e.squidPathOf(t, "bank.example", "reloaded"); got != "direct" {
			t.Fatalf("bank.example after reload went %s, want direct", got)
		}
		// The file's code changed: it takes over from the activation.
		if st := c.status(); st.Code != model.MaskCode(codeC) || st.CodeSource != "config" {
			t.Fatalf("status after reload: code %q from %q", st.Code, st.CodeSource)
		}
		status, _ := c.statusLine()
		if !strings.Contains(status, "(from the config file)") {
			t.Fatalf("status table does not say where the code came from:\n%s", status)
		}
		c.reload(withoutBank, "config reloaded")
		if _, ok := c.list()["bank.example"]; ok {
			t.Fatal("bank.example still listed after a reload without it")
		}
		if got := e.squidPathOf(t, "bank.example", "unreloaded"); got != "squid" {
			t.Fatalf("bank.example after a reload without it went %s, want squid", got)
		}
		// A restart-only key is logged as such.
		c.reload(strings.Replace(withoutBank, "interval: 2s", "interval: 3s", 1), "config reloaded")
		if !strings.Contains(c.g.Log(), "key=health.interval") {
			t.Fatalf("restart key not logged:\n%s", c.g.Log())
		}
	})

	t.Run("bad config on reload changes nothing", func(t *testing.T) {
		// Applied, it would list bank.example and bring codeB.
		bad := c.config([]string{"bank.example"}, []string{"10.0.0.0/8", "11.0.0.0/8"}, codeB, "")
		c.reload(bad, "config reload refused")
		var line string
		for _, l := range strings.Split(c.g.Log(), "\n") {
			if strings.Contains(l, "config reload refused") {
				line = l
			}
		}
		if !strings.Contains(line, "bypass.allow_broad_cidrs") {
			t.Fatalf("the refusal does not name the key: %q", line)
		}
		if _, ok := c.list()["bank.example"]; ok || !c.g.Running() {
			t.Fatal("a refused config changed the bypass list, or the daemon died")
		}
		if st := c.status(); st.Code != model.MaskCode(lab.EntitlementCode) {
			t.Fatalf("a refused config changed the code: %q", st.Code)
		}
	})

	t.Run("broad CIDR refused unless forced", func(t *testing.T) {
		for _, v := range []string{"10.0.0.0/7", "0.0.0.0/1"} {
			_, errOut, code := e.cli(c.sock, "bypass", "add", v)
			if code != 1 || !strings.Contains(errOut, "more than a /8") || !strings.Contains(errOut, "--force") {
				t.Fatalf("add %s: exit %d %q", v, code, errOut)
			}
		}
		if _, errOut, code := e.cli(c.sock, "bypass", "add", "10.0.0.0/7", "--force"); code != 0 {
			t.Fatalf("forced: exit %d %q", code, errOut)
		}
		if _, errOut, code := e.cli(c.sock, "bypass", "rm", "10.0.0.0/7"); code != 0 {
			t.Fatalf("rm: exit %d %q", code, errOut)
		}
	})

	t.Run("require_code_to_pause off needs the code", func(t *testing.T) {
		put := func(body string) (int, string) {
			out, _ := e.run(lab.RoleGW, 10*time.Second, "curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket", c.sock,
				"-X", "PUT", "-H", "Content-Type: application/json", "--data-binary", body, "http://cloudsteer/api/v1/settings")
			i := strings.LastIndex(out, "\n")
			var status int
			fmt.Sscan(out[i+1:], &status)
			return status, out[:max(i, 0)]
		}
		if s, body := put(`{"require_code_to_pause":true}`); s != 200 {
			t.Fatalf("switch on: %d %s", s, body)
		}
		if s, body := put(`{"require_code_to_pause":false}`); s != 403 || !strings.Contains(body, "requires the entitlement code") {
			t.Fatalf("switch off without the code: %d %s", s, body)
		}
		if s, body := put(`{"require_code_to_pause":false,"code":"` + codeB + `"}`); s != 403 {
			t.Fatalf("switch off with a wrong code: %d %s", s, body)
		}
		if s, body := put(`{"require_code_to_pause":false,"code":"` + lab.EntitlementCode + `"}`); s != 200 || !strings.Contains(body, `"require_code_to_pause":false`) {
			t.Fatalf("switch off with the code: %d %s", s, body)
		}
	})

	t.Run("network API answers only its own Host", func(t *testing.T) {
		get := func(url string, extra ...string) int {
			args := append([]string{"curl", "-s", "--max-time", "3", "-o", "/dev/null", "-w", "%{http_code}"}, extra...)
			out, _ := e.run(lab.RoleLAN, 10*time.Second, append(args, url)...)
			var s int
			fmt.Sscan(out, &s)
			return s
		}
		for _, tc := range []struct {
			url  string
			host string
			want int
		}{
			{"http://10.10.0.1:9080/metrics", "", 200},
			{"http://[fd00:10::1]:9080/metrics", "", 200},
			{"http://10.10.0.1:9080/metrics", "rebind.attacker.example:9080", 421},
			{"http://10.10.0.1:9080/api/v1/status", "rebind.attacker.example", 421},
		} {
			var extra []string
			if tc.host != "" {
				extra = []string{"-H", "Host: " + tc.host}
			}
			if got := get(tc.url, extra...); got != tc.want {
				t.Errorf("%s Host %q: %d, want %d", tc.url, tc.host, got, tc.want)
			}
		}
		if got := e.metric(t, "cloudsteer_events_dropped_total"); got != 0 {
			t.Errorf("events dropped: %v", got)
		}
	})
}

// statusLine is the `cloudsteer status` table.
func (c *configSourceGW) statusLine() (string, int) {
	out, _, code := c.e.cli(c.sock, "status")
	return out, code
}

// TestConfigSourceAuthFailures: with credentials Squid refuses, a burst
// of client flows gives one log line for the cause, not one per flow,
// while every refusal is still stored as an event.
func TestConfigSourceAuthFailures(t *testing.T) {
	eachNAT(t, testConfigSourceAuthFailures)
}

func testConfigSourceAuthFailures(t *testing.T, nat bool) {
	e := newLabEnv(t, lab.Options{Squid: true, Firewall: firewallFor(nat)})
	g := e.startGateway(gateway.Options{
		ProxyURL: fmt.Sprintf("http://%s:%d", lab.SquidV4, lab.SquidPort),
		Username: lab.EntitlementCode, Password: "not-the-squid-password",
		// Open (the default) would send the flows direct once the
		// proxy is found refusing; closed keeps refusing them, each one
		// still an auth_failed event.
		CloudProxy: []string{"failure_mode: closed"},
	})
	sock := gateway.SocketPath(e.lab, "gw")
	www := site(t, "www.example.com")
	const flows = 15
	for i := range flows {
		if _, err := e.curl(fmt.Sprintf("https://www.example.com/?case=auth%d", i), "www.example.com", www.V4.String(), "--max-time", "3"); err == nil {
			t.Fatal("HTTPS worked with credentials Squid refuses")
		}
	}
	var list api.EventList
	ok := eventually(3*time.Second, func() bool {
		e.cliJSON(sock, &list, "events", "--client", clientV4, "--limit", "100")
		n := 0
		for _, ev := range list.Events {
			if ev.Reason == "auth_failed" && ev.Name == "www.example.com" {
				n++
			}
		}
		return n >= flows
	})
	if !ok {
		t.Fatalf("stored events: %+v", list.Events)
	}
	var lines int
	for _, l := range strings.Split(g.Log(), "\n") {
		if strings.Contains(l, "rejected the tenant credentials") && strings.Contains(l, "client=10.10.0.10") {
			lines++
		}
	}
	if lines != 1 {
		t.Fatalf("%d log lines for %d refused flows, want 1 per cause per minute:\n%s", lines, flows, g.Log())
	}
	if got := e.metric(t, `cloudsteer_events_total{reason="auth_failed"}`); got < flows {
		t.Fatalf("events_total{auth_failed} = %v, want at least %d", got, flows)
	}
}

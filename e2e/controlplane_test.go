package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/gateway"
)

// cli runs `cloudsteer --socket S ARGS` in the gateway namespace and
// returns stdout, stderr and the exit status.
func (e *env) cli(sock string, args ...string) (string, string, int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	full := append([]string{bins.cloudsteer, "--socket", sock}, args...)
	cmd := e.lab.Command(ctx, lab.RoleGW, full...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("run cloudsteer %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// cliJSON runs a CLI command with --json and decodes its output.
func (e *env) cliJSON(sock string, v any, args ...string) {
	e.t.Helper()
	out, errOut, code := e.cli(sock, append(args, "--json")...)
	if code != 0 && code != 4 && code != 5 {
		e.t.Fatalf("cloudsteer %v: exit %d: %s", args, code, errOut)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		e.t.Fatalf("cloudsteer %v --json: %v: %q", args, err, out)
	}
}

// pathOf makes one HTTPS flow and says where it went: "proxy" when the
// cloud proxy saw it, "bypass" when the origin was reached without the
// cloud proxy (by plain routing, seeing the client itself, or spliced by the
// gateway, seeing its WAN address).
func (e *env) pathOf(t *testing.T, name, addr, tag string) string {
	t.Helper()
	start := time.Now()
	path := "/?case=" + tag
	if _, err := e.curl("https://"+name+path, name, addr); err != nil {
		return "failed: " + err.Error()
	}
	remote := e.originRemote(start, path)
	if remote == "" {
		return "origin saw nothing"
	}
	for _, r := range e.proxyLog(start) {
		// XFF tells the client's flows from the gateway's health probes.
		if strings.HasPrefix(r.Target, name) && (r.XFF == clientV4 || r.XFF == clientV6) {
			return "proxy"
		}
	}
	switch remote {
	case clientV4, clientV6, "10.20.0.1", "fd00:20::1":
		return "bypass"
	}
	return "origin saw " + remote
}

// longDownload starts a download of size bytes from site over HTTPS at
// 8 MB/s (extra: more curl flags) and returns a function that waits for it
// and fails the test, naming what, unless every byte arrived.
func (e *env) longDownload(t *testing.T, site lab.Site, size int, extra ...string) func(what string) {
	var out string
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		args := append([]string{"--limit-rate", "8M", "-o", "/dev/null", "-w", "%{size_download}"}, extra...)
		out, err = e.curl(fmt.Sprintf("https://%s/bytes?n=%d", site.Name, size), site.Name, site.V4.String(), args...)
	}()
	return func(what string) {
		t.Helper()
		<-done
		if err != nil || strings.TrimSpace(out) != fmt.Sprint(size) {
			t.Fatalf("%s: %q, %v", what, out, err)
		}
	}
}

// TestControlPlane drives the admin CLI and API against a running gateway
// in the lab: live bypass toggling under load, pause and resume, events,
// activation, the quick test, the network API and metrics; once beside
// each of the lab gateway's firewalls (the masquerading router, the
// default; none; an OpenWrt-fw4-like ruleset).
func TestControlPlane(t *testing.T) {
	for _, fw := range []lab.Firewall{lab.FirewallRouter, lab.FirewallNone, lab.FirewallFW4} {
		t.Run(string(fw), func(t *testing.T) { testControlPlane(t, fw) })
	}
}

func testControlPlane(t *testing.T, fw lab.Firewall) {
	e := newLabEnv(t, lab.Options{Firewall: fw})
	g := e.startGateway(gateway.Options{})
	sock := gateway.SocketPath(e.lab, "gw")
	www := site(t, "www.example.com")

	t.Run("status protected", func(t *testing.T) {
		var st model.Status
		ok := eventually(10*time.Second, func() bool {
			e.cliJSON(sock, &st, "status")
			return st.State == model.Protected
		})
		if !ok {
			t.Fatalf("status = %+v", st)
		}
		if st.Code != model.MaskCode(lab.EntitlementCode) || strings.Contains(st.Code, lab.EntitlementCode) {
			t.Fatalf("code shown as %q, want masked", st.Code)
		}
		out, _, code := e.cli(sock, "status")
		if code != 0 || !strings.Contains(strings.ToLower(out), "protected") {
			t.Fatalf("status table: exit %d\n%s", code, out)
		}
	})

	t.Run("system entries are fixed", func(t *testing.T) {
		for _, args := range [][]string{{"bypass", "rm", "*.akaetp.net"}, {"bypass", "disable", "*.akamai.com"}} {
			_, errOut, code := e.cli(sock, args...)
			if code != 1 || !strings.Contains(errOut, "system") {
				t.Fatalf("%v: exit %d, stderr %q", args, code, errOut)
			}
		}
		_, errOut, code := e.cli(sock, "bypass", "add", "not a name")
		if code != 1 || errOut == "" {
			t.Fatalf("bad name: exit %d %q", code, errOut)
		}
	})

	t.Run("bypass toggle under load", func(t *testing.T) {
		// A long flow through the proxy to the very destination being
		// toggled keeps running while the list changes.
		const size = 64 << 20
		longDone := e.longDownload(t, www, size)
		time.Sleep(500 * time.Millisecond) // the long flow is established
		if got := e.pathOf(t, "www.example.com", www.V4.String(), "tog0"); got != "proxy" {
			t.Fatalf("before: %s", got)
		}
		for i, step := range []struct {
			args []string
			want string
		}{
			{[]string{"bypass", "add", "www.example.com"}, "bypass"},
			{[]string{"bypass", "disable", "www.example.com"}, "proxy"},
			{[]string{"bypass", "enable", "www.example.com"}, "bypass"},
			{[]string{"bypass", "rm", "www.example.com"}, "proxy"},
			{[]string{"bypass", "add", www.V4.String() + "/32"}, "bypass"},
			{[]string{"bypass", "rm", www.V4.String() + "/32"}, "proxy"},
		} {
			if _, errOut, code := e.cli(sock, step.args...); code != 0 {
				t.Fatalf("%v: exit %d: %s", step.args, code, errOut)
			}
			// A new flow within a second follows the new rule.
			time.Sleep(time.Second)
			if got := e.pathOf(t, "www.example.com", www.V4.String(), fmt.Sprintf("tog%d", i+1)); got != step.want {
				t.Fatalf("after %v: flow went %s, want %s", step.args, got, step.want)
			}
		}
		longDone("long flow during toggles")
	})

	t.Run("bypassed flow untracked, and kept when the name leaves the list", func(t *testing.T) {
		// With nothing else in the lab's gateway namespace using
		// netfilter, unsteered TCP skips conntrack there; beside another
		// firewall everything is tracked and the fast path is off.
		alone := fw == lab.FirewallNone
		want := 0.0
		if alone {
			want = 1
		}
		if e.metric(t, "cloudsteer_untracking_unsteered") != want || e.metric(t, "cloudsteer_fast_path") != want {
			t.Fatalf("metrics do not say untracking and the fast path are %v", want)
		}
		fromWAN := e.metric(t, `cloudsteer_fast_path_bytes_total{from="wan"}`)
		if _, errOut, code := e.cli(sock, "bypass", "add", "www.example.com"); code != 0 {
			t.Fatalf("bypass add: %d %s", code, errOut)
		}
		time.Sleep(time.Second)
		// Resolving the name through cloudsteer puts its address on the
		// kernel's bypass list (else the proxy would splice it by SNI).
		if ans, err := e.dig(lab.NobodyDNSV4.String(), "www.example.com", "A"); err != nil || strings.TrimSpace(ans) != www.V4.String() {
			t.Fatalf("dig = %q, %v", ans, err)
		}
		const size = 32 << 20
		longDone := e.longDownload(t, www, size, "--local-port", "45123")
		time.Sleep(time.Second) // the long flow is established, bypassed
		ct, _ := e.run(lab.RoleGW, 5*time.Second, "cat", "/proc/net/nf_conntrack")
		if tracked := strings.Contains(ct, "sport=45123 dport=443 "); tracked == alone {
			t.Errorf("the bypassed flow tracked: %v, want %v:\n%s", tracked, !alone, ct)
		}
		if _, errOut, code := e.cli(sock, "bypass", "rm", "www.example.com"); code != 0 {
			t.Fatalf("bypass rm: %d %s", code, errOut)
		}
		time.Sleep(time.Second)
		if got := e.pathOf(t, "www.example.com", www.V4.String(), "unbypassed"); got != "proxy" {
			t.Errorf("a new flow after bypass rm went %s, want proxy", got)
		}
		longDone("bypassed long flow after its name left the list")
		// Its bytes from the origin came in on the WAN side and were
		// forwarded in eBPF.
		got := e.metric(t, `cloudsteer_fast_path_bytes_total{from="wan"}`) - fromWAN
		if alone && got < size {
			t.Errorf("the fast path forwarded %.0f bytes from the WAN side, want at least %d", got, size)
		}
		if !alone && got != 0 {
			t.Errorf("the fast path forwarded %.0f bytes beside another firewall, want none", got)
		}
	})

	t.Run("pause and resume", func(t *testing.T) {
		var p model.PauseState
		e.cliJSON(sock, &p, "pause", "--for", "15m")
		if !p.Paused || p.Until.Before(time.Now().Add(14*time.Minute)) {
			t.Fatalf("pause = %+v", p)
		}
		if got := e.pathOf(t, "www.example.com", www.V4.String(), "paused"); got != "bypass" {
			t.Fatalf("paused: flow went %s", got)
		}
		// DNS keeps working while paused.
		if ans, err := e.dig(lab.NobodyDNSV4.String(), "www.example.com", "A"); err != nil || strings.TrimSpace(ans) != www.V4.String() {
			t.Fatalf("dig while paused = %q, %v", ans, err)
		}
		var st model.Status
		e.cliJSON(sock, &st, "status")
		if st.State != model.Paused {
			t.Fatalf("status while paused = %+v", st)
		}
		if _, errOut, code := e.cli(sock, "resume"); code != 0 {
			t.Fatalf("resume: %d %s", code, errOut)
		}
		if got := e.pathOf(t, "www.example.com", www.V4.String(), "resumed"); got != "proxy" {
			t.Fatalf("resumed: flow went %s", got)
		}
	})

	t.Run("events", func(t *testing.T) {
		sports := site(t, "scores.sports.example")
		e.curl("https://scores.sports.example/", "scores.sports.example", sports.V4.String())
		e.curl("http://scores.sports.example/", "scores.sports.example", sports.V4.String())
		e.dig(lab.NobodyDNSV4.String(), "scores.sports.example", "A")
		var list api.EventList
		var evs []model.Event
		ok := eventually(3*time.Second, func() bool {
			e.cliJSON(sock, &list, "events", "--name", "sports")
			evs = list.Events
			seen := map[string]bool{}
			for _, ev := range evs {
				if ev.Client == clientV4 && ev.Name == "scores.sports.example" {
					seen[ev.Proto+"/"+ev.Reason] = true
				}
			}
			return seen["tls/blocked"] && seen["http/blocked"] && seen["dns/dns_blocked"]
		})
		if !ok {
			t.Fatalf("events = %+v", evs)
		}
		for _, ev := range evs {
			if ev.Proto != "dns" && ev.Category != "Sports" {
				t.Fatalf("event without category: %+v", ev)
			}
			if ev.MAC == "" {
				t.Fatalf("event without the client's MAC: %+v", ev)
			}
		}
		e.cliJSON(sock, &list, "events", "--client", "10.10.0.99")
		if len(list.Events) != 0 {
			t.Fatalf("client filter: %+v", list.Events)
		}
		out, _, code := e.cli(sock, "events")
		if code != 0 || !strings.Contains(out, "scores.sports.example") {
			t.Fatalf("events table: %d\n%s", code, out)
		}
	})

	t.Run("activate", func(t *testing.T) {
		_, errOut, code := e.cli(sock, "activate", "00000000-0000-4000-8000-000000000000")
		if code != 1 || !strings.Contains(errOut, "rejected by the cloud proxy") {
			t.Fatalf("wrong code: exit %d %q", code, errOut)
		}
		out, errOut, code := e.cli(sock, "activate", lab.EntitlementCode)
		if code != 0 || strings.Contains(out+errOut, lab.EntitlementCode) {
			t.Fatalf("right code: exit %d %q %q", code, out, errOut)
		}
		if strings.Contains(g.Log(), lab.EntitlementCode) {
			t.Fatal("the code reached the log")
		}
	})

	t.Run("diagnose", func(t *testing.T) {
		start := time.Now()
		var rep model.Report
		e.cliJSON(sock, &rep, "diagnose")
		if !rep.OK || len(rep.Checks) != 4 {
			t.Fatalf("quick test: %+v", rep)
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("quick test took %v", time.Since(start))
		}
	})

	t.Run("network api and metrics", func(t *testing.T) {
		tokenOut, _, code := e.cli(sock, "token", "--state-dir", e.lab.Path("state-gw"))
		token := strings.TrimSpace(tokenOut)
		if code != 0 || len(token) < 32 {
			t.Fatalf("token: exit %d %q", code, tokenOut)
		}
		get := func(role, url, tok string) (int, string) {
			t.Helper()
			args := []string{"curl", "-s", "--max-time", "3", "-o", "-", "-w", "\n%{http_code}"}
			if tok != "" {
				args = append(args, "-H", "Authorization: Bearer "+tok)
			}
			out, _ := e.run(role, 10*time.Second, append(args, url)...)
			i := strings.LastIndex(out, "\n")
			var status int
			fmt.Sscan(out[i+1:], &status)
			return status, out[:max(i, 0)]
		}
		if s, _ := get(lab.RoleLAN, "http://10.10.0.1:9080/api/v1/status", ""); s != 401 {
			t.Fatalf("no token: %d", s)
		}
		if s, _ := get(lab.RoleLAN, "http://10.10.0.1:9080/api/v1/status", "wrong"+token[5:]); s != 401 {
			t.Fatalf("wrong token: %d", s)
		}
		if s, body := get(lab.RoleLAN, "http://10.10.0.1:9080/api/v1/status", token); s != 200 || !strings.Contains(body, `"state"`) {
			t.Fatalf("with token: %d %s", s, body)
		}
		if s, _ := get(lab.RoleLAN, "http://[fd00:10::1]:9080/api/v1/status", token); s != 200 {
			t.Fatalf("with token over IPv6: %d", s)
		}
		for _, url := range []string{"http://10.20.0.1:9080/api/v1/status", "http://[fd00:20::1]:9080/metrics", "http://10.10.0.1:9080/metrics"} {
			if s, _ := get(lab.RoleInet, url, token); s != 0 {
				t.Fatalf("from the internet %s answered %d", url, s)
			}
		}
		s, body := get(lab.RoleLAN, "http://10.10.0.1:9080/metrics", "")
		if s != 200 {
			t.Fatalf("metrics: %d", s)
		}
		for _, want := range []string{"cloudsteer_packets_total", `verdict="tls"`, "cloudsteer_dns_queries_total", "cloudsteer_cloud_proxy_connect_seconds", "cloudsteer_events_total", "cloudsteer_paused 0"} {
			if !strings.Contains(body, want) {
				t.Fatalf("metrics lack %s:\n%s", want, body)
			}
		}
	})

	t.Run("bad API calls", func(t *testing.T) {
		resp := func(method, path, body string) int {
			out, _ := e.run(lab.RoleGW, 10*time.Second, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
				"--unix-socket", sock, "-X", method, "-H", "Content-Type: application/json", "--data-binary", body, "http://cloudsteer"+path)
			var s int
			fmt.Sscan(out, &s)
			return s
		}
		for _, tc := range []struct {
			method, path, body string
			want               int
		}{
			{"POST", "/api/v1/bypass", `{"value":`, 400},
			{"POST", "/api/v1/bypass", `{"value":"ok.example","bogus":1}`, 400},
			{"POST", "/api/v1/pause", `{"duration":"-5m"}`, 400},
			{"POST", "/api/v1/activate", `{"code":"nope"}`, 400},
		} {
			if got := resp(tc.method, tc.path, tc.body); got != tc.want {
				t.Errorf("%s %s %s = %d, want %d", tc.method, tc.path, tc.body, got, tc.want)
			}
		}
		if !g.Running() {
			t.Fatal("daemon died")
		}
	})
}

// TestStatePersists checks that run-time changes survive SIGKILL and a
// restart, and that a gateway without a code stays out of the way until it
// is activated.
func TestStatePersists(t *testing.T) {
	e := newEnv(t, false)
	www := site(t, "www.example.com")
	opts := gateway.Options{NoCode: true}
	g := e.startGateway(opts)
	sock := gateway.SocketPath(e.lab, "gw")

	var st model.Status
	e.cliJSON(sock, &st, "status")
	if st.State != model.NotProtected || len(st.Reasons) == 0 || st.Reasons[0].Code != model.ReasonNoCode {
		t.Fatalf("status without a code = %+v", st)
	}
	if got := e.pathOf(t, "www.example.com", www.V4.String(), "nocode"); got != "bypass" {
		t.Fatalf("without a code: flow went %s, want direct (fail-open)", got)
	}
	if _, errOut, code := e.cli(sock, "activate", lab.EntitlementCode); code != 0 {
		t.Fatalf("activate: %d %s", code, errOut)
	}
	if got := e.pathOf(t, "www.example.com", www.V4.String(), "activated"); got != "proxy" {
		t.Fatalf("after activation: flow went %s", got)
	}
	for _, args := range [][]string{{"bypass", "add", "news.example.com"}, {"bypass", "add", "bank.example"}, {"bypass", "disable", "bank.example"}, {"pause", "--for", "1h"}} {
		if _, errOut, code := e.cli(sock, args...); code != 0 {
			t.Fatalf("%v: %d %s", args, code, errOut)
		}
	}
	if err := g.Kill(); err != nil {
		t.Fatal(err)
	}
	g = e.startGateway(opts)
	var bl api.BypassList
	e.cliJSON(sock, &bl, "bypass", "list")
	entries := bl.Entries
	found := map[string]bool{}
	for _, en := range entries {
		found[fmt.Sprintf("%s=%v", en.Value, en.Enabled)] = true
	}
	if !found["news.example.com=true"] || !found["bank.example=false"] {
		t.Fatalf("bypass entries after SIGKILL: %+v", entries)
	}
	e.cliJSON(sock, &st, "status")
	if st.State != model.Paused || st.Code != model.MaskCode(lab.EntitlementCode) {
		t.Fatalf("status after SIGKILL = %+v", st)
	}
	if _, _, code := e.cli(sock, "resume"); code != 0 {
		t.Fatal("resume failed")
	}
	if got := e.pathOf(t, "www.example.com", www.V4.String(), "restored"); got != "proxy" {
		t.Fatalf("after restart: flow went %s", got)
	}
	if err := g.Stop(); err != nil {
		t.Fatal(err)
	}
	// The CLI says clearly that the daemon is not running.
	_, errOut, code := e.cli(sock, "status")
	if code != 3 || !strings.Contains(errOut, "not running") {
		t.Fatalf("status with no daemon: exit %d %q", code, errOut)
	}
}

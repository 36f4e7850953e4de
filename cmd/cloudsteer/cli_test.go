package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/controlplane/api/apitest"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// t0 is the clock of the fake controller and of the CLI.
var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// fakeDaemon is an admin API server over a fake controller on a real unix
// socket.
type fakeDaemon struct {
	fake *apitest.Fake
	sock string
}

func startDaemon(tb testing.TB) *fakeDaemon {
	tb.Helper()
	fake := apitest.New(func() time.Time { return t0 })
	srv, err := api.NewServer(fake, api.Options{Version: "test"})
	if err != nil {
		tb.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "cscli")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "admin.sock")
	ln, err := api.ListenUnix(sock)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeUnix(ctx, ln) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("ServeUnix: %v", err)
		}
	})
	return &fakeDaemon{fake: fake, sock: sock}
}

// result is one CLI run.
type result struct {
	code           int
	stdout, stderr string
}

// runCLIWith runs the CLI against sock with stdin, as root unless uid says
// otherwise.
func runCLIWith(tb testing.TB, sock, stdin string, uid int, args ...string) result {
	tb.Helper()
	var out, errb bytes.Buffer
	c := &cli{
		stdout: &out, stderr: &errb, stdin: strings.NewReader(stdin),
		socket: sock, now: func() time.Time { return t0 }, loc: time.UTC,
		geteuid: func() int { return uid },
	}
	code := c.run(context.Background(), args)
	return result{code, out.String(), errb.String()}
}

func (d *fakeDaemon) run(tb testing.TB, args ...string) result {
	tb.Helper()
	return runCLIWith(tb, d.sock, "", 0, args...)
}

// want checks the exit status, stdout (exactly, when wantOut is not "*")
// and that stderr holds wantErr (or is empty).
func want(tb testing.TB, r result, code int, wantOut, wantErr string) {
	tb.Helper()
	if r.code != code {
		tb.Errorf("exit %d, want %d (stdout %q, stderr %q)", r.code, code, r.stdout, r.stderr)
	}
	if wantOut != "*" && r.stdout != wantOut {
		tb.Errorf("stdout:\n%s\nwant:\n%s", r.stdout, wantOut)
	}
	if wantErr == "" && r.stderr != "" {
		tb.Errorf("unexpected stderr %q", r.stderr)
	}
	if wantErr != "" && !strings.Contains(r.stderr, wantErr) {
		tb.Errorf("stderr %q does not contain %q", r.stderr, wantErr)
	}
}

// oneErrLine checks that a daemon error is exactly one line on stderr.
func oneErrLine(tb testing.TB, r result) {
	tb.Helper()
	if strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "\n") {
		tb.Errorf("stderr %q is not one line", r.stderr)
	}
}

func TestStatus(t *testing.T) {
	t.Run("protected", func(t *testing.T) {
		d := startDaemon(t)
		want(t, d.run(t, "status"), exitOK, `State:             Protected
Entitlement code:  3315…a8e3
Cloud proxy:       http://198.51.100.10:8080
LAN interfaces:    lan0 (attached)
Version:           test
Running since:     2026-11-25 11:00:00 UTC
Last check:        2026-11-25 12:00:00 UTC
Reasons:           none
`, "")
	})
	t.Run("paused", func(t *testing.T) {
		d := startDaemon(t)
		want(t, d.run(t, "pause", "--for", "1h"), exitOK, "*", "")
		r := d.run(t, "status")
		want(t, r, exitPaused, "*", "")
		if !strings.Contains(r.stdout, "State:             Paused until 2026-11-25 13:00:00 UTC (1h left)\n") ||
			!strings.HasSuffix(r.stdout, "\nReasons:\n  paused  protection is paused\n") {
			t.Errorf("stdout:\n%s", r.stdout)
		}
	})
	t.Run("paused until resumed", func(t *testing.T) {
		d := startDaemon(t)
		want(t, d.run(t, "pause", "--for", "forever"), exitOK, "*", "")
		r := d.run(t, "status")
		want(t, r, exitPaused, "*", "")
		if !strings.Contains(r.stdout, "State:             Paused until resumed\n") {
			t.Errorf("stdout:\n%s", r.stdout)
		}
	})
	t.Run("not protected", func(t *testing.T) {
		d := startDaemon(t)
		d.fake.SetStatus(model.Status{
			State: model.NotProtected, Interfaces: []string{"lan0", "lan1"}, Attached: []string{"lan0"},
			WANInterfaces: []string{"ppp0"},
			Reasons: []model.Reason{
				{Code: model.ReasonProxyUnreachable, Message: "cloud proxy 198.51.100.10:8080 unreachable"},
				{Code: model.ReasonNotAttached, Message: "program not attached on lan1"},
			},
		})
		want(t, d.run(t, "status"), exitNotProtected, `State:             Not protected
Entitlement code:  3315…a8e3
Cloud proxy:       -
LAN interfaces:    lan0 (attached), lan1 (NOT attached)
Fast path WAN:     ppp0
Version:           test
Running since:     -
Last check:        -
Reasons:
  cloud_proxy_unreachable  cloud proxy 198.51.100.10:8080 unreachable
  program_not_attached     program not attached on lan1
`, "")
	})
	t.Run("legacy attach mode", func(t *testing.T) {
		d := startDaemon(t)
		d.fake.SetStatus(model.Status{
			State: model.Protected, Interfaces: []string{"lan0"}, Attached: []string{"lan0"}, AttachMode: "legacy",
		})
		want(t, d.run(t, "status"), exitOK, `State:             Protected
Entitlement code:  3315…a8e3
Cloud proxy:       -
LAN interfaces:    lan0 (attached)
eBPF attach:       legacy (clsact/cls_bpf)
Version:           test
Running since:     -
Last check:        -
Reasons:           none
`, "")
	})
	t.Run("json", func(t *testing.T) {
		d := startDaemon(t)
		for _, args := range [][]string{{"--json", "status"}, {"status", "--json"}} {
			r := d.run(t, args...)
			want(t, r, exitOK, "*", "")
			var st model.Status
			if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
				t.Fatalf("%v: %v in %q", args, err, r.stdout)
			}
			if st.State != model.Protected || st.Code != "3315…a8e3" || strings.Count(r.stdout, "\n") != 1 {
				t.Errorf("%v: %s", args, r.stdout)
			}
		}
		d.run(t, "pause", "--for", "15m")
		want(t, d.run(t, "--json", "status"), exitPaused, "*", "")
	})
}

func TestBypass(t *testing.T) {
	d := startDaemon(t)
	want(t, d.run(t, "bypass", "list"), exitOK, `VALUE            KIND    ENABLED  SOURCE  ADDED                    COMMENT
*.akaetp.net     domain  yes      system  2026-11-25 12:00:00 UTC  
*.akamai.com     domain  yes      system  2026-11-25 12:00:00 UTC  
*.akamai-zt.com  domain  yes      system  2026-11-25 12:00:00 UTC  
bank.example     domain  yes      config  2026-11-25 12:00:00 UTC  payroll
`, "")

	want(t, d.run(t, "bypass", "add", "Shop.Example", "--comment", "vendor portal"), exitOK, "added shop.example (domain, enabled)\n", "")
	want(t, d.run(t, "bypass", "add", "--comment", "lab net", "192.0.2.9/24"), exitOK, "added 192.0.2.0/24 (cidr, enabled)\n", "")
	want(t, d.run(t, "bypass", "comment", "shop.example", "vendor portal (EU)"), exitOK, "comment of shop.example set\n", "")
	want(t, d.run(t, "bypass", "comment", "shop.example", "--", "vendor portal"), exitOK, "comment of shop.example set\n", "")
	want(t, d.run(t, "bypass", "disable", "shop.example"), exitOK, "disabled shop.example\n", "")
	var entry model.BypassEntry
	for _, e := range d.fake.Bypass(context.Background()) {
		if e.Value == "shop.example" {
			entry = e
		}
	}
	if entry.Enabled || entry.Comment != "vendor portal" {
		t.Errorf("shop.example = %+v", entry)
	}
	want(t, d.run(t, "bypass", "enable", "shop.example"), exitOK, "enabled shop.example\n", "")
	want(t, d.run(t, "bypass", "rm", "192.0.2.0/24"), exitOK, "removed 192.0.2.0/24\n", "")
	want(t, d.run(t, "bypass", "rm", "--", "shop.example"), exitOK, "removed shop.example\n", "")
	if n := len(d.fake.Bypass(context.Background())); n != 4 {
		t.Errorf("%d entries left, want 4", n)
	}

	r := d.run(t, "--json", "bypass", "add", "news.example")
	want(t, r, exitOK, "*", "")
	var e model.BypassEntry
	if err := json.Unmarshal([]byte(r.stdout), &e); err != nil || e.Value != "news.example" || e.Source != "api" {
		t.Errorf("json add: %q (%v)", r.stdout, err)
	}
	r = d.run(t, "bypass", "list", "--json")
	var l api.BypassList
	if err := json.Unmarshal([]byte(r.stdout), &l); err != nil || len(l.Entries) != 5 {
		t.Errorf("json list: %q (%v)", r.stdout, err)
	}

	for _, tc := range []struct {
		name string
		args []string
		code int
		err  string
	}{
		{"remove system entry", []string{"bypass", "rm", "*.akaetp.net"}, exitFail, "cannot be removed"},
		{"disable system entry", []string{"bypass", "disable", "*.akaetp.net"}, exitFail, "cannot be disabled"},
		{"remove missing", []string{"bypass", "rm", "nope.example"}, exitFail, "not found"},
		{"add duplicate", []string{"bypass", "add", "bank.example"}, exitFail, "already exists"},
		{"add invalid", []string{"bypass", "add", "bad..example"}, exitFail, "not a domain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := d.run(t, tc.args...)
			want(t, r, tc.code, "", tc.err)
			oneErrLine(t, r)
		})
	}
}

func TestPauseResume(t *testing.T) {
	cases := []struct {
		name  string
		args  []string
		until time.Time
		out   string
	}{
		{"15m", []string{"pause", "--for", "15m"}, t0.Add(15 * time.Minute), "protection paused until 2026-11-25 12:15:00 UTC (15m)\n"},
		{"1h", []string{"pause", "--for=1h"}, t0.Add(time.Hour), "protection paused until 2026-11-25 13:00:00 UTC (1h)\n"},
		{"1d", []string{"pause", "--for", "1d"}, t0.Add(24 * time.Hour), "protection paused until 2026-11-26 12:00:00 UTC (1d)\n"},
		{"90m", []string{"pause", "--for", "90m"}, t0.Add(90 * time.Minute), "protection paused until 2026-11-25 13:30:00 UTC (1h30m)\n"},
		{"forever", []string{"pause", "--for", "forever"}, time.Time{}, "protection paused until resumed (cloudsteer resume)\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := startDaemon(t)
			want(t, d.run(t, tc.args...), exitOK, tc.out, "")
			ps := d.fake.PauseState(context.Background())
			if !ps.Paused || !ps.Until.Equal(tc.until) || ps.By != "cli" {
				t.Errorf("pause state %+v, want until %v", ps, tc.until)
			}
			want(t, d.run(t, "resume"), exitOK, "protection resumed\n", "")
			if d.fake.PauseState(context.Background()).Paused {
				t.Error("still paused after resume")
			}
		})
	}
	t.Run("code required", func(t *testing.T) {
		d := startDaemon(t)
		if _, err := d.fake.SetSettings(context.Background(), api.Settings{RequireCodeToPause: true}, ""); err != nil {
			t.Fatal(err)
		}
		r := d.run(t, "pause", "--for", "1h")
		want(t, r, exitFail, "", "entitlement code")
		oneErrLine(t, r)
		want(t, d.run(t, "pause", "--for", "1h", "--code", "wrong-code-0000"), exitFail, "", "not allowed")
		want(t, d.run(t, "pause", "--for", "1h", "--code", apitest.GoodCode), exitOK, "*", "")
		want(t, runCLIWith(t, d.sock, apitest.GoodCode+"\n", 0, "pause", "--for", "15m", "--code", "-"), exitOK, "*", "")
	})
	t.Run("json", func(t *testing.T) {
		d := startDaemon(t)
		r := d.run(t, "pause", "--for", "15m", "--json")
		var ps model.PauseState
		if err := json.Unmarshal([]byte(r.stdout), &ps); err != nil || !ps.Until.Equal(t0.Add(15*time.Minute)) {
			t.Errorf("json pause: %q (%v)", r.stdout, err)
		}
		want(t, d.run(t, "--json", "resume"), exitOK, `{"paused":false}`+"\n", "")
	})
}

func TestEvents(t *testing.T) {
	d := startDaemon(t)
	want(t, d.run(t, "events"), exitOK, `TIME                     CLIENT      MAC                NAME                   DESTINATION       PROTO  REASON       CATEGORY  STATUS
2026-11-25 11:59:00 UTC  10.10.0.10  02:00:00:00:00:10  scores.sports.example  203.0.113.20:443  tls    blocked      Sports    403
2026-11-25 10:00:00 UTC  10.10.0.11  -                  casino.example         -                 dns    dns_blocked  -         -
2026-11-25 09:00:00 UTC  10.10.0.10  -                  news.example.com       -                 http   blocked      News      403
`, "")
	for _, tc := range []struct {
		name   string
		args   []string
		n      int
		filter model.EventFilter
	}{
		{"client", []string{"events", "--client", "10.10.0.10"}, 2, model.EventFilter{Client: "10.10.0.10"}},
		{"name", []string{"events", "--name", "sports"}, 1, model.EventFilter{Name: "sports"}},
		{"since duration", []string{"events", "--since", "150m"}, 2, model.EventFilter{Since: t0.Add(-150 * time.Minute)}},
		{"since days", []string{"events", "--since", "1d"}, 3, model.EventFilter{Since: t0.Add(-24 * time.Hour)}},
		{"since time", []string{"events", "--since", "2026-11-25T11:00:00Z"}, 1, model.EventFilter{Since: t0.Add(-time.Hour)}},
		{"until and limit", []string{"events", "--until", "30m", "--limit", "1"}, 1, model.EventFilter{Until: t0.Add(-30 * time.Minute), Limit: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := d.run(t, append(tc.args, "--json")...)
			want(t, r, exitOK, "*", "")
			var l api.EventList
			if err := json.Unmarshal([]byte(r.stdout), &l); err != nil || len(l.Events) != tc.n {
				t.Errorf("got %q (%v), want %d events", r.stdout, err, tc.n)
			}
			f := d.fake.LastFilter
			if f.Client != tc.filter.Client || f.Name != tc.filter.Name || !f.Since.Equal(tc.filter.Since) ||
				!f.Until.Equal(tc.filter.Until) || f.Limit != tc.filter.Limit {
				t.Errorf("filter %+v, want %+v", f, tc.filter)
			}
		})
	}
	want(t, d.run(t, "events", "--client", "10.99.0.1"), exitOK, "no events\n", "")
	want(t, d.run(t, "events", "--client", "pc-1"), exitFail, "", "not an IP address")
	want(t, d.run(t, "events", "--since", "yesterday"), exitConfig, "", "--since")
	want(t, d.run(t, "events", "--limit", "5000"), exitConfig, "", "--limit")
}

func TestActivate(t *testing.T) {
	d := startDaemon(t)
	want(t, d.run(t, "activate", "aaaa1111-2222-3333-4444-55556666bbbb"), exitOK,
		"entitlement code aaaa…bbbb accepted by the cloud proxy and in use\n", "")
	if d.fake.Code() != "aaaa1111-2222-3333-4444-55556666bbbb" {
		t.Errorf("code = %q", d.fake.Code())
	}
	want(t, runCLIWith(t, d.sock, apitest.GoodCode+"\n", 0, "activate", "-"), exitOK,
		"entitlement code 3315…a8e3 accepted by the cloud proxy and in use\n", "")
	r := d.run(t, "activate", apitest.RejectedCode)
	want(t, r, exitFail, "", "code rejected by the cloud proxy")
	oneErrLine(t, r)
	if strings.Contains(r.stderr, apitest.RejectedCode) {
		t.Error("code echoed")
	}
	want(t, d.run(t, "activate", apitest.UnreachableCode), exitFail, "", "unreachable")
	want(t, d.run(t, "activate", "--json", apitest.GoodCode), exitOK,
		`{"entitlement_code":"3315…a8e3","verified":true,"in_use":true,"message":"accepted by the cloud proxy and in use"}`+"\n", "")
	want(t, runCLIWith(t, d.sock, "\n", 0, "activate", "-"), exitConfig, "", "empty")
}

// TestActivateWithChainingCredentials: the CLI says the code is only
// stored, not that the cloud proxy accepted it.
func TestActivateWithChainingCredentials(t *testing.T) {
	d := startDaemon(t)
	d.fake.Chaining = true
	r := d.run(t, "activate", apitest.GoodCode)
	want(t, r, exitOK, "entitlement code 3315…a8e3 stored; not used for authentication: cloud_proxy.username is set, the cloud proxy checks those credentials\n", "")
	if strings.Contains(r.stdout, "accepted") {
		t.Error("claims the cloud proxy accepted the code")
	}
}

func TestDiagnose(t *testing.T) {
	d := startDaemon(t)
	want(t, d.run(t, "diagnose"), exitOK, `Quick test at 2026-11-25 12:00:00 UTC: all checks passed

CHECK       RESULT  TOOK  DETAIL
install     ok      2ms   program attached on lan0; nftables table present
network     ok      40ms  cloud proxy accepts the code; cloud DNS answers
components  ok      1ms   proxy, resolver and maps healthy
settings    ok      0s    code present; 4 bypass entries
`, "")
	d.fake.SetReport(model.Report{Time: t0, OK: false, Checks: []model.Check{
		{Name: "install", OK: true, Detail: "ok", Took: time.Millisecond},
		{Name: "network", OK: false, Detail: "cloud proxy 198.51.100.10:8080: connection refused", Took: 1500 * time.Millisecond},
	}})
	want(t, d.run(t, "diagnose"), exitFail, `Quick test at 2026-11-25 12:00:00 UTC: 1 of 2 checks FAILED

CHECK    RESULT  TOOK  DETAIL
install  ok      1ms   ok
network  FAIL    1.5s  cloud proxy 198.51.100.10:8080: connection refused
`, "")
	r := d.run(t, "diagnose", "--json")
	want(t, r, exitFail, "*", "")
	var rep model.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || rep.OK || len(rep.Checks) != 2 {
		t.Errorf("json: %q (%v)", r.stdout, err)
	}
}

func TestNotRunning(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "admin.sock")
	for _, args := range [][]string{{"status"}, {"bypass", "list"}, {"pause", "--for", "1h"}, {"resume"}, {"events"}, {"activate", "x"}, {"diagnose"}, {"--json", "status"}} {
		r := runCLIWith(t, missing, "", 0, args...)
		want(t, r, exitNotRunning, "", "cloudsteer is not running")
		if r.stderr != "cloudsteer is not running (no socket at "+missing+")\n" {
			t.Errorf("%v: stderr %q", args, r.stderr)
		}
	}
	// A socket file nobody listens on (a daemon killed with SIGKILL).
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	r := runCLIWith(t, stale, "", 0, "status")
	want(t, r, exitNotRunning, "", "cloudsteer is not running (nothing listens on "+stale+")")
}

// TestNotCloudsteer checks the answer of something that is not the API.
func TestNotCloudsteer(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "other.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "bad gateway\nsecond line", http.StatusBadGateway)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	r := runCLIWith(t, sock, "", 0, "status")
	want(t, r, exitFail, "", "unexpected answer from cloudsteer: HTTP 502")
	oneErrLine(t, r)
}

func TestToken(t *testing.T) {
	dir := t.TempDir()
	tok, err := api.LoadOrCreateToken(filepath.Join(dir, api.TokenFileName))
	if err != nil {
		t.Fatal(err)
	}
	want(t, runCLIWith(t, "", "", 0, "token", "--state-dir", dir), exitOK, tok+"\n", "")
	want(t, runCLIWith(t, "", "", 0, "token", "--state-dir", dir, "--json"), exitOK, `{"token":"`+tok+`"}`+"\n", "")
	want(t, runCLIWith(t, "", "", 1000, "token", "--state-dir", dir), exitFail, "", "must be run as root")
	empty := t.TempDir()
	want(t, runCLIWith(t, "", "", 0, "token", "--state-dir", empty), exitFail, "",
		"no token at "+filepath.Join(empty, api.TokenFileName))
}

func TestUsage(t *testing.T) {
	d := startDaemon(t)
	for _, tc := range []struct {
		name string
		args []string
		code int
		err  string
	}{
		{"no command", []string{"--json"}, exitConfig, "missing command"},
		{"unknown command", []string{"--json", "frob"}, exitConfig, "unknown command"},
		{"bypass alone", []string{"bypass"}, exitConfig, "usage: cloudsteer bypass"},
		{"bypass unknown", []string{"bypass", "toggle", "x"}, exitConfig, "unknown bypass command"},
		{"bypass add no value", []string{"bypass", "add"}, exitConfig, "usage: cloudsteer bypass add"},
		{"bypass add two values", []string{"bypass", "add", "a.example", "b.example"}, exitConfig, "usage"},
		{"bypass add unknown flag", []string{"bypass", "add", "a.example", "--note", "x"}, exitConfig, "flag provided but not defined"},
		{"status extra", []string{"status", "now"}, exitConfig, "usage: cloudsteer status"},
		{"pause no for", []string{"pause"}, exitConfig, "--for is required"},
		{"pause bad for", []string{"pause", "--for", "2w"}, exitConfig, "--for"},
		{"pause too long", []string{"pause", "--for", "8d"}, exitConfig, "--for"},
		{"activate no code", []string{"activate"}, exitConfig, "usage: cloudsteer activate"},
		{"events bad limit", []string{"events", "--limit", "x"}, exitConfig, "invalid value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want(t, d.run(t, tc.args...), tc.code, "", tc.err)
		})
	}
	r := d.run(t, "status", "--help")
	want(t, r, exitOK, "", "exit status:")
	if !strings.Contains(r.stderr, "4  status: protection is paused") {
		t.Errorf("help does not document exit codes: %s", r.stderr)
	}
	want(t, d.run(t, "bypass", "--help"), exitOK, "*", "")
	// Nothing above reached the daemon with a change.
	if n := len(d.fake.Bypass(context.Background())); n != 4 || d.fake.PauseState(context.Background()).Paused {
		t.Error("a usage error changed the daemon's state")
	}
}

// TestMainDispatch checks that the old commands still work and the new
// ones are reached from mainErr.
func TestMainDispatch(t *testing.T) {
	d := startDaemon(t)
	var out, errb bytes.Buffer
	if code := mainErr([]string{"version"}, &out, &errb); code != exitOK || out.String() != "cloudsteer dev\n" {
		t.Errorf("version: %d %q", code, out.String())
	}
	out.Reset()
	if code := mainErr([]string{"check-config", "--config", filepath.Join(t.TempDir(), "none.yaml")}, &out, &errb); code != exitConfig {
		t.Errorf("check-config missing file: exit %d", code)
	}
	out.Reset()
	errb.Reset()
	if code := mainErr([]string{"--socket", d.sock, "--json", "status"}, &out, &errb); code != exitOK || !json.Valid(out.Bytes()) {
		t.Errorf("status via mainErr: %d %q %q", code, out.String(), errb.String())
	}
	out.Reset()
	errb.Reset()
	if code := mainErr([]string{"bypass", "list", "--socket=" + d.sock}, &out, &errb); code != exitOK || !strings.HasPrefix(out.String(), "VALUE") {
		t.Errorf("bypass list via mainErr: %d %q %q", code, out.String(), errb.String())
	}
	out.Reset()
	if code := mainErr([]string{"help"}, &out, &errb); code != exitOK || !strings.Contains(out.String(), "bypass add VALUE") {
		t.Errorf("help: %d %q", code, out.String())
	}
	if code := mainErr([]string{"frob"}, &out, &errb); code != exitConfig {
		t.Errorf("unknown: %d", code)
	}
}

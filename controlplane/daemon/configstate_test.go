package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/config"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
	"github.com/cloudsteer/cloudsteer/controlplane/store"
	"github.com/cloudsteer/cloudsteer/dataplane/proxy"
)

const (
	codeA = "3315471d-b831-48ed-a621-17042a74a8e3" // testConfig's
	codeB = "bbbbbbbb-0000-4000-8000-000000000000"
	codeC = "cccccccc-0000-4000-8000-000000000000"
)

// syncBuf is a log sink safe for concurrent writes.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func captureLog(d *Daemon) *syncBuf {
	buf := &syncBuf{}
	d.log = slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return buf
}

func parseCfg(t *testing.T, text string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func entries(d *Daemon) map[string]model.BypassEntry {
	m := map[string]model.BypassEntry{}
	for _, e := range d.ctrl.Bypass(context.Background()) {
		if !e.System {
			m[e.Value] = e
		}
	}
	return m
}

func cfgWith(code, domains, cidrs, extra string) string {
	s := "lan_interfaces: [lan0]\ncloud_proxy:\n  url: http://198.51.100.10:8080\n"
	if code != "" {
		s += "  entitlement_code: " + code + "\n"
	}
	return s + "dns:\n  upstreams: [198.51.100.53]\nbypass:\n  domains: [" + domains + "]\n  cidrs: [" + cidrs + "]\n" + extra
}

// TestReloadFollowsConfig: a reload adds, removes and keeps config
// entries (and their run-time overrides), leaves run-time entries alone,
// applies them to the bypass set and the kernel map, and logs keys that
// need a restart.
func TestReloadFollowsConfig(t *testing.T) {
	d, _, fm, _ := newTestDaemon(t, testConfig) // bank.example, 192.0.2.0/24
	logs := captureLog(d)
	ctx := context.Background()
	if _, err := d.ctrl.AddBypass(ctx, "rt.example", "mine", false); err != nil {
		t.Fatal(err)
	}
	if _, err := d.ctrl.AddBypass(ctx, "shop.example", "", false); err != nil {
		t.Fatal(err)
	}
	if _, err := d.ctrl.SetBypassEnabled(ctx, "192.0.2.0/24", false, false); err != nil {
		t.Fatal(err)
	}
	// bank.example leaves the file, shop.example (a run-time entry) and
	// 198.51.100.0/24 join it, and dns.upstreams changes (restart).
	next := parseCfg(t, cfgWith(codeA, "shop.example", "192.0.2.0/24, 198.51.100.0/24", "")+"")
	next.DNS.Upstreams = []string{"198.51.100.54"}
	if err := d.Reload(ctx, next); err != nil {
		t.Fatal(err)
	}
	got := entries(d)
	want := map[string]string{
		"192.0.2.0/24":    "config/false/disabled",
		"198.51.100.0/24": "config/true/",
		"shop.example":    "config/true/",
		"rt.example":      "api/true/",
	}
	if len(got) != len(want) {
		t.Fatalf("entries after reload: %+v", got)
	}
	for v, w := range want {
		e := got[v]
		if s := fmt.Sprintf("%s/%v/%s", e.Source, e.Enabled, e.Override); s != w {
			t.Errorf("%s: %s, want %s", v, s, w)
		}
	}
	if d.bypass.BypassName("bank.example") {
		t.Error("bank.example, dropped from the file, still bypasses")
	}
	if !fm.set[netip.MustParsePrefix("198.51.100.0/24")] || fm.set[netip.MustParsePrefix("192.0.2.0/24")] {
		t.Errorf("kernel map after reload: %v", fm.set)
	}
	if !strings.Contains(logs.String(), "takes effect at the next restart") || !strings.Contains(logs.String(), "key=dns.upstreams") {
		t.Errorf("restart key not logged:\n%s", logs)
	}
	for _, k := range []string{"key=bypass", "key=cloud_proxy.entitlement_code"} {
		if strings.Contains(logs.String(), k) {
			t.Errorf("reloadable %s logged as needing a restart:\n%s", k, logs)
		}
	}
	// Now a config entry: it cannot be removed here, only disabled.
	if err := d.ctrl.RemoveBypass(ctx, "shop.example"); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("remove a config entry: %v", err)
	}
	if _, err := d.ctrl.AddBypass(ctx, "Shop.Example", "", false); !errors.Is(err, model.ErrConflict) || !strings.Contains(err.Error(), "comes from the config file") {
		t.Fatalf("add a config entry: %v", err)
	}
	// The file drops everything: config entries and overrides go, the
	// run-time entry stays.
	if err := d.Reload(ctx, parseCfg(t, cfgWith(codeA, "", "", ""))); err != nil {
		t.Fatal(err)
	}
	if got := entries(d); len(got) != 1 || got["rt.example"].Source != "api" {
		t.Fatalf("entries after an empty config: %+v", got)
	}
	if len(fm.set) != 0 {
		t.Fatalf("kernel map after an empty config: %v", fm.set)
	}
}

// TestRestartFollowsConfig: the same through seedState, as at start: the
// bug of issue 9 (a domain removed from the file stayed bypassed).
func TestRestartFollowsConfig(t *testing.T) {
	d, _, _, _ := newTestDaemon(t, testConfig)
	d.cfg = parseCfg(t, cfgWith(codeA, "", "192.0.2.0/24", ""))
	if err := d.seedState(); err != nil {
		t.Fatal(err)
	}
	if err := d.applyBypass(); err != nil {
		t.Fatal(err)
	}
	if _, ok := entries(d)["bank.example"]; ok || d.bypass.BypassName("bank.example") {
		t.Fatal("a domain removed from the config file is still listed or bypassed after a restart")
	}
}

func TestReloadCode(t *testing.T) {
	d, sw, _, _ := newTestDaemon(t, testConfig)
	ctx := context.Background()
	status := func() (string, string) {
		code, src, err := d.store.CodeWithSource()
		if err != nil {
			t.Fatal(err)
		}
		return code, src
	}
	if c, s := status(); c != codeA || s != store.SourceConfig {
		t.Fatalf("at start: %s from %s", c, s)
	}
	// An activation (stored directly: Activate would dial the cloud
	// proxy) stands over a reload of the unchanged file...
	if err := d.store.PutCodeFrom(codeB, store.SourceActivate); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload(ctx, parseCfg(t, testConfig)); err != nil {
		t.Fatal(err)
	}
	if c, s := status(); c != codeB || s != store.SourceActivate {
		t.Fatalf("after an unchanged reload: %s from %s", c, s)
	}
	// ...until the file's code changes.
	if err := d.Reload(ctx, parseCfg(t, cfgWith(codeC, "", "", ""))); err != nil {
		t.Fatal(err)
	}
	if c, s := status(); c != codeC || s != store.SourceConfig {
		t.Fatalf("after the file's code changed: %s from %s", c, s)
	}
	// The file drops it: no code, so no credentials: out of the way.
	if err := d.Reload(ctx, parseCfg(t, cfgWith("", "", "", ""))); err != nil {
		t.Fatal(err)
	}
	if c, _ := status(); c != "" || !sw.get() {
		t.Fatalf("after the file dropped its code: code %q, paused %v", c, sw.get())
	}
}

func TestReloadBadConfigChangesNothing(t *testing.T) {
	d, _, _, _ := newTestDaemon(t, testConfig)
	logs := captureLog(d)
	before := entries(d)
	err := d.reloadFrom(context.Background(), func() (*config.Config, error) {
		return config.Parse([]byte(cfgWith(codeA, "\"a b\"", "", "")))
	})
	if err == nil {
		t.Fatal("a bad config was applied")
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	var refused []string
	for _, l := range lines {
		if strings.Contains(l, "config reload refused, nothing changed") {
			refused = append(refused, l)
		}
	}
	if len(refused) != 1 || !strings.Contains(refused[0], "bypass.domains[0]") {
		t.Fatalf("want one line naming the key, got:\n%s", logs)
	}
	if after := entries(d); len(after) != len(before) {
		t.Fatalf("entries changed: %v -> %v", before, after)
	}
}

func TestBroadCIDRRefused(t *testing.T) {
	d, _, fm, _ := newTestDaemon(t, testConfig)
	ctx := context.Background()
	// With the config's 192.0.2.0/24 enabled, a /8 is more than a /8.
	if _, err := d.ctrl.AddBypass(ctx, "10.0.0.0/8", "", false); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("a /8 and a /24: %v", err)
	}
	if _, err := d.ctrl.SetBypassEnabled(ctx, "192.0.2.0/24", false, false); err != nil {
		t.Fatal(err)
	}
	if _, err := d.ctrl.AddBypass(ctx, "10.0.0.0/8", "", false); err != nil {
		t.Fatalf("one /8: %v", err)
	}
	if _, err := d.ctrl.AddBypass(ctx, "10.1.0.0/16", "", false); err != nil {
		t.Fatalf("a /16 inside the /8: %v", err)
	}
	for _, v := range []string{"11.0.0.0/8", "0.0.0.0/1", "12.0.0.0/7"} {
		_, err := d.ctrl.AddBypass(ctx, v, "", false)
		if !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), "more than a /8") || !strings.Contains(err.Error(), "force") {
			t.Errorf("%s: %v", v, err)
		}
		if fm.set[netip.MustParsePrefix(v)] {
			t.Errorf("%s reached the kernel map", v)
		}
	}
	if _, err := d.ctrl.AddBypass(ctx, "2a00::/15", "", false); !errors.Is(err, model.ErrInvalid) {
		t.Errorf("a v6 /15: %v", err)
	}
	if _, err := d.ctrl.AddBypass(ctx, "11.0.0.0/8", "", true); err != nil {
		t.Fatalf("forced: %v", err)
	}
	// Disabled, it does not count; enabling it again needs force again.
	if _, err := d.ctrl.SetBypassEnabled(ctx, "11.0.0.0/8", false, false); err != nil {
		t.Fatal(err)
	}
	if _, err := d.ctrl.SetBypassEnabled(ctx, "11.0.0.0/8", true, false); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("enable without force: %v", err)
	}
	if _, err := d.ctrl.SetBypassEnabled(ctx, "11.0.0.0/8", true, true); err != nil {
		t.Fatalf("enable with force: %v", err)
	}
}

func TestSettingsOffNeedsCode(t *testing.T) {
	d, _, _, _ := newTestDaemon(t, testConfig)
	ctx := context.Background()
	if _, err := d.ctrl.SetSettings(ctx, apiSettings(true), ""); err != nil {
		t.Fatal(err)
	}
	for _, code := range []string{"", codeB} {
		if _, err := d.ctrl.SetSettings(ctx, apiSettings(false), code); !errors.Is(err, model.ErrForbidden) {
			t.Fatalf("off with code %q: %v", code, err)
		}
	}
	if !d.ctrl.Settings(ctx).RequireCodeToPause {
		t.Fatal("switched off without the code")
	}
	if s, err := d.ctrl.SetSettings(ctx, apiSettings(false), strings.ToUpper(codeA)); err != nil || s.RequireCodeToPause {
		t.Fatalf("off with the code: %+v, %v", s, err)
	}
}

// TestActivateWithChainingCredentials: with cloud_proxy.username set the
// code is stored, not verified (the cloud proxy checks the username), and
// the answer says so. Nothing is dialled.
func TestActivateWithChainingCredentials(t *testing.T) {
	d, _, _, _ := newTestDaemon(t, `
lan_interfaces: [lan0]
cloud_proxy:
  url: http://198.51.100.10:8080
  username: tenant
  password: secret
dns:
  upstreams: [198.51.100.53]
`)
	a, err := d.ctrl.Activate(context.Background(), codeB)
	if err != nil {
		t.Fatal(err)
	}
	if a.Verified || a.InUse || !strings.Contains(a.Message, "not used for authentication: cloud_proxy.username is set") || strings.Contains(a.Message, "accepted") {
		t.Fatalf("answer %+v", a)
	}
	if c, s, _ := d.store.CodeWithSource(); c != codeB || s != store.SourceActivate {
		t.Fatalf("stored %q from %q", c, s)
	}
}

// TestAuthFailureLogLimited: a flood of refused-credential events gives
// one line per cause per minute, then one with the suppressed count.
func TestAuthFailureLogLimited(t *testing.T) {
	d, _, _, clock := newTestDaemon(t, testConfig)
	d.authLog = logLimiter{every: authLogEvery, now: d.now}
	logs := captureLog(d)
	client := netip.MustParseAddr("10.10.0.2")
	for range 1000 {
		d.onEvent(proxy.Event{Kind: proxy.KindAuthFailed, Client: client, Name: "www.example.com", Status: 407})
	}
	d.onEvent(proxy.Event{Kind: proxy.KindAuthFailed, Client: client, Name: "www.example.com", Status: 403})
	count := func() int { return strings.Count(logs.String(), "rejected the tenant credentials") }
	if n := count(); n != 2 {
		t.Fatalf("%d lines for 1000 refusals of one cause and one of another:\n%s", n, logs)
	}
	*clock = clock.Add(61 * time.Second)
	d.onEvent(proxy.Event{Kind: proxy.KindAuthFailed, Client: client, Name: "www.example.com", Status: 407})
	if n := count(); n != 3 || !strings.Contains(logs.String(), "suppressed=999") {
		t.Fatalf("after a minute: %d lines:\n%s", n, logs)
	}
}

// TestEventsBatched floods the writer with 10 000 events from several
// goroutines: at most one commit per 100 ms (plus the first), and every
// event either stored or counted as dropped.
func TestEventsBatched(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(context.Background(), dir, store.WithMaxEvents(20000))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	d := &Daemon{store: st, log: slog.New(slog.DiscardHandler)}
	e := newEvents(d)
	e.lookupMAC = func(string) string { return "" }
	var droppedMetric int
	var mu sync.Mutex
	e.onDrop = func(n int) { mu.Lock(); droppedMetric += n; mu.Unlock() }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	start := time.Now()
	go func() { e.run(ctx); close(done) }()
	const senders, each = 10, 1000
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			for i := range each {
				e.offer(model.Event{Client: "10.10.0.2", Name: fmt.Sprintf("s%d-%d.example", s, i), Proto: "tls", Reason: "blocked"})
			}
		})
	}
	wg.Wait()
	// Everything offered is stored or dropped once the queue drains.
	deadline := time.Now().Add(5 * time.Second)
	for e.stored.Load()+e.dropped.Load() < senders*each && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	cancel()
	<-done
	stored, dropped := e.stored.Load(), e.dropped.Load()
	n, _ := st.EventCount()
	if stored+dropped != senders*each || uint64(n) != stored || uint64(droppedMetric) != dropped {
		t.Fatalf("sent %d: stored %d (store holds %d), dropped %d (metric %d)", senders*each, stored, n, dropped, droppedMetric)
	}
	commits := st.EventCommits()
	if limit := uint64(elapsed/eventCommitEvery) + 1; commits > limit {
		t.Fatalf("%d commits in %v, want at most %d", commits, elapsed, limit)
	}
	t.Logf("%d events: %d stored in %d commits, %d dropped, in %v", senders*each, stored, commits, dropped, elapsed)
}

// TestEventsQueueBounded: with the writer stuck (not running), offers
// never wait: what the queue cannot take is dropped and counted.
func TestEventsQueueBounded(t *testing.T) {
	d := &Daemon{log: slog.New(slog.DiscardHandler)}
	e := &events{d: d, ch: make(chan model.Event, eventQueue)}
	done := make(chan struct{})
	go func() {
		for range 10000 {
			e.offer(model.Event{Reason: "blocked"})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("offer blocked on a full queue")
	}
	if got := e.dropped.Load(); got != 10000-eventQueue {
		t.Fatalf("dropped %d, want %d", got, 10000-eventQueue)
	}
}

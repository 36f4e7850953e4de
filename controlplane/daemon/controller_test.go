package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/controlplane/bypass"
	"github.com/cloudsteer/cloudsteer/controlplane/config"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
	"github.com/cloudsteer/cloudsteer/controlplane/store"
)

// fakeSwitch is the kernel pause switch.
type fakeSwitch struct {
	mu     sync.Mutex
	paused bool
}

func (f *fakeSwitch) SetPaused(p bool) error { f.mu.Lock(); f.paused = p; f.mu.Unlock(); return nil }
func (f *fakeSwitch) get() bool              { f.mu.Lock(); defer f.mu.Unlock(); return f.paused }

type fakeMap struct{ set map[netip.Prefix]bool }

func (f *fakeMap) AddBypass(p netip.Prefix) error    { f.set[p] = true; return nil }
func (f *fakeMap) DeleteBypass(p netip.Prefix) error { delete(f.set, p); return nil }

// newTestDaemon is a daemon with a real store, a fake clock, a fake pause
// switch and a fake kernel map: enough for the controller's logic.
func newTestDaemon(t *testing.T, cfgText string) (*Daemon, *fakeSwitch, *fakeMap, *time.Time) {
	t.Helper()
	cfg, err := config.Parse([]byte(cfgText))
	if err != nil {
		t.Fatal(err)
	}
	cfg.StateDir = t.TempDir()
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	clock := &now
	d := &Daemon{cfg: cfg, log: slog.New(slog.DiscardHandler), now: func() time.Time { return *clock }}
	d.ctrl = &controller{d: d}
	if d.store, err = store.Open(context.Background(), cfg.StateDir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.store.Close() })
	if err := d.seedState(); err != nil {
		t.Fatal(err)
	}
	fm := &fakeMap{set: map[netip.Prefix]bool{}}
	if d.bypass, err = bypass.NewSet(fm, nil, nil, d.now, d.log); err != nil {
		t.Fatal(err)
	}
	if err := d.applyBypass(); err != nil {
		t.Fatal(err)
	}
	sw := &fakeSwitch{}
	d.pauser = sw
	if err := d.applyPause(); err != nil {
		t.Fatal(err)
	}
	return d, sw, fm, clock
}

const testConfig = `
lan_interfaces: [lan0]
cloud_proxy:
  url: http://198.51.100.10:8080
  entitlement_code: 3315471d-b831-48ed-a621-17042a74a8e3
dns:
  upstreams: [198.51.100.53]
bypass:
  domains: [bank.example]
  cidrs: [192.0.2.0/24]
`

func TestPauseExpiresWithClock(t *testing.T) {
	d, sw, _, clock := newTestDaemon(t, testConfig)
	ctx := context.Background()
	if sw.get() {
		t.Fatal("paused at start")
	}
	p, err := d.ctrl.Pause(ctx, 15*time.Minute, "", "test")
	if err != nil {
		t.Fatal(err)
	}
	if !sw.get() || !p.Until.Equal(clock.Add(15*time.Minute)) {
		t.Fatalf("pause = %+v, switch %v", p, sw.get())
	}
	*clock = clock.Add(14 * time.Minute)
	d.checkPauseExpiry()
	if !sw.get() || !d.ctrl.PauseState(ctx).Paused {
		t.Fatal("resumed before the pause ran out")
	}
	*clock = clock.Add(time.Minute)
	d.checkPauseExpiry()
	if sw.get() || d.ctrl.PauseState(ctx).Paused {
		t.Fatal("still paused after expiry")
	}
	// Until resumed: never expires.
	if _, err := d.ctrl.Pause(ctx, 0, "", "test"); err != nil {
		t.Fatal(err)
	}
	*clock = clock.Add(30 * 24 * time.Hour)
	d.checkPauseExpiry()
	if !sw.get() {
		t.Fatal("an until-resumed pause expired")
	}
	if _, err := d.ctrl.Resume(ctx); err != nil || sw.get() {
		t.Fatalf("resume: %v, switch %v", err, sw.get())
	}
	for _, bad := range []time.Duration{-time.Second, model.MaxPause + time.Second} {
		if _, err := d.ctrl.Pause(ctx, bad, "", "test"); !errors.Is(err, model.ErrInvalid) {
			t.Errorf("Pause(%v) err = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestPauseSurvivesRestartAndExpiresWhileDown(t *testing.T) {
	d, _, _, clock := newTestDaemon(t, testConfig)
	ctx := context.Background()
	if _, err := d.ctrl.Pause(ctx, time.Hour, "", "test"); err != nil {
		t.Fatal(err)
	}
	dir := d.cfg.StateDir
	d.store.Close()
	// A restart half an hour later: still paused.
	var err error
	if d.store, err = store.Open(ctx, dir); err != nil {
		t.Fatal(err)
	}
	sw := &fakeSwitch{}
	d.pauser = sw
	*clock = clock.Add(30 * time.Minute)
	if err := d.applyPause(); err != nil || !sw.get() {
		t.Fatalf("after restart: switch %v, %v", sw.get(), err)
	}
	// Down past the expiry: a restart comes up protected.
	*clock = clock.Add(time.Hour)
	if err := d.applyPause(); err != nil || sw.get() {
		t.Fatalf("after expiry while down: switch %v, %v", sw.get(), err)
	}
}

func TestPauseRequiresCode(t *testing.T) {
	d, sw, _, _ := newTestDaemon(t, testConfig)
	ctx := context.Background()
	if _, err := d.ctrl.SetSettings(ctx, apiSettings(true), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := d.ctrl.Pause(ctx, time.Hour, "", "test"); !errors.Is(err, model.ErrForbidden) {
		t.Fatalf("pause without the code: %v", err)
	}
	if _, err := d.ctrl.Pause(ctx, time.Hour, "00000000-0000-4000-8000-000000000000", "test"); !errors.Is(err, model.ErrForbidden) {
		t.Fatalf("pause with a wrong code: %v", err)
	}
	if sw.get() {
		t.Fatal("paused without the code")
	}
	if _, err := d.ctrl.Pause(ctx, time.Hour, "3315471D-b831-48ed-a621-17042a74a8e3", "test"); err != nil || !sw.get() {
		t.Fatalf("pause with the code: %v", err)
	}
}

func TestBypassEntries(t *testing.T) {
	d, _, fm, _ := newTestDaemon(t, testConfig)
	ctx := context.Background()
	list := d.ctrl.Bypass(ctx)
	var values []string
	for _, e := range list {
		values = append(values, e.Value)
	}
	want := []string{"*.akaetp.net", "*.akamai.com", "*.akamai-zt.com"}
	for i, w := range want {
		if list[i].Value != w || !list[i].System {
			t.Fatalf("system entries first: %v", values)
		}
	}
	if !fm.set[netip.MustParsePrefix("192.0.2.0/24")] || !d.bypass.BypassName("bank.example") {
		t.Fatal("config entries not applied")
	}
	for _, tc := range []struct {
		name string
		err  error
		do   func() error
	}{
		{"remove system", model.ErrForbidden, func() error { return d.ctrl.RemoveBypass(ctx, "*.akaetp.net") }},
		{"disable system", model.ErrForbidden, func() error { _, err := d.ctrl.SetBypassEnabled(ctx, "*.AKAMAI.com", false, false); return err }},
		{"add system", model.ErrConflict, func() error { _, err := d.ctrl.AddBypass(ctx, "*.akamai-zt.com", "", false); return err }},
		{"add duplicate", model.ErrConflict, func() error { _, err := d.ctrl.AddBypass(ctx, "Bank.Example.", "", false); return err }},
		{"add garbage", model.ErrInvalid, func() error { _, err := d.ctrl.AddBypass(ctx, "a b", "", false); return err }},
		{"add everything", model.ErrInvalid, func() error { _, err := d.ctrl.AddBypass(ctx, "0.0.0.0/0", "", false); return err }},
		{"remove missing", model.ErrNotFound, func() error { return d.ctrl.RemoveBypass(ctx, "nope.example") }},
		{"enable missing", model.ErrNotFound, func() error { _, err := d.ctrl.SetBypassEnabled(ctx, "nope.example", true, false); return err }},
	} {
		if err := tc.do(); !errors.Is(err, tc.err) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.err)
		}
	}
	e, err := d.ctrl.AddBypass(ctx, "*.bücher.example", "books", false)
	if err != nil || e.Value != "*.xn--bcher-kva.example" || !e.Enabled {
		t.Fatalf("add IDN: %+v, %v", e, err)
	}
	if !d.bypass.BypassName("www.xn--bcher-kva.example") {
		t.Fatal("added domain does not bypass")
	}
	if _, err := d.ctrl.AddBypass(ctx, "2001:db8:9::/48", "", false); err != nil || !fm.set[netip.MustParsePrefix("2001:db8:9::/48")] {
		t.Fatalf("add v6 CIDR: %v", err)
	}
	if _, err := d.ctrl.SetBypassEnabled(ctx, "192.0.2.0/24", false, false); err != nil || fm.set[netip.MustParsePrefix("192.0.2.0/24")] {
		t.Fatalf("disable CIDR: %v, map %v", err, fm.set)
	}
	d.bypass.Snoop("bank.example", []netip.Addr{netip.MustParseAddr("203.0.113.40")}, time.Hour)
	if _, err := d.ctrl.SetBypassEnabled(ctx, "bank.example", false, false); err != nil {
		t.Fatal(err)
	}
	if d.bypass.BypassName("bank.example") || fm.set[netip.MustParsePrefix("203.0.113.40/32")] {
		t.Fatal("disabled domain still bypasses, or its learned address stayed in the map")
	}
	// A config entry is removed in the config file, not here.
	if err := d.ctrl.RemoveBypass(ctx, "bank.example"); !errors.Is(err, model.ErrConflict) || !strings.Contains(err.Error(), "bank.example comes from the config file: remove it there") {
		t.Fatalf("remove a config entry: %v", err)
	}
	// Its run-time override (disabled) stands across a restart.
	if err := d.seedState(); err != nil {
		t.Fatal(err)
	}
	for _, e := range d.ctrl.Bypass(ctx) {
		if (e.Value == "192.0.2.0/24" || e.Value == "bank.example") && (e.Enabled || e.Override != "disabled" || e.Source != "config") {
			t.Fatalf("a disabled config entry after restart: %+v", e)
		}
	}
}

func TestNoCodeStaysOutOfTheWay(t *testing.T) {
	d, sw, _, _ := newTestDaemon(t, `
lan_interfaces: [lan0]
cloud_proxy:
  url: http://198.51.100.10:8080
dns:
  upstreams: [198.51.100.53]
`)
	if !sw.get() {
		t.Fatal("web traffic steered without credentials")
	}
	if d.hasCredentials() {
		t.Fatal("hasCredentials without a code")
	}
	if _, err := d.ctrl.Activate(context.Background(), "not-a-code"); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("activate garbage: %v", err)
	}
}

func apiSettings(require bool) api.Settings { return api.Settings{RequireCodeToPause: require} }

// TestBypassComment: an API entry's comment changes and survives a
// restart; a system entry's is fixed and a config entry's is the file's.
func TestBypassComment(t *testing.T) {
	d, _, _, _ := newTestDaemon(t, testConfig)
	ctx := context.Background()
	if _, err := d.ctrl.AddBypass(ctx, "shop.example", "old", false); err != nil {
		t.Fatal(err)
	}
	e, err := d.ctrl.SetBypassComment(ctx, "Shop.Example.", "payroll site")
	if err != nil || e.Comment != "payroll site" || !e.Enabled {
		t.Fatalf("set comment: %+v, %v", e, err)
	}
	if err := d.seedState(); err != nil {
		t.Fatal(err)
	}
	for _, e := range d.ctrl.Bypass(ctx) {
		if e.Value == "shop.example" && e.Comment != "payroll site" {
			t.Fatalf("after restart: %+v", e)
		}
	}
	if _, err := d.ctrl.SetBypassComment(ctx, "*.akaetp.net", "x"); !errors.Is(err, model.ErrForbidden) {
		t.Fatalf("system entry: %v", err)
	}
	if _, err := d.ctrl.SetBypassComment(ctx, "bank.example", "x"); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("config entry: %v", err)
	}
	if _, err := d.ctrl.SetBypassComment(ctx, "nope.example", "x"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("missing entry: %v", err)
	}
}

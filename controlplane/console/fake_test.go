package console

import (
	"context"
	"io"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// fakeBackend is an in-memory Backend for the console's tests: it keeps
// what it is told and records what it was asked. Tests may set its fields
// directly under mu.
type fakeBackend struct {
	mu sync.Mutex

	status   model.Status
	entries  []model.BypassEntry
	pause    model.PauseState
	events   []model.Event
	settings api.Settings
	code     string
	report   model.Report
	reported bool

	admin      model.AdminAccount
	hasAdmin   bool
	setupToken string // live first-run token ("" = none)
	names      map[string]string
	counters   Counters
	caDER      []byte
	caSource   string
	info       Info
	recorded   []model.Event

	activateErr error
	pauseErr    error

	// Upgrade: what ReceiveUpgrade got and answers.
	upgradeBody  []byte
	upgradeErr   error
	upgradeState UpgradeState
	hasUpgrade   bool
}

func newFakeBackend() *fakeBackend {
	return &fakeBackend{
		status: model.Status{State: model.Protected, CloudProxy: "proxy.example:8080"},
		entries: []model.BypassEntry{
			{Value: "*.akaetp.net", Kind: model.BypassDomain, Enabled: true, System: true, Source: "system"},
		},
		names: map[string]string{},
		info:  Info{CloudProxy: "proxy.example:8080", DNSUpstreams: []string{"192.0.2.53:53"}, ConsoleFingerprint: "AB:CD", Version: "test"},
	}
}

var _ Backend = (*fakeBackend)(nil)

func (f *fakeBackend) Status(context.Context) model.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}

func (f *fakeBackend) Bypass(context.Context) []model.BypassEntry {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.entries)
}

func (f *fakeBackend) find(v string) int {
	return slices.IndexFunc(f.entries, func(e model.BypassEntry) bool { return e.Value == v })
}

func (f *fakeBackend) AddBypass(_ context.Context, value, comment string, _ bool) (model.BypassEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	value = strings.ToLower(strings.TrimSpace(value))
	if value == "" || strings.ContainsAny(value, " /\\") && !strings.Contains(value, "/") {
		return model.BypassEntry{}, model.Plain(model.ErrInvalid, "not a domain, IP or CIDR")
	}
	if f.find(value) >= 0 {
		return model.BypassEntry{}, model.Plain(model.ErrConflict, value+" is already listed")
	}
	kind := model.BypassDomain
	if _, err := netip.ParsePrefix(value); err == nil {
		kind = model.BypassCIDR
	}
	e := model.BypassEntry{Value: value, Kind: kind, Enabled: true, Source: "api", Comment: comment, Added: time.Now()}
	f.entries = append(f.entries, e)
	return e, nil
}

func (f *fakeBackend) RemoveBypass(_ context.Context, value string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := f.find(value)
	if i < 0 {
		return model.ErrNotFound
	}
	if f.entries[i].System {
		return model.Plain(model.ErrForbidden, "system entries cannot be removed")
	}
	f.entries = slices.Delete(f.entries, i, i+1)
	return nil
}

func (f *fakeBackend) SetBypassEnabled(_ context.Context, value string, enabled, _ bool) (model.BypassEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := f.find(value)
	if i < 0 {
		return model.BypassEntry{}, model.ErrNotFound
	}
	if f.entries[i].System {
		return model.BypassEntry{}, model.Plain(model.ErrForbidden, "system entries cannot be disabled")
	}
	f.entries[i].Enabled = enabled
	return f.entries[i], nil
}

func (f *fakeBackend) SetBypassComment(_ context.Context, value, comment string) (model.BypassEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := f.find(value)
	if i < 0 {
		return model.BypassEntry{}, model.ErrNotFound
	}
	if f.entries[i].System {
		return model.BypassEntry{}, model.Plain(model.ErrForbidden, "system entries cannot be changed")
	}
	f.entries[i].Comment = comment
	return f.entries[i], nil
}

func (f *fakeBackend) Pause(_ context.Context, d time.Duration, _, by string) (model.PauseState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pauseErr != nil {
		return model.PauseState{}, f.pauseErr
	}
	f.pause = model.PauseState{Paused: true, Since: time.Now(), By: by}
	if d > 0 {
		f.pause.Until = time.Now().Add(d)
	}
	return f.pause, nil
}

func (f *fakeBackend) Resume(context.Context) (model.PauseState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pause = model.PauseState{}
	return f.pause, nil
}

func (f *fakeBackend) PauseState(context.Context) model.PauseState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pause
}

func (f *fakeBackend) Events(_ context.Context, flt model.EventFilter) ([]model.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []model.Event
	for i := len(f.events) - 1; i >= 0; i-- {
		e := f.events[i]
		if flt.Client != "" && e.Client != flt.Client {
			continue
		}
		if flt.Name != "" && !strings.Contains(strings.ToLower(e.Name), strings.ToLower(flt.Name)) {
			continue
		}
		if !flt.Since.IsZero() && e.Time.Before(flt.Since) || !flt.Until.IsZero() && !e.Time.Before(flt.Until) {
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

func (f *fakeBackend) Activate(_ context.Context, code string) (api.Activated, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.activateErr != nil {
		return api.Activated{}, f.activateErr
	}
	f.code = code
	return api.Activated{Code: model.MaskCode(code), Verified: true, InUse: true}, nil
}

func (f *fakeBackend) Diagnose(context.Context) model.Report {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.report = model.Report{Time: time.Now(), OK: true, Checks: []model.Check{
		{Name: "install", OK: true}, {Name: "network", OK: true}, {Name: "components", OK: true}, {Name: "settings", OK: true},
	}}
	f.reported = true
	return f.report
}

func (f *fakeBackend) Settings(context.Context) api.Settings {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.settings
}

func (f *fakeBackend) SetSettings(_ context.Context, s api.Settings, _ string) (api.Settings, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.settings = s
	return s, nil
}

func (f *fakeBackend) Admin(context.Context) (model.AdminAccount, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.admin, f.hasAdmin, nil
}

func (f *fakeBackend) PutAdmin(_ context.Context, a model.AdminAccount) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.admin, f.hasAdmin = a, true
	return nil
}

func (f *fakeBackend) CheckSetupToken(_ context.Context, token string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hasAdmin {
		return model.Plain(model.ErrConflict, "the admin is set up already")
	}
	if f.setupToken == "" || token != f.setupToken {
		return model.Plain(model.ErrForbidden, "setup link is invalid, expired or already used")
	}
	return nil
}

func (f *fakeBackend) SetupAdmin(ctx context.Context, token string, a model.AdminAccount) error {
	if err := f.CheckSetupToken(ctx, token); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.admin, f.hasAdmin, f.setupToken = a, true, ""
	return nil
}

func (f *fakeBackend) ClientNames(context.Context) (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]string, len(f.names))
	for k, v := range f.names {
		out[k] = v
	}
	return out, nil
}

func (f *fakeBackend) SetClientName(_ context.Context, client, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if name == "" {
		delete(f.names, client)
		return nil
	}
	f.names[client] = name
	return nil
}

func (f *fakeBackend) LastHour(context.Context) Counters {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counters
}

func (f *fakeBackend) LastReport(context.Context) (model.Report, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.report, f.reported
}

func (f *fakeBackend) InspectionCA(context.Context) ([]byte, string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.caDER, f.caSource, f.caDER != nil
}

func (f *fakeBackend) SetInspectionCA(_ context.Context, b []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.caDER, f.caSource = slices.Clone(b), "upload"
	return nil
}

func (f *fakeBackend) Info(context.Context) Info {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.info
}

func (f *fakeBackend) RecordEvent(_ context.Context, e model.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recorded = append(f.recorded, e)
}

func (f *fakeBackend) ReceiveUpgrade(_ context.Context, r io.Reader) (string, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.upgradeBody = b
	if f.upgradeErr != nil {
		return "", f.upgradeErr
	}
	return "2", nil
}

func (f *fakeBackend) UpgradeState(context.Context) (UpgradeState, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.upgradeState, f.hasUpgrade
}

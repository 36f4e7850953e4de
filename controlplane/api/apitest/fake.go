// Package apitest holds Fake, an in-memory api.Controller for tests of the
// admin API, its clients and the CLI.
package apitest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// Values that make Fake fail on purpose.
const (
	// BoomValue as a bypass value, event name filter or entitlement code
	// makes Fake return an error that wraps no model sentinel (a 500).
	BoomValue = "boom.invalid"
	// RejectedCode is an entitlement code the "cloud proxy" refuses.
	RejectedCode = "00000000-0000-0000-0000-000000000407"
	// UnreachableCode makes Activate report the cloud proxy unreachable.
	UnreachableCode = "00000000-0000-0000-0000-000000000503"
	// GoodCode is the lab's entitlement code.
	GoodCode = "3315471d-b831-48ed-a621-17042a74a8e3"
)

// SystemDomains are the entries Fake starts with and refuses to remove or
// disable, like the real gateway's agent domains.
var SystemDomains = []string{"*.akaetp.net", "*.akamai.com", "*.akamai-zt.com"}

// errBoom is Fake's deliberate non-sentinel error.
var errBoom = errors.New("fake controller: deliberate failure")

// Fake is an in-memory Controller. Its zero value is not usable; call New.
type Fake struct {
	mu       sync.Mutex
	now      func() time.Time
	entries  []model.BypassEntry
	pause    model.PauseState
	code     string
	settings api.Settings
	events   []model.Event
	report   model.Report
	status   model.Status

	// Internal counts the deliberate 500s Fake caused.
	Internal atomic.Int64
	// LastFilter is the filter of the last Events call.
	LastFilter model.EventFilter
	// LastPauseBy is the by argument of the last Pause call.
	LastPauseBy string
	// LastForce is the force argument of the last AddBypass or
	// SetBypassEnabled call.
	LastForce bool
	// Chaining makes Activate answer as with cloud_proxy.username set:
	// stored, not verified, not in use. Set it before serving.
	Chaining bool
}

var _ api.Controller = (*Fake)(nil)

// New returns a Fake with the system entries, one config entry, a few
// events, a passing quick test and a protected status, with time from now
// (time.Now when nil).
func New(now func() time.Time) *Fake {
	if now == nil {
		now = time.Now
	}
	t0 := now()
	f := &Fake{now: now, code: GoodCode}
	for _, d := range SystemDomains {
		f.entries = append(f.entries, model.BypassEntry{Value: d, Kind: model.BypassDomain, Enabled: true, System: true, Source: "system", Added: t0})
	}
	f.entries = append(f.entries, model.BypassEntry{Value: "bank.example", Kind: model.BypassDomain, Enabled: true, Source: "config", Comment: "payroll", Added: t0})
	f.events = []model.Event{
		{ID: 3, Time: t0.Add(-1 * time.Minute), Client: "10.10.0.10", MAC: "02:00:00:00:00:10", Name: "scores.sports.example", Proto: "tls", Reason: "blocked", Category: "Sports", Status: 403, Target: "203.0.113.20:443"},
		{ID: 2, Time: t0.Add(-2 * time.Hour), Client: "10.10.0.11", Name: "casino.example", Proto: "dns", Reason: "dns_blocked"},
		{ID: 1, Time: t0.Add(-3 * time.Hour), Client: "10.10.0.10", Name: "news.example.com", Proto: "http", Reason: "blocked", Category: "News", Status: 403},
	}
	f.report = model.Report{Time: t0, OK: true, Checks: []model.Check{
		{Name: "install", OK: true, Detail: "program attached on lan0; nftables table present", Took: 2 * time.Millisecond},
		{Name: "network", OK: true, Detail: "cloud proxy accepts the code; cloud DNS answers", Took: 40 * time.Millisecond},
		{Name: "components", OK: true, Detail: "proxy, resolver and maps healthy", Took: time.Millisecond},
		{Name: "settings", OK: true, Detail: "code present; 4 bypass entries", Took: 0},
	}}
	f.status = model.Status{
		State: model.Protected, Reasons: []model.Reason{}, CloudProxy: "http://198.51.100.10:8080",
		Interfaces: []string{"lan0"}, Attached: []string{"lan0"}, Version: "test", Started: t0.Add(-time.Hour), CheckedAt: t0,
	}
	return f
}

// SetStatus replaces the status Fake reports when not paused.
func (f *Fake) SetStatus(s model.Status) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status = s
}

// SetReport replaces the quick-test report.
func (f *Fake) SetReport(r model.Report) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.report = r
}

// Code returns the stored entitlement code (unmasked; for tests).
func (f *Fake) Code() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.code
}

func (f *Fake) boom() error {
	f.Internal.Add(1)
	return errBoom
}

// Status implements api.Controller.
func (f *Fake) Status(context.Context) model.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.status
	st.Reasons = slices.Clone(st.Reasons)
	st.Code = model.MaskCode(f.code)
	if f.pause.ActiveAt(f.now()) {
		st.State = model.Paused
		st.PauseUntil = f.pause.Until
		st.Reasons = append(st.Reasons, model.Reason{Code: model.ReasonPaused, Message: "protection is paused"})
	}
	return st
}

// Bypass implements api.Controller.
func (f *Fake) Bypass(context.Context) []model.BypassEntry {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.entries)
}

var domainRE = regexp.MustCompile(`^(\*\.|\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// canonical is a small stand-in for the real validation.
func canonical(v string) (string, model.BypassKind, error) {
	if p, err := netip.ParsePrefix(v); err == nil {
		return p.Masked().String(), model.BypassCIDR, nil
	}
	if a, err := netip.ParseAddr(v); err == nil {
		return netip.PrefixFrom(a, a.BitLen()).String(), model.BypassCIDR, nil
	}
	d := strings.ToLower(strings.TrimSuffix(v, "."))
	if len(d) > 253 || !domainRE.MatchString(d) {
		return "", "", fmt.Errorf("bypass value %q is not a domain, IP or CIDR: %w", v, model.ErrInvalid)
	}
	return d, model.BypassDomain, nil
}

func (f *Fake) find(v string) (int, error) {
	c, _, err := canonical(v)
	if err != nil {
		return -1, err
	}
	i := slices.IndexFunc(f.entries, func(e model.BypassEntry) bool { return e.Value == c })
	if i < 0 {
		return -1, fmt.Errorf("bypass entry %q: %w", c, model.ErrNotFound)
	}
	return i, nil
}

// AddBypass implements api.Controller.
func (f *Fake) AddBypass(_ context.Context, value, comment string, force bool) (model.BypassEntry, error) {
	if value == BoomValue {
		return model.BypassEntry{}, f.boom()
	}
	c, kind, err := canonical(value)
	if err != nil {
		return model.BypassEntry{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.LastForce = force
	if slices.ContainsFunc(f.entries, func(e model.BypassEntry) bool { return e.Value == c }) {
		return model.BypassEntry{}, fmt.Errorf("bypass entry %q: %w", c, model.ErrConflict)
	}
	e := model.BypassEntry{Value: c, Kind: kind, Enabled: true, Source: "api", Comment: comment, Added: f.now()}
	f.entries = append(f.entries, e)
	return e, nil
}

// RemoveBypass implements api.Controller.
func (f *Fake) RemoveBypass(_ context.Context, value string) error {
	if value == BoomValue {
		return f.boom()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	i, err := f.find(value)
	if err != nil {
		return err
	}
	if f.entries[i].System {
		return fmt.Errorf("bypass entry %q is a system entry and cannot be removed: %w", f.entries[i].Value, model.ErrForbidden)
	}
	f.entries = slices.Delete(f.entries, i, i+1)
	return nil
}

// SetBypassEnabled implements api.Controller.
func (f *Fake) SetBypassEnabled(_ context.Context, value string, enabled, force bool) (model.BypassEntry, error) {
	if value == BoomValue {
		return model.BypassEntry{}, f.boom()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.LastForce = force
	i, err := f.find(value)
	if err != nil {
		return model.BypassEntry{}, err
	}
	if f.entries[i].System && !enabled {
		return model.BypassEntry{}, fmt.Errorf("bypass entry %q is a system entry and cannot be disabled: %w", f.entries[i].Value, model.ErrForbidden)
	}
	f.entries[i].Enabled = enabled
	return f.entries[i], nil
}

// SetBypassComment implements api.Controller.
func (f *Fake) SetBypassComment(_ context.Context, value, comment string) (model.BypassEntry, error) {
	if value == BoomValue {
		return model.BypassEntry{}, f.boom()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	i, err := f.find(value)
	if err != nil {
		return model.BypassEntry{}, err
	}
	if f.entries[i].System {
		return model.BypassEntry{}, fmt.Errorf("bypass entry %q is a system entry: %w", f.entries[i].Value, model.ErrForbidden)
	}
	f.entries[i].Comment = comment
	return f.entries[i], nil
}

// Pause implements api.Controller.
func (f *Fake) Pause(_ context.Context, d time.Duration, code, by string) (model.PauseState, error) {
	if code == BoomValue {
		return model.PauseState{}, f.boom()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if d < 0 || d > model.MaxPause {
		return model.PauseState{}, fmt.Errorf("pause for %s: %w", d, model.ErrInvalid)
	}
	if f.settings.RequireCodeToPause && code != f.code {
		return model.PauseState{}, fmt.Errorf("pausing needs the entitlement code: %w", model.ErrForbidden)
	}
	now := f.now()
	f.LastPauseBy = by
	f.pause = model.PauseState{Paused: true, Since: now, By: by}
	if d > 0 {
		f.pause.Until = now.Add(d)
	}
	return f.pause, nil
}

// Resume implements api.Controller.
func (f *Fake) Resume(context.Context) (model.PauseState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pause = model.PauseState{}
	return f.pause, nil
}

// PauseState implements api.Controller.
func (f *Fake) PauseState(context.Context) model.PauseState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pause
}

// Events implements api.Controller.
func (f *Fake) Events(_ context.Context, flt model.EventFilter) ([]model.Event, error) {
	if flt.Name == BoomValue {
		return nil, f.boom()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.LastFilter = flt
	limit := flt.Limit
	if limit == 0 {
		limit = 100
	}
	var out []model.Event
	for _, e := range f.events {
		switch {
		case flt.Client != "" && e.Client != flt.Client,
			flt.Name != "" && !strings.Contains(strings.ToLower(e.Name), strings.ToLower(flt.Name)),
			!flt.Since.IsZero() && e.Time.Before(flt.Since),
			!flt.Until.IsZero() && e.Time.After(flt.Until):
			continue
		}
		if len(out) == limit {
			break
		}
		out = append(out, e)
	}
	return out, nil
}

// Activate implements api.Controller.
func (f *Fake) Activate(_ context.Context, code string) (api.Activated, error) {
	switch code {
	case BoomValue:
		return api.Activated{}, f.boom()
	case RejectedCode:
		return api.Activated{}, model.ErrRejected
	case UnreachableCode:
		return api.Activated{}, model.ErrUnavailable
	}
	if len(code) < 12 {
		return api.Activated{}, fmt.Errorf("entitlement code is too short: %w", model.ErrInvalid)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.code = code
	if f.Chaining {
		return api.Activated{Code: model.MaskCode(code), Message: "stored; not used for authentication: cloud_proxy.username is set, the cloud proxy checks those credentials"}, nil
	}
	return api.Activated{Code: model.MaskCode(code), Verified: true, InUse: true, Message: "accepted by the cloud proxy and in use"}, nil
}

// Diagnose implements api.Controller.
func (f *Fake) Diagnose(context.Context) model.Report {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.report
	r.Checks = slices.Clone(r.Checks)
	return r
}

// Settings implements api.Controller.
func (f *Fake) Settings(context.Context) api.Settings {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.settings
}

// SetSettings implements api.Controller.
func (f *Fake) SetSettings(_ context.Context, s api.Settings, code string) (api.Settings, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.settings.RequireCodeToPause && !s.RequireCodeToPause && code != f.code {
		return api.Settings{}, fmt.Errorf("switching require_code_to_pause off needs the entitlement code: %w", model.ErrForbidden)
	}
	f.settings = s
	return f.settings, nil
}

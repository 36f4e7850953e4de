package daemon

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/controlplane/bypass"
	"github.com/cloudsteer/cloudsteer/controlplane/config"
	"github.com/cloudsteer/cloudsteer/controlplane/health"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
	"github.com/cloudsteer/cloudsteer/controlplane/store"
	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy"
	"github.com/cloudsteer/cloudsteer/dataplane/proxy"
	"github.com/cloudsteer/cloudsteer/dataplane/resolver"
)

// Setting keys in the store.
const (
	settingRequireCode = "require_code_to_pause"
	settingSeeded      = "seeded_bypass" // the old seed-once record, deleted at start
)

// controller is the admin API's view of the running daemon.
type controller struct {
	d *Daemon

	mu sync.Mutex // serializes changes (bypass, pause, code, settings)
}

var _ api.Controller = (*controller)(nil)

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", model.ErrInvalid, fmt.Sprintf(format, a...))
}

// canonicalBypass returns the canonical value and kind of a bypass entry.
func canonicalBypass(value string) (string, model.BypassKind, error) {
	v := strings.TrimSpace(value)
	if v == "" {
		return "", "", invalid("empty bypass value")
	}
	if strings.ContainsAny(v, "/:") || isIPLiteral(v) {
		p, err := bypass.ParsePrefix(v)
		if err != nil {
			return "", "", invalid("%v", err)
		}
		return p.String(), model.BypassCIDR, nil
	}
	n, err := bypass.NormalizePattern(v)
	if err != nil {
		return "", "", invalid("%v", err)
	}
	return n, model.BypassDomain, nil
}

func isIPLiteral(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

func isSystem(value string) bool {
	for _, s := range bypass.SystemDomains {
		if s == value {
			return true
		}
	}
	return false
}

func systemEntries() []model.BypassEntry {
	var out []model.BypassEntry
	for _, s := range bypass.SystemDomains {
		out = append(out, model.BypassEntry{Value: s, Kind: model.BypassDomain, Enabled: true, System: true, Source: "system",
			Comment: "the cloud agent's own domains: never proxied or decrypted twice"})
	}
	return out
}

// applyBypass pushes the enabled entries to the bypass set (and so to the
// kernel map).
func (d *Daemon) applyBypass() error {
	entries, err := d.store.Bypass()
	if err != nil {
		return fmt.Errorf("read bypass entries: %w", err)
	}
	var domains []string
	var prefixes []netip.Prefix
	for _, e := range entries {
		if !e.Enabled {
			continue
		}
		switch e.Kind {
		case model.BypassDomain:
			domains = append(domains, e.Value)
		case model.BypassCIDR:
			if p, err := netip.ParsePrefix(e.Value); err == nil {
				prefixes = append(prefixes, p)
			}
		}
	}
	d.bypass.SetDomains(domains)
	// Cached answers served by the kernel are never snooped: flush them so
	// the resolver sees (and learns the addresses of) newly bypassed names.
	d.kdns.flush()
	return d.bypass.SetPrefixes(prefixes)
}

func (c *controller) Bypass(ctx context.Context) []model.BypassEntry {
	out := systemEntries()
	entries, err := c.d.store.Bypass()
	if err != nil {
		c.d.log.Error("read bypass entries", "err", err)
	}
	for i, e := range entries {
		if e.Source == store.SourceConfig && !e.Enabled {
			entries[i].Override = "disabled"
		}
	}
	return append(out, entries...)
}

// checkBroad refuses a change that would make the enabled bypass CIDRs
// (config and run time) together take more than a /8 of IPv4 or a /16 of
// IPv6 out of inspection, unless forced. extra is the prefix being added
// or enabled. Called with c.mu held.
func (c *controller) checkBroad(extra netip.Prefix, force bool) error {
	if force {
		return nil
	}
	entries, err := c.d.store.Bypass()
	if err != nil {
		return err
	}
	ps := []netip.Prefix{extra}
	for _, e := range entries {
		if e.Kind != model.BypassCIDR || !e.Enabled {
			continue
		}
		if p, err := netip.ParsePrefix(e.Value); err == nil {
			ps = append(ps, p)
		}
	}
	if why := config.BroadBypass(ps); why != "" {
		return model.Plain(model.ErrInvalid, fmt.Sprintf("refused: with %s %s; force it (CLI --force, API \"force\": true) if that is meant", extra, why))
	}
	return nil
}

func (c *controller) find(value string) (model.BypassEntry, bool, error) {
	entries, err := c.d.store.Bypass()
	if err != nil {
		return model.BypassEntry{}, false, err
	}
	for _, e := range entries {
		if e.Value == value {
			return e, true, nil
		}
	}
	return model.BypassEntry{}, false, nil
}

func (c *controller) AddBypass(ctx context.Context, value, comment string, force bool) (model.BypassEntry, error) {
	v, kind, err := canonicalBypass(value)
	if err != nil {
		return model.BypassEntry{}, err
	}
	if len(comment) > 200 {
		return model.BypassEntry{}, invalid("comment longer than 200 characters")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if isSystem(v) {
		return model.BypassEntry{}, fmt.Errorf("%w: %s is a system entry and always on", model.ErrConflict, v)
	}
	if have, ok, err := c.find(v); err != nil {
		return model.BypassEntry{}, err
	} else if ok && have.Source == store.SourceConfig {
		return model.BypassEntry{}, model.Plain(model.ErrConflict, v+" comes from the config file: it is on the bypass list already")
	} else if ok {
		return model.BypassEntry{}, fmt.Errorf("%w: %s is already on the bypass list", model.ErrConflict, v)
	}
	if kind == model.BypassCIDR {
		if err := c.checkBroad(netip.MustParsePrefix(v), force); err != nil {
			return model.BypassEntry{}, err
		}
	}
	e := model.BypassEntry{Value: v, Kind: kind, Enabled: true, Source: store.SourceAPI, Comment: comment, Added: c.d.now()}
	if err := c.d.store.PutBypass(e); err != nil {
		return model.BypassEntry{}, err
	}
	if err := c.d.applyBypass(); err != nil {
		return e, err
	}
	c.d.log.Info("bypass entry added", "value", v, "kind", kind)
	return e, nil
}

func (c *controller) RemoveBypass(ctx context.Context, value string) error {
	v, _, err := canonicalBypass(value)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if isSystem(v) {
		return fmt.Errorf("%w: %s is a system entry and cannot be removed", model.ErrForbidden, v)
	}
	if have, ok, err := c.find(v); err != nil {
		return err
	} else if ok && have.Source == store.SourceConfig {
		return model.Plain(model.ErrConflict, v+" comes from the config file: remove it there (or disable it here)")
	}
	ok, err := c.d.store.DeleteBypass(v)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: %s is not on the bypass list", model.ErrNotFound, v)
	}
	c.d.log.Info("bypass entry removed", "value", v)
	return c.d.applyBypass()
}

func (c *controller) SetBypassEnabled(ctx context.Context, value string, enabled, force bool) (model.BypassEntry, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, e, err := c.changeable(value, "cannot be disabled")
	if err != nil {
		return model.BypassEntry{}, err
	}
	if enabled && !e.Enabled && e.Kind == model.BypassCIDR {
		if err := c.checkBroad(netip.MustParsePrefix(v), force); err != nil {
			return model.BypassEntry{}, err
		}
	}
	e.Enabled = enabled
	if err := c.d.store.PutBypass(e); err != nil {
		return model.BypassEntry{}, err
	}
	c.d.log.Info("bypass entry changed", "value", v, "enabled", enabled, "source", e.Source)
	if e.Source == store.SourceConfig && !e.Enabled {
		e.Override = "disabled"
	}
	return e, c.d.applyBypass()
}

// changeable returns the canonical value and the stored entry of a
// listed, non-system entry (c.mu held); a system entry is refused with
// "<value> is a system entry and <why>".
func (c *controller) changeable(value, why string) (string, model.BypassEntry, error) {
	v, _, err := canonicalBypass(value)
	if err != nil {
		return "", model.BypassEntry{}, err
	}
	if isSystem(v) {
		return "", model.BypassEntry{}, fmt.Errorf("%w: %s is a system entry and %s", model.ErrForbidden, v, why)
	}
	e, ok, err := c.find(v)
	if err != nil {
		return "", model.BypassEntry{}, err
	}
	if !ok {
		return "", model.BypassEntry{}, fmt.Errorf("%w: %s is not on the bypass list", model.ErrNotFound, v)
	}
	return v, e, nil
}

func (c *controller) SetBypassComment(ctx context.Context, value, comment string) (model.BypassEntry, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, e, err := c.changeable(value, "has a fixed comment")
	if err != nil {
		return model.BypassEntry{}, err
	}
	if e.Source == store.SourceConfig {
		return model.BypassEntry{}, fmt.Errorf("%w: %s comes from the config file: change its comment there", model.ErrConflict, v)
	}
	e.Comment = comment
	if err := c.d.store.PutBypass(e); err != nil {
		return model.BypassEntry{}, err
	}
	return e, nil
}

func (c *controller) Pause(ctx context.Context, dur time.Duration, code, by string) (model.PauseState, error) {
	if dur < 0 || dur > model.MaxPause {
		return model.PauseState{}, invalid("pause duration must be between 0 (until resumed) and %v", model.MaxPause)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.settings().RequireCodeToPause {
		have, err := c.d.store.Code()
		if err != nil {
			return model.PauseState{}, err
		}
		if have == "" || subtle.ConstantTimeCompare([]byte(strings.ToLower(strings.TrimSpace(code))), []byte(strings.ToLower(have))) != 1 {
			return model.PauseState{}, fmt.Errorf("%w: pausing requires the entitlement code", model.ErrForbidden)
		}
	}
	now := c.d.now()
	p := model.PauseState{Paused: true, Since: now, By: by}
	if dur > 0 {
		p.Until = now.Add(dur)
	}
	if err := c.d.store.PutPause(p); err != nil {
		return model.PauseState{}, err
	}
	c.d.log.Info("protection paused", "until", p.Until, "by", by)
	return p, c.d.applyPause()
}

func (c *controller) Resume(ctx context.Context) (model.PauseState, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return model.PauseState{}, c.d.resume("api")
}

func (d *Daemon) resume(why string) error {
	if err := d.store.PutPause(model.PauseState{}); err != nil {
		return err
	}
	d.log.Info("protection resumed", "by", why)
	return d.applyPause()
}

func (c *controller) PauseState(ctx context.Context) model.PauseState {
	p, err := c.d.store.Pause()
	if err != nil {
		c.d.log.Error("read pause state", "err", err)
	}
	if !p.ActiveAt(c.d.now()) {
		return model.PauseState{}
	}
	return p
}

// applyPause sets the kernel's pause switch: paused while a pause is in
// force, while there are no credentials for the cloud proxy (a fresh
// gateway stays out of the way until it is activated), and while another
// firewall drops the redirected traffic (fwblock.go).
func (d *Daemon) applyPause() error {
	p, err := d.store.Pause()
	if err != nil {
		return err
	}
	held, _ := d.fwBlock.state()
	off := p.ActiveAt(d.now()) || !d.hasCredentials() || held
	if d.pauser == nil {
		return nil // not attached yet: Start applies it once it is
	}
	return d.pauser.SetPaused(off)
}

// watchPause resumes protection when a timed pause expires.
func (d *Daemon) watchPause(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d.checkPauseExpiry()
	}
}

func (d *Daemon) checkPauseExpiry() {
	d.ctrl.mu.Lock()
	defer d.ctrl.mu.Unlock()
	p, err := d.store.Pause()
	if err != nil || !p.Paused || p.Until.IsZero() || d.now().Before(p.Until) {
		return
	}
	if err := d.resume("timer"); err != nil {
		d.log.Error("resume after pause", "err", err)
	}
}

func (c *controller) Events(ctx context.Context, f model.EventFilter) ([]model.Event, error) {
	return c.d.store.Events(f)
}

func (c *controller) Activate(ctx context.Context, code string) (api.Activated, error) {
	code = strings.ToLower(strings.TrimSpace(code))
	if !config.EntitlementCodeRE.MatchString(code) {
		return api.Activated{}, invalid("an entitlement code is UUID-shaped: 8-4-4-4-12 hex digits")
	}
	if c.d.cfg.CloudProxy.Username != "" {
		// The cloud proxy checks the chaining credentials, not the code:
		// nothing can verify it, and it is not sent.
		c.mu.Lock()
		defer c.mu.Unlock()
		if err := c.d.store.PutCodeFrom(code, store.SourceActivate); err != nil {
			return api.Activated{}, err
		}
		c.d.log.Info("entitlement code stored, not used for authentication: cloud_proxy.username is set", "code", model.MaskCode(code))
		return api.Activated{Code: model.MaskCode(code), Verified: false, InUse: false,
			Message: "stored; not used for authentication: cloud_proxy.username is set, the cloud proxy checks those credentials (the code is not verified)"}, nil
	}
	client, err := c.d.newCloudClient(code)
	if err != nil {
		return api.Activated{}, err
	}
	installed := false
	defer func() {
		if !installed {
			client.Close()
		}
	}()
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := client.Connect(pctx, c.d.cfg.Health.ProbeTarget, netip.Addr{})
	var refused *cloudproxy.RefusedError
	switch {
	case err == nil:
		conn.Close()
	case errors.As(err, &refused) && refused.StatusCode == 407:
		return api.Activated{}, fmt.Errorf("%w (407)", model.ErrRejected)
	case errors.As(err, &refused):
		// Any other answer (a 403 for the probe target, say) proves the
		// proxy took the credentials.
	default:
		return api.Activated{}, fmt.Errorf("%w: %v", model.ErrUnavailable, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.d.store.PutCodeFrom(code, store.SourceActivate); err != nil {
		return api.Activated{}, err
	}
	c.d.setCloud(client)
	installed = true
	c.d.log.Info("entitlement code activated", "code", model.MaskCode(code))
	go c.d.prober.ProbeNow(context.WithoutCancel(ctx))
	return api.Activated{Code: model.MaskCode(code), Verified: true, InUse: true,
		Message: "accepted by the cloud proxy and in use"}, c.d.applyPause()
}

func (c *controller) Status(ctx context.Context) model.Status {
	d := c.d
	now := d.now()
	pause := c.PauseState(ctx)
	present, _ := d.fw.Present()
	in := health.Inputs{
		HasCode:      d.hasCredentials(),
		Paused:       pause,
		Now:          now,
		Interfaces:   d.cfg.LANInterfaces,
		Attached:     d.steer.Attached(),
		TablePresent: present,
		Probe:        d.prober.Last(),
		Cloud:        d.cloudStates(),
		FailureMode:  d.cfg.CloudProxy.FailureMode,
		DNS:          d.dnsStates(),
		QUICGateOff:  d.quicGateOff(),
	}
	_, in.FirewallBlock = d.fwBlock.state()
	code, source, _ := d.store.CodeWithSource()
	st := model.Status{
		State:      health.State(in),
		Reasons:    health.Reasons(in),
		Code:       model.MaskCode(code),
		CodeSource: source,
		CloudProxy: d.proxy.Cloud().String(),
		Interfaces: d.cfg.LANInterfaces,
		Attached:   in.Attached,
		AttachMode: string(d.steer.Mode()),
		Version:    Version,
		Started:    d.started,
		CheckedAt:  in.Probe.Time,

		CloudProxies: in.Cloud,
		FailureMode:  in.FailureMode,
		DNSUpstreams: in.DNS,
	}
	if pause.Paused {
		st.PauseUntil = pause.Until
	}
	st.WANInterfaces = d.links.WANInUse()
	st.Image = d.imageStatus()
	return st
}

func (c *controller) Diagnose(ctx context.Context) model.Report {
	r := health.Diagnose(ctx, c.d.diagnoseInputs())
	c.d.lastReport.Store(&r) // for the console's status page
	return r
}

func (c *controller) settings() api.Settings {
	v, _, _ := c.d.store.Setting(settingRequireCode)
	return api.Settings{RequireCodeToPause: v == "true"}
}

func (c *controller) Settings(ctx context.Context) api.Settings { return c.settings() }

func (c *controller) SetSettings(ctx context.Context, s api.Settings, code string) (api.Settings, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.settings().RequireCodeToPause && !s.RequireCodeToPause {
		// Switching the protection off needs what pausing needs. With no
		// code stored there is nothing to check (and no pause possible).
		have, err := c.d.store.Code()
		if err != nil {
			return api.Settings{}, err
		}
		if have != "" && subtle.ConstantTimeCompare([]byte(strings.ToLower(strings.TrimSpace(code))), []byte(strings.ToLower(have))) != 1 {
			return api.Settings{}, model.Plain(model.ErrForbidden,
				"switching require_code_to_pause off requires the entitlement code: send it in \"code\"")
		}
	}
	if err := c.d.store.PutSetting(settingRequireCode, fmt.Sprint(s.RequireCodeToPause)); err != nil {
		return api.Settings{}, err
	}
	return c.settings(), nil
}

func (d *Daemon) proxyEvent(ev proxy.Event) {
	d.onEvent(ev)
	reason := ""
	switch ev.Kind {
	case proxy.KindBlocked:
		reason = "blocked"
		d.blocks.Add(1)
	case proxy.KindAuthFailed:
		reason = "auth_failed"
	case proxy.KindBypassRefused:
		// A flow named a bypass name with no usable address from DNS.
		reason = "bypass_refused"
	default:
		return
	}
	client := ""
	if ev.Client.IsValid() {
		client = ev.Client.String()
	}
	target := ""
	if ev.Target.IsValid() {
		target = ev.Target.String()
	}
	d.events.offer(model.Event{Time: ev.Time, Client: client, Name: ev.Name, Proto: ev.Proto, Reason: reason, Category: ev.Category, Status: ev.Status, Target: target})
}

func (d *Daemon) dnsQuery(q resolver.QueryInfo) {
	if !q.Blocked {
		return
	}
	d.blocks.Add(1)
	d.events.offer(model.Event{Time: d.now(), Client: q.Client.Addr().Unmap().String(), Name: q.Name, Proto: "dns", Reason: "dns_blocked"})
}

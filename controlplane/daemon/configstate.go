package daemon

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/cloudsteer/cloudsteer/controlplane/config"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
	"github.com/cloudsteer/cloudsteer/controlplane/store"
)

// How config and run-time changes combine (README "Security model"):
//   - Entries from the config file (bypass.domains, bypass.cidrs) and the
//     config's entitlement code follow the file on every start and on
//     reload (SIGHUP): added, removed and changed entries follow.
//   - A config entry cannot be removed through the API/CLI (409: remove it
//     from the file); it can be disabled and enabled at run time, and that
//     override is kept across restarts while the entry stays in the file.
//     When the file drops the entry, entry and override go.
//   - Adding through the API a value the file has is a conflict; a file
//     entry equal to an existing run-time entry makes it config-owned,
//     keeping its enabled state.
//   - The code: when the file's code changed since the last start/reload it
//     replaces the stored one (newest intent); `cloudsteer activate` stores
//     its code until the file's code changes; when the file drops its code
//     and the stored one came from the file, it is cleared.

// seedState makes the store's config-owned state follow d.cfg (at start,
// before anything uses the store).
func (d *Daemon) seedState() error {
	_, _, err := d.syncConfig(d.cfg)
	// The record of the old seed-once scheme is no longer used.
	if _, derr := d.store.DeleteSetting(settingSeeded); derr != nil && err == nil {
		err = derr
	}
	return err
}

// syncConfig applies cfg's config-owned keys to the store: the bypass
// entries and the entitlement code.
func (d *Daemon) syncConfig(cfg *config.Config) (store.BypassSync, store.CodeSync, error) {
	now := d.now()
	var seed []model.BypassEntry
	for _, v := range cfg.Bypass.DomainPatterns() {
		seed = append(seed, model.BypassEntry{Value: v, Kind: model.BypassDomain, Enabled: true, Source: store.SourceConfig, Added: now})
	}
	for _, p := range cfg.Bypass.Prefixes() {
		seed = append(seed, model.BypassEntry{Value: p.String(), Kind: model.BypassCIDR, Enabled: true, Source: store.SourceConfig, Added: now})
	}
	bs, err := d.store.SyncConfigBypass(seed)
	if err != nil {
		return bs, store.CodeUnchanged, err
	}
	cs, err := d.store.SyncConfigCode(strings.ToLower(cfg.CloudProxy.EntitlementCode))
	if err != nil {
		return bs, cs, err
	}
	if bs.Changed() {
		d.log.Info("bypass entries follow the config file", "added", bs.Added, "removed", bs.Removed, "now_config_owned", bs.Adopted)
	}
	switch cs {
	case store.CodeFromConfig:
		d.log.Info("entitlement code from the config file in use")
	case store.CodeCleared:
		d.log.Info("entitlement code removed: the config file no longer has one")
	}
	return bs, cs, nil
}

// reloadable are the config keys a reload applies; every other change
// needs a restart.
var reloadable = []string{"bypass.domains", "bypass.cidrs", "bypass.allow_broad_cidrs", "cloud_proxy.entitlement_code", "admin.hostnames"}

// reloadFrom is the SIGHUP handler: it loads the config with load and
// applies it, or logs one line saying why not (nothing changes then).
func (d *Daemon) reloadFrom(ctx context.Context, load func() (*config.Config, error)) error {
	d.log.Info("SIGHUP: reloading the config file")
	next, err := load()
	if err == nil {
		err = d.Reload(ctx, next)
	}
	if err != nil {
		d.log.Error("config reload refused, nothing changed: " + oneLine(err.Error()))
	}
	return err
}

// Reload applies a new, already loaded and validated config (SIGHUP): the
// config-owned state (bypass entries, entitlement code) and
// admin.hostnames. It logs each other key that changed as needing a
// restart (the interfaces and the CA file among them, so they are not
// checked against the machine here).
func (d *Daemon) Reload(ctx context.Context, cfg *config.Config) error {
	c := d.ctrl
	c.mu.Lock()
	defer c.mu.Unlock()
	restart := configDiff(d.cfg, cfg, reloadable)
	bs, cs, err := d.syncConfig(cfg)
	if err != nil {
		return fmt.Errorf("apply config: %w", err)
	}
	d.cfg.Bypass = cfg.Bypass
	d.cfg.CloudProxy.EntitlementCode = cfg.CloudProxy.EntitlementCode
	d.setHostnames(cfg.Admin.Hostnames)
	if bs.Changed() {
		if err := d.applyBypass(); err != nil {
			return fmt.Errorf("apply bypass entries: %w", err)
		}
	}
	if cs != store.CodeUnchanged {
		if err := d.useStoredCode(ctx); err != nil {
			return err
		}
	}
	for _, k := range restart {
		d.log.Warn("config key changed: takes effect at the next restart", "key", k)
	}
	d.log.Info("config reloaded", "bypass_added", len(bs.Added), "bypass_removed", len(bs.Removed), "code", string(cs), "need_restart", len(restart))
	return nil
}

// useStoredCode makes the stored code the one the cloud proxy client sends
// (unless chaining credentials are set) and re-applies the pause switch
// (no credentials: out of the way). Called with c.mu held.
func (d *Daemon) useStoredCode(ctx context.Context) error {
	if d.cfg.CloudProxy.Username == "" && d.proxy != nil {
		code, err := d.store.Code()
		if err != nil {
			return err
		}
		client, err := d.newCloudClient(code)
		if err != nil {
			return fmt.Errorf("set up cloud proxy client: %w", err)
		}
		d.setCloud(client)
	}
	if d.prober != nil {
		go d.prober.ProbeNow(context.WithoutCancel(ctx))
	}
	return d.applyPause()
}

// configDiff lists the keys (section.key, by YAML name) whose values
// differ between a and b, leaving out skip.
func configDiff(a, b *config.Config, skip []string) []string {
	var out []string
	va, vb := reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem()
	t := va.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name := yamlName(f)
		if name == "" {
			continue
		}
		fa, fb := va.Field(i), vb.Field(i)
		if f.Type.Kind() != reflect.Struct {
			if !reflect.DeepEqual(fa.Interface(), fb.Interface()) && !slices.Contains(skip, name) {
				out = append(out, name)
			}
			continue
		}
		for j := range f.Type.NumField() {
			sf := f.Type.Field(j)
			sub := yamlName(sf)
			if sub == "" {
				continue
			}
			key := name + "." + sub
			if slices.Contains(skip, key) {
				continue
			}
			if !reflect.DeepEqual(fa.Field(j).Interface(), fb.Field(j).Interface()) {
				out = append(out, key)
			}
		}
	}
	return out
}

// yamlName is a field's YAML key, "" for unexported or untagged fields.
func yamlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	n, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if n == "-" {
		return ""
	}
	return n
}

// oneLine keeps a message on one log line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

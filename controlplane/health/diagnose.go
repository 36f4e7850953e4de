package health

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/bypass"
	"github.com/cloudsteer/cloudsteer/controlplane/config"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// Quick-test defaults for the zero values of DiagnoseInputs.
const (
	// DefaultCheckTimeout bounds one check.
	DefaultCheckTimeout = 5 * time.Second
	// DefaultBudget bounds the whole quick test; the checks run
	// concurrently, so it is the longest check plus a margin, and below
	// the 10 seconds the quick test promises.
	DefaultBudget = 8 * time.Second
)

// Names of the quick test's checks, in report order.
const (
	CheckInstall    = "install"
	CheckNetwork    = "network"
	CheckComponents = "components"
	CheckSettings   = "settings"
)

// DiagnoseInputs is what the quick test looks at; the daemon supplies it.
type DiagnoseInputs struct {
	// Now is the clock for the report's time (default time.Now).
	Now func() time.Time

	// Interfaces are the configured LAN interfaces.
	Interfaces []string
	// Attached returns the interfaces the classifier is attached on now
	// (steer.Steer.Attached).
	Attached func() []string
	// TablePresent reports whether the nftables table exists
	// (firewall.Table.Present).
	TablePresent func() (bool, error)

	// Prober probes the cloud proxy and DNS afresh for the network check.
	Prober *Prober

	// Components are the parts of the running gateway to ask, by name:
	// e.g. "proxy" and "resolver" listeners (see SocketCheck). Each
	// returns nil when the component works.
	Components map[string]func(ctx context.Context) error
	// BypassPrefixes reads the kernel bypass map
	// (steer.Steer.BypassPrefixes).
	BypassPrefixes func() ([]netip.Prefix, error)

	// Code returns the entitlement code in use ("" when none).
	Code func() string
	// Bypass returns the stored bypass list.
	Bypass func() []model.BypassEntry

	// CheckTimeout bounds each check (default DefaultCheckTimeout).
	CheckTimeout time.Duration
	// Budget bounds the whole run (default DefaultBudget).
	Budget time.Duration
}

// Diagnose runs the quick test: install, network, components and
// settings, concurrently, each within CheckTimeout and all within Budget.
// A check that does not finish in time fails with that as its reason.
func Diagnose(ctx context.Context, d DiagnoseInputs) model.Report {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.CheckTimeout <= 0 {
		d.CheckTimeout = DefaultCheckTimeout
	}
	if d.Budget <= 0 {
		d.Budget = DefaultBudget
	}
	rep := model.Report{Time: d.Now()}
	ctx, cancel := context.WithTimeout(ctx, d.Budget)
	defer cancel()

	checks := []struct {
		name string
		run  func(context.Context, DiagnoseInputs) (string, error)
	}{
		{CheckInstall, checkInstall},
		{CheckNetwork, checkNetwork},
		{CheckComponents, checkComponents},
		{CheckSettings, checkSettings},
	}
	rep.Checks = make([]model.Check, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() {
			rep.Checks[i] = runCheck(ctx, c.name, d.CheckTimeout, func(ctx context.Context) (string, error) { return c.run(ctx, d) })
		})
	}
	wg.Wait()
	rep.OK = true
	for _, c := range rep.Checks {
		rep.OK = rep.OK && c.OK
	}
	return rep
}

// runCheck runs one check within timeout. The check runs in its own
// goroutine so a hook that ignores ctx cannot hold up the report; its
// late answer is dropped.
func runCheck(ctx context.Context, name string, timeout time.Duration, run func(context.Context) (string, error)) model.Check {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type outcome struct {
		detail string
		err    error
	}
	done := make(chan outcome, 1)
	start := time.Now()
	go func() {
		detail, err := run(ctx)
		done <- outcome{detail, err}
	}()
	var o outcome
	select {
	case o = <-done:
	case <-ctx.Done():
		select {
		case o = <-done: // finished just as time ran out: keep its answer
		default:
			o.err = fmt.Errorf("no result within %s", time.Since(start).Round(time.Millisecond))
		}
	}
	c := model.Check{Name: name, OK: o.err == nil, Detail: o.detail, Took: time.Since(start)}
	if o.err != nil {
		c.Detail = o.err.Error()
	}
	return c
}

// problems collects a check's failures; Err joins them into one line.
type problems []string

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

func (p problems) Err() error {
	if len(p) == 0 {
		return nil
	}
	return errors.New(strings.Join(p, "; "))
}

func checkInstall(ctx context.Context, d DiagnoseInputs) (string, error) {
	var bad problems
	var attached []string
	if d.Attached != nil {
		attached = d.Attached()
	}
	if len(d.Interfaces) == 0 {
		bad.add("no LAN interface is configured")
	}
	for _, ifc := range d.Interfaces {
		if !slices.Contains(attached, ifc) {
			bad.add("classifier not attached on %s", ifc)
		}
	}
	switch {
	case d.TablePresent == nil:
		bad.add("nftables table state unknown")
	default:
		ok, err := d.TablePresent()
		switch {
		case err != nil:
			bad.add("read nftables table: %v", err)
		case !ok:
			bad.add("nftables table missing")
		}
	}
	if err := bad.Err(); err != nil {
		return "", err
	}
	return fmt.Sprintf("classifier attached on %s; nftables table present; no policy routing needed (nftables redirect)",
		strings.Join(d.Interfaces, ", ")), nil
}

func checkNetwork(ctx context.Context, d DiagnoseInputs) (string, error) {
	if d.Prober == nil {
		return "", errors.New("no prober configured")
	}
	r := d.Prober.ProbeNow(ctx)
	var bad problems
	proxy := "cloud proxy"
	if d.Prober.cfg.Cloud != nil {
		if c := d.Prober.cfg.Cloud(); c != nil {
			proxy += " " + c.String()
		}
	}
	switch {
	case r.ProxyRefused:
		bad.add("%s rejects the entitlement code (407)", proxy)
	case r.ProxyErr != nil:
		bad.add("%s unreachable: %v", proxy, r.ProxyErr)
	}
	switch {
	case d.Prober.cfg.Resolver == nil:
		bad.add("no cloud DNS resolver configured")
	case r.DNSErr != nil:
		bad.add("%v", r.DNSErr)
	}
	if err := bad.Err(); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s accepts the entitlement code (answered in %s); cloud DNS answers",
		proxy, r.ProxyTook.Round(time.Millisecond)), nil
}

func checkComponents(ctx context.Context, d DiagnoseInputs) (string, error) {
	var bad problems
	var good []string
	if len(d.Components) == 0 {
		bad.add("no components to check")
	}
	for _, name := range slices.Sorted(maps.Keys(d.Components)) {
		if err := d.Components[name](ctx); err != nil {
			bad.add("%s: %v", name, err)
			continue
		}
		good = append(good, name)
	}
	n := 0
	switch {
	case d.BypassPrefixes == nil:
		bad.add("bypass map state unknown")
	default:
		ps, err := d.BypassPrefixes()
		if err != nil {
			bad.add("read bypass map: %v", err)
		}
		n = len(ps)
	}
	if err := bad.Err(); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s working; bypass map readable, %d entries", strings.Join(good, ", "), n), nil
}

func checkSettings(ctx context.Context, d DiagnoseInputs) (string, error) {
	var bad problems
	code := ""
	if d.Code != nil {
		code = d.Code()
	}
	var entries []model.BypassEntry
	if d.Bypass != nil {
		entries = d.Bypass()
	}
	switch {
	case code == "":
		bad.add("no entitlement code")
	case !config.EntitlementCodeRE.MatchString(code):
		bad.add("entitlement code %s is not well-formed (want 8-4-4-4-12 hex digits)", model.MaskCode(code))
	}
	enabled := 0
	for _, e := range entries {
		if e.Enabled {
			enabled++
		}
		switch e.Kind {
		case model.BypassCIDR:
			if _, err := bypass.ParsePrefix(e.Value); err != nil {
				bad.add("bypass entry %v", err)
			}
		case model.BypassDomain:
			if _, err := bypass.NormalizePattern(e.Value); err != nil {
				bad.add("bypass entry %v", err)
			}
		default:
			bad.add("bypass entry %q has unknown kind %q", e.Value, e.Kind)
		}
	}
	for _, name := range bypass.SystemDomains {
		i := slices.IndexFunc(entries, func(e model.BypassEntry) bool {
			return e.Kind == model.BypassDomain && e.Value == name
		})
		switch {
		case i < 0:
			bad.add("system bypass %s missing", name)
		case !entries[i].Enabled:
			bad.add("system bypass %s disabled", name)
		}
	}
	if err := bad.Err(); err != nil {
		return "", err
	}
	return fmt.Sprintf("entitlement code %s well-formed; %d bypass entries (%d enabled), system entries present and enabled",
		model.MaskCode(code), len(entries), enabled), nil
}

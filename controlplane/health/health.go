// Package health says whether the gateway protects its LAN and why not: a
// Prober checks the cloud proxy and the cloud DNS in the background,
// Reasons and State turn what the daemon knows into the status page's
// reasons and headline, and Diagnose runs the quick test's four checks.
package health

import (
	"fmt"
	"slices"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// Inputs is what the status is computed from: the daemon's view of itself
// at one moment.
type Inputs struct {
	// HasCode is whether an entitlement code is configured.
	HasCode bool
	// Paused is the stored pause state; it counts when active at Now.
	Paused model.PauseState
	// Now is the time the status is for.
	Now time.Time
	// Interfaces are the configured LAN interfaces.
	Interfaces []string
	// Attached are the interfaces the classifier is attached on now
	// (steer.Steer.Attached).
	Attached []string
	// TablePresent is whether the nftables table exists
	// (firewall.Table.Present).
	TablePresent bool
	// FirewallBlock, when not empty, says how another firewall drops the
	// traffic the table redirects and what to add (daemon/fwblock.go).
	FirewallBlock string
	// Probe is the latest probe of the cloud proxy and DNS (Prober.Last).
	Probe Result
	// Cloud is the health of each cloud proxy, primary first
	// (cloudproxy.Client.States); empty when they are not health-checked.
	Cloud []model.CloudProxyState
	// FailureMode is cloud_proxy.failure_mode: "open" or "closed".
	FailureMode string
	// DNS is the health of each cloud resolver, in order
	// (resolver.Resolver.UpstreamStates).
	DNS []model.DNSUpstreamState
	// QUICGateOff, when not empty, says why firewall.quic_by_name is on
	// in the config but the QUIC gate is not running.
	QUICGateOff string
}

// Blocking reports whether a reason code means LAN traffic is not
// protected: no code, the classifier or the nftables table missing,
// another firewall dropping the redirects, or the cloud proxy unreachable
// or refusing the code.
//
// A failing cloud DNS is not blocking. The resolver then answers
// SERVFAIL (or from its cache): names stop resolving, which is an outage,
// but no lookup goes unfiltered, and HTTP and TLS still pass through the
// cloud proxy. The reason is listed so the admin sees it; the headline
// stays "protected". A probe not run yet is not blocking either.
func Blocking(code string) bool {
	switch code {
	case model.ReasonNoCode, model.ReasonNotAttached, model.ReasonNoFirewallTable, model.ReasonFirewallBlocks,
		model.ReasonProxyUnreachable, model.ReasonProxyRefusesCode, model.ReasonProxyFailedOpen:
		return true
	}
	return false
}

// Reasons lists every cause of not being (fully) protected, in a fixed
// order: pause, code, classifier (one per LAN interface without it),
// nftables table, another firewall, QUIC by name unavailable, probe not
// run yet or cloud proxy and cloud DNS.
//
// Without an entitlement code the proxy's 407 is a consequence of the
// missing code, so only no_entitlement_code is listed for it.
func Reasons(in Inputs) []model.Reason {
	var rs []model.Reason
	add := func(code, format string, args ...any) {
		rs = append(rs, model.Reason{Code: code, Message: fmt.Sprintf(format, args...)})
	}
	if in.Paused.ActiveAt(in.Now) {
		if in.Paused.Until.IsZero() {
			add(model.ReasonPaused, "protection is paused until resumed")
		} else {
			add(model.ReasonPaused, "protection is paused until %s", in.Paused.Until.Format(time.RFC3339))
		}
	}
	if !in.HasCode {
		add(model.ReasonNoCode, "no entitlement code: set one with 'cloudsteer activate CODE'")
	}
	switch {
	case len(in.Interfaces) == 0 && len(in.Attached) == 0:
		add(model.ReasonNotAttached, "the classifier is not attached on any LAN interface")
	default:
		for _, ifc := range in.Interfaces {
			if !slices.Contains(in.Attached, ifc) {
				add(model.ReasonNotAttached, "the classifier is not attached on %s: traffic from that LAN passes unsteered", ifc)
			}
		}
	}
	if !in.TablePresent {
		add(model.ReasonNoFirewallTable, "the nftables table is missing: marked traffic is not redirected to the proxy and resolver")
	}
	if in.FirewallBlock != "" {
		add(model.ReasonFirewallBlocks, "%s", in.FirewallBlock)
	}
	if in.QUICGateOff != "" {
		add(model.ReasonQUICByNameUnavailable, "QUIC by name (firewall.quic_by_name) is not running: %s; QUIC is rejected unless its address is in the bypass map, so bypass sites fall back to TCP until a DNS answer puts their address there", in.QUICGateOff)
	}
	p := in.Probe
	if p.Time.IsZero() {
		add(model.ReasonHealthNotYetProbed, "the cloud proxy and cloud DNS have not been checked yet")
		return rs
	}
	down := cloudReasons(in, add)
	switch {
	case p.ProxyRefused && !in.HasCode:
	case p.ProxyRefused:
		add(model.ReasonProxyRefusesCode, "the cloud proxy rejects the entitlement code (407): check or replace it")
	case p.ProxyErr != nil && !down:
		add(model.ReasonProxyUnreachable, "the cloud proxy is unreachable: %v", p.ProxyErr)
	}
	if p.DNSErr != nil {
		add(model.ReasonDNSFailing, "the cloud DNS is not answering: %v", p.DNSErr)
	} else if len(in.DNS) > 1 && !in.DNS[0].Healthy {
		for _, u := range in.DNS[1:] {
			if u.Active {
				add(model.ReasonDNSOnBackup, "the first cloud resolver %s fails: queries go to %s first", in.DNS[0].Addr, u.Addr)
				break
			}
		}
	}
	return rs
}

// cloudReasons adds the failover reasons of in.Cloud: every proxy down
// (failed open or closed, by in.FailureMode), or the primary down and a
// backup in use. It reports whether every proxy is down.
func cloudReasons(in Inputs, add func(code, format string, args ...any)) bool {
	if len(in.Cloud) == 0 {
		return false
	}
	var active *model.CloudProxyState
	for i := range in.Cloud {
		if in.Cloud[i].Active {
			active = &in.Cloud[i]
			break
		}
	}
	primary := in.Cloud[0]
	if primary.Error == "" {
		primary.Error = "passing checks again, not trusted yet"
	}
	switch {
	case active == nil && in.FailureMode == "closed":
		add(model.ReasonProxyFailedClosed, "no cloud proxy is healthy (%s: %s): only bypass destinations are reachable (failure_mode closed)", primary.URL, primary.Error)
		return true
	case active == nil:
		add(model.ReasonProxyFailedOpen, "no cloud proxy is healthy (%s: %s): web traffic goes direct, uninspected (failure_mode open)", primary.URL, primary.Error)
		return true
	case !primary.Healthy:
		add(model.ReasonProxyOnBackup, "the primary cloud proxy %s is down (%s): using the backup %s", primary.URL, primary.Error, active.URL)
	}
	return false
}

// State is the headline for in: paused while a pause is active, else not
// protected when any reason is Blocking, else protected.
func State(in Inputs) model.Protection { return stateOf(Reasons(in)) }

// stateOf is State for reasons as Reasons returns them.
func stateOf(reasons []model.Reason) model.Protection {
	state := model.Protected
	for _, r := range reasons {
		if r.Code == model.ReasonPaused {
			return model.Paused
		}
		if Blocking(r.Code) {
			state = model.NotProtected
		}
	}
	return state
}

// Status fills the parts of a model.Status that health decides: State,
// PauseUntil, Reasons, Interfaces, Attached and CheckedAt. The daemon adds
// the code, proxy URL, version and start time.
func Status(in Inputs) model.Status {
	rs := Reasons(in)
	if rs == nil {
		rs = []model.Reason{}
	}
	st := model.Status{
		State:      stateOf(rs),
		Reasons:    rs,
		Interfaces: slices.Clone(in.Interfaces),
		Attached:   slices.Clone(in.Attached),
		CheckedAt:  in.Probe.Time,
	}
	if in.Paused.ActiveAt(in.Now) {
		st.PauseUntil = in.Paused.Until
	}
	return st
}

package daemon

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy"
	"github.com/cloudsteer/cloudsteer/dataplane/proxy"
	"github.com/cloudsteer/cloudsteer/dataplane/resolver"
	"github.com/cloudsteer/cloudsteer/dataplane/upstream"
)

// Event reasons of the cloud proxies' failover (Proto "cloud"; Name is
// the proxy switched to, Target the one switched from).
const (
	EventCloudSwitch       = "cloud_proxy_switch"        // to a backup, or back to the primary
	EventCloudFailedOpen   = "cloud_proxy_failed_open"   // no proxy healthy: web goes direct
	EventCloudFailedClosed = "cloud_proxy_failed_closed" // no proxy healthy: only bypass reachable
	EventCloudRecovered    = "cloud_proxy_recovered"     // a proxy healthy again after none was
	// EventDNSSwitch: the cloud resolver queries go to first changed
	// (Name the new one, "" when every one fails; Target the old one).
	EventDNSSwitch = "cloud_dns_switch"
)

// failoverState follows the cloud proxies' switches for events and
// metrics, across cloud clients (a new code makes a new client).
type failoverState struct {
	switches atomic.Uint64
	// current is the cloud client in use: switches of another one (a
	// client made to check a new code) are not the office's.
	current atomic.Pointer[cloudproxy.Client]
	// proxy is the transparent proxy once Start made it.
	proxy atomic.Pointer[proxy.Proxy]

	mu      sync.Mutex
	events  *events       // nil until Start made it: the switches wait in pending
	pending []model.Event // switches before events existed
}

// cloudHealth is the health-check config of a cloud client; self is set
// to the client once made.
func (d *Daemon) cloudHealth(self *atomic.Pointer[cloudproxy.Client]) *cloudproxy.HealthConfig {
	cp := d.cfg.CloudProxy
	return &cloudproxy.HealthConfig{
		ProbeTarget:   d.cfg.Health.ProbeTarget,
		ProbeInterval: cp.ProbeInterval.D(),
		ProbeTimeout:  cp.ProbeTimeout.D(),
		Params:        upstream.Params{RecoverAfter: cp.RecoverAfter.D()},
		OnSwitch: func(sw cloudproxy.Switch) {
			if c := self.Load(); c != nil && c == d.failover.current.Load() {
				d.cloudSwitch(sw)
			}
		},
		Logger: d.log,
	}
}

// cloudSwitch records a change of the proxy new flows use: an event
// (the failure mode's start and end are events of their own) and a log line.
func (d *Daemon) cloudSwitch(sw cloudproxy.Switch) {
	d.failover.switches.Add(1)
	reason := EventCloudSwitch
	switch {
	case sw.To == "" && d.cfg.CloudProxy.FailureMode == "closed":
		reason = EventCloudFailedClosed
	case sw.To == "":
		reason = EventCloudFailedOpen
	case sw.From == "":
		reason = EventCloudRecovered
	}
	attrs := []any{"event", reason, "from", sw.From, "to", sw.To}
	if sw.Cause != nil {
		attrs = append(attrs, "cause", sw.Cause.Error())
	}
	if sw.To == "" {
		d.log.Error("no cloud proxy is healthy: failure mode "+d.cfg.CloudProxy.FailureMode+" applies", attrs...)
	} else {
		d.log.Warn("cloud proxy switch", attrs...)
	}
	d.offerFailoverEvent(model.Event{Time: time.Now(), Proto: "cloud", Reason: reason, Name: sw.To, Target: sw.From})
	if reason == EventCloudRecovered && d.cfg.CloudProxy.FailureMode == "open" {
		// Inspection resumes for every flow, not only the new ones: the
		// flows that went direct meanwhile reconnect through the proxy.
		if p := d.failover.proxy.Load(); p != nil {
			d.log.Info("cut the flows that went direct while no cloud proxy was healthy", "flows", p.CutFailedOpen())
		}
	}
}

// dnsSwitch records a change of the cloud resolver queries go to first.
func (d *Daemon) dnsSwitch(from, to string) {
	name, target := to, from
	d.offerFailoverEvent(model.Event{Time: time.Now(), Proto: "dns", Reason: EventDNSSwitch, Name: name, Target: target})
}

// offerFailoverEvent queues ev, or keeps it until the event writer exists.
func (d *Daemon) offerFailoverEvent(ev model.Event) {
	f := &d.failover
	f.mu.Lock()
	e := f.events
	if e == nil {
		f.pending = append(f.pending, ev)
	}
	f.mu.Unlock()
	if e != nil {
		e.offer(ev)
	}
}

// DNSUpstreamStates returns each cloud resolver's health (metrics).
func (d *Daemon) DNSUpstreamStates() []resolver.UpstreamState {
	if d.resolver == nil {
		return nil
	}
	return d.resolver.UpstreamStates()
}

// failoverEventsReady hands the switches so far to the event writer.
func (d *Daemon) failoverEventsReady(e *events) {
	f := &d.failover
	f.mu.Lock()
	f.events = e
	pending := f.pending
	f.pending = nil
	f.mu.Unlock()
	for _, ev := range pending {
		e.offer(ev)
	}
}

// CloudProxyStates returns each cloud proxy's health (metrics).
func (d *Daemon) CloudProxyStates() []cloudproxy.ProxyState {
	if d.proxy == nil {
		return nil
	}
	return d.proxy.Cloud().States()
}

// CloudProxySwitches counts the switches since start (metrics).
func (d *Daemon) CloudProxySwitches() uint64 { return d.failover.switches.Load() }

// cloudStates returns the cloud proxies' health for status.
func (d *Daemon) cloudStates() []model.CloudProxyState {
	ps := d.CloudProxyStates()
	if len(ps) == 0 {
		return nil
	}
	out := make([]model.CloudProxyState, len(ps))
	for i, p := range ps {
		out[i] = model.CloudProxyState{URL: p.URL, Healthy: p.Up, Active: p.Active, Since: p.Since, Error: p.LastErr}
	}
	return out
}

// dnsStates returns the cloud resolvers' health for status.
func (d *Daemon) dnsStates() []model.DNSUpstreamState {
	us := d.DNSUpstreamStates()
	if len(us) == 0 {
		return nil
	}
	out := make([]model.DNSUpstreamState, len(us))
	for i, u := range us {
		out[i] = model.DNSUpstreamState{Addr: u.Name, Healthy: u.Up, Active: u.Active}
	}
	return out
}

package resolver

import (
	"context"
	"net/netip"
	"time"

	"github.com/miekg/dns"

	uphealth "github.com/cloudsteer/cloudsteer/dataplane/upstream"
)

// Health of the cloud resolvers: a resolver that fails a query (no
// answer in Timeout, SERVFAIL, ...) is down at once, and queries go to
// the next one first, so that a dead first resolver costs one timeout,
// not one per query. A down resolver gets no real query while another one
// is up; RunHealth probes it (". NS") every ProbeInterval, and it is up
// again (first in order again) once it has answered every probe for
// RecoverAfter.
const (
	// DefaultProbeInterval is the time between probes of a down resolver.
	DefaultProbeInterval = time.Second
	// DefaultRecoverAfter is how long a down resolver must answer every
	// probe before queries go to it first again.
	DefaultRecoverAfter = 10 * time.Second
)

// UpstreamState is one cloud resolver's health.
type UpstreamState struct {
	// Name is the upstream as configured, normalised ("192.0.2.1:53",
	// "tls://dns.example:853"); Addr is a plain upstream's address (the
	// zero AddrPort for an encrypted one).
	Name   string
	Addr   netip.AddrPort
	Up     bool
	Active bool // the one queries go to first
}

// newHealth gives u its state machine.
func (r *Resolver) newHealth(u *upstream) {
	ra := r.cfg.RecoverAfter
	if ra <= 0 {
		ra = DefaultRecoverAfter
	}
	u.h = uphealth.New(uphealth.Params{FailAfter: 1, RecoverAfter: ra}, time.Now(), func(up bool, err error) {
		if up {
			r.log.Info("cloud resolver answers again", "upstream", u.name)
		} else {
			r.log.Warn("cloud resolver failing, the next one goes first", "upstream", u.name, "err", err)
		}
		r.recomputeActive()
	})
}

// recomputeActive follows the resolver queries go to first.
func (r *Resolver) recomputeActive() {
	r.activeMu.Lock()
	from := r.active
	to := -1
	for i, u := range r.upstreams {
		if u.h.Up() {
			to = i
			break
		}
	}
	r.active = to
	r.activeMu.Unlock()
	if from == to {
		return
	}
	r.switches.Add(1)
	var f, t string
	if from >= 0 {
		f = r.upstreams[from].name
	}
	if to >= 0 {
		t = r.upstreams[to].name
	}
	r.log.Warn("cloud resolver switch", "from", f, "to", t)
	if r.cfg.OnUpstreamSwitch != nil {
		r.cfg.OnUpstreamSwitch(f, t)
	}
}

// UpstreamStates returns each cloud resolver's health, in configured order.
func (r *Resolver) UpstreamStates() []UpstreamState {
	r.activeMu.Lock()
	active := r.active
	r.activeMu.Unlock()
	out := make([]UpstreamState, len(r.upstreams))
	for i, u := range r.upstreams {
		out[i] = UpstreamState{Name: u.name, Addr: u.addr, Up: u.h.Up(), Active: i == active}
	}
	return out
}

// RunHealth probes the down resolvers every interval (DefaultProbeInterval
// when zero) until ctx ends.
func (r *Resolver) RunHealth(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultProbeInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, u := range r.upstreams {
			if u.h.Up() {
				continue // real queries check it
			}
			q := new(dns.Msg)
			q.Id = dns.Id()
			q.RecursionDesired = true
			q.Question = []dns.Question{{Name: ".", Qtype: dns.TypeNS, Qclass: dns.ClassINET}}
			q.SetEdns0(upstreamUDPSize, false)
			_, err := r.exchangeOne(ctx, u, q)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				u.h.Failure(time.Now(), err)
			} else {
				u.h.Success(time.Now())
			}
		}
	}
}

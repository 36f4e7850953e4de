package config

import "fmt"

// Limits bound what one LAN client can take of the gateway, so that no
// client can starve the others. A client is an IPv4 address or an IPv6
// /64 (privacy addresses rotate within a /64). Each key left out takes its
// default; 0 turns that limit off. Excess is refused or dropped, never
// queued.
type Limits struct {
	// Flows is the most concurrent steered TCP flows (HTTP and TLS) of all
	// clients together, enforced by the proxy. The daemon lowers it when
	// the descriptor limit cannot hold two descriptors per flow plus its
	// reserve; 0 means as many as the descriptors allow.
	Flows *int `yaml:"flows"`
	// FlowsPerClient is the most concurrent steered TCP flows of one
	// client, enforced by the kernel (a reset for the SYN) and the proxy.
	FlowsPerClient *int `yaml:"flows_per_client"`
	// NewFlowsPerSecondPerClient is the rate of new steered TCP flows of
	// one client, with a burst of twice that, enforced by the kernel.
	NewFlowsPerSecondPerClient *int `yaml:"new_flows_per_second_per_client"`
	// DNSTCPPerClient is the most concurrent DNS over TCP connections of
	// one client, enforced by the kernel and the resolver.
	DNSTCPPerClient *int `yaml:"dns_tcp_per_client"`
	// DNSQueriesPerSecondPerClient is the rate of DNS queries of one
	// client, with a burst of twice that, enforced by the kernel (UDP
	// queries that reach the resolver) and the resolver.
	DNSQueriesPerSecondPerClient *int `yaml:"dns_queries_per_second_per_client"`
}

// Defaults of the limits, sized for an office of about 200 clients on a
// gateway with 20 000 descriptors: 8192 flows take 16 384 descriptors and
// leave the reserve (2000) and the resolver's TCP clients room. A busy
// browser holds 50 to 200 connections; 512 lets one client hold several
// browsers' worth, and 16 clients at their limit fill the gateway.
const (
	DefaultFlows                        = 8192
	DefaultFlowsPerClient               = 512
	DefaultNewFlowsPerSecondPerClient   = 200
	DefaultDNSTCPPerClient              = 16
	DefaultDNSQueriesPerSecondPerClient = 200
	// MaxLimit bounds every limits key.
	MaxLimit = 1_000_000
)

// Burst is the bucket size that goes with a per-second rate: twice it.
func Burst(rate int) int { return 2 * rate }

func (l *Limits) setDefaults() {
	def := func(p **int, v int) {
		if *p == nil {
			*p = &v
		}
	}
	def(&l.Flows, DefaultFlows)
	def(&l.FlowsPerClient, DefaultFlowsPerClient)
	def(&l.NewFlowsPerSecondPerClient, DefaultNewFlowsPerSecondPerClient)
	def(&l.DNSTCPPerClient, DefaultDNSTCPPerClient)
	def(&l.DNSQueriesPerSecondPerClient, DefaultDNSQueriesPerSecondPerClient)
}

func (l *Limits) validate() error {
	for _, k := range []struct {
		key string
		v   *int
	}{
		{"limits.flows", l.Flows},
		{"limits.flows_per_client", l.FlowsPerClient},
		{"limits.new_flows_per_second_per_client", l.NewFlowsPerSecondPerClient},
		{"limits.dns_tcp_per_client", l.DNSTCPPerClient},
		{"limits.dns_queries_per_second_per_client", l.DNSQueriesPerSecondPerClient},
	} {
		if k.v == nil {
			continue // Validate without defaults: nothing to check
		}
		if *k.v < 0 || *k.v > MaxLimit {
			return bad(k.key, "%d is outside 0 (off) to %d", *k.v, MaxLimit)
		}
	}
	if l.Flows != nil && l.FlowsPerClient != nil && *l.Flows != 0 && *l.FlowsPerClient > *l.Flows {
		return bad("limits.flows_per_client", "%d is more than limits.flows (%d)", *l.FlowsPerClient, *l.Flows)
	}
	return nil
}

// Value returns *p, or 0 when p is nil.
func Value(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}

// String is the limits as one log value.
func (l Limits) String() string {
	return fmt.Sprintf("flows=%d flows_per_client=%d new_flows_per_second_per_client=%d dns_tcp_per_client=%d dns_queries_per_second_per_client=%d",
		Value(l.Flows), Value(l.FlowsPerClient), Value(l.NewFlowsPerSecondPerClient), Value(l.DNSTCPPerClient), Value(l.DNSQueriesPerSecondPerClient))
}

package firewall

import (
	"fmt"
	"math"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Seeing whether redirected flows reach the listeners.
//
// Another firewall in the namespace can drop what cloudsteer redirects:
// after the nat chain's redirect a flow is input traffic to a local port,
// and an input chain with policy drop that accepts nothing of the kind (a
// Debian-style nftables.conf) drops it. An accept in cloudsteer's table
// cannot override that (a drop in any base chain is final) and cloudsteer
// does not edit other tables, so it watches instead. A last chain on the
// input hook counts the redirected packets that got through every other
// input chain:
//
//	chain reach { type filter hook input priority 2147483646; policy accept;
//	 meta l4proto tcp th dport { P_HTTP, P_TLS } tcp flags & (syn|ack) == syn ct status dnat counter
//	 meta l4proto udp th dport P_DNS meta mark M_DNS counter
//	 meta l4proto tcp th dport P_DNS meta mark M_DNS counter }
//
// Its priority is just below conntrack's confirm (INT_MAX) and above any
// filter chain a firewall uses. Reach pairs these counters with the
// prerouting redirect counters (one per redirected flow: the nat chain sees
// a flow's first packet, and a dropped SYN leaves no confirmed conntrack
// entry, so each retransmission counts again) and with cloudsteer's own
// refusals (the per-client limits drop or reset some redirected flows
// before they get here). The daemon decides from deltas over a window.

const (
	reachChainName = "reach"
	reachPriority  = math.MaxInt32 - 1
)

// addReach queues the reach chain into conn's batch.
func addReach(conn *nftables.Conn, tab *nftables.Table, cfg Config) error {
	accept := nftables.ChainPolicyAccept
	ch := conn.AddChain(&nftables.Chain{
		Name: reachChainName, Table: tab, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityRef(reachPriority), Policy: &accept,
	})
	web, err := addPortSet(conn, tab, []uint16{cfg.HTTPPort, cfg.TLSPort})
	if err != nil {
		return err
	}
	rule := func(parts ...[]expr.Any) {
		var exprs []expr.Any
		for _, p := range parts {
			exprs = append(exprs, p...)
		}
		conn.AddRule(&nftables.Rule{Table: tab, Chain: ch, Exprs: append(exprs, &expr.Counter{})})
	}
	rule(l4protoIs(unix.IPPROTO_TCP), dportIn(web), tcpSYNOnly(), ctStatusHasDNAT())
	rule(l4protoIs(unix.IPPROTO_UDP), dportIs(cfg.DNSPort), markIs(cfg.Marks.DNS))
	rule(l4protoIs(unix.IPPROTO_TCP), dportIs(cfg.DNSPort), markIs(cfg.Marks.DNS))
	return nil
}

// Reach is a snapshot of the counters that tell whether redirected flows
// reach the listeners; all are totals since the table was made.
type Reach struct {
	// WebRedirected counts HTTP and TLS flows the nat chain redirected
	// (their SYNs, retransmissions of a dropped one included);
	// WebArrived the redirected SYNs that passed every input chain.
	WebRedirected, WebArrived uint64
	// WebRefused counts redirected SYNs cloudsteer's own per-client
	// limits refused.
	WebRefused uint64
	// DNSRedirected counts redirected DNS flows (UDP and TCP);
	// DNSArrived the DNS packets that passed every input chain; DNSRefused
	// those cloudsteer's own limits refused.
	DNSRedirected, DNSArrived, DNSRefused uint64
}

// Reach reads the counters. After Close it returns zeros.
func (t *Table) Reach() (Reach, error) {
	var r Reach
	refused, err := t.LimitRefusals()
	if err != nil {
		return r, err
	}
	r.WebRefused = refused[RefusedFlowsPerClient] + refused[RefusedNewFlowsPerClient]
	r.DNSRefused = refused[RefusedDNSTCPPerClient] + refused[RefusedDNSQueriesPerClient]
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return Reach{}, nil
	}
	tab := &nftables.Table{Name: t.name, Family: nftables.TableFamilyINet}
	pre, err := t.conn.GetRules(tab, &nftables.Chain{Name: "prerouting", Table: tab})
	if err != nil {
		return r, fmt.Errorf("read redirect counters: %w", err)
	}
	for _, rule := range pre {
		port, n, ok := redirectCounter(rule)
		switch {
		case !ok:
		case port == t.cfg.DNSPort:
			r.DNSRedirected += n
		default:
			r.WebRedirected += n
		}
	}
	seen, err := t.conn.GetRules(tab, &nftables.Chain{Name: reachChainName, Table: tab})
	if err != nil {
		return r, fmt.Errorf("read reach counters: %w", err)
	}
	if len(seen) != 3 {
		return r, fmt.Errorf("reach chain has %d rules, want 3", len(seen))
	}
	r.WebArrived = ruleCount(seen[0])
	r.DNSArrived = ruleCount(seen[1]) + ruleCount(seen[2])
	return r, nil
}

// redirectCounter returns the redirect port and packet count of a
// prerouting rule that redirects; ok is false for the others.
func redirectCounter(r *nftables.Rule) (port uint16, packets uint64, ok bool) {
	var redir bool
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Immediate:
			if len(e.Data) == 2 {
				port = uint16(e.Data[0])<<8 | uint16(e.Data[1])
			}
		case *expr.Redir:
			redir = true
		case *expr.Counter:
			packets = e.Packets
		}
	}
	return port, packets, redir && port != 0
}

// ruleCount is the packet count of a rule's counter.
func ruleCount(r *nftables.Rule) uint64 {
	for _, e := range r.Exprs {
		if c, ok := e.(*expr.Counter); ok {
			return c.Packets
		}
	}
	return 0
}

// Generation returns the namespace's nftables ruleset generation, which
// every committed change of any table (this one too) increases.
func (t *Table) Generation() (uint32, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return 0, nil
	}
	g, err := t.conn.GetGen()
	if err != nil {
		return 0, fmt.Errorf("read nft generation: %w", err)
	}
	return g.ID, nil
}

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
// Debian-style nftables.conf, or an ip6 table that does it for IPv6 only)
// drops it. An accept in cloudsteer's table cannot override that (a drop
// in any base chain is final) and cloudsteer does not edit other tables,
// so it watches instead: the first and the last chain on the input hook
// count the redirected packets, per family, that enter the hook and that
// got through every other input chain (F is ipv4 and ipv6):
//
//	chain reach_first { type filter hook input priority -2147483647; policy accept;
//	 meta nfproto F tcp dport { P_HTTP, P_TLS } tcp flags & (syn|ack) == syn ct status dnat counter
//	 meta nfproto F udp dport P_DNS meta mark M_DNS counter
//	 meta nfproto F tcp dport P_DNS meta mark M_DNS counter  (for each F) }
//	chain reach { type filter hook input priority 2147483646; ... the same rules }
//
// Their priorities are just above the hook's first and just below
// conntrack's confirm (INT_MAX), outside any chain a firewall uses. A
// dropped SYN leaves no confirmed conntrack entry, so each retransmission
// is redirected and counted again. Reach also reads cloudsteer's own
// refusals (the per-client limits drop or reset some redirected flows in
// between, on purpose). The daemon decides from deltas over a window.

const (
	reachFirstName     = "reach_first"
	reachChainName     = "reach"
	reachFirstPriority = math.MinInt32 + 1
	reachPriority      = math.MaxInt32 - 1
)

// reachRulesPerFamily is the number of counting rules per family in each
// reach chain (web, DNS over UDP, DNS over TCP).
const reachRulesPerFamily = 3

// addReach queues the two reach chains into conn's batch.
func addReach(conn *nftables.Conn, tab *nftables.Table, cfg Config) error {
	accept := nftables.ChainPolicyAccept
	for _, c := range []struct {
		name string
		prio int32
	}{{reachFirstName, reachFirstPriority}, {reachChainName, reachPriority}} {
		ch := conn.AddChain(&nftables.Chain{
			Name: c.name, Table: tab, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityRef(nftables.ChainPriority(c.prio)), Policy: &accept,
		})
		rule := func(parts ...[]expr.Any) {
			var exprs []expr.Any
			for _, p := range parts {
				exprs = append(exprs, p...)
			}
			conn.AddRule(&nftables.Rule{Table: tab, Chain: ch, Exprs: append(exprs, &expr.Counter{})})
		}
		for _, fam := range []byte{unix.NFPROTO_IPV4, unix.NFPROTO_IPV6} {
			web, err := addPortSet(conn, tab, []uint16{cfg.HTTPPort, cfg.TLSPort})
			if err != nil {
				return err
			}
			rule(nfprotoIs(fam), l4protoIs(unix.IPPROTO_TCP), dportIn(web), tcpSYNOnly(), ctStatusHasDNAT())
			rule(nfprotoIs(fam), l4protoIs(unix.IPPROTO_UDP), dportIs(cfg.DNSPort), markIs(cfg.Marks.DNS))
			rule(nfprotoIs(fam), l4protoIs(unix.IPPROTO_TCP), dportIs(cfg.DNSPort), markIs(cfg.Marks.DNS))
		}
	}
	return nil
}

// ReachCounts are one family's counters, totals since the table was made.
type ReachCounts struct {
	// WebEntered counts redirected HTTP and TLS SYNs (retransmissions of
	// a dropped one included) entering the input hook; WebArrived those
	// that passed every input chain.
	WebEntered, WebArrived uint64
	// DNSEntered and DNSArrived are the same for redirected DNS packets.
	DNSEntered, DNSArrived uint64
}

// Reach is a snapshot of the counters that tell whether redirected flows
// reach the listeners.
type Reach struct {
	V4, V6 ReachCounts
	// WebRefused and DNSRefused count redirected SYNs and DNS packets
	// cloudsteer's own per-client limits refused (both families).
	WebRefused, DNSRefused uint64
}

// Reach reads the counters. After Close it returns zeros.
func (t *Table) Reach() (Reach, error) {
	// The three reads are not one snapshot, so they go in the order in
	// which a packet meets the counters: entries, then cloudsteer's own
	// refusals, then arrivals. A packet counted as entered is then
	// already refused or arrived by the later reads (unless it is still
	// in flight), and the skew between reads under a flood errs towards
	// "got through", never towards "dropped by another firewall".
	var r Reach
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return Reach{}, nil
	}
	tab := &nftables.Table{Name: t.name, Family: nftables.TableFamilyINet}
	read := func(chain string) ([]uint64, error) {
		rules, err := t.conn.GetRules(tab, &nftables.Chain{Name: chain, Table: tab})
		if err != nil {
			return nil, fmt.Errorf("read %s counters: %w", chain, err)
		}
		if len(rules) != 2*reachRulesPerFamily {
			return nil, fmt.Errorf("chain %s has %d rules, want %d", chain, len(rules), 2*reachRulesPerFamily)
		}
		n := make([]uint64, len(rules))
		for i, rule := range rules {
			n[i] = ruleCount(rule)
		}
		return n, nil
	}
	in, err := read(reachFirstName)
	t.mu.Unlock()
	if err != nil {
		return r, err
	}
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
	out, err := read(reachChainName)
	if err != nil {
		return r, err
	}
	for i, c := range []*ReachCounts{&r.V4, &r.V6} {
		o := i * reachRulesPerFamily
		c.WebEntered, c.WebArrived = in[o], out[o]
		c.DNSEntered, c.DNSArrived = in[o+1]+in[o+2], out[o+1]+out[o+2]
	}
	return r, nil
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

// HoldDNS turns the DNS redirect off (hold) or back on. While another
// firewall drops what the table redirects, the daemon holds the web
// classes off with the classifier's pause switch, which leaves DNS marked
// (a pause keeps DNS filtered); this rule, first in the prerouting chain,
// lets marked DNS go where the client sent it instead of into the drop:
//
//	meta mark M_DNS counter return
//
// Idempotent; a no-op after Close.
func (t *Table) HoldDNS(hold bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || hold == (t.holdRule != nil) {
		return nil
	}
	tab := &nftables.Table{Name: t.name, Family: nftables.TableFamilyINet}
	pre := &nftables.Chain{Name: "prerouting", Table: tab}
	if hold {
		exprs := append(markIs(t.cfg.Marks.DNS), &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictReturn})
		r := t.conn.InsertRule(&nftables.Rule{Table: tab, Chain: pre, Exprs: exprs, UserData: []byte(holdTag)})
		if err := t.conn.Flush(); err != nil {
			return fmt.Errorf("hold the DNS redirect: %w", err)
		}
		t.holdRule = r
		return nil
	}
	rules, err := t.conn.GetRules(tab, pre)
	if err != nil {
		return fmt.Errorf("list prerouting rules: %w", err)
	}
	for _, r := range rules {
		if string(r.UserData) == holdTag {
			if err := t.conn.DelRule(r); err != nil {
				return fmt.Errorf("release the DNS redirect: %w", err)
			}
		}
	}
	if err := t.conn.Flush(); err != nil {
		return fmt.Errorf("release the DNS redirect: %w", err)
	}
	t.holdRule = nil
	return nil
}

// holdTag marks the HoldDNS rule (its user data) so it can be found again.
const holdTag = "cloudsteer:hold-dns"

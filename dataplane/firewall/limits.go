package firewall

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Per-client limits in the kernel.
//
// One LAN host must not be able to use up the daemon's descriptors or its
// resolver. The limits the kernel can enforce before any socket exists are
// checked in a filter chain on the input hook, after the nat chain's
// redirect and before the socket lookup (P_* are the Limits fields, CLIENT
// is "ip saddr" or "ip6 saddr & ffff:ffff:ffff:ffff::", one rule per
// family):
//
//	chain client_limits { type filter hook input priority filter - 10; policy accept;
//	 meta l4proto tcp meta mark M_HTTP tcp flags & (syn|ack) == syn ct status dnat
//	   update @new_flows_v4 { CLIENT limit rate over P_NEWRATE/second burst P_NEWBURST packets }
//	   counter name new_flows_per_client reject with tcp reset
//	 (the same for M_TLS, into the same set)
//	 meta l4proto tcp meta mark M_HTTP tcp flags & (syn|ack) == syn ct status dnat
//	   add @flows_v4 { CLIENT ct count over P_FLOWS } counter name flows_per_client reject with tcp reset
//	 (the same for M_TLS, into the same set)
//	 meta l4proto tcp meta mark M_DNS tcp flags & (syn|ack) == syn
//	   add @dns_tcp_v4 { CLIENT ct count over P_DNSTCP } counter name dns_tcp_per_client reject with tcp reset
//	 meta l4proto udp meta mark M_DNS
//	   update @dns_queries_v4 { CLIENT limit rate over P_DNSRATE/second burst P_DNSBURST packets }
//	   counter name dns_queries_per_client drop }
//
// A refused TCP flow gets a reset at once, so the client fails fast and
// retries nothing; an excess DNS datagram is dropped (the client's stub
// retries after its timeout, as for a lost packet). Nothing is queued.
//
// The client is the IPv4 address or the IPv6 /64, since privacy addresses
// rotate within a /64. The web rules take only redirected SYNs (ct status
// dnat): flows to the gateway's own addresses are not redirected and not
// limited. Bypassed and paused flows carry no steering mark, hold no
// socket of the gateway and are not limited either.
//
// The DNS query rate is counted on every datagram that reaches netfilter,
// not only the first of a conntrack entry (a client's queries from one
// source port share one), because this is a filter chain. Queries the eBPF
// DNS answerer (bpf/dnscache.c) answers at TCX ingress never get here and
// are not counted: they cost no socket, no resolver queue and no upstream
// query. What gets here is exactly what would reach the resolver's one UDP
// socket, whose receive queue all clients share, so the limit has to come
// before that queue to keep one client from filling it.
//
// A set element that cannot be added (the set is full: at most
// limitSetSize clients per family) makes the dynset expression not match
// (nft_dynset_eval), so the packet goes through: a full set fails open for
// clients not yet in it, never shut for the ones already in it.

// Counter names, one per refusal reason; LimitRefusals reports them.
const (
	RefusedFlowsPerClient      = "flows_per_client"
	RefusedNewFlowsPerClient   = "new_flows_per_client"
	RefusedDNSTCPPerClient     = "dns_tcp_per_client"
	RefusedDNSQueriesPerClient = "dns_queries_per_client"
)

// refusalCounters are the counter objects the limits chain counts into.
var refusalCounters = []string{RefusedFlowsPerClient, RefusedNewFlowsPerClient, RefusedDNSTCPPerClient, RefusedDNSQueriesPerClient}

const (
	limitsChainName = "client_limits"
	// limitsPriority puts the limits chain before the guard chain on the
	// input hook (either order would do: an accept in one base chain does
	// not skip the other).
	limitsPriority = -10
	// limitSetSize bounds each per-client set (clients of one family).
	limitSetSize = 65536
	// rateSetTimeout drops a client's rate state after this long without
	// a packet: by then its bucket is full again anyway.
	rateSetTimeout = 10 * time.Second
	// ClientPrefixV6 is the length of the IPv6 prefix that counts as one
	// client.
	ClientPrefixV6 = 64
	// maxLimit bounds every limit and burst.
	maxLimit = 1 << 24
)

// Limits are the per-client limits the table enforces on steered flows.
// A zero count or rate is no limit.
type Limits struct {
	// FlowsPerClient is the most concurrent steered HTTP and TLS flows
	// (conntrack entries not closed) of one client.
	FlowsPerClient uint32
	// NewFlowsPerSecond and NewFlowsBurst bound the rate of new steered
	// HTTP and TLS flows (SYNs) of one client.
	NewFlowsPerSecond, NewFlowsBurst uint32
	// DNSTCPPerClient is the most concurrent DNS over TCP connections of
	// one client.
	DNSTCPPerClient uint32
	// DNSQueriesPerSecond and DNSQueriesBurst bound the rate of DNS UDP
	// datagrams of one client that reach the resolver.
	DNSQueriesPerSecond, DNSQueriesBurst uint32
}

func (l Limits) any() bool {
	return l.FlowsPerClient != 0 || l.NewFlowsPerSecond != 0 || l.DNSTCPPerClient != 0 || l.DNSQueriesPerSecond != 0
}

// validate appends one error per problem.
func (l Limits) validate(bad func(format string, args ...any)) {
	for _, f := range []struct {
		name string
		v    uint32
	}{{"FlowsPerClient", l.FlowsPerClient}, {"NewFlowsPerSecond", l.NewFlowsPerSecond}, {"NewFlowsBurst", l.NewFlowsBurst},
		{"DNSTCPPerClient", l.DNSTCPPerClient}, {"DNSQueriesPerSecond", l.DNSQueriesPerSecond}, {"DNSQueriesBurst", l.DNSQueriesBurst}} {
		if f.v > maxLimit {
			bad("limit %s is %d, more than %d", f.name, f.v, maxLimit)
		}
	}
	for _, r := range []struct {
		name        string
		rate, burst uint32
	}{{"NewFlows", l.NewFlowsPerSecond, l.NewFlowsBurst}, {"DNSQueries", l.DNSQueriesPerSecond, l.DNSQueriesBurst}} {
		switch {
		case r.rate == 0 && r.burst != 0:
			bad("limit %sBurst is %d without a rate", r.name, r.burst)
		case r.rate != 0 && r.burst < r.rate:
			bad("limit %sBurst is %d, less than %sPerSecond (%d)", r.name, r.burst, r.name, r.rate)
		}
	}
}

// family is what the limit rules differ in between IPv4 and IPv6.
type family struct {
	suffix  string
	nfproto byte
	keyType nftables.SetDatatype
	client  func() []expr.Any // loads the client key into register 1
}

var families = []family{
	{suffix: "_v4", nfproto: unix.NFPROTO_IPV4, keyType: nftables.TypeIPAddr, client: func() []expr.Any {
		return []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}}
	}},
	{suffix: "_v6", nfproto: unix.NFPROTO_IPV6, keyType: nftables.TypeIP6Addr, client: func() []expr.Any {
		mask := make([]byte, 16)
		for i := 0; i < ClientPrefixV6/8; i++ {
			mask[i] = 0xff
		}
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 16, Mask: mask, Xor: make([]byte, 16)},
		}
	}},
}

// addLimits queues the limits chain, its sets and its counters into conn's
// batch. Nothing is added when no limit is set.
func addLimits(conn *nftables.Conn, tab *nftables.Table, cfg Config) error {
	l := cfg.Limits
	if !l.any() {
		return nil
	}
	for _, name := range refusalCounters {
		conn.AddObj(&nftables.CounterObj{Table: tab, Name: name})
	}
	accept := nftables.ChainPolicyAccept
	ch := conn.AddChain(&nftables.Chain{
		Name: limitsChainName, Table: tab, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityRef(limitsPriority), Policy: &accept,
	})
	var errs []error
	add := func(parts ...[]expr.Any) {
		var exprs []expr.Any
		for _, p := range parts {
			exprs = append(exprs, p...)
		}
		conn.AddRule(&nftables.Rule{Table: tab, Chain: ch, Exprs: exprs})
	}
	tcp, udp := l4protoIs(unix.IPPROTO_TCP), l4protoIs(unix.IPPROTO_UDP)
	// One rule per web mark (a mark set would print byte-swapped); the
	// two rules share the set, so the client's HTTP and TLS flows count
	// together.
	webSYN := func(mark uint32) []expr.Any {
		return join(tcp, markIs(mark), tcpSYNOnly(), ctStatusHasDNAT())
	}
	web := []uint32{cfg.Marks.HTTP, cfg.Marks.TLS}
	reset := []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}}
	drop := verdict(expr.VerdictDrop)
	for _, f := range families {
		set := func(name string, rate bool) *nftables.Set {
			s := &nftables.Set{Table: tab, Name: name + f.suffix, KeyType: f.keyType, Dynamic: true, Size: limitSetSize}
			if rate {
				s.HasTimeout, s.Timeout = true, rateSetTimeout
			}
			errs = append(errs, conn.AddSet(s, nil))
			return s
		}
		fam := join(nfprotoIs(f.nfproto))
		if l.NewFlowsPerSecond != 0 {
			s := set("new_flows", true)
			for _, m := range web {
				add(webSYN(m), fam, f.client(), meter(s, unix.NFT_DYNSET_OP_UPDATE, rateOver(l.NewFlowsPerSecond, l.NewFlowsBurst)),
					countInto(RefusedNewFlowsPerClient), reset)
			}
		}
		if l.FlowsPerClient != 0 {
			s := set("flows", false)
			for _, m := range web {
				add(webSYN(m), fam, f.client(), meter(s, unix.NFT_DYNSET_OP_ADD, countOver(l.FlowsPerClient)),
					countInto(RefusedFlowsPerClient), reset)
			}
		}
		if l.DNSTCPPerClient != 0 {
			s := set("dns_tcp", false)
			add(tcp, markIs(cfg.Marks.DNS), tcpSYNOnly(), fam, f.client(), meter(s, unix.NFT_DYNSET_OP_ADD, countOver(l.DNSTCPPerClient)),
				countInto(RefusedDNSTCPPerClient), reset)
		}
		if l.DNSQueriesPerSecond != 0 {
			s := set("dns_queries", true)
			add(udp, markIs(cfg.Marks.DNS), fam, f.client(), meter(s, unix.NFT_DYNSET_OP_UPDATE, rateOver(l.DNSQueriesPerSecond, l.DNSQueriesBurst)),
				countInto(RefusedDNSQueriesPerClient), drop)
		}
	}
	return errors.Join(errs...)
}

func join(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// meter adds (or updates) the client key in register 1 to set s and
// matches when the element's expression e does ("add @s { key e }").
func meter(s *nftables.Set, op uint32, e expr.Any) []expr.Any {
	return []expr.Any{&expr.Dynset{SrcRegKey: 1, SetName: s.Name, SetID: s.ID, Operation: op, Exprs: []expr.Any{e}}}
}

// countOver matches when the element already has more than n live
// connections, the current one included ("ct count over n").
func countOver(n uint32) expr.Any {
	return &expr.Connlimit{Count: n, Flags: expr.NFT_CONNLIMIT_F_INV}
}

// rateOver matches packets beyond rate per second with a bucket of burst
// ("limit rate over rate/second burst burst packets").
func rateOver(rate, burst uint32) expr.Any {
	return &expr.Limit{Type: expr.LimitTypePkts, Rate: uint64(rate), Unit: expr.LimitTimeSecond, Burst: burst, Over: true}
}

func countInto(name string) []expr.Any {
	return []expr.Any{&expr.Objref{Type: unix.NFT_OBJECT_COUNTER, Name: name}}
}

func nfprotoIs(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

// LimitRefusals returns, per refusal reason (the Refused* names), how many
// packets the kernel refused: TCP SYNs answered with a reset, DNS
// datagrams dropped. Every reason is present, 0 when its limit is off.
func (t *Table) LimitRefusals() (map[string]uint64, error) {
	out := make(map[string]uint64, len(refusalCounters))
	for _, n := range refusalCounters {
		out[n] = 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || !t.cfg.Limits.any() {
		return out, nil
	}
	objs, err := t.conn.GetObjects(&nftables.Table{Name: t.name, Family: nftables.TableFamilyINet})
	if err != nil {
		return out, fmt.Errorf("read limit counters: %w", err)
	}
	for _, o := range objs {
		if c, ok := o.(*nftables.CounterObj); ok {
			if _, known := out[c.Name]; known {
				out[c.Name] = c.Packets
			}
		}
	}
	return out, nil
}

package firewall

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/cloudsteer/cloudsteer/dataplane/quicgate"
)

// Conntrack bits the rules test (include/uapi/linux/netfilter/nf_conntrack_common.h).
// ifaceSetName names the set of interfaces the listeners are reachable from.
const ifaceSetName = "listener_ifaces"

const (
	ctStatusDNAT = 1 << 5 // IPS_DST_NAT
	ctStateNew   = 1 << 3 // NF_CT_STATE_BIT(IP_CT_NEW)
)

// build queues the whole table into conn's batch: the table, its three
// base chains, the interface set, the anonymous port sets and the rules,
// then the limits (limits.go) and the reach chain (reach.go).
// Nothing is sent.
//
// Layout (nft syntax; M_* are cfg.Marks, P_* cfg ports, LAN the interfaces):
//
//	table inet NAME { flags owner
//	 chain prerouting { type nat hook prerouting priority dstnat; policy accept;
//	  meta mark M_DNS meta l4proto udp counter redirect to :P_DNS
//	  meta mark M_DNS meta l4proto tcp counter redirect to :P_DNS
//	  meta mark M_HTTP fib daddr type local counter return
//	  meta mark M_HTTP meta l4proto tcp tcp flags & (syn|ack) == syn counter redirect to :P_HTTP
//	  meta mark M_TLS fib daddr type local counter return
//	  meta mark M_TLS meta l4proto tcp tcp flags & (syn|ack) == syn counter redirect to :P_TLS }
//	 chain forward { type filter hook forward priority filter; policy accept;
//	  meta mark M_QUIC meta l4proto udp ct state new counter reject with icmpx port-unreachable
//	  meta mark M_DOT meta l4proto tcp tcp flags & (syn|ack) == syn counter reject with tcp reset   (M_DOT set)
//	  meta mark M_DOT meta l4proto udp ct state new counter reject with icmpx port-unreachable }
//	 set listener_ifaces { type ifname; elements = { LAN..., "lo" } }
//	 chain input { type filter hook input priority filter; policy accept;
//	  meta l4proto tcp th dport { P_HTTP, P_TLS, P_DNS, GUARD... } iifname != @listener_ifaces counter drop
//	  meta l4proto udp th dport P_DNS iifname != @listener_ifaces counter drop
//	  meta l4proto tcp th dport { P_HTTP, P_TLS, P_DNS } ct status dnat counter accept
//	  meta l4proto udp th dport P_DNS ct status dnat counter accept
//	  meta l4proto tcp th dport P_DNS meta mark M_DNS counter accept
//	  meta l4proto udp th dport P_DNS meta mark M_DNS counter accept
//	  meta l4proto tcp th dport { P_HTTP, P_TLS, P_DNS } counter drop
//	  meta l4proto udp th dport P_DNS counter drop } }
//
// The nat chain sees the first packet conntrack tracks of each flow. The
// HTTP and TLS redirects take only a SYN, so a flow conntrack picks up
// mid-stream (it was untracked, see untrack.go, or started before the
// table) keeps going where it went instead of being cut by a redirect.
//
// The DNAT check accepts rather than drops, so a packet without conntrack
// (untracked, invalid) falls through to the drop. The DNS mark accepts
// cover the null binding: when DNSPort is 53 and a client asks the
// gateway's primary LAN address, redirect leaves the tuple unchanged and
// conntrack sets no DNAT bit, yet the flow went through the redirect rule.
func build(conn *nftables.Conn, cfg Config) error {
	tab := conn.AddTable(&nftables.Table{
		Name:   cfg.TableName,
		Family: nftables.TableFamilyINet,
		Flags:  nftables.TableFlagOwner,
	})
	accept := nftables.ChainPolicyAccept
	pre := conn.AddChain(&nftables.Chain{
		Name: "prerouting", Table: tab, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest, Policy: &accept,
	})
	fwd := conn.AddChain(&nftables.Chain{
		Name: "forward", Table: tab, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept,
	})
	in := conn.AddChain(&nftables.Chain{
		Name: "input", Table: tab, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept,
	})
	add := func(c *nftables.Chain, parts ...[]expr.Any) {
		var exprs []expr.Any
		for _, p := range parts {
			exprs = append(exprs, p...)
		}
		conn.AddRule(&nftables.Rule{Table: tab, Chain: c, Exprs: exprs})
	}
	m := cfg.Marks

	// prerouting: redirect the classifier's flows to the local listeners.
	add(pre, markIs(m.DNS), l4protoIs(unix.IPPROTO_UDP), counter(), redirectTo(cfg.DNSPort))
	add(pre, markIs(m.DNS), l4protoIs(unix.IPPROTO_TCP), counter(), redirectTo(cfg.DNSPort))
	add(pre, markIs(m.HTTP), fibDaddrLocal(), counter(), verdict(expr.VerdictReturn))
	add(pre, markIs(m.HTTP), l4protoIs(unix.IPPROTO_TCP), tcpSYNOnly(), counter(), redirectTo(cfg.HTTPPort))
	add(pre, markIs(m.TLS), fibDaddrLocal(), counter(), verdict(expr.VerdictReturn))
	add(pre, markIs(m.TLS), l4protoIs(unix.IPPROTO_TCP), tcpSYNOnly(), counter(), redirectTo(cfg.TLSPort))

	// forward: QUIC gets port unreachable (ICMP or ICMPv6) so browsers fall
	// back to TCP 443 at once; with the QUIC gate, new flows go to its
	// queue first and only bypass names to their addresses pass.
	var gateErr error
	if cfg.QUICGate != nil {
		rc := *cfg.QUICGate
		rc.MarkQUIC = m.QUIC
		gateErr = quicgate.AddRules(conn, tab, fwd, rc)
	} else {
		add(fwd, markIs(m.QUIC), l4protoIs(unix.IPPROTO_UDP), ctStateIsNew(), counter(),
			[]expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH}})
	}
	// forward: DNS over TLS (TCP 853) gets a reset and DNS over QUIC (UDP
	// 853) port unreachable, so devices fall back to plain DNS, which the
	// gateway answers. Bypass destinations are not marked. The TCP rule
	// takes the SYN rather than conntrack's "new": unsteered LAN TCP may
	// be untracked (untrack.go).
	if m.DoT != 0 {
		add(fwd, markIs(m.DoT), l4protoIs(unix.IPPROTO_TCP), tcpSYNOnly(), counter(),
			[]expr.Any{&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}})
		add(fwd, markIs(m.DoT), l4protoIs(unix.IPPROTO_UDP), ctStateIsNew(), counter(),
			[]expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH}})
	}

	// input: the listener guard. The interface set is a named one: the
	// library marks anonymous sets big-endian, which makes nft print
	// interface names as "". Port sets are anonymous, one per rule, as an
	// anonymous set is bound to the one rule that uses it.
	ifSet, setErr := addIfnameSet(conn, tab, ifaceSetName,
		append(append([]string{}, cfg.LANInterfaces...), "lo"))
	notFromLANOrLo := func() []expr.Any { return iifnameNotIn(ifSet) }
	dportAmong := func(ports ...uint16) []expr.Any {
		s, err := addPortSet(conn, tab, ports)
		if err != nil && setErr == nil {
			setErr = err
		}
		return dportIn(s)
	}
	steered := []uint16{cfg.HTTPPort, cfg.TLSPort, cfg.DNSPort}
	guarded := append(append([]uint16{}, steered...), cfg.GuardTCPPorts...)
	tcp, udp := l4protoIs(unix.IPPROTO_TCP), l4protoIs(unix.IPPROTO_UDP)
	drop, acc := verdict(expr.VerdictDrop), verdict(expr.VerdictAccept)
	add(in, tcp, dportAmong(guarded...), notFromLANOrLo(), counter(), drop)
	add(in, udp, dportIs(cfg.DNSPort), notFromLANOrLo(), counter(), drop)
	add(in, tcp, dportAmong(steered...), ctStatusHasDNAT(), counter(), acc)
	add(in, udp, dportIs(cfg.DNSPort), ctStatusHasDNAT(), counter(), acc)
	add(in, tcp, dportIs(cfg.DNSPort), markIs(m.DNS), counter(), acc)
	add(in, udp, dportIs(cfg.DNSPort), markIs(m.DNS), counter(), acc)
	add(in, tcp, dportAmong(steered...), counter(), drop)
	add(in, udp, dportIs(cfg.DNSPort), counter(), drop)
	if gateErr != nil && setErr == nil {
		setErr = gateErr
	}
	if err := addLimits(conn, tab, cfg); err != nil && setErr == nil {
		setErr = err
	}
	if err := addReach(conn, tab, cfg); err != nil && setErr == nil {
		setErr = err
	}
	return setErr
}

func markIs(mark uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(mark)},
	}
}

func l4protoIs(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

// loadDport loads the transport header's destination port (TCP and UDP
// alike: bytes 2-3), i.e. nft's "th dport".
func loadDport() expr.Any {
	return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}
}

func dportIs(port uint16) []expr.Any {
	return []expr.Any{
		loadDport(),
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

func dportIn(set *nftables.Set) []expr.Any {
	return []expr.Any{
		loadDport(),
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
	}
}

func iifnameNotIn(set *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID, Invert: true},
	}
}

// fibDaddrLocal matches packets whose destination is one of this host's
// own addresses ("fib daddr type local").
func fibDaddrLocal() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}
}

func ctStatusHasDNAT() []expr.Any { return ctBits(expr.CtKeySTATUS, ctStatusDNAT) }

func ctStateIsNew() []expr.Any { return ctBits(expr.CtKeySTATE, ctStateNew) }

// ctBits matches when any of mask's bits is set in the conntrack key.
func ctBits(key expr.CtKey, mask uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: key, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

func redirectTo(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
		&expr.Redir{RegisterProtoMin: 1, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED},
	}
}

// tcpSYNOnly matches a TCP segment with SYN set and ACK clear, the first
// of a connection ("tcp flags & (syn|ack) == syn").
func tcpSYNOnly() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x12}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
	}
}

func counter() []expr.Any { return []expr.Any{&expr.Counter{}} }

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

// addIfnameSet adds a named set of interface names (stored as nft
// stores them: NUL-padded to IFNAMSIZ, host byte order).
func addIfnameSet(conn *nftables.Conn, tab *nftables.Table, name string, names []string) (*nftables.Set, error) {
	elems := make([]nftables.SetElement, len(names))
	for i, n := range names {
		key := make([]byte, ifNameSize)
		copy(key, n)
		elems[i] = nftables.SetElement{Key: key}
	}
	s := &nftables.Set{Table: tab, Name: name, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian}
	if err := conn.AddSet(s, elems); err != nil {
		return s, fmt.Errorf("add interface set: %w", err)
	}
	return s, nil
}

func addPortSet(conn *nftables.Conn, tab *nftables.Table, ports []uint16) (*nftables.Set, error) {
	elems := make([]nftables.SetElement, len(ports))
	for i, p := range ports {
		elems[i] = nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(p)}
	}
	s := &nftables.Set{Table: tab, Anonymous: true, Constant: true, KeyType: nftables.TypeInetService}
	if err := conn.AddSet(s, elems); err != nil {
		return s, fmt.Errorf("add port set: %w", err)
	}
	return s, nil
}

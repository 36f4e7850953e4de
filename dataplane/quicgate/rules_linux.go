package quicgate

import (
	"fmt"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/cloudsteer/cloudsteer/dataplane/nfqueue"
)

// RuleConfig is what AddRules needs.
type RuleConfig struct {
	MarkQUIC       uint32 // the classifier's mark for LAN UDP 443 (M_QUIC)
	MarkOK, MarkNo uint32 // the verdict marks the gate re-injects with
	// CtMask and CtOK: an accepted flow gets ct mark (mark & ^CtMask) | CtOK.
	CtMask, CtOK uint32
	Queue        uint16
	// Compat queues with the xt NFQUEUE target through nft_compat
	// (see nfqueue.Exprs).
	Compat bool
	// RejectTimeout is how long a rejected flow's key stays in the
	// reject sets (30 s when 0).
	RejectTimeout time.Duration
}

// Names of the reject sets AddRules creates.
const (
	SetReject4 = "quic_no4"
	SetReject6 = "quic_no6"
)

// AddRules queues, into c's batch, the gate's sets and rules at the end of
// chain fwd (a filter chain at the forward hook) of the inet table tab, in
// place of the plain QUIC reject (nft syntax):
//
//	set quic_no4 { type ipv4_addr . inet_service . ipv4_addr; flags dynamic,timeout; timeout 30s; }
//	set quic_no6 { type ipv6_addr . inet_service . ipv6_addr; flags dynamic,timeout; timeout 30s; }
//	meta mark M_QUIC meta l4proto udp ct mark & CTM == CT_OK counter accept
//	meta mark M_QUIC meta nfproto ipv4 ip saddr . udp sport . ip daddr @quic_no4 counter reject with icmpx port-unreachable
//	meta mark M_QUIC meta nfproto ipv6 ip6 saddr . udp sport . ip6 daddr @quic_no6 counter reject with icmpx port-unreachable
//	meta mark M_OK meta l4proto udp ct mark set ct mark & ~CTM | CT_OK counter accept
//	meta mark M_NO meta nfproto ipv4 add @quic_no4 { ip saddr . udp sport . ip daddr } counter reject with icmpx port-unreachable
//	meta mark M_NO meta nfproto ipv6 add @quic_no6 { ip6 saddr . udp sport . ip6 daddr } counter reject with icmpx port-unreachable
//	meta mark M_QUIC meta l4proto udp ct state new counter queue num Q
//
// An accept lives in the conntrack mark; a reject in the sets, because a
// rejected packet never confirms its conntrack entry. Nothing is sent.
func AddRules(c *nftables.Conn, tab *nftables.Table, fwd *nftables.Chain, cfg RuleConfig) error {
	timeout := cfg.RejectTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	sets := map[bool]*nftables.Set{}
	for _, v6 := range []bool{false, true} {
		name, addr := SetReject4, nftables.TypeIPAddr
		if v6 {
			name, addr = SetReject6, nftables.TypeIP6Addr
		}
		s := &nftables.Set{
			Table: tab, Name: name, KeyType: nftables.MustConcatSetType(addr, nftables.TypeInetService, addr),
			Concatenation: true, HasTimeout: true, Timeout: timeout, Dynamic: true,
		}
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("add set %s: %w", name, err)
		}
		sets[v6] = s
	}
	add := func(parts ...[]expr.Any) {
		var exprs []expr.Any
		for _, p := range parts {
			exprs = append(exprs, p...)
		}
		c.AddRule(&nftables.Rule{Table: tab, Chain: fwd, Exprs: exprs})
	}
	reject := []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH}}
	counter := []expr.Any{&expr.Counter{}}
	udp := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
	}
	acc := []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}

	add(markIs(cfg.MarkQUIC), udp, ctMarkIs(cfg.CtMask, cfg.CtOK), counter, acc)
	for _, v6 := range []bool{false, true} {
		add(markIs(cfg.MarkQUIC), nfproto(v6), udp, flowKeyToReg1(v6),
			[]expr.Any{&expr.Lookup{SourceRegister: 1, SetName: sets[v6].Name, SetID: sets[v6].ID}}, counter, reject)
	}
	add(markIs(cfg.MarkOK), udp, []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^cfg.CtMask), Xor: binaryutil.NativeEndian.PutUint32(cfg.CtOK)},
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true},
	}, counter, acc)
	for _, v6 := range []bool{false, true} {
		add(markIs(cfg.MarkNo), nfproto(v6), udp, flowKeyToReg1(v6), []expr.Any{&expr.Dynset{
			SrcRegKey: 1, SetName: sets[v6].Name, SetID: sets[v6].ID, Operation: uint32(unix.NFT_DYNSET_OP_ADD),
		}}, counter, reject)
	}
	add(markIs(cfg.MarkQUIC), udp, []expr.Any{
		&expr.Ct{Register: 1, SourceRegister: false, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
	}, counter, nfqueue.Exprs(cfg.Queue, cfg.Compat))
	return nil
}

func markIs(mark uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(mark)},
	}
}

func ctMarkIs(mask, value uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(value)},
	}
}

func nfproto(v6 bool) []expr.Any {
	p := byte(unix.NFPROTO_IPV4)
	if v6 {
		p = unix.NFPROTO_IPV6
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

// flowKeyToReg1 loads saddr . udp sport . daddr into the 32-bit registers
// from NFT_REG32_00 (which is register 1), each field 4-byte aligned.
func flowKeyToReg1(v6 bool) []expr.Any {
	const reg32 = 8 // NFT_REG32_00
	saddr, daddr, alen := uint32(12), uint32(16), uint32(4)
	if v6 {
		saddr, daddr, alen = 8, 24, 16
	}
	words := alen / 4
	return []expr.Any{
		&expr.Payload{DestRegister: reg32, Base: expr.PayloadBaseNetworkHeader, Offset: saddr, Len: alen},
		&expr.Payload{DestRegister: reg32 + words, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
		&expr.Payload{DestRegister: reg32 + words + 1, Base: expr.PayloadBaseNetworkHeader, Offset: daddr, Len: alen},
	}
}

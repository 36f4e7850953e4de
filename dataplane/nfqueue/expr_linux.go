package nfqueue

import (
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
)

// Exprs returns the nftables expressions that queue a packet to queue num
// (no bypass flag: while nobody has the queue bound, the kernel drops the
// packet). With compat false it is nft's own queue statement (nft_queue,
// CONFIG_NFT_QUEUE); with compat true it is the xtables NFQUEUE target
// (revision 3) through nft_compat (CONFIG_NFT_COMPAT and
// CONFIG_NETFILTER_XT_TARGET_NFQUEUE), for kernels built without
// nft_queue, such as the test machine's: same queue, same verdicts.
func Exprs(num uint16, compat bool) []expr.Any {
	if !compat {
		return []expr.Any{&expr.Queue{Num: num}}
	}
	// struct xt_NFQ_info_v3 { __u16 queuenum; __u16 queues_total; __u16 flags; },
	// host byte order, padded to XT_ALIGN (8).
	info := xt.Unknown(make([]byte, 8))
	copy(info[0:2], binaryutil.NativeEndian.PutUint16(num))
	copy(info[2:4], binaryutil.NativeEndian.PutUint16(1))
	return []expr.Any{&expr.Target{Name: "NFQUEUE", Rev: 3, Info: &info}}
}

// Available reports whether the kernel takes Exprs(num, compat) in an inet
// table: it adds and deletes a throwaway table (of the calling thread's
// namespace).
func Available(compat bool) bool {
	c, err := nftables.New()
	if err != nil {
		return false
	}
	tab := c.AddTable(&nftables.Table{Name: "cloudsteer_nfq_probe", Family: nftables.TableFamilyINet, Flags: nftables.TableFlagOwner})
	ch := c.AddChain(&nftables.Chain{Name: "probe", Table: tab, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter})
	c.AddRule(&nftables.Rule{Table: tab, Chain: ch, Exprs: Exprs(0, compat)})
	if err := c.Flush(); err != nil {
		return false
	}
	c.DelTable(tab)
	_ = c.Flush()
	return true
}

package firewall

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Untracking unsteered TCP.
//
// The redirect rules need connection tracking, and a nat chain turns it on
// for every packet in the namespace: without more, cloudsteer would make
// the office's bypassed and unsteered traffic pay for conntrack even on a
// router that tracks nothing. While this table is the only netfilter
// ruleset in the namespace (no other nft table of any family, no legacy
// iptables table) and no IPsec policy exists, two raw-priority chains keep TCP that cloudsteer does
// not steer out of conntrack (LAN is cfg.LANInterfaces plus lo, the
// listener_ifaces set):
//
//	chain untrack_prerouting { type filter hook prerouting priority raw; policy accept;
//	 meta mark M_UNTRACK counter notrack
//	 iifname != @listener_ifaces meta l4proto tcp counter notrack
//	 iifname @listener_ifaces meta l4proto tcp th dport != { 80, 443, 53 } counter notrack }
//	chain untrack_output { type filter hook output priority raw; policy accept;
//	 meta l4proto tcp th sport != { P_HTTP, P_TLS, P_DNS } counter notrack }
//
// Untracked are: every packet of a web TCP flow that started bypassed or
// paused (the classifier remembers the flow from its SYN and marks all of
// it M_UNTRACK, see bpf/steer.c), TCP from the LAN to other ports, all TCP
// from the WAN side, and the gateway's TCP not sent from a listener.
// Tracked stay: web TCP flows that started steered, whatever their marks
// say later (conntrack keeps their redirect), DNS over TCP, the gateway's
// replies from its listeners (conntrack un-NATs them), and all UDP, so DNS
// redirects and the QUIC reject keep their meaning.
//
// A flow can still be picked up by conntrack mid-stream (the classifier's
// flow memory is full, or untracking was off when it started); the HTTP
// and TLS redirects only take a SYN, so such a flow keeps going where it
// went.
//
// The watcher rechecks every untrackPoll: when another ruleset appears
// (a NAT or a stateful firewall needs every flow tracked) or an IPsec
// policy (the dataplane's fast path, which follows this state, would
// route around it) the chains are deleted at once; when it has been gone
// for untrackSettle they come back (a firewall restarted as stop, then
// start, leaves no flow untracked in between), but not while conntrack
// still holds a live TCP flow whose source was translated (masqueraded
// by the ruleset that went away): notrack would take its packets past
// the NAT binding that keeps it going. cloudsteer's own nat chain keeps
// the kernel's NAT hooks registered, so such a flow outlives the ruleset
// that made it; untracking waits for it to end.
//
// Flows that started untracked and outlive the switch are picked up by
// conntrack mid-stream (nf_conntrack_tcp_loose, on by default) at their
// next packet. A masquerade would then rewrite the source of a flow the
// origin knows by the client's address, and the origin would reset it.
// So when untracking turns off while cloudsteer runs, one more chain
// gives such pickups from the LAN a null source NAT before any srcnat
// chain of the other ruleset (the first NAT binding of a conntrack entry
// is final), and the flow keeps its addresses:
//
//	chain pickup_postrouting { type nat hook postrouting priority srcnat - 1; policy accept;
//	 iifname @listener_ifaces meta l4proto tcp tcp flags ! syn meta nfproto ipv4 counter snat ip to ip saddr
//	 iifname @listener_ifaces meta l4proto tcp tcp flags ! syn meta nfproto ipv6 counter snat ip6 to ip6 saddr }
//
// A nat chain sees only the first packet of a conntrack entry, so this
// touches only TCP that conntrack meets mid-stream: flows from before the
// switch (and, rarely, one whose entry conntrack lost, which a fresh
// masquerade would not save either). It stays until untracking comes
// back. A stateful filter of the other ruleset still decides whether a
// picked-up flow passes: LAN→WAN pickups are new flows from the LAN,
// which an office router accepts, and the replies are then established;
// a packet from the WAN side first is a new inbound flow, which it drops
// until the LAN side next sends (an ACK, a window update), as it would
// for any flow it had not seen start.

// untrackPoll is how often the watcher looks for other rulesets.
const untrackPoll = time.Second

// untrackSettle is how long the namespace must have been without another
// ruleset before untracking comes back.
const untrackSettle = 3 * untrackPoll

const (
	untrackPreName = "untrack_prerouting"
	untrackOutName = "untrack_output"
	pickupName     = "pickup_postrouting"
	// pickupPriority is just before srcnat (100), where masquerades are.
	pickupPriority = 99
)

// OnUntrackChange makes fn hear every change of Untracking, starting with
// a call with the current state before it returns; nil stops the calls.
// Calls never overlap. The dataplane's fast path (dataplane/steer) follows
// it: when nothing but cloudsteer needs netfilter, the stack has nothing
// to do for unsteered TCP but route it.
func (t *Table) OnUntrackChange(fn func(untracking bool)) {
	t.cbMu.Lock()
	defer t.cbMu.Unlock()
	t.onChange = fn
	if fn != nil {
		fn(t.Untracking())
	}
}

// tellUntrack passes the current state to the OnUntrackChange function.
func (t *Table) tellUntrack() {
	t.cbMu.Lock()
	defer t.cbMu.Unlock()
	if t.onChange != nil {
		t.onChange(t.Untracking())
	}
}

// Untracking reports whether unsteered TCP is kept out of conntrack now.
func (t *Table) Untracking() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.untracking
}

// untrackChains returns the two chains (for adding or deleting).
func untrackChains(tab *nftables.Table) (pre, out *nftables.Chain) {
	accept := nftables.ChainPolicyAccept
	pre = &nftables.Chain{
		Name: untrackPreName, Table: tab, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw, Policy: &accept,
	}
	out = &nftables.Chain{
		Name: untrackOutName, Table: tab, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityRaw, Policy: &accept,
	}
	return pre, out
}

// addUntrack queues the two chains and their rules into conn's batch.
func addUntrack(conn *nftables.Conn, tab *nftables.Table, cfg Config) error {
	pre, out := untrackChains(tab)
	conn.AddChain(pre)
	conn.AddChain(out)
	lan := &nftables.Set{Table: tab, Name: ifaceSetName}
	rule := func(c *nftables.Chain, parts ...[]expr.Any) {
		exprs := []expr.Any{}
		for _, p := range parts {
			exprs = append(exprs, p...)
		}
		exprs = append(exprs, &expr.Counter{}, &expr.Notrack{})
		conn.AddRule(&nftables.Rule{Table: tab, Chain: c, Exprs: exprs})
	}
	iifLAN := func(invert bool) []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Lookup{SourceRegister: 1, SetName: lan.Name, Invert: invert},
		}
	}
	portNotIn := func(offset uint32, ports []uint16) ([]expr.Any, error) {
		s, err := addPortSet(conn, tab, ports)
		if err != nil {
			return nil, err
		}
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: offset, Len: 2},
			&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID, Invert: true},
		}, nil
	}
	tcp := l4protoIs(unix.IPPROTO_TCP)

	rule(pre, markIs(cfg.Marks.Untrack))
	rule(pre, iifLAN(true), tcp)
	notWeb, err := portNotIn(2, []uint16{80, 443, 53})
	if err != nil {
		return err
	}
	rule(pre, iifLAN(false), tcp, notWeb)
	notListener, err := portNotIn(0, []uint16{cfg.HTTPPort, cfg.TLSPort, cfg.DNSPort})
	if err != nil {
		return err
	}
	rule(out, tcp, notListener)
	return nil
}

// otherRuleset names a netfilter ruleset in the namespace besides this
// table, or returns "" when there is none.
func (t *Table) otherRuleset() (string, error) {
	tabs, err := t.conn.ListTables()
	if err != nil {
		return "", fmt.Errorf("list nft tables: %w", err)
	}
	for _, tab := range tabs {
		if tab.Family == nftables.TableFamilyINet && tab.Name == t.name {
			continue
		}
		return fmt.Sprintf("nft table %s %s", familyName(tab.Family), tab.Name), nil
	}
	if t.xfrm != nil {
		pols, err := t.xfrm.XfrmPolicyList(netlink.FAMILY_ALL)
		if err != nil && !errors.Is(err, unix.EPROTONOSUPPORT) {
			return "", fmt.Errorf("list IPsec policies: %w", err)
		}
		if len(pols) > 0 {
			return fmt.Sprintf("IPsec policies (%d)", len(pols)), nil
		}
	}
	if t.procNet == nil {
		return "", nil
	}
	for _, f := range []string{"ip_tables_names", "ip6_tables_names"} {
		names, err := readAt(t.procNet, f)
		if errors.Is(err, unix.EACCES) {
			// Root's only (0440): a daemon run as its own user cannot
			// tell, so it assumes legacy tables may be there. The file
			// exists only where the ip_tables module is loaded or built
			// in; where it is a module nothing loaded, this never comes up.
			return fmt.Sprintf("iptables-legacy tables unknown (/proc/net/%s is readable by root only)", f), nil
		}
		if err != nil {
			return "", err
		}
		if names = strings.TrimSpace(names); names != "" {
			return fmt.Sprintf("iptables-legacy tables (%s: %s)", f, strings.ReplaceAll(names, "\n", " ")), nil
		}
	}
	return "", nil
}

// readAt reads the file name under the directory dir; a missing file
// (the module was never loaded) reads as empty.
func readAt(dir *os.File, name string) (string, error) {
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("open /proc/net/%s: %w", name, err) // wraps EACCES for otherRuleset
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return "", fmt.Errorf("read /proc/net/%s: %w", name, err)
	}
	return string(b), nil
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyARP:
		return "arp"
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyNetdev:
		return "netdev"
	}
	return fmt.Sprintf("family-%d", f)
}

// syncUntrack adds or deletes the untrack chains to match whether another
// ruleset is present (deleting at once, adding after untrackSettle alone),
// and reports whether it changed anything. Turning untracking off also
// adds the pickup chain; turning it on deletes that. It is a no-op after
// Close.
func (t *Table) syncUntrack() (changed bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false, nil
	}
	other, err := t.otherRuleset()
	if err != nil {
		return false, err
	}
	want := other == ""
	now := time.Now()
	if !want {
		t.aloneSince = time.Time{}
	} else if t.aloneSince.IsZero() {
		t.aloneSince = now
	}
	if want == t.untracking {
		return false, nil
	}
	if want && now.Sub(t.aloneSince) < untrackSettle {
		return false, nil
	}
	if want {
		n, err := t.translatedFlows()
		if err != nil {
			return false, err
		}
		if n > 0 {
			if !t.waitLogged {
				t.log.Info("no other netfilter ruleset, but translated flows are still live: untracking waits for them to end", "flows", n)
				t.waitLogged = true
			}
			return false, nil
		}
		t.waitLogged = false
	}
	tab := &nftables.Table{Name: t.name, Family: nftables.TableFamilyINet}
	if want {
		if err := addUntrack(t.conn, tab, t.cfg); err != nil {
			return false, err
		}
		if t.pickup {
			pick := pickupChain(tab)
			t.conn.FlushChain(pick)
			t.conn.DelChain(pick)
		}
	} else {
		pre, out := untrackChains(tab)
		t.conn.FlushChain(pre)
		t.conn.FlushChain(out)
		t.conn.DelChain(pre)
		t.conn.DelChain(out)
		addPickup(t.conn, tab)
	}
	if err := t.conn.Flush(); err != nil {
		return false, fmt.Errorf("update untrack chains: %w", err)
	}
	t.untracking = want
	t.pickup = !want
	if want {
		t.log.Info("no other netfilter ruleset: unsteered TCP is not tracked")
	} else {
		t.log.Info("another netfilter ruleset appeared: tracking every flow; flows that started untracked keep their addresses", "ruleset", other)
	}
	return true, nil
}

// translatedFlows counts the live TCP flows in conntrack whose source
// was translated (SNAT, masquerade); 0 without a conntrack handle.
func (t *Table) translatedFlows() (int, error) {
	if t.ct == nil {
		return 0, nil
	}
	n := 0
	for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		flows, err := t.ct.ConntrackTableList(netlink.ConntrackTable, fam)
		if err != nil {
			return 0, fmt.Errorf("list conntrack flows: %w", err)
		}
		for _, f := range flows {
			if f.Forward.Protocol != unix.IPPROTO_TCP {
				continue
			}
			if p, ok := f.ProtoInfo.(*netlink.ProtoInfoTCP); ok && (p.State == 0 || p.State >= tcpConntrackTimeWait && p.State != tcpConntrackSynSent2) {
				continue // over (TIME_WAIT, CLOSE) or unknown
			}
			if !f.Reverse.DstIP.Equal(f.Forward.SrcIP) || f.Reverse.DstPort != f.Forward.SrcPort {
				n++
			}
		}
	}
	return n, nil
}

// TCP conntrack states (include/uapi/linux/netfilter/nf_conntrack_tcp.h).
const (
	tcpConntrackTimeWait = 7
	tcpConntrackSynSent2 = 9
)

// pickupChain returns the pickup chain (for adding or deleting).
func pickupChain(tab *nftables.Table) *nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return &nftables.Chain{
		Name: pickupName, Table: tab, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityRef(pickupPriority), Policy: &accept,
	}
}

// addPickup queues the pickup chain and its two rules (see above).
func addPickup(conn *nftables.Conn, tab *nftables.Table) {
	ch := conn.AddChain(pickupChain(tab))
	for _, fam := range []struct {
		nfproto  byte
		off, len uint32
	}{{unix.NFPROTO_IPV4, 12, 4}, {unix.NFPROTO_IPV6, 8, 16}} {
		exprs := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Lookup{SourceRegister: 1, SetName: ifaceSetName},
		}
		exprs = append(exprs, l4protoIs(unix.IPPROTO_TCP)...)
		exprs = append(exprs,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x02}, Xor: []byte{0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0}},
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{fam.nfproto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: fam.off, Len: fam.len},
			&expr.Counter{},
			&expr.NAT{Type: expr.NATTypeSourceNAT, Family: uint32(fam.nfproto), RegAddrMin: 1, RegAddrMax: 1},
		)
		conn.AddRule(&nftables.Rule{Table: tab, Chain: ch, Exprs: exprs})
	}
}

// watchUntrack runs syncUntrack every untrackPoll until stop closes.
func (t *Table) watchUntrack(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(untrackPoll)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		changed, err := t.syncUntrack()
		if err != nil {
			if !failing {
				t.log.Warn("check for other netfilter rulesets", "err", err)
			}
			failing = true
			continue
		}
		failing = false
		if changed {
			t.tellUntrack()
		}
	}
}

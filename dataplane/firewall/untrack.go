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
// route around it) the chains are deleted; when it goes away they come
// back. Flows started untracked
// before a NAT appeared are not NATed.

// untrackPoll is how often the watcher looks for other rulesets.
const untrackPoll = time.Second

const (
	untrackPreName = "untrack_prerouting"
	untrackOutName = "untrack_output"
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
// ruleset is present, and reports whether it changed anything. It is a
// no-op after Close.
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
	if want == t.untracking {
		return false, nil
	}
	tab := &nftables.Table{Name: t.name, Family: nftables.TableFamilyINet}
	if want {
		if err := addUntrack(t.conn, tab, t.cfg); err != nil {
			return false, err
		}
	} else {
		pre, out := untrackChains(tab)
		t.conn.FlushChain(pre)
		t.conn.FlushChain(out)
		t.conn.DelChain(pre)
		t.conn.DelChain(out)
	}
	if err := t.conn.Flush(); err != nil {
		return false, fmt.Errorf("update untrack chains: %w", err)
	}
	t.untracking = want
	if want {
		t.log.Info("no other netfilter ruleset: unsteered TCP is not tracked")
	} else {
		t.log.Info("another netfilter ruleset appeared: tracking every flow", "ruleset", other)
	}
	return true, nil
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

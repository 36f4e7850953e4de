package tcx

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Legacy mode, for kernels without TCX (before 6.6): each program is a
// direct-action cls_bpf filter on the ingress side of a clsact qdisc,
// made over netlink. A program's return value means the same there:
// TCX_NEXT is TC_ACT_UNSPEC, which goes on to the next filter (and, after
// the last one, to the stack); TC_ACT_REDIRECT and TC_ACT_SHOT are the
// same actions.
//
// Every filter cloudsteer makes has handle FilterHandle and a name that
// starts with FilterPrefix ("cloudsteer-classifier", ...): that is how a
// later start finds the filters a killed process left (and replaces them)
// and how `cloudsteer cleanup` removes them; a filter without both is
// never touched.
//
// Order is filter priority (lower runs first); the mapping from the TCX
// anchors used in TCX mode is fixed:
//
//	TCX anchor                      legacy priority
//	none (after what is there)      PrioLast  (0xc570): classifier, WAN forwarder
//	AfterProgram(p)                 p's filter priority + 1: the DNS answerer after the classifier (0xc571)
//	Head()                          PrioFirst (0xc56f)
//
// tc gives filters added without a priority 49152 (0xc000) and below, so
// those keep running before cloudsteer's, as programs already attached do
// in TCX mode.
//
// Unlike a TCX link, a filter outlives a killed process: the programs keep
// running with their maps until the next start replaces them or `cloudsteer
// cleanup` removes them. That is safe because of the owner lease (see
// lease.go): without a process renewing it, the programs only mark
// packets, and marks do nothing without cloudsteer's nftables table, which
// the kernel deletes with the process.
const (
	FilterPrefix        = "cloudsteer-"
	FilterHandle uint32 = 0x0c570001
	PrioFirst    uint16 = 0xc56f
	PrioLast     uint16 = 0xc570
)

// registry is what this process attached in legacy mode, over all Links:
// the clsact qdiscs it created (removed with its last filter, when no
// other filter is left on them) and the filters it holds (never taken
// for a dead process's).
var registry = struct {
	sync.Mutex
	qdiscs map[qdiscKey]*qdiscUse
	live   map[filterKey]bool
}{qdiscs: map[qdiscKey]*qdiscUse{}, live: map[filterKey]bool{}}

type qdiscKey struct {
	ns      string // netns.NsHandle.UniqueId
	ifindex int
}

type filterKey struct {
	qdiscKey
	prio uint16
}

type qdiscUse struct {
	created bool // by cloudsteer: this process, or a dead one that left only its filters on it
	filters int  // this process's filters on it
}

// nsLink is the netlink side of one network namespace: a handle bound to it
// (so detaching works from any thread) and its id.
type nsLink struct {
	ns netns.NsHandle
	h  *netlink.Handle
	id string
}

// openNS binds to the calling thread's network namespace.
func openNS() (*nsLink, error) {
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("open network namespace: %w", err)
	}
	// A socket made by this thread lives in this thread's namespace, and
	// stays bound to it whichever thread uses it later. NewHandleAt would
	// setns(2) into the namespace first, which needs CAP_SYS_ADMIN: the
	// packaged service has only CAP_NET_ADMIN and CAP_BPF.
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("open netlink socket: %w", err)
	}
	return &nsLink{ns: ns, h: h, id: ns.UniqueId()}, nil
}

func (n *nsLink) close() {
	n.h.Close()
	n.ns.Close()
}

// legacyFilter is one attached filter.
type legacyFilter struct {
	ifindex int
	prio    uint16
	progID  ebpf.ProgramID
}

func linkOf(ifindex int) netlink.Link {
	return &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}
}

// Ours reports whether f is a filter cloudsteer made, and returns it.
func Ours(f netlink.Filter) (*netlink.BpfFilter, bool) {
	b, ok := f.(*netlink.BpfFilter)
	if !ok || b.Handle != FilterHandle || !strings.HasPrefix(b.Name, FilterPrefix) {
		return nil, false
	}
	return b, true
}

// legacyAttach attaches prog as filter name at ingress of ifc.
func legacyAttach(n *nsLink, ifc *net.Interface, prog *ebpf.Program, name string, at Place) (*legacyFilter, error) {
	if !strings.HasPrefix(name, FilterPrefix) {
		return nil, fmt.Errorf("filter name %q does not start with %q", name, FilterPrefix)
	}
	info, err := prog.Info()
	if err != nil {
		return nil, fmt.Errorf("read program info: %w", err)
	}
	progID, _ := info.ID()

	registry.Lock()
	defer registry.Unlock()
	qk := qdiscKey{ns: n.id, ifindex: ifc.Index}
	use := registry.qdiscs[qk]
	if use == nil {
		created, err := ensureClsact(n, ifc.Index)
		if err != nil {
			return nil, err
		}
		use = &qdiscUse{created: created}
		registry.qdiscs[qk] = use
	}
	f, err := addFilter(n, ifc.Index, prog, progID, name, at)
	if err != nil {
		if use.filters == 0 {
			releaseQdisc(n, qk, use)
		}
		return nil, err
	}
	use.filters++
	registry.live[filterKey{qdiscKey: qk, prio: f.prio}] = true
	return f, nil
}

// addFilter works out the priority, removes stale cloudsteer filters in
// the way (same name, or same priority) and adds the filter.
func addFilter(n *nsLink, ifindex int, prog *ebpf.Program, progID ebpf.ProgramID, name string, at Place) (*legacyFilter, error) {
	filters, err := n.h.FilterList(linkOf(ifindex), netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		return nil, fmt.Errorf("list ingress filters: %w", err)
	}
	prio := PrioLast
	switch {
	case at.After != nil:
		after, err := at.After.Info()
		if err != nil {
			return nil, fmt.Errorf("read anchor program info: %w", err)
		}
		id, _ := after.ID()
		i := slices.IndexFunc(filters, func(f netlink.Filter) bool {
			b, ok := Ours(f)
			return ok && ebpf.ProgramID(b.Id) == id
		})
		if i < 0 {
			return nil, fmt.Errorf("the anchor program is not attached there: %w", unix.ENOENT)
		}
		prio = filters[i].Attrs().Priority + 1
	case at.First:
		prio = PrioFirst
	}
	for _, f := range filters {
		b, ok := Ours(f)
		if !ok || (b.Name != name && b.Priority != prio) {
			continue
		}
		if registry.live[filterKey{qdiscKey: qdiscKey{ns: n.id, ifindex: ifindex}, prio: b.Priority}] {
			if b.Priority == prio {
				return nil, fmt.Errorf("priority %#x already holds this process's %s: %w", prio, b.Name, unix.EEXIST)
			}
			continue
		}
		// A filter a killed cloudsteer left behind.
		if err := delFilter(n, ifindex, b.Priority); err != nil {
			return nil, fmt.Errorf("remove stale filter %s: %w", b.Name, err)
		}
	}
	bf := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    netlink.HANDLE_MIN_INGRESS,
			Handle:    FilterHandle,
			Priority:  prio,
			Protocol:  unix.ETH_P_ALL,
		},
		Fd:           prog.FD(),
		Name:         name,
		DirectAction: true,
	}
	if err := n.h.FilterAdd(bf); err != nil {
		return nil, fmt.Errorf("add cls_bpf filter %s at priority %#x: %w", name, prio, err)
	}
	return &legacyFilter{ifindex: ifindex, prio: prio, progID: progID}, nil
}

func delFilter(n *nsLink, ifindex int, prio uint16) error {
	return n.h.FilterDel(&netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    netlink.HANDLE_MIN_INGRESS,
			Handle:    FilterHandle,
			Priority:  prio,
			Protocol:  unix.ETH_P_ALL,
		},
		Fd: -1,
	})
}

// ensureClsact makes sure ifindex has a clsact (or ingress) qdisc and
// reports whether cloudsteer created it: now, or a dead cloudsteer whose
// filters are all that is on it.
func ensureClsact(n *nsLink, ifindex int) (created bool, err error) {
	q, err := findClsact(n, ifindex)
	if err != nil {
		return false, err
	}
	if q != nil {
		return onlyStale(n, ifindex, q), nil
	}
	err = n.h.QdiscAdd(&netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	})
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.EEXIST):
		return false, nil
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EOPNOTSUPP):
		return false, fmt.Errorf("add clsact qdisc: %w (kernel without CONFIG_NET_SCH_INGRESS?)", err)
	default:
		return false, fmt.Errorf("add clsact qdisc: %w", err)
	}
}

// findClsact returns the clsact or ingress qdisc of ifindex, or nil.
func findClsact(n *nsLink, ifindex int) (netlink.Qdisc, error) {
	qs, err := n.h.QdiscList(linkOf(ifindex))
	if err != nil {
		return nil, fmt.Errorf("list qdiscs: %w", err)
	}
	for _, q := range qs {
		a := q.Attrs()
		if a.LinkIndex == ifindex && a.Parent == netlink.HANDLE_CLSACT && (q.Type() == "clsact" || q.Type() == "ingress") {
			return q, nil
		}
	}
	return nil, nil
}

// qdiscFilters lists every filter on the qdisc q of ifindex: ingress, and
// egress for a clsact.
func qdiscFilters(n *nsLink, ifindex int, q netlink.Qdisc) ([]netlink.Filter, error) {
	parents := []uint32{netlink.HANDLE_MIN_INGRESS}
	if q.Type() == "clsact" {
		parents = append(parents, netlink.HANDLE_MIN_EGRESS)
	}
	var all []netlink.Filter
	for _, p := range parents {
		fs, err := n.h.FilterList(linkOf(ifindex), p)
		if err != nil {
			return nil, fmt.Errorf("list filters: %w", err)
		}
		all = append(all, fs...)
	}
	return all, nil
}

// onlyStale reports whether q holds filters and all of them are
// cloudsteer's from a process that is gone.
func onlyStale(n *nsLink, ifindex int, q netlink.Qdisc) bool {
	fs, err := qdiscFilters(n, ifindex, q)
	if err != nil || len(fs) == 0 || q.Type() != "clsact" {
		return false
	}
	for _, f := range fs {
		b, ok := Ours(f)
		if !ok || f.Attrs().Parent != netlink.HANDLE_MIN_INGRESS {
			return false
		}
		if registry.live[filterKey{qdiscKey: qdiscKey{ns: n.id, ifindex: ifindex}, prio: b.Priority}] {
			return false
		}
	}
	return true
}

// releaseQdisc forgets qk and deletes its qdisc when cloudsteer created it
// and no filter at all is left on it. Callers hold registry.
func releaseQdisc(n *nsLink, qk qdiscKey, use *qdiscUse) error {
	delete(registry.qdiscs, qk)
	if !use.created {
		return nil
	}
	return delClsactIfEmpty(n, qk.ifindex)
}

func delClsactIfEmpty(n *nsLink, ifindex int) error {
	q, err := findClsact(n, ifindex)
	if err != nil || q == nil || q.Type() != "clsact" {
		return err
	}
	fs, err := qdiscFilters(n, ifindex, q)
	if err != nil || len(fs) > 0 {
		return err
	}
	if err := n.h.QdiscDel(q); err != nil && !gone(err) {
		return fmt.Errorf("delete clsact qdisc: %w", err)
	}
	return nil
}

// gone reports whether err says the filter, qdisc or interface is not there.
func gone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EINVAL)
}

// legacyDetach removes f and, with this process's last filter on the
// interface, the clsact qdisc when cloudsteer created it and nothing else
// uses it.
func legacyDetach(n *nsLink, f *legacyFilter) error {
	registry.Lock()
	defer registry.Unlock()
	qk := qdiscKey{ns: n.id, ifindex: f.ifindex}
	var errs []error
	if err := delFilter(n, f.ifindex, f.prio); err != nil && !gone(err) {
		errs = append(errs, fmt.Errorf("delete cls_bpf filter: %w", err))
	}
	delete(registry.live, filterKey{qdiscKey: qk, prio: f.prio})
	if use := registry.qdiscs[qk]; use != nil {
		use.filters--
		if use.filters <= 0 {
			errs = append(errs, releaseQdisc(n, qk, use))
		}
	}
	return errors.Join(errs...)
}

// legacyAttached reports whether f is still on its interface with its
// program.
func legacyAttached(n *nsLink, f *legacyFilter) bool {
	fs, err := n.h.FilterList(linkOf(f.ifindex), netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		return false
	}
	for _, x := range fs {
		if b, ok := Ours(x); ok && b.Priority == f.prio && ebpf.ProgramID(b.Id) == f.progID {
			return true
		}
	}
	return false
}

// Removed is one filter RemoveStale took away.
type Removed struct {
	Interface string
	Filter    string
	Priority  uint16
}

// RemoveStale removes, in the calling thread's network namespace, every
// cloudsteer filter that no Links of this process holds (those a killed
// cloudsteer left), and then each clsact qdisc that held nothing but
// those. Other filters and qdiscs are never touched. It is what `cloudsteer
// cleanup` runs, and the daemon before it attaches.
func RemoveStale() ([]Removed, error) {
	n, err := openNS()
	if err != nil {
		return nil, err
	}
	defer n.close()
	links, err := n.h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	registry.Lock()
	defer registry.Unlock()
	var out []Removed
	var errs []error
	for _, l := range links {
		idx := l.Attrs().Index
		q, err := findClsact(n, idx)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", l.Attrs().Name, err))
			continue
		}
		if q == nil {
			continue
		}
		fs, err := qdiscFilters(n, idx, q)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", l.Attrs().Name, err))
			continue
		}
		removed, others := 0, 0
		for _, f := range fs {
			b, ok := Ours(f)
			if !ok || b.Parent != netlink.HANDLE_MIN_INGRESS ||
				registry.live[filterKey{qdiscKey: qdiscKey{ns: n.id, ifindex: idx}, prio: b.Priority}] {
				others++
				continue
			}
			if err := delFilter(n, idx, b.Priority); err != nil && !gone(err) {
				errs = append(errs, fmt.Errorf("%s: remove %s: %w", l.Attrs().Name, b.Name, err))
				others++
				continue
			}
			removed++
			out = append(out, Removed{Interface: l.Attrs().Name, Filter: b.Name, Priority: b.Priority})
		}
		_, inUse := registry.qdiscs[qdiscKey{ns: n.id, ifindex: idx}]
		if removed > 0 && others == 0 && !inUse && q.Type() == "clsact" {
			if err := delClsactIfEmpty(n, idx); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", l.Attrs().Name, err))
			}
		}
	}
	return out, errors.Join(errs...)
}

// IngressPrograms returns the IDs of the programs at ingress of ifindex in
// the calling thread's namespace, in the order they run: TCX first, then
// the direct-action cls_bpf filters by priority (any owner's). Tests and
// diagnostics use it.
func IngressPrograms(ifindex int) (tcx, legacy []ebpf.ProgramID, err error) {
	tcx, err = tcxPrograms(ifindex)
	if err != nil {
		return nil, nil, err
	}
	n, err := openNS()
	if err != nil {
		return nil, nil, err
	}
	defer n.close()
	fs, err := n.h.FilterList(linkOf(ifindex), netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		if gone(err) {
			return tcx, nil, nil // no clsact qdisc
		}
		return nil, nil, fmt.Errorf("list ingress filters: %w", err)
	}
	slices.SortStableFunc(fs, func(a, b netlink.Filter) int { return int(a.Attrs().Priority) - int(b.Attrs().Priority) })
	for _, f := range fs {
		if b, ok := f.(*netlink.BpfFilter); ok {
			legacy = append(legacy, ebpf.ProgramID(b.Id))
		}
	}
	return tcx, legacy, nil
}

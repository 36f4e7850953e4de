// Package tcx attaches cloudsteer's eBPF programs at ingress of the LAN and
// WAN interfaces and keeps them: the check of the interface list, the
// choice of attach mode (TCX from Linux 6.6, clsact/cls_bpf before: see
// mode.go and legacy.go), the attach with errors that say what the user
// can do, the list of attachments still there, detaching, and the owner
// lease the programs check (lease.go). A TCX link is held only by this
// process's file descriptors (nothing is pinned), so it is gone when the
// process is; a legacy filter stays, inert once the lease runs out.
package tcx

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// CheckInterfaces reports every problem with a list of LAN interface
// names, one per line, each prefixed with who ("steer: ...").
func CheckInterfaces(who string, names []string) error {
	var errs []error
	if len(names) == 0 {
		errs = append(errs, fmt.Errorf("%s: no LAN interfaces given", who))
	}
	seen := make(map[string]bool)
	for _, name := range names {
		switch {
		case name == "":
			errs = append(errs, fmt.Errorf("%s: empty interface name", who))
		case len(name) >= unix.IFNAMSIZ:
			errs = append(errs, fmt.Errorf("%s: interface name %q longer than %d bytes", who, name, unix.IFNAMSIZ-1))
		case seen[name]:
			errs = append(errs, fmt.Errorf("%s: interface %q listed twice", who, name))
		}
		seen[name] = true
	}
	return errors.Join(errs...)
}

// Lookup returns the interfaces named, or an error naming the first
// missing one.
func Lookup(names []string) ([]*net.Interface, error) {
	ifaces := make([]*net.Interface, 0, len(names))
	for _, name := range names {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			return nil, fmt.Errorf("find LAN interface %q: %w", name, err)
		}
		ifaces = append(ifaces, ifc)
	}
	return ifaces, nil
}

// Links are the ingress attachments of one program: TCX links, or in
// legacy mode cls_bpf filters (see legacy.go). Set Mode before the first
// Attach. Their methods are safe for concurrent use.
type Links struct {
	// Mode is ModeTCX (also the zero value) or ModeLegacy.
	Mode Mode

	mu    sync.Mutex
	links []attachment
	ns    *nsLink // legacy mode: the namespace the filters are in
}

// attachment is one TCX ingress link or legacy filter and the interface it
// was made on.
type attachment struct {
	iface  string
	link   link.Link     // TCX
	filter *legacyFilter // legacy
}

// Place says where a program goes among those already at ingress.
type Place struct {
	// After puts it right after this program, which must be attached
	// there in the same mode (TCX: link.AfterProgram; legacy: the next
	// priority after its filter's).
	After *ebpf.Program
	// First puts it before the others (TCX: link.Head; legacy: PrioFirst,
	// before cloudsteer's other filters). Neither: after the programs
	// already there (TCX: no anchor; legacy: PrioLast).
	First bool
}

// Attach attaches prog at ingress of ifc, placed by at. In legacy mode
// name names the filter (it must start with FilterPrefix), and a stale
// cloudsteer filter of that name or in that place (left by a killed
// process) is replaced.
func (l *Links) Attach(ifc *net.Interface, prog *ebpf.Program, name string, at Place) error {
	if l.Mode == ModeLegacy {
		return l.attachLegacy(ifc, prog, name, at)
	}
	var anchor link.Anchor
	switch {
	case at.After != nil:
		anchor = link.AfterProgram(at.After)
	case at.First:
		anchor = link.Head()
	}
	lk, err := link.AttachTCX(link.TCXOptions{
		Interface: ifc.Index,
		Program:   prog,
		Attach:    ebpf.AttachTCXIngress,
		Anchor:    anchor,
	})
	if err != nil {
		hint := ""
		switch {
		case errors.Is(err, ebpf.ErrNotSupported):
			hint = " (TCX needs Linux >= 6.6; running " + KernelRelease() + "; set dataplane.attach: legacy or auto)"
		case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
			hint = " (needs root, or CAP_BPF and CAP_NET_ADMIN)"
		case errors.Is(err, unix.ENODEV):
			hint = " (interface is gone)"
		case errors.Is(err, unix.ENOENT) && anchor != nil:
			hint = " (the anchor program is not attached there)"
		}
		return fmt.Errorf("attach TCX ingress on %s: %w%s", ifc.Name, err, hint)
	}
	l.mu.Lock()
	l.links = append(l.links, attachment{iface: ifc.Name, link: lk})
	l.mu.Unlock()
	return nil
}

func (l *Links) attachLegacy(ifc *net.Interface, prog *ebpf.Program, name string, at Place) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ns == nil {
		n, err := openNS()
		if err != nil {
			return fmt.Errorf("attach cls_bpf ingress on %s: %w", ifc.Name, err)
		}
		l.ns = n
	}
	f, err := legacyAttach(l.ns, ifc, prog, name, at)
	if err != nil {
		hint := ""
		switch {
		case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
			hint = " (needs root, or CAP_BPF and CAP_NET_ADMIN)"
		case errors.Is(err, unix.ENODEV):
			hint = " (interface is gone)"
		}
		return fmt.Errorf("attach cls_bpf ingress on %s: %w%s", ifc.Name, err, hint)
	}
	l.links = append(l.links, attachment{iface: ifc.Name, filter: f})
	return nil
}

// Attached returns the interfaces on which a link or filter is still
// attached. One whose interface was deleted is gone with it and is not
// listed.
func (l *Links) Attached() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var names []string
	for _, a := range l.links {
		if a.filter != nil {
			if legacyAttached(l.ns, a.filter) {
				names = append(names, a.iface)
			}
			continue
		}
		info, err := a.link.Info()
		if err != nil {
			continue
		}
		if tcx := info.TCX(); tcx != nil && tcx.Ifindex != 0 {
			names = append(names, a.iface)
		}
	}
	return names
}

// Len returns the number of links made and not yet closed.
func (l *Links) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.links)
}

// Close detaches everything; the Links can be used again afterwards.
func (l *Links) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for _, a := range l.links {
		if a.filter != nil {
			if err := legacyDetach(l.ns, a.filter); err != nil {
				errs = append(errs, fmt.Errorf("detach cls_bpf ingress on %s: %w", a.iface, err))
			}
			continue
		}
		if err := a.link.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach TCX ingress on %s: %w", a.iface, err))
		}
	}
	l.links = nil
	if l.ns != nil {
		l.ns.close()
		l.ns = nil
	}
	return errors.Join(errs...)
}

// tcxPrograms returns the programs at TCX ingress of ifindex, in order;
// none on a kernel without TCX.
func tcxPrograms(ifindex int) ([]ebpf.ProgramID, error) {
	res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: ebpf.AttachTCXIngress})
	if errors.Is(err, ebpf.ErrNotSupported) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("query TCX ingress: %w", err)
	}
	ids := make([]ebpf.ProgramID, 0, len(res.Programs))
	for _, p := range res.Programs {
		ids = append(ids, p.ID)
	}
	return ids, nil
}

// Package tcx attaches cloudsteer's eBPF programs at TCX ingress of the LAN
// interfaces and keeps their links: the check of the interface list, the
// attach with errors that say what the user can do, the list of links
// still attached, and detaching. A link is held only by this process's
// file descriptors (nothing is pinned), so it is gone when the process is.
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

// Links are the TCX ingress links of one program. Their methods are safe
// for concurrent use.
type Links struct {
	mu    sync.Mutex
	links []attachment
}

// attachment is one TCX ingress link and the interface it was made on.
type attachment struct {
	iface string
	link  link.Link
}

// Attach links prog at TCX ingress of ifc, at anchor; a nil anchor puts it
// after the programs already there, so those keep precedence.
func (l *Links) Attach(ifc *net.Interface, prog *ebpf.Program, anchor link.Anchor) error {
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
			hint = " (TCX needs Linux >= 6.6; running " + kernelRelease() + ")"
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

// Attached returns the interfaces on which a link is still attached. A
// link whose interface was deleted is detached by the kernel and is not
// listed.
func (l *Links) Attached() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var names []string
	for _, a := range l.links {
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

// Close detaches every link; the Links can be used again afterwards.
func (l *Links) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for _, a := range l.links {
		if err := a.link.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach TCX ingress on %s: %w", a.iface, err))
		}
	}
	l.links = nil
	return errors.Join(errs...)
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown kernel"
	}
	return "Linux " + unix.ByteSliceToString(u.Release[:])
}

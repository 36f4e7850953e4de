package tcx

import (
	"errors"
	"net"
	"slices"

	"github.com/vishvananda/netlink"
)

// Prune closes and forgets the attachments whose interface was deleted
// (a TCX link the kernel detached reads ifindex 0; a legacy filter's
// ifindex names no link any more), and returns those interfaces' names.
// An attachment whose state cannot be read is kept: closing it would
// detach a program that may still be working. Attach can then attach the
// program again on an interface of the same name made anew.
func (l *Links) Prune() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var gone []string
	kept := l.links[:0]
	for _, a := range l.links {
		if a.filter != nil {
			if _, err := l.ns.h.LinkByIndex(a.filter.ifindex); err != nil {
				if errors.As(err, new(netlink.LinkNotFoundError)) {
					// The device took its qdisc and filter with it: this
					// only drops the bookkeeping.
					_ = legacyDetach(l.ns, a.filter)
					gone = append(gone, a.iface)
					continue
				}
			}
			kept = append(kept, a)
			continue
		}
		info, err := a.link.Info()
		if err == nil {
			if tcx := info.TCX(); tcx != nil && tcx.Ifindex == 0 {
				_ = a.link.Close() // already detached: this only frees the descriptor
				gone = append(gone, a.iface)
				continue
			}
		}
		kept = append(kept, a)
	}
	clear(l.links[len(kept):])
	l.links = kept
	return gone
}

// Reattach prunes the attachments whose interface was deleted, then calls
// attach for each interface in names that exists and holds none (deleted
// and made anew; a missing one is skipped, it may come back). It returns
// the interfaces attached now. The classifier, the forwarder and the DNS
// answerer all follow link changes this way.
func (l *Links) Reattach(names []string, attach func(*net.Interface) error) ([]string, error) {
	l.Prune()
	have := l.Attached()
	var done []string
	var errs []error
	for _, n := range names {
		if slices.Contains(have, n) {
			continue
		}
		ifc, err := net.InterfaceByName(n)
		if err != nil {
			continue // not there (yet)
		}
		if err := attach(ifc); err != nil {
			errs = append(errs, err)
			continue
		}
		done = append(done, n)
	}
	return done, errors.Join(errs...)
}

package tcx

import (
	"errors"

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

package steer

import (
	"errors"
	"net"

	"github.com/cilium/ebpf"

	"github.com/cloudsteer/cloudsteer/dataplane/tcx"
)

// Reattach attaches the classifier again at ingress (TCX or legacy) of those LAN
// interfaces in names that exist and hold no live link of it: a LAN
// interface deleted and made anew (a bridge re-made) has a new ifindex, and
// the kernel detached the old link when the old device went. Links made
// dead that way are closed first. A LAN interface that is only down and up
// keeps its link. It returns the interfaces attached now; an interface
// missing from the machine is skipped, not an error (it may come back).
func (s *Steer) Reattach(names []string) ([]string, error) {
	return s.reattach(&s.links, s.objs.SteerIngress, filterClassifier, names)
}

// ReattachWAN is Reattach for the fast path's forwarder on the WAN
// interfaces (a PPP link re-dialled, a USB modem plugged in again).
func (s *Steer) ReattachWAN(names []string) ([]string, error) {
	return s.reattach(&s.wan, s.objs.ForwardIngress, filterForwarder, names)
}

func (s *Steer) reattach(l *tcx.Links, prog *ebpf.Program, filter string, names []string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("steer is closed")
	}
	return l.Reattach(names, func(ifc *net.Interface) error { return l.Attach(ifc, prog, filter, tcx.Place{}) })
}

package dnscache

import (
	"errors"
	"net"

	"github.com/cilium/ebpf"
)

// Reattach links the answerer again at TCX ingress of those interfaces in
// names that exist and hold no live link of it (deleted and made anew),
// right after the program after when it is given, as New does; links the
// kernel detached with their device are closed first. It returns the
// interfaces attached now; a missing interface is skipped.
func (c *Cache) Reattach(names []string, after *ebpf.Program) ([]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("dns cache is closed")
	}
	return c.links.Reattach(names, func(ifc *net.Interface) error { return c.attach(ifc, after) })
}

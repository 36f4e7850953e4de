// Package nsexec runs a function inside a named network namespace, on an
// OS thread that never returns to the Go scheduler's pool, so no other
// goroutine ever runs in the wrong namespace. Sockets and netlink handles
// the function opens stay in that namespace and may be used from any
// goroutine afterwards.
package nsexec

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// Do runs fn in network namespace ns (a name under /run/netns) and returns
// its error.
func Do(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Not unlocking on purpose: the thread dies with the goroutine.
		h, err := netns.GetFromName(ns)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", ns, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

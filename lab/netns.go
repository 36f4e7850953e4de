package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
)

// doInNS runs fn on an OS thread that has joined network namespace ns.
// The thread is never returned to the Go scheduler's pool (it exits with
// its goroutine), so no other goroutine ever runs in the wrong namespace.
// Sockets fn opens stay in ns and may be used from any goroutine later.
func doInNS(ns string, fn func() error) error {
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

// DialContext opens a connection from inside the namespace of role (e.g. to
// reach a lab service from the LAN client). network is as for net.Dial.
func (l *Lab) DialContext(ctx context.Context, role, network, address string) (net.Conn, error) {
	ns := l.NS(role)
	if ns == "" {
		return nil, fmt.Errorf("dial from %q: unknown lab role", role)
	}
	var conn net.Conn
	err := doInNS(ns, func() error {
		var d net.Dialer
		d.SetMultipathTCP(false)
		c, err := d.DialContext(ctx, network, address)
		conn = c
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s from %s: %w", address, ns, err)
	}
	return conn, nil
}

// run runs a command and returns an error carrying its output when it fails.
func run(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ipArgs returns the `ip` arguments that run a subcommand in namespace ns.
func ipIn(ns string, args ...string) []string {
	return append([]string{"ip", "-n", ns}, args...)
}

// family returns "-4" or "-6" for an address.
func family(a netip.Addr) string {
	if a.Is4() {
		return "-4"
	}
	return "-6"
}

package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"

	"github.com/cloudsteer/cloudsteer/internal/nsexec"
)

// doInNS runs fn inside network namespace ns.
func doInNS(ns string, fn func() error) error { return nsexec.Do(ns, fn) }

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

// runStdin runs a command with stdin as its standard input, and returns
// an error carrying its output when it fails.
func runStdin(ctx context.Context, stdin string, args ...string) error {
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ipIn returns the `ip` arguments that run a subcommand in namespace ns.
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

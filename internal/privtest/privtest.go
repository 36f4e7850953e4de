// Package privtest holds the helpers every privileged test uses: a root
// check that fails (never skips) under CI=true, throwaway network
// namespaces that are removed when the test ends, even when it fails, and
// TCP servers inside them.
package privtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/cloudsteer/cloudsteer/internal/nsexec"
)

// InCI reports whether the tests run under CI, where a privileged test that
// cannot run is a failure rather than a skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// RequireRoot stops the test unless it runs as root: a failure under CI=true,
// a skip elsewhere.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if InCI() {
		tb.Fatal("privileged test needs root (CI=true: not skipping)")
	}
	tb.Skip("privileged test needs root")
}

// RequireCommand stops the test unless the named program is on PATH: a
// failure under CI=true, a skip elsewhere.
func RequireCommand(tb testing.TB, names ...string) {
	tb.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			if InCI() {
				tb.Fatalf("test needs %s on PATH (CI=true: not skipping)", n)
			}
			tb.Skipf("test needs %s on PATH", n)
		}
	}
}

// Unique returns prefix followed by six random hex digits, short enough for
// interface and namespace names.
func Unique(prefix string) string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return prefix + hex.EncodeToString(b)
}

// NewNetNS creates a named network namespace (visible to `ip netns`) with
// its loopback up, and deletes it when the test ends.
func NewNetNS(tb testing.TB) string {
	tb.Helper()
	RequireRoot(tb)
	name := Unique("cst")
	Run(tb, "", "ip", "netns", "add", name)
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			tb.Logf("delete netns %s: %v: %s", name, err, out)
		}
	})
	Run(tb, name, "ip", "link", "set", "lo", "up")
	return name
}

// Run runs a command, inside namespace ns when ns is not empty, and fails
// the test when it does not succeed. It returns the combined output.
func Run(tb testing.TB, ns string, args ...string) string {
	tb.Helper()
	out, err := Command(ns, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Command returns an exec.Cmd that runs args inside namespace ns (through
// `ip netns exec`), or in the current namespace when ns is empty.
func Command(ns string, args ...string) *exec.Cmd {
	if ns == "" {
		return exec.Command(args[0], args[1:]...)
	}
	return exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
}

// InNetNS runs fn on a goroutine locked to an OS thread that has joined
// namespace ns, so sockets and netlink handles fn opens live there.
func InNetNS(tb testing.TB, ns string, fn func()) {
	tb.Helper()
	if err := Do(ns, func() error { fn(); return nil }); err != nil {
		tb.Fatal(err)
	}
}

// Do runs fn on an OS thread that has joined namespace ns and returns its
// error (see nsexec.Do).
func Do(ns string, fn func() error) error { return nsexec.Do(ns, fn) }

// ServeTCP listens on addr (":port" is dual-stack) inside namespace ns,
// with MPTCP off, and runs handle for each connection on a goroutine of
// its own; handle need not close the connection. When the test ends the
// listener closes and ServeTCP waits for the accept loop and every handler
// to return, so handlers must end on their own (a deadline, the peer
// closing).
func ServeTCP(tb testing.TB, ns, addr string, handle func(net.Conn)) {
	tb.Helper()
	var ln net.Listener
	InNetNS(tb, ns, func() {
		var lc net.ListenConfig
		lc.SetMultipathTCP(false)
		var err error
		if ln, err = lc.Listen(context.Background(), "tcp", addr); err != nil {
			tb.Fatalf("listen %s in %s: %v", addr, ns, err)
		}
	})
	var wg sync.WaitGroup
	wg.Add(1)
	tb.Cleanup(func() { ln.Close(); wg.Wait() })
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
}

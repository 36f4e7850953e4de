package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/config"
	"github.com/cloudsteer/cloudsteer/dataplane/tcx"
)

// cmdCleanup removes what a killed cloudsteer can leave in this network
// namespace: its legacy-mode cls_bpf filters, and a clsact qdisc that held
// nothing else (TCX links and the owner-flagged nftables table go with the
// process by themselves). It refuses while a daemon answers on the admin
// socket, whose programs those are.
func cmdCleanup(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cleanup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", config.DefaultAdminSocket, "the admin socket of a running daemon, which cleanup refuses to disturb")
	if err := fs.Parse(args); err != nil {
		return exitConfig
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "cloudsteer cleanup: unexpected argument %q\n", fs.Arg(0))
		return exitConfig
	}
	if c, err := net.DialTimeout("unix", *socket, time.Second); err == nil {
		c.Close()
		fmt.Fprintf(stderr, "cloudsteer cleanup: a cloudsteer daemon answers on %s; stop it first (its own filters are not stale)\n", *socket)
		return exitFail
	}
	removed, err := tcx.RemoveStale()
	for _, r := range removed {
		fmt.Fprintf(stdout, "removed filter %s (priority %#x) from %s ingress\n", r.Filter, r.Priority, r.Interface)
	}
	if err != nil {
		fmt.Fprintf(stderr, "cloudsteer cleanup: %v\n", err)
		return exitFail
	}
	if len(removed) == 0 {
		fmt.Fprintln(stdout, "nothing to clean up")
	}
	return exitOK
}

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/cloudsteer/cloudsteer/controlplane/config"
	"github.com/cloudsteer/cloudsteer/dataplane/firewall"
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
	if running, err := ownerTable(); err != nil {
		fmt.Fprintf(stderr, "cloudsteer cleanup: %v\n", err)
		return exitFail
	} else if running {
		fmt.Fprintf(stderr, "cloudsteer cleanup: a running process owns nftables table inet %s: a cloudsteer runs in this network namespace; stop it first (its own filters are not stale)\n", firewall.DefaultTableName)
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

// ownerTable reports whether cloudsteer's owner-flagged nftables table
// exists here: the kernel deletes it with its process, so it means a live
// cloudsteer.
func ownerTable() (bool, error) {
	conn, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("open nftables: %w", err)
	}
	tab, err := conn.ListTableOfFamily(firewall.DefaultTableName, nftables.TableFamilyINet)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up table inet %s: %w", firewall.DefaultTableName, err)
	}
	return tab.Flags&nftables.TableFlagOwner != 0, nil
}

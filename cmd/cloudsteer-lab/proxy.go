package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/cloudsteer/cloudsteer/lab/servers"
)

func init() { commands["proxy"] = runProxy }

// runProxy is `cloudsteer-lab proxy --dir DIR --name NAME --addr A [--addr B]`:
// one lab cloud proxy on its own, in the current namespace, until SIGTERM.
// SIGUSR1 makes it answer every request 407 (an expired code), SIGUSR2
// makes it accept the credentials again.
func runProxy(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("proxy", flag.ContinueOnError)
	dir := fs.String("dir", "", "the lab servers' directory: CA, logs, ready file (required)")
	name := fs.String("name", "", "the proxy's name in its records and file names (required)")
	var addrs []netip.Addr
	fs.Func("addr", "an address to listen on (:8080 and :8443); repeat for more", func(s string) error {
		a, err := netip.ParseAddr(s)
		addrs = append(addrs, a)
		return err
	})
	refuse := fs.Bool("refuse", false, "start answering 407")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *name == "" || len(addrs) == 0 || fs.NArg() != 0 {
		fs.Usage()
		return errors.New("usage: proxy --dir DIR --name NAME --addr A [--addr B]")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	var refuseAll atomic.Bool
	refuseAll.Store(*refuse)
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(sig)
	go func() {
		for s := range sig {
			refuseAll.Store(s == syscall.SIGUSR1)
			log.Info("standalone cloud proxy", "refusing", s == syscall.SIGUSR1)
		}
	}()
	return servers.RunStandaloneProxy(ctx, servers.StandaloneConfig{
		Dir: *dir, Name: strings.TrimSpace(*name), Addrs: addrs, RefuseAll: &refuseAll, Logger: log,
	})
}

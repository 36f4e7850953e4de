package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/cloudsteer/cloudsteer/lab/servers"
)

func init() { commands["serve"] = runServe }

// runServe is `cloudsteer-lab serve --dir DIR [--addr-check]`: it runs the
// lab's internet services in the current network namespace until SIGTERM.
func runServe(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory for the lab CA, the JSON-lines logs and the ready file (required)")
	addrCheck := fs.Bool("addr-check", false, "check that every lab service address is assigned here before listening, and name the missing ones")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || fs.NArg() != 0 {
		fs.Usage()
		return errors.New("usage: serve --dir DIR [--addr-check]")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg := servers.Config{Dir: *dir, Logger: log}
	if *addrCheck {
		if err := checkAddrs(cfg.Addrs()); err != nil {
			return err
		}
	}
	return servers.Run(ctx, cfg)
}

// checkAddrs returns an error naming every address not assigned to an
// interface in this network namespace.
func checkAddrs(want []netip.Addr) error {
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return fmt.Errorf("list interface addresses: %w", err)
	}
	have := map[netip.Addr]bool{}
	for _, a := range ifaddrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			have[p.Addr()] = true
		}
	}
	var missing []string
	for _, a := range want {
		if !have[a] {
			missing = append(missing, a.String())
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("check addresses: not assigned in this namespace: %s (add them to lo, e.g. ip addr add %s dev lo)",
			strings.Join(missing, " "), missing[0])
	}
	return nil
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/cloudsteer/cloudsteer/lab"
)

func init() {
	commands["up"] = runUp
	commands["down"] = runDown
}

// runUp is `cloudsteer-lab up --prefix P --dir D [--squid] [--firewall F]
// [--lan2]`: it builds the lab, starts its servers (this binary's
// `serve`) and Squid, writes
// D/lab.json and exits, leaving the lab running.
func runUp(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	prefix := fs.String("prefix", "csdemo", "namespace prefix: the lab's namespaces are PREFIXlan, PREFIXgw, PREFIXinet")
	dir := fs.String("dir", "", "working directory for logs, the lab CA and configs (required)")
	squid := fs.Bool("squid", false, "also run Squid as a cloud proxy on "+lab.SquidV4.String()+":3128")
	fwName := fs.String("firewall", string(lab.FirewallRouter), fmt.Sprintf("the gateway namespace's own ruleset, one of %v: router (default) masquerades IPv4 and filters forwarding statefully (nftables table inet %s), none only routes, fw4 is like OpenWrt's, debian adds a Debian-style input policy drop that blocks cloudsteer's redirects", lab.Firewalls, lab.RouterTable))
	lan2 := fs.Bool("lan2", false, "add a second LAN host (namespace PREFIXlan2, "+lab.Client2V4.String()+") on gateway interface "+lab.GWLAN2If)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || fs.NArg() != 0 {
		fs.Usage()
		return errors.New("usage: up --dir DIR [--prefix P] [--squid] [--firewall router|none|fw4|debian] [--lan2]")
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	l, err := lab.Up(ctx, lab.Options{Prefix: *prefix, Dir: *dir, LabBinary: self, Squid: *squid, Firewall: lab.Firewall(*fwName), LAN2: *lan2})
	if err != nil {
		return err
	}
	if err := l.WriteInfo(); err != nil {
		return errors.Join(err, l.Close())
	}
	var nss []string
	for _, r := range l.Roles() {
		nss = append(nss, l.NS(r))
	}
	fmt.Printf("lab %s is up: namespaces %s, files in %s\n", l.Prefix(), strings.Join(nss, " "), l.Dir())
	fmt.Printf("run a command on the LAN client: ip netns exec %s curl https://www.example.com/ --cacert %s\n",
		l.NS(lab.RoleLAN), l.CAFile())
	fmt.Printf("tear it down: cloudsteer-lab down --prefix %s\n", l.Prefix())
	return nil
}

// runDown is `cloudsteer-lab down [--prefix P | --dir D]`: it stops every
// process in the lab's namespaces and deletes them. With --dir (the lab's
// lab.json) it also keeps Squid's logs in D.
func runDown(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("down", flag.ContinueOnError)
	prefix := fs.String("prefix", "csdemo", "namespace prefix of the lab to remove")
	dir := fs.String("dir", "", "the lab's directory: take the prefix from its lab.json and keep Squid's logs there")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return errors.New("usage: down [--prefix P | --dir D]")
	}
	if *dir == "" {
		return lab.Cleanup(*prefix)
	}
	info, err := lab.ReadInfo(*dir)
	if err != nil {
		return err
	}
	l, err := lab.Attach(info)
	if err != nil {
		// Some of it is gone already: remove the rest.
		return lab.Cleanup(info.Prefix)
	}
	return l.Close()
}

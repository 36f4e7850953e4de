// Command cloudsteer-lab builds and runs cloudsteer's network-namespace lab:
// each subcommand registers itself in commands from its own file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// commands maps a subcommand name to its entry point; files add theirs in init.
var commands = map[string]func(ctx context.Context, args []string) error{}

func usage() {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(os.Stderr, "usage: cloudsteer-lab COMMAND [flags]\ncommands:")
	for _, n := range names {
		fmt.Fprintf(os.Stderr, " %s", n)
	}
	fmt.Fprintln(os.Stderr)
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		os.Exit(2)
	}
	cmd, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "cloudsteer-lab: unknown command %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd(ctx, os.Args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "cloudsteer-lab %s: %v\n", os.Args[1], err)
		stop()
		os.Exit(1)
	}
}

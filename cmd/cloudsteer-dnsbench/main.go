// Command cloudsteer-dnsbench measures the resolver's cache-miss latency
// (p50, p99) and queries/s per upstream transport — plain DNS, DoT, DoH
// over HTTP/2 and HTTP/3, DoQ — on loopback, next to unbound forwarding
// over DoT, and prints a table (bench/dnsbench).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/cloudsteer/cloudsteer/bench/dnsbench"
)

func main() {
	var o dnsbench.Options
	flag.IntVar(&o.Queries, "queries", 2000, "sequential queries for the latency percentiles")
	flag.IntVar(&o.Concurrency, "concurrency", 32, "clients for the queries/s phase")
	flag.DurationVar(&o.Duration, "duration", 0, "length of the queries/s phase (default 3s)")
	flag.StringVar(&o.Unbound, "unbound", "", "unbound binary (default: unbound on PATH)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rows, err := dnsbench.Run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cloudsteer-dnsbench:", err)
		os.Exit(1)
	}
	dnsbench.Print(os.Stdout, rows)
}

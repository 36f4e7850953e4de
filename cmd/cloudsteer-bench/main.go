// Command cloudsteer-bench is `make bench`: `run` (the default) builds the
// namespace lab and measures cloudsteer next to direct routing, redsocks,
// Squid and an explicit proxy client; `serve` and `load` are the pieces it
// runs inside the lab's namespaces (the benchmark internet and the load
// generator).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cloudsteer/cloudsteer/bench"
	"github.com/cloudsteer/cloudsteer/bench/load"
	"github.com/cloudsteer/cloudsteer/bench/serve"
	"github.com/cloudsteer/cloudsteer/lab"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	args := os.Args[1:]
	cmd := "run"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "run":
		err = runBench(ctx, args)
	case "serve":
		err = runServe(ctx, args)
	case "load":
		err = runLoad(ctx, args)
	case "report":
		err = runReport(args)
	default:
		err = fmt.Errorf("unknown command %q (want run, serve, load or report)", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cloudsteer-bench:", err)
		os.Exit(1)
	}
}

func runBench(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	binDir := fs.String("bin", "bin", "directory holding cloudsteer and cloudsteer-lab")
	out := fs.String("out", "bench/out", "directory for table.txt, results.json and chart.png")
	prefix := fs.String("prefix", "csbench", "lab namespace prefix")
	repeats := fs.Int("repeats", 3, "rounds over every path")
	dur := fs.Duration("duration", 3*time.Second, "length of each throughput and connection-rate measurement")
	samples := fs.Int("samples", 1000, "time-to-first-byte samples per path and round (p99 is the 10th slowest)")
	flows := fs.Int("flows", 32, "parallel flows of the many-flows throughput figure")
	idle := fs.Int("idle", 10000, "idle flows of the memory figure")
	only := fs.String("only", "", "comma-separated path names: measure only these (no baselines, DNS or memory); \""+bench.OnlyNAT+"\" for the NAT rows, \""+bench.OnlySquidCloud+"\" for the Squid-as-cloud-proxy rows; \""+bench.FairnessOnly+"\" for the fairness figure alone, \""+bench.ConsoleOnly+"\" for the web console figure alone (both may be given)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var onlyPaths []string
	if *only != "" {
		onlyPaths = strings.Split(*only, ",")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	bin, err := filepath.Abs(*binDir)
	if err != nil {
		return err
	}
	start := time.Now()
	res, err := bench.Run(ctx, bench.Options{
		BinDir: bin, Self: self, OutDir: *out, Prefix: *prefix, Repeats: *repeats,
		Duration: *dur, Samples: *samples, Flows: *flows, Idle: *idle, Log: os.Stderr, Only: onlyPaths,
	})
	if err != nil {
		return err
	}
	res.Summarize()
	if err := bench.WriteOutputs(res, *out); err != nil {
		return err
	}
	res.WriteTable(os.Stdout)
	files := "table.txt,results.json,chart.png"
	if res.Console != nil {
		files += ",console.md"
	}
	fmt.Fprintf(os.Stdout, "\nwritten: %s/{%s} in %s\n", *out, files, time.Since(start).Round(time.Second))
	return nil
}

// runReport re-renders the table and chart from a results.json.
func runReport(args []string) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	in := fs.String("in", "bench/out/results.json", "results file")
	out := fs.String("out", "bench/out", "output directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b, err := os.ReadFile(*in)
	if err != nil {
		return err
	}
	var res bench.Results
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("parse results: %w", err)
	}
	res.Summarize()
	if err := bench.WriteOutputs(&res, *out); err != nil {
		return err
	}
	res.WriteTable(os.Stdout)
	return nil
}

func runServe(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory for certificates and the control socket")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("serve: --dir is required")
	}
	cfg := serve.Config{
		Dir:    *dir,
		Proxy:  bench.ProxyAddr,
		Code:   lab.EntitlementCode,
		Stream: []netip.AddrPort{bench.StreamAddr, bench.BypassStreamAddr},
		HTTPS:  []netip.AddrPort{bench.HTTPSAddr, bench.BypassHTTPSAddr},
		// The idle flows' tunnels end at the cloud proxy (one descriptor
		// each), so the proxy fits 10 000 of them under the open file
		// limit; the gateway's side of each flow is the same either way.
		Hold:  []netip.AddrPort{bench.SinkAddr},
		Names: bench.Names(),
	}
	s, err := serve.Start(ctx, cfg)
	if err != nil {
		return err
	}
	slog.Info("bench servers up", "component", "bench-serve", "dir", *dir)
	<-ctx.Done()
	return s.Close()
}

func runLoad(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	var s load.Spec
	var dst, proxy string
	fs.StringVar(&s.Mode, "mode", load.ModeStream, "stream, conns, ttfb, get or hold")
	fs.StringVar(&dst, "dst", "", "origin address ip:port")
	fs.StringVar(&s.Name, "name", "", "SNI, Host and CONNECT name")
	fs.StringVar(&proxy, "proxy", "", "cloud proxy ip:port (CONNECT through it)")
	fs.StringVar(&s.Auth, "auth", "", "proxy Basic user")
	fs.StringVar(&s.CAFile, "ca", "", "CA file for the HTTPS modes")
	fs.IntVar(&s.Flows, "flows", 1, "parallel flows or workers")
	fs.DurationVar(&s.Duration, "duration", 3*time.Second, "run length")
	fs.IntVar(&s.Samples, "samples", 300, "ttfb samples")
	fs.StringVar(&s.Path, "path", "/", "request path")
	fs.DurationVar(&s.Within, "within", 0, "ttfb: take no sample after this long, cut the one under way (0: no bound)")
	fs.DurationVar(&s.Every, "every", 0, "ttfb: start a sample at most once per this long (0: back to back)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if s.Dst, err = netip.ParseAddrPort(dst); err != nil {
		return fmt.Errorf("--dst: %w", err)
	}
	if proxy != "" {
		if s.Proxy, err = netip.ParseAddrPort(proxy); err != nil {
			return fmt.Errorf("--proxy: %w", err)
		}
	}
	res, err := load.Run(ctx, s, os.Stdin, os.Stdout)
	if err != nil {
		return err
	}
	if s.Mode == load.ModeHold {
		return nil
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

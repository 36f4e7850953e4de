package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"syscall"
	"time"

	"github.com/cloudsteer/cloudsteer/bench/load"
	"github.com/cloudsteer/cloudsteer/bench/serve"
	"github.com/cloudsteer/cloudsteer/lab"
)

// FairnessOnly, given to Options.Only, runs only the fairness figure.
const FairnessOnly = "fairness"

// floodFor is how long the first LAN host floods before the second one's
// TTFB is measured again.
const floodFor = 15 * time.Second

// Fairness is the second LAN host's time to first byte through cloudsteer
// alone, and while the first LAN host floods (issue 9: opens TLS flows
// until refused and holds them, and sends DNS as fast as it can).
type Fairness struct {
	AloneP50us float64 `json:"alone_p50_us"`
	AloneP99us float64 `json:"alone_p99_us"`
	FloodP50us float64 `json:"flood_p50_us"`
	FloodP99us float64 `json:"flood_p99_us"`
	// FloodFlows is how many TLS flows the flooder held when the second
	// measurement started, FloodRefused how many it had been refused.
	FloodFlows   int64  `json:"flood_flows"`
	FloodRefused int64  `json:"flood_refused"`
	FloodDNSSent int64  `json:"flood_dns_sent"`
	Problem      string `json:"problem,omitempty"`
}

// floodLine is the part of `cloudsteer-lab flood`'s stats line read here.
type floodLine struct {
	TLSOpen   int64 `json:"tls_open"`
	TLSFailed int64 `json:"tls_failed"`
	DNSSent   int64 `json:"dns_sent"`
}

// fairness measures Fairness with cloudsteer as the gateway.
func (r *runner) fairness(ctx context.Context) Fairness {
	var f Fairness
	g, err := r.startGateway(ctx, GWCloudsteer)
	if err != nil {
		f.Problem = err.Error()
		return f
	}
	defer g.stop()
	time.Sleep(300 * time.Millisecond)
	spec := load.Spec{Mode: load.ModeTTFB, Dst: HTTPSAddr, Name: HTTPSName, CAFile: filepath.Join(r.serveDir, serve.CAFile),
		Flows: 1, Duration: r.opts.Duration, Samples: r.opts.Samples}
	alone, err := r.runLoad(ctx, lab.RoleLAN2, spec)
	if err != nil {
		f.Problem = "alone: " + err.Error()
		return f
	}
	f.AloneP50us, f.AloneP99us = load.Percentile(alone.TTFBus, 50), load.Percentile(alone.TTFBus, 99)

	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := r.lab.Command(fctx, lab.RoleLAN, filepath.Join(r.opts.BinDir, "cloudsteer-lab"), "flood",
		"--tls", SinkAddr.String(), "--sni", SinkName, "--hello", "hello", "--max", "12000",
		"--dns", net.JoinHostPort(lab.NobodyDNSV4.String(), "53"), "--dns-zone", "flood.bench.example", "--dns-tcp", "64")
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		f.Problem = err.Error()
		return f
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		f.Problem = "start flooder: " + err.Error()
		return f
	}
	lines := make(chan floodLine, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var l floodLine
			if json.Unmarshal(sc.Bytes(), &l) == nil {
				select {
				case <-lines: // keep only the latest
				default:
				}
				lines <- l
			}
		}
	}()
	defer func() { cancel(); cmd.Wait() }()
	r.say("fairness: flooding from %s for %s", lab.RoleLAN, floodFor)
	select {
	case <-time.After(floodFor):
	case <-ctx.Done():
		f.Problem = ctx.Err().Error()
		return f
	}
	select {
	case l := <-lines:
		f.FloodFlows, f.FloodRefused, f.FloodDNSSent = l.TLSOpen, l.TLSFailed, l.DNSSent
	default:
		f.Problem = "the flooder reported nothing: " + lastLines(errb.String(), 3)
		return f
	}
	under, err := r.runLoad(ctx, lab.RoleLAN2, spec)
	if err != nil {
		f.Problem = "while flooded: " + err.Error()
		return f
	}
	f.FloodP50us, f.FloodP99us = load.Percentile(under.TTFBus, 50), load.Percentile(under.TTFBus, 99)
	return f
}

// writeFairness is the fairness line of the report.
func (r *Results) writeFairness(w *bytes.Buffer) {
	if r.Fairness == nil {
		return
	}
	f := r.Fairness
	fmt.Fprintf(w, "fairness (second LAN host's HTTPS TTFB through cloudsteer): alone p50 %.0fµs p99 %.0fµs; while the first floods (%d TLS flows held, %d refused, %d DNS queries sent): p50 %.0fµs p99 %.0fµs%s\n\n",
		f.AloneP50us, f.AloneP99us, f.FloodFlows, f.FloodRefused, f.FloodDNSSent, f.FloodP50us, f.FloodP99us, problemSuffix(f.Problem))
}

package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
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

// Bounds on the second LAN host's measurement while flooded, so that a
// starved victim (each try costs up to the load generator's 5 s dial and
// 5 s exchange bounds) ends the figure in bounded time, with the samples
// it got: generous with the default limits (1000 samples at victimEvery
// take about 13 s), short with the limits off (where it may get no answer
// at all). runLoad's kill bound adds Within to its own.
const (
	victimWithin  = 40 * time.Second
	starvedWithin = 20 * time.Second
)

// victimEvery paces the second LAN host: at most 100 new HTTPS
// connections a second, half its own default new-flow rate limit
// (limits.new_flows_per_second_per_client 200), which back-to-back samples
// (about 350 a second here) exceed by themselves, without any flood.
const victimEvery = 10 * time.Millisecond

// Limits settings of a fairness run.
const (
	LimitsDefault = "default"
	LimitsOff     = "off"
)

// Fairness is the second LAN host's time to first byte through cloudsteer
// alone, and while the first LAN host floods (issue 9: opens TLS flows
// until refused and holds them, and sends DNS as fast as it can): once
// with cloudsteer's default limits (the figure), once with the limits off
// as every other figure runs them (the contrast).
type Fairness struct {
	Runs []FairnessRun `json:"runs"`
}

// FairnessRun is the fairness figure with one limits setting.
type FairnessRun struct {
	Limits string `json:"limits"` // LimitsDefault or LimitsOff
	// The second LAN host's HTTPS exchanges: answered and failed, and the
	// TTFB percentiles of the answered ones.
	Alone Victim `json:"alone"`
	Flood Victim `json:"flood"`
	// The flooder's own count (cloudsteer-lab flood) at the start and at
	// the end of the flooded measurement: TLS flows held, and in all,
	// flows refused (or timed out, or reset before done), DNS queries
	// sent, answered and answered REFUSED, DNS-over-TCP connections held.
	FloodFlowsStart int64   `json:"flood_flows_start"`
	FloodFlows      int64   `json:"flood_flows"`
	FloodRefused    int64   `json:"flood_refused"`
	FloodDNSSent    int64   `json:"flood_dns_sent"`
	FloodDNSAnswers int64   `json:"flood_dns_answered"`
	FloodDNSRefused int64   `json:"flood_dns_refused"`
	FloodDNSTCP     int64   `json:"flood_dns_tcp_open"`
	FloodSeconds    float64 `json:"flood_s"`
	// GatewayRefused is cloudsteer_limit_refused_total by limit, read from
	// the gateway's /metrics after the flooded measurement (non-zero
	// values only).
	GatewayRefused map[string]uint64 `json:"gateway_refused,omitempty"`
	// GatewayFlows is cloudsteer_proxy_flows_active at the same moment:
	// the flows the gateway serves (the flooder's count above also holds
	// connections the kernel accepted that the proxy then reset).
	GatewayFlows int64  `json:"gateway_flows_active"`
	Problem      string `json:"problem,omitempty"`
}

// Victim is what the second LAN host's load generator saw.
type Victim struct {
	Answered int64   `json:"answered"`
	Failed   int64   `json:"failed"`
	FirstErr string  `json:"first_err,omitempty"`
	P50us    float64 `json:"p50_us"`
	P99us    float64 `json:"p99_us"`
	Seconds  float64 `json:"seconds"`
}

func victim(res load.Result) Victim {
	v := Victim{Answered: int64(len(res.TTFBus)), Failed: res.Errors, FirstErr: res.FirstErr, Seconds: res.Seconds}
	if len(res.TTFBus) > 0 {
		v.P50us, v.P99us = load.Percentile(res.TTFBus, 50), load.Percentile(res.TTFBus, 99)
	}
	return v
}

// fairness measures the figure with the default limits, then the contrast
// with the limits off.
func (r *runner) fairness(ctx context.Context) Fairness {
	var f Fairness
	for _, limits := range []string{LimitsDefault, LimitsOff} {
		if ctx.Err() != nil {
			break
		}
		run := r.fairnessRun(ctx, limits)
		r.say("fairness, limits %s: %s", limits, run.brief())
		f.Runs = append(f.Runs, run)
	}
	return f
}

// fairnessRun measures one FairnessRun with cloudsteer as the gateway.
func (r *runner) fairnessRun(ctx context.Context, limits string) FairnessRun {
	f := FairnessRun{Limits: limits}
	g, err := r.startGatewayWith(ctx, GWCloudsteer, gwOptions{defaultLimits: limits == LimitsDefault})
	if err != nil {
		f.Problem = err.Error()
		return f
	}
	defer g.stop()
	time.Sleep(300 * time.Millisecond)
	spec := load.Spec{Mode: load.ModeTTFB, Dst: HTTPSAddr, Name: HTTPSName, CAFile: filepath.Join(r.serveDir, serve.CAFile),
		Flows: 1, Duration: r.opts.Duration, Samples: r.opts.Samples, Every: victimEvery}
	alone, err := r.runLoad(ctx, lab.RoleLAN2, spec)
	if err != nil {
		f.Problem = "alone: " + err.Error()
		return f
	}
	f.Alone = victim(alone)

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
	lines := make(chan lab.FloodStats, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var l lab.FloodStats
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
	r.say("fairness, limits %s: flooding from %s for %s", limits, lab.RoleLAN, floodFor)
	select {
	case <-time.After(floodFor):
	case <-ctx.Done():
		f.Problem = ctx.Err().Error()
		return f
	}
	select {
	case l := <-lines:
		f.FloodFlowsStart = l.TLSOpen
	default:
		f.Problem = "the flooder reported nothing: " + lastLines(errb.String(), 3)
		return f
	}
	spec.Within = victimWithin
	if limits == LimitsOff {
		spec.Within = starvedWithin
	}
	under, err := r.runLoad(ctx, lab.RoleLAN2, spec)
	if err != nil {
		f.Problem = "while flooded: " + err.Error()
		return f
	}
	f.Flood = victim(under)
	select {
	case l := <-lines:
		f.FloodFlows, f.FloodRefused, f.FloodSeconds = l.TLSOpen, l.TLSFailed, l.Elapsed
		f.FloodDNSSent, f.FloodDNSAnswers, f.FloodDNSRefused, f.FloodDNSTCP = l.DNSSent, l.DNSAnswered, l.DNSRefused, l.DNSTCPOpen
	case <-time.After(2 * time.Second):
		f.Problem = "the flooder stopped reporting: " + lastLines(errb.String(), 3)
	}
	// After the measurement: the scrape is one more flow of the second host.
	refused, active, err := r.gatewayMetrics(ctx)
	if err != nil && f.Problem == "" {
		f.Problem = "gateway metrics: " + err.Error()
	}
	f.GatewayRefused, f.GatewayFlows = refused, active
	return f
}

// gatewayMetrics reads cloudsteer_limit_refused_total (by limit, non-zero
// only) and cloudsteer_proxy_flows_active from the gateway's /metrics,
// from the second LAN host (the flooder's own address is at its limits).
func (r *runner) gatewayMetrics(ctx context.Context) (map[string]uint64, int64, error) {
	url := fmt.Sprintf("http://%s:9080/metrics", lab.GWLAN2V4.Addr())
	out, err := r.lab.Command(ctx, lab.RoleLAN2, "curl", "-sS", "--max-time", "5", url).Output()
	if err != nil {
		return nil, 0, fmt.Errorf("curl %s: %w", url, err)
	}
	refused := map[string]uint64{}
	var active int64 = -1
	seen := false
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "cloudsteer_proxy_flows_active "); ok {
			if n, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
				active = int64(n)
			}
			continue
		}
		rest, ok := strings.CutPrefix(line, `cloudsteer_limit_refused_total{limit="`)
		if !ok {
			continue
		}
		seen = true
		name, val, ok := strings.Cut(rest, `"} `)
		if !ok {
			continue
		}
		if n, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil && n > 0 {
			refused[name] = uint64(n)
		}
	}
	if !seen || active < 0 {
		return refused, active, fmt.Errorf("no cloudsteer_limit_refused_total or cloudsteer_proxy_flows_active in %s", url)
	}
	return refused, active, nil
}

// brief is one progress line.
func (f FairnessRun) brief() string {
	return fmt.Sprintf("alone %s; flooded %s; flooder held %d flows, %d refused, %d DNS sent%s",
		f.Alone.brief(), f.Flood.brief(), f.FloodFlows, f.FloodRefused, f.FloodDNSSent, problemSuffix(f.Problem))
}

func (v Victim) brief() string {
	s := fmt.Sprintf("%d answered", v.Answered)
	if v.Answered > 0 {
		s += fmt.Sprintf(" p50 %.0fµs p99 %.0fµs", v.P50us, v.P99us)
	}
	if v.Failed > 0 {
		s += fmt.Sprintf(", %d failed (%s)", v.Failed, v.FirstErr)
	}
	return s
}

// writeFairness is the fairness lines of the report.
func (r *Results) writeFairness(w *bytes.Buffer) {
	if r.Fairness == nil {
		return
	}
	fmt.Fprintf(w, "fairness (second LAN host's HTTPS TTFB through cloudsteer, a new connection at most every %s, alone and while the first LAN host floods: TLS flows until refused, held; DNS as fast as it can):\n", victimEvery)
	for _, f := range r.Fairness.Runs {
		label := fmt.Sprintf("default limits (flooded measurement bounded at %s)", victimWithin)
		if f.Limits == LimitsOff {
			label = fmt.Sprintf("limits off as in the other figures (contrast; every limits key 0, so only the overall flow cap the descriptor limit forces; flooded measurement bounded at %s)", starvedWithin)
		}
		fmt.Fprintf(w, "  %s: alone %s; flooded %s; flooder held %d TLS flows (%d at the start), %d refused, %d DNS queries sent (%d answered, %d REFUSED), %d DNS/TCP held",
			label, f.Alone.brief(), f.Flood.brief(), f.FloodFlows, f.FloodFlowsStart, f.FloodRefused, f.FloodDNSSent, f.FloodDNSAnswers, f.FloodDNSRefused, f.FloodDNSTCP)
		if len(f.GatewayRefused) > 0 {
			names := make([]string, 0, len(f.GatewayRefused))
			for n := range f.GatewayRefused {
				names = append(names, n)
			}
			sort.Strings(names)
			parts := make([]string, len(names))
			for i, n := range names {
				parts[i] = fmt.Sprintf("%s %d", n, f.GatewayRefused[n])
			}
			fmt.Fprintf(w, "; gateway refused: %s", strings.Join(parts, ", "))
		}
		fmt.Fprintf(w, "; gateway serving %d flows", f.GatewayFlows)
		fmt.Fprintf(w, "%s\n", problemSuffix(f.Problem))
	}
	fmt.Fprintln(w)
}

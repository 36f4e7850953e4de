package bench

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cloudsteer/cloudsteer/bench/load"
	"github.com/cloudsteer/cloudsteer/bench/serve"
)

// Sample is one measurement of one path.
type Sample struct {
	Path       string      `json:"path"`
	Round      int         `json:"round"`
	Mode       string      `json:"mode"`
	Flows      int         `json:"flows"`
	Result     load.Result `json:"result"`
	Proxy      serve.Stats `json:"counted"`           // what the cloud proxy and origins counted
	GWCPU      float64     `json:"gw_cpu_s"`          // CPU seconds of the gateway's processes
	MachineCPU float64     `json:"machine_cpu_s"`     // busy CPU seconds of the whole machine
	Problem    string      `json:"problem,omitempty"` // why the sample does not count
	Diag       string      `json:"diag,omitempty"`    // gateway drop counters of an invalid sample
}

// Gbps is the throughput of a stream sample in Gbit/s.
func (s Sample) Gbps() float64 {
	if s.Result.Seconds == 0 {
		return 0
	}
	return float64(s.Result.Bytes) * 8 / s.Result.Seconds / 1e9
}

// CPS is the exchanges per second of a conns sample.
func (s Sample) CPS() float64 {
	if s.Result.Seconds == 0 {
		return 0
	}
	return float64(s.Result.Conns) / s.Result.Seconds
}

// Brief is a one-line summary for the progress log.
func (s Sample) Brief() string {
	if s.Problem != "" {
		return "INVALID: " + s.Problem
	}
	switch s.Mode {
	case load.ModeStream, load.ModeGet:
		return fmt.Sprintf("%.2f Gbit/s, gw cpu %.2fs, machine cpu %.2fs", s.Gbps(), s.GWCPU, s.MachineCPU)
	case load.ModeConns:
		return fmt.Sprintf("%.0f conn/s", s.CPS())
	case load.ModeTTFB:
		return fmt.Sprintf("ttfb p50 %.0fµs p99 %.0fµs", load.Percentile(s.Result.TTFBus, 50), load.Percentile(s.Result.TTFBus, 99))
	}
	return ""
}

// DNSSample is one dnsperf measurement of one forwarder.
type DNSSample struct {
	Server         string  `json:"server"`
	Round          int     `json:"round"`
	QPS            float64 `json:"qps"`
	Completed      int64   `json:"completed"`
	Lost           int64   `json:"lost"`
	RCodes         string  `json:"rcodes"`
	P50us          float64 `json:"p50_us"` // at 2000 queries/s
	P99us          float64 `json:"p99_us"`
	LatencySamples int     `json:"latency_samples"`
	Problem        string  `json:"problem,omitempty"`
}

// Brief is a one-line summary.
func (d DNSSample) Brief() string {
	if d.Problem != "" {
		return "INVALID: " + d.Problem
	}
	return fmt.Sprintf("%.0f q/s (lost %d), p50 %.0fµs p99 %.0fµs at 2000 q/s", d.QPS, d.Lost, d.P50us, d.P99us)
}

// RSSSample is a gateway's resident memory right after it started.
type RSSSample struct {
	Gateway string `json:"gateway"`
	Bytes   int64  `json:"bytes"`
}

// Memory is cloudsteer's resident memory idle and with many idle flows.
type Memory struct {
	IdleBytes    int64      `json:"idle_bytes"`
	FlowsBytes   int64      `json:"flows_bytes"` // at Flows (extrapolated when Extrapolated)
	Flows        int        `json:"flows"`
	Tunnels      int64      `json:"tunnels"` // tunnels the cloud proxy held at the last point
	Points       []RSSPoint `json:"points"`  // the measured points
	Extrapolated bool       `json:"extrapolated"`
	Problem      string     `json:"problem,omitempty"`
}

// RSSPoint is cloudsteer's resident memory with Flows idle flows open.
type RSSPoint struct {
	Flows   int   `json:"flows"`
	Tunnels int64 `json:"tunnels"`
	Bytes   int64 `json:"bytes"`
}

// Results are everything one run measured.
type Results struct {
	Started     time.Time   `json:"started"`
	Finished    time.Time   `json:"finished"`
	Machine     string      `json:"machine"`
	Repeats     int         `json:"repeats"`
	DurationS   float64     `json:"duration_s"`
	Flows       int         `json:"flows"`
	Baselines   []Sample    `json:"baselines"`
	Samples     []Sample    `json:"samples"`
	IdleRSS     []RSSSample `json:"idle_rss"`
	DNS         []DNSSample `json:"dns"`
	Memory      Memory      `json:"memory"`
	Fairness    *Fairness   `json:"fairness,omitempty"`
	Console     *Console    `json:"console,omitempty"`
	BinaryBytes int64       `json:"binary_bytes"`
	Problems    []string    `json:"problems,omitempty"`
	Summary     *Summary    `json:"summary,omitempty"`
}

// Stat is a median with its spread over the rounds.
type Stat struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"n"`
}

func stat(xs []float64) Stat {
	if len(xs) == 0 {
		return Stat{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stat{Median: m, Min: s[0], Max: s[len(s)-1], N: len(s)}
}

// PathSummary are one path's figures over the rounds.
type PathSummary struct {
	Path         string `json:"path"`
	Gbps1        Stat   `json:"gbps_1_flow"`
	GbpsN        Stat   `json:"gbps_n_flows"`
	CPS          Stat   `json:"conns_per_s"`
	TTFBp50      Stat   `json:"ttfb_p50_ms"`
	TTFBp99      Stat   `json:"ttfb_p99_ms"`
	AddedP50     Stat   `json:"added_p50_ms"` // over direct, same round
	AddedP99     Stat   `json:"added_p99_ms"`
	GWCPUPerGB   Stat   `json:"gw_cpu_s_per_gb"`      // n flows
	MachCPUPerGB Stat   `json:"machine_cpu_s_per_gb"` // n flows
	Invalid      int    `json:"invalid_samples"`
}

// DNSSummary are one forwarder's figures over the rounds.
type DNSSummary struct {
	Server string `json:"server"`
	QPS    Stat   `json:"qps"`
	P50us  Stat   `json:"p50_us"`
	P99us  Stat   `json:"p99_us"`
}

// Verdict is one target of issue 4 judged from per-round ratios.
type Verdict struct {
	Target string    `json:"target"`
	Ratios []float64 `json:"per_round"` // the measured ratio or difference of each round
	Median float64   `json:"median"`
	Holds  bool      `json:"holds"` // the median meets the target
	Unit   string    `json:"unit"`
	Detail string    `json:"detail,omitempty"`
}

// Summary condenses Results.
type Summary struct {
	Paths    []PathSummary `json:"paths"`
	DNS      []DNSSummary  `json:"dns"`
	Verdicts []Verdict     `json:"verdicts"`
}

// key picks the samples of a path, mode and flow count by round.
func (r *Results) byRound(path, mode string, flows int) map[int]Sample {
	m := map[int]Sample{}
	for _, s := range r.Samples {
		if s.Path == path && s.Mode == mode && (flows == 0 || s.Flows == flows) && s.Problem == "" {
			m[s.Round] = s
		}
	}
	return m
}

func values(m map[int]Sample, f func(Sample) float64) []float64 {
	var xs []float64
	for _, s := range m {
		xs = append(xs, f(s))
	}
	return xs
}

func ms(us float64) float64 { return us / 1000 }

// Summarize computes medians, spreads and verdicts, and stores them in r.
func (r *Results) Summarize() *Summary {
	sum := &Summary{}
	directTTFB := r.byRound(PDirect, load.ModeTTFB, 0)
	for _, p := range Paths {
		ps := PathSummary{Path: p.Name}
		for _, s := range r.Samples {
			if s.Path == p.Name && s.Problem != "" {
				ps.Invalid++
			}
		}
		ps.Gbps1 = stat(values(r.byRound(p.Name, load.ModeStream, 1), Sample.Gbps))
		n := r.byRound(p.Name, load.ModeStream, r.Flows)
		ps.GbpsN = stat(values(n, Sample.Gbps))
		ps.CPS = stat(values(r.byRound(p.Name, load.ModeConns, 0), Sample.CPS))
		t := r.byRound(p.Name, load.ModeTTFB, 0)
		ps.TTFBp50 = stat(values(t, func(s Sample) float64 { return ms(load.Percentile(s.Result.TTFBus, 50)) }))
		ps.TTFBp99 = stat(values(t, func(s Sample) float64 { return ms(load.Percentile(s.Result.TTFBus, 99)) }))
		var a50, a99 []float64
		for round, s := range t {
			if d, ok := directTTFB[round]; ok {
				a50 = append(a50, ms(load.Percentile(s.Result.TTFBus, 50)-load.Percentile(d.Result.TTFBus, 50)))
				a99 = append(a99, ms(load.Percentile(s.Result.TTFBus, 99)-load.Percentile(d.Result.TTFBus, 99)))
			}
		}
		ps.AddedP50, ps.AddedP99 = stat(a50), stat(a99)
		perGB := func(cpu func(Sample) float64) []float64 {
			var xs []float64
			for _, s := range n {
				if s.Result.Bytes > 0 {
					xs = append(xs, cpu(s)/(float64(s.Result.Bytes)/1e9))
				}
			}
			return xs
		}
		if p.Gateway != GWNone && p.Gateway != GWConntrack {
			ps.GWCPUPerGB = stat(perGB(func(s Sample) float64 { return s.GWCPU }))
		} else {
			ps.GWCPUPerGB = stat(nil)
		}
		ps.MachCPUPerGB = stat(perGB(func(s Sample) float64 { return s.MachineCPU }))
		sum.Paths = append(sum.Paths, ps)
	}
	for _, name := range []string{"cloudsteer", "dnsmasq", "unbound"} {
		var q, p50, p99 []float64
		for _, d := range r.DNS {
			if d.Server == name && d.Problem == "" {
				q, p50, p99 = append(q, d.QPS), append(p50, d.P50us), append(p99, d.P99us)
			}
		}
		sum.DNS = append(sum.DNS, DNSSummary{Server: name, QPS: stat(q), P50us: stat(p50), P99us: stat(p99)})
	}
	sum.Verdicts = r.verdicts()
	r.Summary = sum
	return sum
}

// ratioByRound returns f(a)/f(b) for each round where both are valid.
func ratioByRound(a, b map[int]Sample, f func(Sample) float64) []float64 {
	var xs []float64
	for round, s := range a {
		if t, ok := b[round]; ok && f(t) > 0 {
			xs = append(xs, f(s)/f(t))
		}
	}
	return xs
}

// bestOf returns, per round, the sample with the larger f of a and b.
func bestOf(a, b map[int]Sample, f func(Sample) float64) map[int]Sample {
	m := map[int]Sample{}
	for round, s := range a {
		m[round] = s
	}
	for round, s := range b {
		if t, ok := m[round]; !ok || f(s) > f(t) {
			m[round] = s
		}
	}
	return m
}

func (r *Results) verdicts() []Verdict {
	var vs []Verdict
	add := func(target string, xs []float64, unit string, ok func(float64) bool, detail string) {
		v := Verdict{Target: target, Ratios: xs, Unit: unit, Detail: detail}
		if len(xs) == 0 {
			v.Median = math.NaN()
			v.Detail = strings.TrimSpace(v.Detail + " (no valid samples)")
		} else {
			v.Median = stat(xs).Median
			v.Holds = ok(v.Median)
		}
		vs = append(vs, v)
	}
	atLeast := func(t float64) func(float64) bool { return func(x float64) bool { return x >= t } }
	atMost := func(t float64) func(float64) bool { return func(x float64) bool { return x <= t } }
	type fig struct {
		name  string
		mode  string
		flows int
		f     func(Sample) float64
	}
	figs := []fig{
		{"throughput 1 flow", load.ModeStream, 1, Sample.Gbps},
		{fmt.Sprintf("throughput %d flows", r.Flows), load.ModeStream, r.Flows, Sample.Gbps},
		{"new HTTPS conns/s", load.ModeConns, 0, Sample.CPS},
	}
	for _, fg := range figs[:2] {
		add("bypass ≥ 0.97× direct, "+fg.name,
			ratioByRound(r.byRound(PBypass, fg.mode, fg.flows), r.byRound(PDirect, fg.mode, fg.flows), fg.f), "×", atLeast(0.97), "")
	}
	for _, fg := range figs {
		add("steered ≥ 0.9× ceiling, "+fg.name,
			ratioByRound(r.byRound(PSteered, fg.mode, fg.flows), r.byRound(PCeiling, fg.mode, fg.flows), fg.f), "×", atLeast(0.9), "")
	}
	for _, fg := range figs {
		best := bestOf(r.byRound(PRedsocks, fg.mode, fg.flows), r.byRound(PSquid, fg.mode, fg.flows), fg.f)
		add("steered ≥ 1.5× best of redsocks and Squid, "+fg.name,
			ratioByRound(r.byRound(PSteered, fg.mode, fg.flows), best, fg.f), "×", atLeast(1.5), "")
	}
	// Added p99 time to first byte over the ceiling.
	var d99 []float64
	st, ce := r.byRound(PSteered, load.ModeTTFB, 0), r.byRound(PCeiling, load.ModeTTFB, 0)
	for round, s := range st {
		if c, ok := ce[round]; ok {
			d99 = append(d99, ms(load.Percentile(s.Result.TTFBus, 99)-load.Percentile(c.Result.TTFBus, 99)))
		}
	}
	add("steered p99 TTFB ≤ ceiling + 0.5 ms", d99, "ms", atMost(0.5), "")
	// The same targets with Squid as the cloud proxy (issue 11): against
	// its ceiling and ahead of the peers that chain to Squid too.
	for _, fg := range figs {
		add("Squid cloud: steered ≥ 0.9× ceiling, "+fg.name,
			ratioByRound(r.byRound(PSteeredSq, fg.mode, fg.flows), r.byRound(PCeilingSq, fg.mode, fg.flows), fg.f), "×", atLeast(0.9), "")
		best := bestOf(r.byRound(PRedsocksSq, fg.mode, fg.flows), r.byRound(PSquidSq, fg.mode, fg.flows), fg.f)
		add("Squid cloud: steered ≥ 1× best of redsocks and Squid, "+fg.name,
			ratioByRound(r.byRound(PSteeredSq, fg.mode, fg.flows), best, fg.f), "×", atLeast(1), "")
	}
	d99 = nil
	st, ce = r.byRound(PSteeredSq, load.ModeTTFB, 0), r.byRound(PCeilingSq, load.ModeTTFB, 0)
	for round, s := range st {
		if c, ok := ce[round]; ok {
			d99 = append(d99, ms(load.Percentile(s.Result.TTFBus, 99)-load.Percentile(c.Result.TTFBus, 99)))
		}
	}
	add("Squid cloud: steered p99 TTFB ≤ ceiling + 0.5 ms", d99, "ms", atMost(0.5), "")
	var dp50 []float64
	rs := r.byRound(PRedsocksSq, load.ModeTTFB, 0)
	for round, s := range st {
		if c, ok := rs[round]; ok {
			dp50 = append(dp50, ms(load.Percentile(s.Result.TTFBus, 50)-load.Percentile(c.Result.TTFBus, 50)))
		}
	}
	add("Squid cloud: steered p50 TTFB ≤ redsocks'", dp50, "ms", atMost(0), "")
	// Gateway CPU per new HTTPS connection, the cost that decides conn/s
	// on a machine the cloud proxy shares.
	perConn := func(s Sample) float64 {
		if s.Result.Conns == 0 {
			return math.Inf(1)
		}
		return s.GWCPU / float64(s.Result.Conns)
	}
	add("Squid cloud: steered gw CPU per HTTPS conn ≤ redsocks'",
		ratioByRound(r.byRound(PSteeredSq, load.ModeConns, 0), r.byRound(PRedsocksSq, load.ModeConns, 0), perConn), "× redsocks", atMost(1), "")
	// NAT: the bypass path in an office router against direct in it.
	for _, fg := range figs[:2] {
		add("NAT: bypass ≥ 0.97× direct, "+fg.name,
			ratioByRound(r.byRound(PBypassNAT, fg.mode, fg.flows), r.byRound(PDirectNAT, fg.mode, fg.flows), fg.f), "×", atLeast(0.97), "")
	}
	// DNS.
	var dq []float64
	for round := 1; round <= r.Repeats; round++ {
		var cs, best float64
		for _, d := range r.DNS {
			if d.Round != round || d.Problem != "" {
				continue
			}
			if d.Server == "cloudsteer" {
				cs = d.QPS
			} else {
				best = max(best, d.QPS)
			}
		}
		if cs > 0 && best > 0 {
			dq = append(dq, cs/best)
		}
	}
	add("DNS q/s ≥ 1.2× faster of dnsmasq and unbound", dq, "×", atLeast(1.2), "")
	// CPU per GB.
	perGB := func(s Sample) float64 {
		if s.Result.Bytes == 0 {
			return math.Inf(1)
		}
		return s.GWCPU / (float64(s.Result.Bytes) / 1e9)
	}
	add(fmt.Sprintf("steered CPU s/GB ≤ redsocks' (%d flows)", r.Flows),
		ratioByRound(r.byRound(PSteered, load.ModeStream, r.Flows), r.byRound(PRedsocks, load.ModeStream, r.Flows), perGB), "× redsocks", atMost(1), "")
	mb := func(b int64) []float64 {
		if b <= 0 {
			return nil
		}
		return []float64{float64(b) / (1 << 20)}
	}
	add("RSS idle ≤ 25 MB", mb(r.Memory.IdleBytes), "MiB", atMost(25), "")
	flowsRSS := mb(r.Memory.FlowsBytes)
	if r.Memory.Problem != "" {
		flowsRSS = nil
	}
	add(fmt.Sprintf("RSS with %d idle flows ≤ 120 MB", r.Memory.Flows), flowsRSS, "MiB", atMost(120), r.Memory.Problem)
	add("stripped binary ≤ 20 MB", mb(r.BinaryBytes), "MiB", atMost(20), "")
	return vs
}

func f1(s Stat, digits int) string {
	if math.IsNaN(s.Median) {
		return "—"
	}
	if s.N <= 1 || s.Min == s.Max {
		return fmt.Sprintf("%.*f", digits, s.Median)
	}
	return fmt.Sprintf("%.*f (%.*f–%.*f)", digits, s.Median, digits, s.Min, digits, s.Max)
}

// WriteTable prints the human-readable report.
func (r *Results) WriteTable(w io.Writer) {
	sum := r.Summary
	if sum == nil {
		sum = r.Summarize()
	}
	fmt.Fprintf(w, "cloudsteer benchmark — %s — %s, %d rounds, %.0fs per figure\n", r.Started.Format(time.RFC3339), r.Machine, r.Repeats, r.DurationS)
	fmt.Fprintf(w, "medians over the rounds, (min–max) spread; every sample checked against what the cloud proxy and origins counted\n\n")

	// A run of extra figures only (--only fairness, --only console) has no
	// path, DNS or memory figures: print just those it has.
	if len(r.Samples) == 0 && len(r.Baselines) == 0 && len(r.DNS) == 0 && (r.Fairness != nil || r.Console != nil) {
		var b bytes.Buffer
		r.writeFairness(&b)
		w.Write(b.Bytes())
		var cb strings.Builder
		r.writeConsole(&cb)
		io.WriteString(w, cb.String())
		fmt.Fprintf(w, "stripped cloudsteer binary: %.1f MiB\n", float64(r.BinaryBytes)/(1<<20))
		r.writeProblems(w)
		return
	}
	fmt.Fprintln(w, "Baselines (the benchmark's origin and cloud proxy alone; the lab's Go proxy vs the benchmark proxy):")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  WHAT\tMODE\tFLOWS\tRESULT")
	for _, s := range r.Baselines {
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\n", s.Path, s.Mode, s.Flows, s.Brief())
	}
	tw.Flush()
	fmt.Fprintln(w)

	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "PATH\tGbit/s 1 flow\tGbit/s %d flows\tHTTPS conn/s\tTTFB p50 ms\tTTFB p99 ms\t+p50 ms\t+p99 ms\tgw CPU s/GB\tmachine CPU s/GB\tinvalid\t\n", r.Flows)
	for _, p := range sum.Paths {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t\n", p.Path,
			f1(p.Gbps1, 2), f1(p.GbpsN, 2), f1(p.CPS, 0), f1(p.TTFBp50, 3), f1(p.TTFBp99, 3),
			f1(p.AddedP50, 3), f1(p.AddedP99, 3), f1(p.GWCPUPerGB, 2), f1(p.MachCPUPerGB, 2), p.Invalid)
	}
	tw.Flush()
	fmt.Fprintln(w, "(+p50/+p99: added time to first byte of a new HTTPS connection over direct, same round)")
	fmt.Fprintln(w)

	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "DNS FORWARDER\tqueries/s\tp50 µs @2000 q/s\tp99 µs @2000 q/s\t")
	for _, d := range sum.DNS {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", d.Server, f1(d.QPS, 0), f1(d.P50us, 0), f1(d.P99us, 0))
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintf(w, "gateway RSS just after start (MiB):")
	for _, g := range []string{GWCloudsteer, GWRedsocks, GWSquid} {
		var xs []float64
		for _, s := range r.IdleRSS {
			if s.Gateway == g {
				xs = append(xs, float64(s.Bytes)/(1<<20))
			}
		}
		fmt.Fprintf(w, " %s %s;", g, f1(stat(xs), 1))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "cloudsteer RSS: idle %.1f MiB; with idle steered flows held open:", float64(r.Memory.IdleBytes)/(1<<20))
	for _, p := range r.Memory.Points {
		fmt.Fprintf(w, " %d flows %.1f MiB (cloud proxy held %d tunnels);", p.Flows, float64(p.Bytes)/(1<<20), p.Tunnels)
	}
	if r.Memory.Extrapolated {
		fmt.Fprintf(w, " extrapolated to %d flows: %.1f MiB (open file limit)", r.Memory.Flows, float64(r.Memory.FlowsBytes)/(1<<20))
	}
	fmt.Fprintf(w, "%s\n", problemSuffix(r.Memory.Problem))
	fmt.Fprintf(w, "stripped cloudsteer binary: %.1f MiB\n\n", float64(r.BinaryBytes)/(1<<20))
	var fb bytes.Buffer
	r.writeFairness(&fb)
	w.Write(fb.Bytes())
	var cb strings.Builder
	r.writeConsole(&cb)
	io.WriteString(w, cb.String())

	fmt.Fprintln(w, "Targets (issue 4), judged on the median of per-round ratios:")
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, v := range sum.Verdicts {
		mark := "MISS"
		if v.Holds {
			mark = "holds"
		}
		per := make([]string, len(v.Ratios))
		for i, x := range v.Ratios {
			per[i] = fmt.Sprintf("%.2f", x)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%.2f %s\t[%s]%s\n", mark, v.Target, v.Median, v.Unit, strings.Join(per, " "), problemSuffix(v.Detail))
	}
	tw.Flush()
	r.writeProblems(w)
}

// writeProblems lists the run's problems and invalid samples.
func (r *Results) writeProblems(w io.Writer) {
	if len(r.Problems) > 0 {
		fmt.Fprintln(w, "\nProblems:")
		for _, p := range r.Problems {
			fmt.Fprintln(w, "  "+p)
		}
	}
	var bad []string
	for _, s := range r.Samples {
		if s.Problem != "" {
			bad = append(bad, fmt.Sprintf("  round %d %s %s %d: %s", s.Round, s.Path, s.Mode, s.Flows, s.Problem))
		}
	}
	for _, d := range r.DNS {
		if d.Problem != "" {
			bad = append(bad, fmt.Sprintf("  round %d dns %s: %s", d.Round, d.Server, d.Problem))
		}
	}
	if len(bad) > 0 {
		fmt.Fprintln(w, "\nInvalid samples (left out of the medians):")
		fmt.Fprintln(w, strings.Join(bad, "\n"))
	}
}

func problemSuffix(p string) string {
	if p == "" {
		return ""
	}
	return " — " + p
}

package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cloudsteer/cloudsteer/bench/load"
	"github.com/cloudsteer/cloudsteer/bench/serve"
	"github.com/cloudsteer/cloudsteer/lab"
)

// Options configure a benchmark run.
type Options struct {
	BinDir   string        // holds cloudsteer and cloudsteer-lab
	Self     string        // the cloudsteer-bench binary (run in namespaces as `serve` and `load`)
	OutDir   string        // table.txt, results.json, chart.png
	Prefix   string        // lab namespace prefix
	Repeats  int           // rounds over every path
	Duration time.Duration // each throughput and connection-rate measurement
	Samples  int           // time-to-first-byte samples per path and round
	Flows    int           // the "many flows" figure (32)
	Idle     int           // idle flows for the RSS figure (10 000)
	// IdleTarget is the idle-flow count the RSS figure is reported for;
	// Run sets it to Idle and lowers Idle when the open file limit is
	// too low, extrapolating from two measured points.
	IdleTarget int
	Log        io.Writer // progress lines
	// Only, when not empty, limits the rounds to these paths and skips
	// the baselines, DNS and memory figures (for profiling one path).
	Only []string
}

type runner struct {
	opts     Options
	lab      *lab.Lab
	dir      string
	serveDir string
	ctl      *http.Client
	log      *slog.Logger
	hz       float64
}

// Run runs the whole benchmark and returns its results.
func Run(ctx context.Context, opts Options) (*Results, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the benchmark builds network namespaces: run it as root")
	}
	for _, b := range []string{"cloudsteer", "cloudsteer-lab"} {
		if _, err := os.Stat(filepath.Join(opts.BinDir, b)); err != nil {
			return nil, fmt.Errorf("missing %s in %s: run `make build` first", b, opts.BinDir)
		}
	}
	// Each held flow costs the gateway two descriptors (client and
	// upstream); the hard limit the children inherit caps the idle-flow
	// figure (the gateway needs a few dozen more of its own).
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return nil, fmt.Errorf("read open file limit: %w", err)
	}
	if maxFlows := int(lim.Max-100) / 2; opts.Idle > maxFlows {
		fmt.Fprintf(opts.Log, "==> open file limit %d: idle flows %d → %d (RSS at %d extrapolated from two points)\n", lim.Max, opts.Idle, maxFlows, opts.Idle)
		opts.IdleTarget, opts.Idle = opts.Idle, maxFlows
	} else {
		opts.IdleTarget = opts.Idle
	}
	if dir := os.Getenv(BinBEnv); dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "cloudsteer")); err != nil {
			return nil, fmt.Errorf("%s: %w", BinBEnv, err)
		}
		Paths = withBinB(Paths, dir)
		// --only with a steered row measures its B row too.
		for _, o := range ExpandOnly(opts.Only) {
			switch o {
			case PSteered:
				opts.Only = append(opts.Only, PSteeredB)
			case PSteeredSq:
				opts.Only = append(opts.Only, PSteeredSqB)
			}
		}
	}
	opts.Only = ExpandOnly(opts.Only)
	if err := lab.Cleanup(opts.Prefix); err != nil {
		return nil, fmt.Errorf("remove an earlier bench lab: %w", err)
	}
	dir, err := os.MkdirTemp("", "cloudsteer-bench")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755) // Squid runs as user proxy
	r := &runner{opts: opts, dir: dir, serveDir: filepath.Join(dir, "serve"), log: slog.With("component", "bench"), hz: 100}
	if err := os.Mkdir(r.serveDir, 0o755); err != nil {
		return nil, err
	}
	r.say("lab up (prefix %s)", opts.Prefix)
	upCtx, cancel := context.WithTimeout(ctx, 90*time.Second)
	// LAN2: the fairness figure's second client.
	// Squid as a cloud proxy (the e2e tests' one) for the Squid-cloud
	// rows, told the benchmark origins' names.
	squid := len(opts.Only) == 0 || slices.ContainsFunc(Paths, func(p Path) bool { return p.SquidCloud && slices.Contains(opts.Only, p.Name) })
	l, err := lab.Up(upCtx, lab.Options{Prefix: opts.Prefix, Dir: filepath.Join(dir, "lab"), LabBinary: filepath.Join(opts.BinDir, "cloudsteer-lab"), LAN2: true,
		Firewall: lab.FirewallNone, Squid: squid, SquidHosts: Names()})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("lab up: %w", err)
	}
	r.lab = l
	defer l.Close()
	if err := r.tune(ctx); err != nil {
		return nil, err
	}
	stopServe, err := r.startServe(ctx)
	if err != nil {
		return nil, err
	}
	defer stopServe()

	res := &Results{Started: time.Now().UTC(), Repeats: opts.Repeats, DurationS: opts.Duration.Seconds(), Flows: opts.Flows, Machine: machine()}
	if len(opts.Only) == 0 {
		r.say("baselines: origin and cloud proxy alone")
		res.Baselines = r.baselines(ctx)
	}
	for round := range opts.Repeats {
		for fig := range len(r.specs(Paths[0])) {
			for _, v := range visitOrder(round) {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				if err := r.visit(ctx, round, fig, v, res); err != nil {
					r.say("%s: %v", v.kind, err)
					res.Problems = append(res.Problems, fmt.Sprintf("round %d, %s: %v", round+1, v.kind, err))
				}
			}
		}
	}
	if len(opts.Only) == 0 {
		r.say("dns")
		res.DNS = r.dns(ctx)
		r.say("memory")
		res.Memory = r.memory(ctx)
	}
	if len(opts.Only) == 0 || slices.Contains(opts.Only, FairnessOnly) {
		r.say("fairness")
		f := r.fairness(ctx)
		res.Fairness = &f
	}
	if len(opts.Only) == 0 || slices.Contains(opts.Only, ConsoleOnly) {
		r.say("console")
		c := r.console(ctx)
		res.Console = &c
	}
	if fi, err := os.Stat(filepath.Join(opts.BinDir, "cloudsteer")); err == nil {
		res.BinaryBytes = fi.Size()
	}
	res.Finished = time.Now().UTC()
	return res, nil
}

func (r *runner) say(format string, a ...any) {
	if r.opts.Log != nil {
		fmt.Fprintf(r.opts.Log, "==> "+format+"\n", a...)
	}
}

// tune adds the benchmark addresses and sets per-namespace TCP sysctls:
// TIME_WAIT reuse for outgoing connections and a wide port range, so
// thousands of short connections do not stall on old 4-tuples.
func (r *runner) tune(ctx context.Context) error {
	for _, a := range ServiceAddrs() {
		if out, err := exec.CommandContext(ctx, "ip", "-n", r.lab.NS(lab.RoleInet), "addr", "add", a.String()+"/32", "dev", "lo").CombinedOutput(); err != nil {
			return fmt.Errorf("add %s: %w: %s", a, err, out)
		}
	}
	for _, role := range r.lab.Roles() {
		for _, kv := range []string{"net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=1024 65000", "net.core.somaxconn=8192", "net.ipv4.tcp_max_syn_backlog=8192"} {
			if out, err := r.lab.Command(ctx, role, "sysctl", "-qw", kv).CombinedOutput(); err != nil {
				return fmt.Errorf("sysctl %s in %s: %w: %s", kv, role, err, out)
			}
		}
	}
	// The wide ephemeral range above covers the gateways' listener ports,
	// and the ceiling's client runs in the gateway namespace: a TIME_WAIT
	// socket of its on 15080, say, kept the next cloudsteer from binding
	// it. (Linux's default range starts at 32768, above all of them.)
	kv := fmt.Sprintf("net.ipv4.ip_local_reserved_ports=%d,%d,%d,%d,%d,%d,%d", 9080, 15053, 15080, 15443, redsocksPort, squidIcptPort, squidPlainPort)
	if out, err := r.lab.Command(ctx, lab.RoleGW, "sysctl", "-qw", kv).CombinedOutput(); err != nil {
		return fmt.Errorf("sysctl %s in %s: %w: %s", kv, lab.RoleGW, err, out)
	}
	return nil
}

// startServe runs `cloudsteer-bench serve` in the internet namespace and
// connects to its control socket.
func (r *runner) startServe(ctx context.Context) (func(), error) {
	f, err := os.Create(filepath.Join(r.dir, "serve.log"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := r.lab.Command(context.Background(), lab.RoleInet, r.opts.Self, "serve", "--dir", r.serveDir)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start bench servers: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	sock := filepath.Join(r.serveDir, serve.CtlSocket)
	r.ctl = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := r.stats(); err == nil {
			return stop, nil
		}
		select {
		case <-done:
			return nil, fmt.Errorf("bench servers exited: %s", readFile(filepath.Join(r.dir, "serve.log")))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("bench servers not ready: %s", readFile(filepath.Join(r.dir, "serve.log")))
		}
	}
}

func (r *runner) stats() (serve.Stats, error) {
	var st serve.Stats
	resp, err := r.ctl.Get("http://ctl/stats")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

func (r *runner) resetStats() error {
	resp, err := r.ctl.Post("http://ctl/reset", "", nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// settledStats waits until no tunnel or origin flow is open (their byte
// counts land when they end), then returns the counters.
func (r *runner) settledStats() (serve.Stats, error) {
	deadline := time.Now().Add(3 * time.Second)
	for {
		st, err := r.stats()
		if err != nil || (st.TunnelActive == 0 && st.OriginActive == 0) || time.Now().After(deadline) {
			return st, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// loadArgs are the command line of `cloudsteer-bench load` for spec.
func loadArgs(s load.Spec) []string {
	a := []string{"load", "--mode", s.Mode, "--dst", s.Dst.String(), "--name", s.Name,
		"--flows", strconv.Itoa(s.Flows), "--duration", s.Duration.String(), "--samples", strconv.Itoa(s.Samples)}
	if s.Proxy.IsValid() {
		a = append(a, "--proxy", s.Proxy.String(), "--auth", s.Auth)
	}
	if s.CAFile != "" {
		a = append(a, "--ca", s.CAFile)
	}
	if s.Path != "" {
		a = append(a, "--path", s.Path)
	}
	if s.Within > 0 {
		a = append(a, "--within", s.Within.String())
	}
	if s.Every > 0 {
		a = append(a, "--every", s.Every.String())
	}
	return a
}

// runLoad runs the load generator in the namespace of role and returns
// its result.
func (r *runner) runLoad(ctx context.Context, role string, s load.Spec) (load.Result, error) {
	var res load.Result
	ctx, cancel := context.WithTimeout(ctx, s.Duration+s.Within+60*time.Second)
	defer cancel()
	cmd := r.lab.Command(ctx, role, append([]string{r.opts.Self}, loadArgs(s)...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return res, fmt.Errorf("load %s: %w: %s", s.Mode, err, lastLines(errb.String(), 5))
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		return res, fmt.Errorf("load %s output: %w", s.Mode, err)
	}
	return res, nil
}

// cpuTimes returns the CPU seconds used so far by the processes in the
// gateway namespace (not the load generator) and by the whole machine
// (busy time over all cores).
func (r *runner) cpuTimes() (gwProc, machine float64) {
	out, _ := exec.Command("ip", "netns", "pids", r.lab.NS(lab.RoleGW)).Output()
	self := filepath.Base(r.opts.Self)
	for _, f := range strings.Fields(string(out)) {
		b, err := os.ReadFile("/proc/" + f + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		j := bytes.IndexByte(b, '(')
		if i < 0 || j < 0 || isSelf(self, string(b[j+1:i])) {
			continue
		}
		fs := strings.Fields(string(b[i+2:]))
		if len(fs) > 13 {
			u, _ := strconv.ParseFloat(fs[11], 64)
			s, _ := strconv.ParseFloat(fs[12], 64)
			gwProc += (u + s) / r.hz
		}
	}
	b, _ := os.ReadFile("/proc/stat")
	line, _, _ := strings.Cut(string(b), "\n")
	fs := strings.Fields(line)
	if len(fs) > 8 && fs[0] == "cpu" {
		var total, idle float64
		for k, v := range fs[1:] {
			x, _ := strconv.ParseFloat(v, 64)
			total += x
			if k == 3 || k == 4 { // idle, iowait
				idle += x
			}
		}
		machine = (total - idle) / r.hz
	}
	return gwProc, machine
}

// isSelf reports whether a process's comm (the kernel keeps 15 bytes of
// the name) is the load generator's own binary name. A prefix test would
// also match "cloudsteer" for "cloudsteer-bench" and leave the gateway
// out of its own figures.
func isSelf(self, comm string) bool {
	if len(self) > 15 {
		self = self[:15]
	}
	return comm == self
}

// gwRSS returns the summed resident memory of the processes in the gateway
// namespace that are not the load generator, in bytes.
func (r *runner) gwRSS() int64 {
	out, _ := exec.Command("ip", "netns", "pids", r.lab.NS(lab.RoleGW)).Output()
	self := filepath.Base(r.opts.Self)
	var total int64
	for _, f := range strings.Fields(string(out)) {
		comm, _ := os.ReadFile("/proc/" + f + "/comm")
		if isSelf(self, strings.TrimSpace(string(comm))) {
			continue
		}
		b, err := os.ReadFile("/proc/" + f + "/status")
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				total += kb << 10
			}
		}
	}
	return total
}

// measure runs one load spec on path p and checks it against what the
// proxy and the origins counted.
func (r *runner) measure(ctx context.Context, p Path, s load.Spec) Sample {
	smp := Sample{Path: p.Name, Mode: s.Mode, Flows: s.Flows}
	if err := r.resetStats(); err != nil {
		smp.Problem = "reset stats: " + err.Error()
		return smp
	}
	g0, m0 := r.cpuTimes()
	res, err := r.runLoad(ctx, p.Role, s)
	g1, m1 := r.cpuTimes()
	if err != nil {
		smp.Problem = err.Error()
		return smp
	}
	st, err := r.settledStats()
	if err != nil {
		smp.Problem = "stats: " + err.Error()
		return smp
	}
	smp.Result = res
	smp.GWCPU, smp.MachineCPU = g1-g0, m1-m0
	smp.Proxy = st
	smp.Problem = verify(p, s, res, st)
	if res.Errors > 0 && smp.Problem == "" && res.Errors*100 > max(res.Conns, 1) {
		smp.Problem = fmt.Sprintf("%d of %d failed: %s", res.Errors, res.Conns+res.Errors, res.FirstErr)
	}
	if smp.Problem != "" {
		smp.Diag = r.diag(ctx)
	}
	return smp
}

// diag collects the gateway namespace's drop counters, to explain a
// failed sample.
func (r *runner) diag(ctx context.Context) string {
	out, _ := r.lab.Command(ctx, lab.RoleGW, "nstat", "-az", "TcpExtListenOverflows", "TcpExtListenDrops", "TcpExtTCPReqQFullDrop", "TcpExtTCPTimeWaitOverflow", "TcpAttemptFails", "TcpExtTCPBacklogDrop").Output()
	ct, _ := r.lab.Command(ctx, lab.RoleGW, "sh", "-c", "cat /proc/net/stat/nf_conntrack 2>/dev/null | head -3; cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null").Output()
	lan, _ := r.lab.Command(ctx, lab.RoleLAN, "sh", "-c", "nstat -az | grep -v ' 0 ' ; ss -s | head -3").Output()
	return strings.TrimSpace(string(out)) + "\n" + strings.TrimSpace(string(ct)) + "\nlan:\n" + strings.TrimSpace(string(lan))
}

// verify checks that a measurement took the path it is labelled with:
// the cloud proxy carried it (and saw the expected client) or did not, the
// origins saw the expected peer, and the bytes the client counted were
// sent by the origin and carried by the proxy.
func verify(p Path, s load.Spec, res load.Result, st serve.Stats) string {
	if s.Mode == load.ModeGet {
		// A lab origin: bench/serve sees only the tunnel, if it is its own.
		if res.Conns == 0 || res.Bytes == 0 {
			return "no bytes: " + res.FirstErr
		}
		if p.ViaProxy && st.Tunnels < res.Conns {
			return fmt.Sprintf("cloud proxy opened %d tunnels, client completed %d flows", st.Tunnels, res.Conns)
		}
		return ""
	}
	wantPeer := p.Client
	if p.ViaProxy {
		wantPeer = ProxyAddr.Addr().String()
	}
	if p.SquidCloud {
		// Squid dials from the internet namespace's own addresses.
		wantPeer = ""
	}
	// cloudsteer's health probe CONNECTs to an origin without
	// X-Forwarded-For and closes at once; on a path that must not use the
	// proxy those tunnels are the probe's, not the flows'.
	probes := int64(0)
	if !p.ViaProxy {
		probes = st.Tunnels - st.WithXFF
	}
	for peer, n := range st.OriginPeers {
		if !p.ViaProxy && peer == ProxyAddr.Addr().String() && n <= probes {
			continue
		}
		if wantPeer != "" && peer != wantPeer {
			return fmt.Sprintf("origin saw peer %s, want only %s", peer, wantPeer)
		}
		if p.SquidCloud && (peer == lab.ClientV4.Addr().String() || peer == lab.GWWANV4.Addr().String()) {
			return fmt.Sprintf("origin saw peer %s: the flow did not go through Squid", peer)
		}
	}
	if res.Conns == 0 {
		return "no flow completed: " + res.FirstErr
	}
	if st.OriginConns < res.Conns {
		return fmt.Sprintf("origin saw %d connections, client completed %d", st.OriginConns, res.Conns)
	}
	if p.ViaProxy && !p.SquidCloud {
		if st.Tunnels < res.Conns {
			return fmt.Sprintf("cloud proxy opened %d tunnels, client completed %d flows", st.Tunnels, res.Conns)
		}
		for c := range st.ProxyClients {
			if p.Client != "" && c != p.Client {
				return fmt.Sprintf("cloud proxy saw client %s, want only %s", c, p.Client)
			}
		}
		if s.Mode == load.ModeStream && float64(st.ProxyDown) < 0.95*float64(res.Bytes) {
			return fmt.Sprintf("cloud proxy carried %d bytes, client counted %d", st.ProxyDown, res.Bytes)
		}
	} else if st.Tunnels-probes != 0 {
		return fmt.Sprintf("benchmark cloud proxy opened %d tunnels on a path that must not use it", st.Tunnels)
	}
	if s.Mode == load.ModeStream && float64(st.OriginBytes) < 0.95*float64(res.Bytes) {
		return fmt.Sprintf("origin sent %d bytes, client counted %d", st.OriginBytes, res.Bytes)
	}
	if s.Mode != load.ModeStream && st.Requests < res.Conns {
		return fmt.Sprintf("origin answered %d requests, client completed %d", st.Requests, res.Conns)
	}
	return ""
}

// specs returns the load specs of one round on p.
func (r *runner) specs(p Path) []load.Spec {
	sdst, sname := p.streamTarget()
	hdst, hname := p.httpsTarget()
	ca := filepath.Join(r.serveDir, serve.CAFile)
	var proxy netip.AddrPort
	auth := ""
	if p.Explicit {
		proxy, auth = ProxyAddr, lab.EntitlementCode
		if p.SquidCloud {
			proxy, auth = SquidCloudAddr, SquidCloudAuth
		}
	}
	mk := func(mode string, dst netip.AddrPort, name string, flows int) load.Spec {
		return load.Spec{Mode: mode, Dst: dst, Name: name, Proxy: proxy, Auth: auth, CAFile: ca,
			Flows: flows, Duration: r.opts.Duration, Samples: r.opts.Samples}
	}
	return []load.Spec{
		mk(load.ModeStream, sdst, sname, 1),
		mk(load.ModeStream, sdst, sname, r.opts.Flows),
		mk(load.ModeConns, hdst, hname, 16),
		mk(load.ModeTTFB, hdst, hname, 1),
	}
}

// visit is one gateway kind started for the paths that use it.
type visit struct {
	kind  string
	paths []string
	// nat loads the office router's ruleset for the visit; squid chains
	// the gateway to the lab's Squid.
	nat, squid bool
	// bin is the directory of the cloudsteer binary to run, when not
	// Options.BinDir (the A/B rows).
	bin string
}

// visitOrder is the order in which a round measures one figure on every
// path: each pair a target compares (direct and bypass, steered and the
// ceiling) is measured back to back, and every other round runs the order
// backwards, so that a drift of the shared machine over a round does not
// always favour the same side of a pair.
func visitOrder(round int) []visit {
	vs := []visit{
		{GWConntrack, []string{PDirectCT}, false, false, ""},
		{GWNone, []string{PDirect}, false, false, ""},
		{GWCloudsteer, []string{PBypass, PSteered}, false, false, ""},
		{GWNone, []string{PCeiling, PAgent}, false, false, ""},
		{GWRedsocks, []string{PRedsocks}, false, false, ""},
		{GWSquid, []string{PSquid}, false, false, ""},
		// In an office router: direct, then bypass.
		{GWNone, []string{PDirectNAT}, true, false, ""},
		{GWCloudsteer, []string{PBypassNAT}, true, false, ""},
		// Squid as the cloud proxy: steered, redsocks and the ceiling
		// back to back, then Squid intercept.
		{GWCloudsteer, []string{PSteeredSq}, false, true, ""},
		{GWRedsocks, []string{PRedsocksSq}, false, true, ""},
		{GWNone, []string{PCeilingSq}, false, true, ""},
		{GWSquid, []string{PSquidSq}, false, true, ""},
	}
	// The A/B rows, when there are any, right after their A rows.
	for i := 0; i < len(vs); i++ {
		for _, p := range Paths {
			if p.Bin != "" && vs[i].bin == "" &&
				((slices.Contains(vs[i].paths, PSteeredSq) && p.Name == PSteeredSqB) || (slices.Contains(vs[i].paths, PSteered) && p.Name == PSteeredB)) {
				b := visit{GWCloudsteer, []string{p.Name}, false, vs[i].squid, p.Bin}
				vs = slices.Insert(vs, i+1, b)
				i++
			}
		}
	}
	if round%2 == 1 {
		slices.Reverse(vs)
		for _, v := range vs {
			slices.Reverse(v.paths)
		}
	}
	return vs
}

// visit starts v's gateway and measures figure fig (an index into specs)
// on each of v's paths.
func (r *runner) visit(ctx context.Context, round, fig int, v visit, res *Results) error {
	var todo []Path
	for _, name := range v.paths {
		if len(r.opts.Only) > 0 && !slices.Contains(r.opts.Only, name) {
			continue
		}
		i := slices.IndexFunc(Paths, func(p Path) bool { return p.Name == name })
		todo = append(todo, Paths[i])
	}
	if len(todo) == 0 {
		return nil
	}
	if v.nat {
		if err := r.router(ctx); err != nil {
			return err
		}
		defer r.clearRouter()
	}
	g, err := r.startGatewayWith(ctx, v.kind, gwOptions{squidCloud: v.squid, bin: v.bin})
	if err != nil {
		return err
	}
	defer g.stop()
	time.Sleep(300 * time.Millisecond)
	if v.kind != GWNone && v.kind != GWConntrack && fig == 0 && !v.nat && !v.squid {
		res.IdleRSS = append(res.IdleRSS, RSSSample{Gateway: v.kind, Bytes: r.gwRSS()})
	}
	for _, p := range todo {
		s := r.specs(p)[fig]
		smp := r.measure(ctx, p, s)
		smp.Round = round + 1
		r.say("round %d %-18s %-6s %2d flows: %s", round+1, p.Name, s.Mode, s.Flows, smp.Brief())
		res.Samples = append(res.Samples, smp)
	}
	return nil
}

// baselines measure the origin alone (from the internet namespace), the
// benchmark cloud proxy alone (from the internet namespace), and the lab's
// Go cloud proxy against the benchmark proxy for the same real TLS
// download of a lab origin, from the gateway namespace.
func (r *runner) baselines(ctx context.Context) []Sample {
	ca := filepath.Join(r.serveDir, serve.CAFile)
	var out []Sample
	add := func(name, role string, s load.Spec, via bool, client string) {
		p := Path{Name: name, Role: role, ViaProxy: via, Client: client}
		smp := r.measure(ctx, p, s)
		r.say("baseline %-26s %-6s %2d flows: %s", name, s.Mode, s.Flows, smp.Brief())
		out = append(out, smp)
	}
	inetIP := "" // any peer: the load runs in the internet namespace itself
	for _, flows := range []int{1, r.opts.Flows} {
		add("origin alone", lab.RoleInet, load.Spec{Mode: load.ModeStream, Dst: StreamAddr, Name: StreamName, Flows: flows, Duration: r.opts.Duration}, false, inetIP)
	}
	add("origin alone", lab.RoleInet, load.Spec{Mode: load.ModeConns, Dst: HTTPSAddr, Name: HTTPSName, CAFile: ca, Flows: 16, Duration: r.opts.Duration}, false, inetIP)
	for _, flows := range []int{1, r.opts.Flows} {
		add("bench proxy alone", lab.RoleInet, load.Spec{Mode: load.ModeStream, Dst: StreamAddr, Name: StreamName, Proxy: ProxyAddr, Auth: lab.EntitlementCode, Flows: flows, Duration: r.opts.Duration}, true, inetIP)
	}
	add("bench proxy alone", lab.RoleInet, load.Spec{Mode: load.ModeConns, Dst: HTTPSAddr, Name: HTTPSName, Proxy: ProxyAddr, Auth: lab.EntitlementCode, CAFile: ca, Flows: 16, Duration: r.opts.Duration}, true, inetIP)
	// The lab proxy versus the benchmark proxy, same lab origin, real TLS.
	site := lab.Sites[0]
	labProxy := netip.AddrPortFrom(lab.CloudProxyV4, lab.CloudProxyHTTPPort)
	for _, flows := range []int{1, r.opts.Flows} {
		for _, px := range []struct {
			name string
			ap   netip.AddrPort
		}{{"lab Go proxy, lab origin", labProxy}, {"bench proxy, lab origin", ProxyAddr}} {
			s := load.Spec{Mode: load.ModeGet, Dst: netip.AddrPortFrom(site.V4, 443), Name: site.Name, Proxy: px.ap,
				Auth: lab.EntitlementCode, CAFile: r.lab.CAFile(), Flows: flows, Duration: r.opts.Duration, Path: "/bytes?n=10000000000"}
			add(px.name, lab.RoleGW, s, px.ap == ProxyAddr, "10.20.0.1")
		}
	}
	return out
}

// dns measures each DNS forwarder: queries per second at full load, and
// latency percentiles at a fixed moderate rate.
func (r *runner) dns(ctx context.Context) []DNSSample {
	if _, err := exec.LookPath("dnsperf"); err != nil {
		return []DNSSample{{Server: "dnsperf", Problem: "dnsperf missing: run scripts/bench-deps.sh"}}
	}
	qfile := filepath.Join(r.dir, "queries.txt")
	var q strings.Builder
	for _, s := range lab.Sites {
		if s.Category != "" {
			continue
		}
		fmt.Fprintf(&q, "%s A\n%s AAAA\n", s.Name, s.Name)
	}
	os.WriteFile(qfile, []byte(q.String()), 0o644)
	var out []DNSSample
	for round := range r.opts.Repeats {
		for _, kind := range []string{"cloudsteer", "dnsmasq", "unbound"} {
			d, err := r.startDNS(ctx, kind)
			if err != nil {
				out = append(out, DNSSample{Server: kind, Round: round + 1, Problem: err.Error()})
				continue
			}
			smp := r.dnsperf(ctx, d, qfile)
			smp.Round = round + 1
			d.g.stop()
			r.say("round %d dns %-10s %s", round+1, kind, smp.Brief())
			out = append(out, smp)
		}
	}
	return out
}

var (
	qpsRE  = regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)
	lostRE = regexp.MustCompile(`Queries lost:\s+(\d+)`)
	compRE = regexp.MustCompile(`Queries completed:\s+(\d+)`)
	rcRE   = regexp.MustCompile(`Response codes:\s+(.*)`)
	latRE  = regexp.MustCompile(`(?m)^> (\S+) .* ([0-9]+\.[0-9]+)$`)
)

func (r *runner) dnsperf(ctx context.Context, d *dnsServer, qfile string) DNSSample {
	smp := DNSSample{Server: d.name}
	// Warm the cache, then full load.
	base := []string{"dnsperf", "-f", "inet", "-s", d.addr, "-d", qfile, "-t", "2"}
	r.lab.Command(ctx, lab.RoleLAN, append(base, "-n", "20")...).Run()
	sec := int(max(r.opts.Duration.Seconds(), 1))
	outb, err := r.lab.Command(ctx, lab.RoleLAN, append(base, "-l", strconv.Itoa(sec), "-c", "8", "-q", "200")...).CombinedOutput()
	o := string(outb)
	if err != nil {
		smp.Problem = fmt.Sprintf("dnsperf: %v: %s", err, lastLines(o, 5))
		return smp
	}
	if m := qpsRE.FindStringSubmatch(o); m != nil {
		smp.QPS, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := compRE.FindStringSubmatch(o); m != nil {
		smp.Completed, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := lostRE.FindStringSubmatch(o); m != nil {
		smp.Lost, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := rcRE.FindStringSubmatch(o); m != nil {
		smp.RCodes = strings.TrimSpace(m[1])
		if !strings.HasPrefix(smp.RCodes, "NOERROR") || strings.Contains(smp.RCodes, ",") {
			smp.Problem = "not every answer was NOERROR: " + smp.RCodes
		}
	}
	if smp.Completed == 0 {
		smp.Problem = "no query answered: " + lastLines(o, 3)
	}
	// Latency at a fixed rate, every query reported (-v).
	cmd := r.lab.Command(ctx, lab.RoleLAN, append(base, "-l", "2", "-Q", "2000", "-v")...)
	pipe, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err == nil {
		var lats []float64
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			if m := latRE.FindStringSubmatch(sc.Text()); m != nil {
				v, _ := strconv.ParseFloat(m[2], 64)
				lats = append(lats, v*1e6)
			}
		}
		cmd.Wait()
		if len(lats) > 0 {
			smp.P50us = load.Percentile(lats, 50)
			smp.P99us = load.Percentile(lats, 99)
			smp.LatencySamples = len(lats)
		}
	}
	return smp
}

// memory measures cloudsteer's resident memory idle and with idle steered
// flows held open (ClientHello sent, then silence): at Idle/2 and at Idle
// flows, and, when the open file limit kept Idle below IdleTarget, a linear
// extrapolation to IdleTarget from those two points.
func (r *runner) memory(ctx context.Context) Memory {
	var m Memory
	g, err := r.startGateway(ctx, GWCloudsteer)
	if err != nil {
		m.Problem = err.Error()
		return m
	}
	defer g.stop()
	time.Sleep(time.Second)
	m.IdleBytes = r.gwRSS()
	r.resetStats()
	held := 0
	for _, n := range []int{r.opts.Idle / 2, r.opts.Idle - r.opts.Idle/2} {
		closeHold, got, err := r.hold(ctx, n)
		if err != nil {
			m.Problem = err.Error()
			return m
		}
		defer closeHold()
		held += got
		// Wait until the proxy holds as many tunnels (the gateway dialed them).
		var tunnels int64
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			st, err := r.stats()
			if err == nil {
				tunnels = st.TunnelActive
				if tunnels >= int64(held) {
					break
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		// The proxy returns freed memory to the OS once flows have gone
		// idle (200 ms after the last one parks).
		time.Sleep(2 * time.Second)
		m.Points = append(m.Points, RSSPoint{Flows: held, Tunnels: tunnels, Bytes: r.gwRSS()})
		if tunnels < int64(held) || got < n {
			m.Problem = fmt.Sprintf("only %d of %d flows open, %d tunnels at the cloud proxy", held, r.opts.Idle, tunnels)
		}
	}
	last := m.Points[len(m.Points)-1]
	m.Flows, m.FlowsBytes, m.Tunnels = last.Flows, last.Bytes, last.Tunnels
	if t := r.opts.IdleTarget; t > last.Flows && len(m.Points) == 2 {
		first := m.Points[0]
		slope := float64(last.Bytes-first.Bytes) / float64(last.Flows-first.Flows)
		m.Flows = t
		m.FlowsBytes = last.Bytes + int64(slope*float64(t-last.Flows))
		m.Extrapolated = true
	}
	return m
}

// hold opens n idle steered flows from the LAN client and returns a
// function that closes them.
func (r *runner) hold(ctx context.Context, n int) (func(), int, error) {
	spec := load.Spec{Mode: load.ModeHold, Dst: SinkAddr, Name: SinkName, Flows: n}
	cmd := r.lab.Command(context.Background(), lab.RoleLAN, append([]string{r.opts.Self}, loadArgs(spec)...)...)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	closeHold := func() { stdin.Close(); cmd.Wait() }
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		closeHold()
		return nil, 0, fmt.Errorf("hold flows: %v: %s", err, lastLines(errb.String(), 3))
	}
	var got int
	fmt.Sscanf(line, "ready %d", &got)
	return closeHold, got, nil
}

// machine describes the host for the report.
func machine() string {
	var model string
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	var uts syscall.Utsname
	syscall.Uname(&uts)
	rel := make([]byte, 0, 65)
	for _, c := range uts.Release {
		if c == 0 {
			break
		}
		rel = append(rel, byte(c))
	}
	n := 0
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		n = strings.Count(string(b), "processor\t:")
	}
	return fmt.Sprintf("%d × %s, Linux %s", n, model, rel)
}

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/cloudsteer/cloudsteer/dataplane/tcx"
	"github.com/cloudsteer/cloudsteer/internal/privtest"
	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/gateway"
	"github.com/cloudsteer/cloudsteer/lab/servers"
)

// bins are the binaries TestMain builds once.
var bins struct{ cloudsteer, lab string }

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		if privtest.InCI() {
			fmt.Fprintln(os.Stderr, "e2e: needs root (CI=true: failing, not skipping)")
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, "e2e: skipped, needs root")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "cloudsteer-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins.cloudsteer = filepath.Join(dir, "cloudsteer")
	bins.lab = filepath.Join(dir, "cloudsteer-lab")
	for out, pkg := range map[string]string{bins.cloudsteer: "./cmd/cloudsteer", bins.lab: "./cmd/cloudsteer-lab"} {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = ".."
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, b)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is one lab with helpers to drive its client and read what each hop saw.
type env struct {
	t   *testing.T
	lab *lab.Lab
}

func newEnv(t *testing.T, squid bool) *env {
	t.Helper()
	return newLabEnv(t, lab.Options{Squid: squid})
}

// newLabEnv is newEnv with more lab options (NAT, the second LAN host);
// Prefix, Dir and LabBinary are filled in.
func newLabEnv(t *testing.T, opts lab.Options) *env {
	t.Helper()
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "ip", "curl", "dig", "nft")
	if opts.Squid {
		privtest.RequireCommand(t, "squid")
	}
	prefix := privtest.Unique("cse")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	opts.Prefix, opts.Dir, opts.LabBinary = prefix, t.TempDir(), bins.lab
	l, err := lab.Up(ctx, opts)
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
		if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), prefix) {
			t.Errorf("namespaces left behind: %s", out)
		}
	})
	return &env{t: t, lab: l}
}

// startGateway runs cloudsteer in the gateway namespace until the test ends.
func (e *env) startGateway(o gateway.Options) *gateway.Gateway {
	e.t.Helper()
	o.Bin, o.Lab = bins.cloudsteer, e.lab
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g, err := gateway.Start(ctx, o)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		if g.Running() {
			if err := g.Stop(); err != nil {
				e.t.Errorf("stop cloudsteer: %v", err)
			}
		}
		if e.t.Failed() {
			e.t.Logf("cloudsteer output:\n%s", g.Log())
		}
	})
	return g
}

// gatewayFor starts cloudsteer for test t alone (a subtest, say) and stops
// it when t ends; on failure only the tail of its output is logged (a
// flood makes it long).
func (e *env) gatewayFor(t *testing.T, o gateway.Options) *gateway.Gateway {
	t.Helper()
	o.Bin, o.Lab = bins.cloudsteer, e.lab
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g, err := gateway.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := g.Stop(); err != nil {
			t.Errorf("stop cloudsteer: %v", err)
		}
		if t.Failed() {
			log := g.Log()
			t.Logf("cloudsteer output (last 8 kB of %d):\n%s", len(log), log[max(0, len(log)-8192):])
		}
	})
	return g
}

// run runs a command in the namespace of role with a deadline.
func (e *env) run(role string, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := e.lab.Command(ctx, role, args...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out.String(), nil
}

// curl fetches url from the LAN client, pinning name to addr (no DNS).
func (e *env) curl(url, name string, addr string, extra ...string) (string, error) {
	return e.curlFrom(lab.RoleLAN, url, name, addr, extra...)
}

// curlFrom is curl from the LAN host of role (lab.RoleLAN or RoleLAN2).
func (e *env) curlFrom(role, url, name string, addr string, extra ...string) (string, error) {
	port := "443"
	if strings.HasPrefix(url, "http://") {
		port = "80"
	}
	if strings.Contains(addr, ":") {
		addr = "[" + addr + "]"
	}
	args := []string{"curl", "-sS", "--max-time", "10", "--cacert", e.lab.CAFile(),
		"--resolve", name + ":" + port + ":" + addr}
	args = append(args, extra...)
	args = append(args, url)
	return e.run(role, 15*time.Second, args...)
}

// metric reads one sample of the gateway's /metrics from the LAN client;
// name is the series as exposed, labels included. A missing series fails
// the test.
func (e *env) metric(t *testing.T, name string) float64 {
	t.Helper()
	out, err := e.run(lab.RoleLAN, 10*time.Second, "curl", "-s", "--max-time", "3", "http://10.10.0.1:9080/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	t.Fatalf("metrics lack %s:\n%s", name, out)
	return 0
}

// dig queries server from the LAN client and returns the short answer.
func (e *env) dig(server, name, qtype string, extra ...string) (string, error) {
	args := append([]string{"dig", "+short", "+time=3", "+tries=1", "@" + server, name, qtype}, extra...)
	return e.run(lab.RoleLAN, 10*time.Second, args...)
}

// digCase is one expected short answer: qtype "-x" asks the PTR of name
// (an address); want "" is an empty answer (NODATA).
type digCase struct{ name, qtype, want string }

// expectDig asks each case of server from the LAN client over proto
// ("+notcp" or "+tcp") and fails the test on the first wrong answer.
func (e *env) expectDig(server, proto string, cases ...digCase) {
	e.t.Helper()
	for _, q := range cases {
		var out string
		var err error
		if q.qtype == "-x" {
			out, err = e.dig(server, "-x", q.name, proto)
		} else {
			out, err = e.dig(server, q.name, q.qtype, proto)
		}
		if err != nil || strings.TrimSpace(out) != q.want {
			e.t.Fatalf("dig @%s %s %s %s = %q, %v; want %q", server, proto, q.name, q.qtype, out, err, q.want)
		}
	}
}

func (e *env) proxyLog(since time.Time) []servers.ProxyRecord {
	recs, err := servers.ReadProxyLog(e.lab.Path(servers.ProxyLogFile))
	if err != nil && !os.IsNotExist(err) {
		e.t.Fatal(err)
	}
	var out []servers.ProxyRecord
	for _, r := range recs {
		if !r.Time.Before(since) {
			out = append(out, r)
		}
	}
	return out
}

func (e *env) originLog(since time.Time) []servers.OriginRecord {
	recs, err := servers.ReadOriginLog(e.lab.Path(servers.OriginLogFile))
	if err != nil && !os.IsNotExist(err) {
		e.t.Fatal(err)
	}
	var out []servers.OriginRecord
	for _, r := range recs {
		if !r.Time.Before(since) {
			out = append(out, r)
		}
	}
	return out
}

func (e *env) dnsLog(since time.Time) []servers.DNSRecord {
	recs, err := servers.ReadDNSLog(e.lab.Path(servers.DNSLogFile))
	if err != nil && !os.IsNotExist(err) {
		e.t.Fatal(err)
	}
	var out []servers.DNSRecord
	for _, r := range recs {
		if !r.Time.Before(since) {
			out = append(out, r)
		}
	}
	return out
}

// originRemote waits up to 2s for the origin to log a request for path
// since start and returns the address it came from ("" when none came).
func (e *env) originRemote(start time.Time, path string) string {
	var remote string
	eventually(2*time.Second, func() bool {
		for _, r := range e.originLog(start) {
			if r.Path == path {
				remote = hostOf(r.Remote)
				return true
			}
		}
		return false
	})
	return remote
}

// eventually polls cond for up to timeout; logs are written asynchronously.
func eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// hostOf strips the port from an ip:port as a log writes it.
func hostOf(addrPort string) string {
	h, _, err := net.SplitHostPort(addrPort)
	if err != nil {
		return addrPort
	}
	return h
}

// kernelState is what cloudsteer may leave in the gateway namespace: TCX
// programs and (legacy mode) cls_bpf filters and clsact qdiscs on the LAN
// and WAN interfaces, nftables tables, policy rules and routes.
type kernelState struct {
	tcx     int
	filters int
	clsact  int
	tables  string
	rules   string
	routes  string
}

// attachMode is the mode the gateways of this run attach in: what
// $CLOUDSTEER_ATTACH says, else what auto picks on this kernel.
func attachMode(t *testing.T) tcx.Mode {
	t.Helper()
	m, _, err := tcx.Choose("")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// cleanBesides reports whether nothing of cloudsteer's is in ks: no
// programs, filters or clsact qdiscs, and exactly the lab's own tables
// (labTables).
func (ks kernelState) cleanBesides(labTables string) bool {
	return ks.tcx == 0 && ks.filters == 0 && ks.clsact == 0 && strings.TrimSpace(ks.tables) == labTables
}

func (e *env) kernelState() kernelState {
	e.t.Helper()
	var ks kernelState
	err := privtest.Do(e.lab.NS(lab.RoleGW), func() error {
		for _, name := range []string{lab.GWLANIf, lab.GWWANIf} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
				res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: at})
				if err != nil {
					return fmt.Errorf("query tcx programs on %s: %w", name, err)
				}
				ks.tcx += len(res.Programs)
			}
			_, legacy, err := tcx.IngressPrograms(l.Attrs().Index)
			if err != nil {
				return err
			}
			ks.filters += len(legacy)
			qs, err := netlink.QdiscList(l)
			if err != nil {
				return err
			}
			for _, q := range qs {
				if q.Type() == "clsact" {
					ks.clsact++
				}
			}
		}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	ks.tables, _ = e.run(lab.RoleGW, 5*time.Second, "nft", "list", "tables")
	ks.rules, _ = e.run(lab.RoleGW, 5*time.Second, "ip", "-d", "rule", "show")
	r4, _ := e.run(lab.RoleGW, 5*time.Second, "ip", "-4", "route", "show", "table", "all")
	r6, _ := e.run(lab.RoleGW, 5*time.Second, "ip", "-6", "route", "show", "table", "all")
	ks.routes = r4 + r6
	return ks
}

// labTables is what `nft list tables` shows in the gateway namespace
// before cloudsteer runs: the lab firewall's own tables.
func (e *env) labTables() string {
	switch e.lab.Firewall() {
	case lab.FirewallRouter:
		return "table inet " + lab.RouterTable
	case lab.FirewallFW4:
		return "table inet " + lab.FW4Table
	case lab.FirewallDebian:
		return "table inet " + lab.RouterTable + "\ntable inet " + lab.DebianTable
	}
	return ""
}

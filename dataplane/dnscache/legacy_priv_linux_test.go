package dnscache

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"

	"github.com/cloudsteer/cloudsteer/dataplane/steer"
	"github.com/cloudsteer/cloudsteer/dataplane/tcx"
	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

// helperEnv, when set, turns the test binary into a helper that attaches
// the classifier and the answerer (in the mode $CLOUDSTEER_ATTACH says) to
// the interface named, puts staleAnswerA for staleName, says "attached"
// and waits to be killed (see TestKilledAnswererStopsAnswering).
const helperEnv = "CLOUDSTEER_DNSCACHE_HELPER_IFACE"

const (
	staleName    = "stale.example.com"
	staleAnswerA = "203.0.113.77"
)

func TestMain(m *testing.M) {
	if iface := os.Getenv(helperEnv); iface != "" {
		os.Exit(attachAndWait(iface))
	}
	os.Exit(m.Run())
}

func attachAndWait(iface string) int {
	ctx := context.Background()
	st, err := steer.New(ctx, steer.Config{Interfaces: []string{iface}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	c, err := New(ctx, []string{iface}, Options{Mark: steer.MarkDNS, After: st.Program(), Attach: st.Mode()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	m := new(dns.Msg)
	m.Response, m.RecursionAvailable = true, true
	m.Question = []dns.Question{{Name: staleName + ".", Qtype: dns.TypeA, Qclass: dns.ClassINET}}
	rr, _ := dns.NewRR(staleName + ". 300 IN A " + staleAnswerA)
	m.Answer = []dns.RR{rr}
	wire, err := m.Pack()
	if err == nil {
		err = c.Put(wire, 5*time.Minute)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("attached")
	time.Sleep(2 * time.Minute) // the parent SIGKILLs us; this bounds an orphan
	return 0
}

// bareLab is the lab of newLab without a Cache of this process attached.
func bareLab(t *testing.T) *lab {
	t.Helper()
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "ip", "dig")
	l := &lab{client: privtest.NewNetNS(t), gw: privtest.NewNetNS(t), gwIf: "lan0"}
	l.link(t)
	l.serveGo(t)
	return l
}

// ingress returns the programs at ingress of iface in ns in the order
// they run (TCX, then cls_bpf filters by priority), and the filters.
func ingress(t *testing.T, ns, iface string) ([]ebpf.ProgramID, []*netlink.BpfFilter) {
	t.Helper()
	var ids []ebpf.ProgramID
	var filters []*netlink.BpfFilter
	err := privtest.Do(ns, func() error {
		l, err := netlink.LinkByName(iface)
		if err != nil {
			return err
		}
		tc, legacy, err := tcx.IngressPrograms(l.Attrs().Index)
		ids = append(tc, legacy...)
		if err != nil {
			return err
		}
		fs, _ := netlink.FilterList(l, netlink.HANDLE_MIN_INGRESS)
		for _, f := range fs {
			if b, ok := tcx.Ours(f); ok {
				filters = append(filters, b)
			}
		}
		slices.SortFunc(filters, func(a, b *netlink.BpfFilter) int { return int(a.Priority) - int(b.Priority) })
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids, filters
}

func progID(t *testing.T, p *ebpf.Program) ebpf.ProgramID {
	t.Helper()
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return id
}

// attachBoth attaches a classifier and the answerer after it in the gw
// namespace in mode, closed when the test ends.
func attachBoth(t *testing.T, l *lab, mode tcx.Mode) *steer.Steer {
	t.Helper()
	var st *steer.Steer
	err := privtest.Do(l.gw, func() (err error) {
		if st, err = steer.New(context.Background(), steer.Config{Interfaces: []string{l.gwIf}, Attach: mode}); err != nil {
			return err
		}
		if l.cache, err = New(context.Background(), []string{l.gwIf}, Options{Mark: steer.MarkDNS, After: st.Program(), Attach: mode}); err != nil {
			return errors.Join(err, st.Close())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := errors.Join(l.cache.Close(), st.Close()); err != nil {
			t.Error(err)
		}
	})
	return st
}

// TestLegacyOrder: in legacy mode the answerer's filter runs right after
// the classifier's (priority 0xc571 after 0xc570), as AfterProgram places
// it in TCX mode, so it sees the DNS mark: a steered query is answered, a
// query to a bypassed resolver (no mark) is not.
func TestLegacyOrder(t *testing.T) {
	l := bareLab(t)
	st := attachBoth(t, l, tcx.ModeLegacy)
	ids, fs := ingress(t, l.gw, l.gwIf)
	if want := []ebpf.ProgramID{progID(t, st.Program()), progID(t, l.cache.Program())}; !slices.Equal(ids, want) {
		t.Fatalf("ingress programs %v, want classifier then answerer %v", ids, want)
	}
	if len(fs) != 2 || fs[0].Name != "cloudsteer-classifier" || fs[0].Priority != tcx.PrioLast ||
		fs[1].Name != "cloudsteer-dnscache" || fs[1].Priority != tcx.PrioLast+1 {
		t.Fatalf("filters %+v", fs)
	}
	mustPut(t, l.cache, cachedWire(t, "www.example.com", dns.TypeA, 0, []string{"www.example.com. 300 IN A 203.0.113.10"}, nil), time.Minute)
	if out := l.dig(t, "@"+labResolver4, "+noedns", "www.example.com", "A"); !strings.Contains(out, "203.0.113.10") {
		t.Fatalf("steered query not answered from the kernel:\n%s", out)
	}
	if err := st.AddBypass(netip.MustParsePrefix(labResolver4 + "/32")); err != nil {
		t.Fatal(err)
	}
	if out := l.dig(t, "@"+labResolver4, "+noedns", "www.example.com", "A"); !strings.Contains(out, goAnswerA) {
		t.Fatalf("unmarked query answered by the kernel:\n%s", out)
	}
}

// TestLeaseLapseStopsAnswers: an answer that is fresh in the map is not
// served once the owner lease has run out (the process is gone); the
// query goes on (TCX_NEXT) and counts as expired.
func TestLeaseLapseStopsAnswers(t *testing.T) {
	c := loadTestCache(t, Options{})
	mustPut(t, c, cachedWire(t, "www.example.com", dns.TypeA, 0, []string{"www.example.com. 300 IN A 203.0.113.10"}, nil), time.Minute)
	in := frame(client4, server4, query(t, 7, "www.example.com", dns.TypeA, 0, false), false)
	if ret, _ := runFrame(t, c, in, 0); ret != tcxRedirect {
		t.Fatalf("with the lease held: verdict %d, want an answer", int32(ret))
	}
	if err := c.lease.Lapse(); err != nil {
		t.Fatal(err)
	}
	if ret, _ := runFrame(t, c, in, 0); ret != tcxNext {
		t.Fatalf("with the lease run out: verdict %d, want TCX_NEXT", int32(ret))
	}
	if s := mustStats(t, c); s.Hits != 1 || s.Expired != 1 {
		t.Fatalf("stats %+v, want 1 hit, 1 expired", s)
	}
}

// TestKilledAnswererStopsAnswering: the classifier and answerer of a
// SIGKILLed process stay attached in legacy mode, but within the lease
// (1 s) queries reach the resolver behind them again and nothing is
// answered from the dead process's cache; the next start replaces both
// filters, in order; RemoveStale removes them.
func TestKilledAnswererStopsAnswering(t *testing.T) {
	l := bareLab(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := privtest.Command(l.gw, exe)
	cmd.Env = append(os.Environ(), helperEnv+"="+l.gwIf, tcx.EnvMode+"=legacy")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := false
	t.Cleanup(func() {
		if !waited {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "attached\n" {
		t.Fatalf("helper said %q, %v", line, err)
	}
	answer := func() string {
		out := l.dig(t, "@"+labResolver4, "+noedns", staleName, "A")
		switch {
		case strings.Contains(out, staleAnswerA):
			return "kernel"
		case strings.Contains(out, goAnswerA):
			return "resolver"
		}
		return "none: " + out
	}
	if got := answer(); got != "kernel" {
		t.Fatalf("with the helper alive the answer came from %s, want the kernel cache: the test proves nothing", got)
	}
	held, _ := ingress(t, l.gw, l.gwIf)
	if len(held) != 2 {
		t.Fatalf("helper's programs %v, want classifier and answerer", held)
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	waited = true
	killed := time.Now()
	if got, _ := ingress(t, l.gw, l.gwIf); !slices.Equal(got, held) {
		t.Fatalf("after SIGKILL ingress has %v, want the stale filters %v kept", got, held)
	}
	// Until the lease runs out the dead cache may still answer; after it,
	// never.
	var first time.Duration
	for {
		got := answer()
		if got == "resolver" {
			first = time.Since(killed)
			break
		}
		if got != "kernel" {
			t.Fatalf("after SIGKILL: %s", got)
		}
		if time.Since(killed) > tcx.LeaseTime+500*time.Millisecond {
			t.Fatalf("still answered from the dead process's cache %s after SIGKILL (lease %s)", time.Since(killed), tcx.LeaseTime)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("first query to reach the resolver: %s after SIGKILL", first.Round(time.Millisecond))
	for range 5 {
		if got := answer(); got != "resolver" {
			t.Fatalf("after the lease ran out the answer came from %s", got)
		}
	}

	// The next start replaces both, classifier first.
	st := attachBoth(t, l, tcx.ModeLegacy)
	ids, fs := ingress(t, l.gw, l.gwIf)
	if want := []ebpf.ProgramID{progID(t, st.Program()), progID(t, l.cache.Program())}; !slices.Equal(ids, want) || len(fs) != 2 {
		t.Fatalf("after a new start ingress has %v (filters %+v), want only the new %v", ids, fs, want)
	}
	if got := answer(); got != "resolver" {
		t.Fatalf("the new, empty cache: answer from %s", got)
	}
}

// TestCleanupRemovesKilledFilters: what a SIGKILLed process left is removed
// by RemoveStale (`cloudsteer cleanup`), clsact qdisc included.
func TestCleanupRemovesKilledFilters(t *testing.T) {
	l := bareLab(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := privtest.Command(l.gw, exe)
	cmd.Env = append(os.Environ(), helperEnv+"="+l.gwIf, tcx.EnvMode+"=legacy")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "attached\n" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("helper said %q, %v", line, err)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	var removed []tcx.Removed
	if err := privtest.Do(l.gw, func() (err error) {
		removed, err = tcx.RemoveStale()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(removed) != 2 || removed[0].Filter != "cloudsteer-classifier" || removed[1].Filter != "cloudsteer-dnscache" {
		t.Fatalf("removed %+v", removed)
	}
	if ids, _ := ingress(t, l.gw, l.gwIf); len(ids) != 0 {
		t.Fatalf("after cleanup ingress has %v", ids)
	}
	err = privtest.Do(l.gw, func() error {
		lk, err := netlink.LinkByName(l.gwIf)
		if err != nil {
			return err
		}
		qs, err := netlink.QdiscList(lk)
		for _, q := range qs {
			if q.Type() == "clsact" {
				return errors.New("clsact qdisc left")
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if out := l.dig(t, "@"+labResolver4, "+noedns", staleName, "A"); !strings.Contains(out, goAnswerA) {
		t.Fatalf("after cleanup the query did not reach the resolver:\n%s", out)
	}
}

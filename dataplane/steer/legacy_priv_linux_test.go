package steer

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cloudsteer/cloudsteer/dataplane/tcx"
	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

// testMode is the mode New picks for a zero Config.Attach here: what
// $CLOUDSTEER_ATTACH says, else auto (TCX on this kernel).
func testMode(tb testing.TB) tcx.Mode {
	tb.Helper()
	m, _, err := tcx.Choose("")
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

// hasClsact reports whether iface in ns has a clsact qdisc.
func hasClsact(tb testing.TB, ns, iface string) bool {
	tb.Helper()
	found := false
	err := privtest.Do(ns, func() error {
		l, err := netlink.LinkByName(iface)
		if err != nil {
			return err
		}
		qs, err := netlink.QdiscList(l)
		for _, q := range qs {
			if q.Type() == "clsact" {
				found = true
			}
		}
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return found
}

// ingressFilters returns the cls_bpf filters at ingress of iface in ns.
func ingressFilters(tb testing.TB, ns, iface string) []*netlink.BpfFilter {
	tb.Helper()
	var out []*netlink.BpfFilter
	err := privtest.Do(ns, func() error {
		l, err := netlink.LinkByName(iface)
		if err != nil {
			return err
		}
		fs, err := netlink.FilterList(l, netlink.HANDLE_MIN_INGRESS)
		for _, f := range fs {
			if b, ok := f.(*netlink.BpfFilter); ok {
				out = append(out, b)
			}
		}
		if err != nil && hasNoQdisc(err) {
			return nil
		}
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	slices.SortFunc(out, func(a, b *netlink.BpfFilter) int { return int(a.Priority) - int(b.Priority) })
	return out
}

func hasNoQdisc(err error) bool { return err == unix.EINVAL || err == unix.ENOENT }

// foreignFilter adds, in ns, a direct-action cls_bpf filter that is not
// cloudsteer's (a program returning TC_ACT_UNSPEC, so the packet goes on)
// at ingress of iface, making the clsact qdisc when there is none.
func foreignFilter(tb testing.TB, ns, iface, name string, handle uint32, prio uint16) {
	tb.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.SchedCLS, License: "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()},
	})
	if err != nil {
		tb.Fatal(err)
	}
	defer prog.Close()
	err = privtest.Do(ns, func() error {
		l, err := netlink.LinkByName(iface)
		if err != nil {
			return err
		}
		q := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}
		if err := netlink.QdiscAdd(q); err != nil && err != unix.EEXIST {
			return fmt.Errorf("add clsact: %w", err)
		}
		return netlink.FilterAdd(&netlink.BpfFilter{
			FilterAttrs: netlink.FilterAttrs{LinkIndex: l.Attrs().Index, Parent: netlink.HANDLE_MIN_INGRESS,
				Handle: handle, Priority: prio, Protocol: unix.ETH_P_ALL},
			Fd: prog.FD(), Name: name, DirectAction: true,
		})
	})
	if err != nil {
		tb.Fatalf("add foreign filter %s: %v", name, err)
	}
}

// startHelper runs this test binary as a legacy-mode helper in ns (see
// helperEnv) with extra environment, waits until it has attached and
// returns a function that SIGKILLs it.
func startHelper(t *testing.T, ns string, env ...string) (kill func()) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := privtest.Command(ns, exe)
	cmd.Env = append(append(os.Environ(), tcx.EnvMode+"="+string(tcx.ModeLegacy)), env...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := false
	kill = func() {
		if done {
			return
		}
		done = true
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	}
	t.Cleanup(kill)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "attached\n" {
		kill()
		t.Fatalf("helper said %q, %v; want \"attached\"", line, err)
	}
	return kill
}

// TestLegacyAttachDetach: in legacy mode the classifier is a direct-action
// cls_bpf filter named and numbered as documented, on a clsact qdisc made
// for it; Close removes both, and leaves a qdisc that was there before,
// with another's filter on it, as it was, and one it made but another
// filter now uses.
func TestLegacyAttachDetach(t *testing.T) {
	ns := privtest.NewNetNS(t)
	addVeth(t, ns, "vt0")
	addVeth(t, ns, "vt1")
	foreignFilter(t, ns, "vt1", "other", 1, 1)

	addVeth(t, ns, "vt2")

	s := newIn(t, ns, Config{Interfaces: []string{"vt0", "vt1", "vt2"}, Attach: tcx.ModeLegacy})
	if s.Mode() != tcx.ModeLegacy {
		t.Fatalf("Mode() = %s", s.Mode())
	}
	// Another tool adds a filter to the qdisc cloudsteer made on vt2.
	foreignFilter(t, ns, "vt2", "later", 1, 1)
	if got := s.Attached(); !slices.Equal(got, []string{"vt0", "vt1", "vt2"}) {
		t.Fatalf("Attached() = %v", got)
	}
	if got := tcxIngress(t, ns, "vt0"); !slices.Equal(got, []ebpf.ProgramID{programID(t, s)}) {
		t.Fatalf("ingress programs on vt0 = %v, want only the classifier", got)
	}
	fs := ingressFilters(t, ns, "vt0")
	if len(fs) != 1 {
		t.Fatalf("filters on vt0: %+v", fs)
	}
	f := fs[0]
	if f.Name != "cloudsteer-classifier" || f.Handle != tcx.FilterHandle || f.Priority != tcx.PrioLast || !f.DirectAction {
		t.Errorf("filter = name %q handle %#x prio %#x direct-action %v; want cloudsteer-classifier %#x %#x true",
			f.Name, f.Handle, f.Priority, f.DirectAction, tcx.FilterHandle, tcx.PrioLast)
	}
	// The other filter on vt1 keeps running first.
	if fs := ingressFilters(t, ns, "vt1"); len(fs) != 2 || fs[0].Name != "other" || fs[1].Name != "cloudsteer-classifier" {
		t.Fatalf("filters on vt1: %+v", fs)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := s.Attached(); len(got) != 0 {
		t.Errorf("after Close, Attached() = %v", got)
	}
	if fs := ingressFilters(t, ns, "vt0"); len(fs) != 0 || hasClsact(t, ns, "vt0") {
		t.Errorf("after Close, vt0 has filters %+v / a clsact qdisc %v", fs, hasClsact(t, ns, "vt0"))
	}
	if fs := ingressFilters(t, ns, "vt1"); len(fs) != 1 || fs[0].Name != "other" || !hasClsact(t, ns, "vt1") {
		t.Errorf("after Close, vt1 has filters %+v (want only other's) / clsact %v (want kept)", fs, hasClsact(t, ns, "vt1"))
	}
	if fs := ingressFilters(t, ns, "vt2"); len(fs) != 1 || fs[0].Name != "later" || !hasClsact(t, ns, "vt2") {
		t.Errorf("after Close, vt2 has filters %+v (want only later's) / clsact %v (want kept: it is in use)", fs, hasClsact(t, ns, "vt2"))
	}
}

// TestLegacyStaleReplacedAndCleanup: filters a killed process left stay
// (they outlive it), the next start replaces exactly those, and
// RemoveStale (`cloudsteer cleanup`) removes exactly cloudsteer's, never
// another's filter even with a cloudsteer-like name or cloudsteer's
// handle, and removes the clsact qdisc only where nothing else is on it.
func TestLegacyStaleReplacedAndCleanup(t *testing.T) {
	ns := privtest.NewNetNS(t)
	addVeth(t, ns, "vt0")
	addVeth(t, ns, "vt1")
	foreignFilter(t, ns, "vt1", "cloudsteer-lookalike", 7, 2) // not our handle
	foreignFilter(t, ns, "vt1", "other", tcx.FilterHandle, 3) // our handle, not our name

	kill := startHelper(t, ns, helperEnv+"=vt0", helperWANEnv+"=vt1")
	stale0, stale1 := tcxIngress(t, ns, "vt0"), tcxIngress(t, ns, "vt1")
	if len(stale0) != 1 || len(stale1) != 3 {
		t.Fatalf("with the helper running: vt0 %v, vt1 %v", stale0, stale1)
	}
	kill()
	if got := tcxIngress(t, ns, "vt0"); !slices.Equal(got, stale0) {
		t.Fatalf("after SIGKILL, vt0 has %v, want the helper's filter %v kept", got, stale0)
	}

	// A new start replaces the stale classifier and forwarder.
	s := newIn(t, ns, Config{Interfaces: []string{"vt0"}, Attach: tcx.ModeLegacy})
	if err := privtest.Do(ns, func() error { return s.AttachWAN([]string{"vt1"}) }); err != nil {
		t.Fatal(err)
	}
	if got := tcxIngress(t, ns, "vt0"); !slices.Equal(got, []ebpf.ProgramID{programID(t, s)}) {
		t.Fatalf("after a new start, vt0 has %v, want only the new classifier", got)
	}
	names := func(iface string) []string {
		var out []string
		for _, f := range ingressFilters(t, ns, iface) {
			out = append(out, f.Name)
		}
		return out
	}
	if got := names("vt1"); !slices.Equal(got, []string{"cloudsteer-lookalike", "other", "cloudsteer-forwarder"}) {
		t.Fatalf("after a new start, vt1 has %v", got)
	}
	if fs := ingressFilters(t, ns, "vt1"); slices.Contains(stale1, ebpf.ProgramID(fs[2].Id)) {
		t.Fatal("the stale forwarder was not replaced")
	}
	// RemoveStale leaves a live process's filters alone.
	if removed := removeStale(t, ns); len(removed) != 0 {
		t.Fatalf("RemoveStale with the owner alive removed %+v", removed)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if hasClsact(t, ns, "vt0") || !hasClsact(t, ns, "vt1") {
		t.Fatalf("after Close: clsact on vt0 %v (want gone), on vt1 %v (want kept)", hasClsact(t, ns, "vt0"), hasClsact(t, ns, "vt1"))
	}

	// Killed again: cleanup removes what it left, and only that.
	kill = startHelper(t, ns, helperEnv+"=vt0", helperWANEnv+"=vt1")
	kill()
	removed := removeStale(t, ns)
	want := []tcx.Removed{
		{Interface: "vt0", Filter: "cloudsteer-classifier", Priority: tcx.PrioLast},
		{Interface: "vt1", Filter: "cloudsteer-forwarder", Priority: tcx.PrioLast},
	}
	slices.SortFunc(removed, func(a, b tcx.Removed) int { return strings.Compare(a.Interface, b.Interface) })
	if !slices.Equal(removed, want) {
		t.Fatalf("RemoveStale removed %+v, want %+v", removed, want)
	}
	if got := names("vt1"); !slices.Equal(got, []string{"cloudsteer-lookalike", "other"}) {
		t.Fatalf("after cleanup, vt1 has %v, want the two others' filters", got)
	}
	if got := names("vt0"); len(got) != 0 || hasClsact(t, ns, "vt0") {
		t.Fatalf("after cleanup, vt0 has %v / clsact %v", got, hasClsact(t, ns, "vt0"))
	}
	if removed := removeStale(t, ns); len(removed) != 0 {
		t.Fatalf("second RemoveStale removed %+v", removed)
	}
}

// removeStale runs tcx.RemoveStale in ns.
func removeStale(t *testing.T, ns string) []tcx.Removed {
	t.Helper()
	var removed []tcx.Removed
	if err := privtest.Do(ns, func() (err error) {
		removed, err = tcx.RemoveStale()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return removed
}

// mapOf opens the map called name of the program with ID id, which may
// belong to a process that is gone (the filter holds the program, the
// program its maps).
func mapOf(tb testing.TB, id ebpf.ProgramID, name string) *ebpf.Map {
	tb.Helper()
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		tb.Fatal(err)
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		tb.Fatal(err)
	}
	ids, _ := info.MapIDs()
	for _, mid := range ids {
		m, err := ebpf.NewMapFromID(mid)
		if err != nil {
			tb.Fatal(err)
		}
		if mi, err := m.Info(); err == nil && mi.Name == name {
			tb.Cleanup(func() { m.Close() })
			return m
		}
		m.Close()
	}
	tb.Fatalf("program %d has no map %q", id, name)
	return nil
}

func sumForwarded(tb testing.TB, m *ebpf.Map) (fromLAN, fromWAN uint64) {
	tb.Helper()
	var out [2]uint64
	for i := range out {
		var perCPU []steerCounter
		if err := m.Lookup(uint32(i), &perCPU); err != nil {
			tb.Fatal(err)
		}
		for _, c := range perCPU {
			out[i] += c.Packets
		}
	}
	return out[0], out[1]
}

// settle is how long the last packets of a closed test connection (its
// FINs) take to pass.
const settle = 200 * time.Millisecond

// TestKilledFastPathStops: the fast path of a SIGKILLed process whose
// filters stay (legacy mode) stops forwarding within the lease, and the
// traffic flows, intact, through the stack; the next start replaces the
// filters.
func TestKilledFastPathStops(t *testing.T) {
	client, gw, server := routedHosts(t)
	const down, up = 4 << 20, 1 << 20
	serveBoth(t, server, 9000, down)
	to := netip.MustParseAddrPort("10.79.0.2:9000")

	kill := startHelper(t, gw, helperEnv+"=lan0", helperWANEnv+"=wan0")
	lanProgs, wanProgs := tcxIngress(t, gw, "lan0"), tcxIngress(t, gw, "wan0")
	if len(lanProgs) != 1 || len(wanProgs) != 1 {
		t.Fatalf("helper's programs: lan0 %v, wan0 %v", lanProgs, wanProgs)
	}
	fwd := mapOf(t, lanProgs[0], "forwarded")
	l0, w0 := sumForwarded(t, fwd)
	if got := exchange(t, client, to, down, up); got != up {
		t.Fatalf("server counted %d, want %d", got, up)
	}
	time.Sleep(settle) // the FINs of the closed connection
	l1, w1 := sumForwarded(t, fwd)
	if l1 == l0 || w1 == w0 {
		t.Fatalf("with the helper alive the fast path forwarded nothing (%d→%d, %d→%d): the test proves nothing", l0, l1, w0, w1)
	}

	kill()
	if got := tcxIngress(t, gw, "lan0"); !slices.Equal(got, lanProgs) {
		t.Fatalf("after SIGKILL lan0 has %v, want the stale filter %v", got, lanProgs)
	}
	time.Sleep(tcx.LeaseTime + 100*time.Millisecond)
	if got := exchange(t, client, to, down, up); got != up {
		t.Fatalf("after SIGKILL the server counted %d, want %d", got, up)
	}
	time.Sleep(settle)
	if l, w := sumForwarded(t, fwd); l != l1 || w != w1 {
		t.Fatalf("after SIGKILL the stale fast path still forwarded (LAN %d→%d, WAN %d→%d packets)", l1, l, w1, w)
	}

	s := newIn(t, gw, Config{Interfaces: []string{"lan0"}, Attach: tcx.ModeLegacy})
	if err := privtest.Do(gw, func() error { return errors.Join(s.AttachWAN([]string{"wan0"}), s.SetFastPath(true)) }); err != nil {
		t.Fatal(err)
	}
	if got := tcxIngress(t, gw, "lan0"); !slices.Equal(got, []ebpf.ProgramID{programID(t, s)}) {
		t.Fatalf("after a new start lan0 has %v", got)
	}
	if got := exchange(t, client, to, down, up); got != up {
		t.Fatalf("after a new start the server counted %d, want %d", got, up)
	}
	if l, w, err := s.Forwarded(); err != nil || l.Packets == 0 || w.Packets == 0 {
		t.Fatalf("the new owner's fast path forwarded %+v / %+v, %v", l, w, err)
	}
}

// TestKilledClassifierOnlyMarks: the classifier a SIGKILLed process left
// (legacy mode) keeps marking every class, but without cloudsteer's
// nftables table (gone with the process) no mark changes where a packet
// goes: HTTP, HTTPS, DNS over UDP and TCP, QUIC, a bypassed web flow
// (MARK_UNTRACK) and other TCP all reach the servers they were sent to.
func TestKilledClassifierOnlyMarks(t *testing.T) {
	gw, lan := twoHosts(t)
	privtest.Run(t, gw, "ip", "addr", "add", "10.77.0.3/24", "dev", "lan0")
	marked := markCounter(t, gw)
	kill := startHelper(t, gw, helperEnv+"=lan0", helperBypassEnv+"=10.77.0.3/32")
	kill()
	if got := tcxIngress(t, gw, "lan0"); len(got) != 1 {
		t.Fatalf("after SIGKILL lan0 has %v, want the stale classifier", got)
	}
	for _, port := range []int{80, 443, 53, 8080} {
		privtest.ServeTCP(t, gw, fmt.Sprintf(":%d", port), func(c net.Conn) {
			c.Write([]byte("hi"))
			c.Close()
		})
	}
	for _, port := range []int{53, 443} {
		echoUDP(t, gw, fmt.Sprintf(":%d", port))
	}
	for _, to := range []string{"10.77.0.1:80", "[fd77::1]:443", "10.77.0.1:53", "10.77.0.1:8080", "10.77.0.3:80", "10.77.0.3:443"} {
		if got := tcpHello(t, lan, to); got != "hi" {
			t.Errorf("TCP to %s got %q, want the server's hi", to, got)
		}
	}
	for _, to := range []string{"10.77.0.1:53", "[fd77::1]:443"} {
		if got := udpEcho(t, lan, to); got != "ping" {
			t.Errorf("UDP to %s got %q, want its echo", to, got)
		}
	}
	for mark, name := range map[uint32]string{MarkHTTP: "http", MarkTLS: "tls", MarkDNS: "dns", MarkQUIC: "quic", MarkUntrack: "untrack"} {
		if marked(mark) == 0 {
			t.Errorf("no packet carried the %s mark: the stale classifier did not run, the test proves nothing", name)
		}
	}
}

func tcpHello(tb testing.TB, ns, to string) string {
	tb.Helper()
	var got string
	err := privtest.Do(ns, func() error {
		d := net.Dialer{Timeout: 3 * time.Second}
		d.SetMultipathTCP(false)
		c, err := d.Dial("tcp", to)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		b := make([]byte, 8)
		n, _ := c.Read(b)
		got = string(b[:n])
		return nil
	})
	if err != nil {
		tb.Errorf("dial %s: %v", to, err)
	}
	return got
}

// echoUDP echoes datagrams on addr in ns until the test ends.
func echoUDP(tb testing.TB, ns, addr string) {
	tb.Helper()
	var pc net.PacketConn
	if err := privtest.Do(ns, func() (err error) {
		pc, err = net.ListenPacket("udp", addr)
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { pc.Close() })
	go func() {
		b := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			pc.WriteTo(b[:n], from)
		}
	}()
}

func udpEcho(tb testing.TB, ns, to string) string {
	tb.Helper()
	var got string
	err := privtest.Do(ns, func() error {
		c, err := net.Dial("udp", to)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		b := make([]byte, 8)
		n, err := c.Read(b)
		got = string(b[:n])
		return err
	})
	if err != nil {
		tb.Errorf("UDP %s: %v", to, err)
	}
	return got
}

// TestFastPathNeedsLease: with the fast path switched on but the owner
// lease run out, neither program forwards; the stack does.
func TestFastPathNeedsLease(t *testing.T) {
	client, gw, server := routedHosts(t)
	s := newIn(t, gw, Config{Interfaces: []string{"lan0"}})
	if err := privtest.Do(gw, func() error { return errors.Join(s.AttachWAN([]string{"wan0"}), s.SetFastPath(true)) }); err != nil {
		t.Fatal(err)
	}
	const down, up = 4 << 20, 1 << 20
	serveBoth(t, server, 9000, down)
	to := netip.MustParseAddrPort("10.79.0.2:9000")
	if got := exchange(t, client, to, down, up); got != up {
		t.Fatalf("server counted %d", got)
	}
	time.Sleep(settle)
	l0, w0, _ := s.Forwarded()
	if l0.Packets == 0 || w0.Packets == 0 {
		t.Fatalf("fast path forwarded %+v / %+v with the lease held: the test proves nothing", l0, w0)
	}
	if err := s.lease.Lapse(); err != nil {
		t.Fatal(err)
	}
	if got := exchange(t, client, to, down, up); got != up {
		t.Fatalf("after the lease ran out the server counted %d", got)
	}
	time.Sleep(settle)
	if l, w, _ := s.Forwarded(); l != l0 || w != w0 {
		t.Fatalf("fast path forwarded without a lease: %+v→%+v, %+v→%+v", l0, l, w0, w)
	}
}

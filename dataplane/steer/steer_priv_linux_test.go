package steer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/cloudsteer/cloudsteer/dataplane/tcx"
	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

// helperEnv, when set in the environment, turns the test binary into a
// helper that attaches the classifier to the named interface, says
// "attached" and waits to be killed (see TestProcessDeathDetaches). With
// helperWANEnv it also attaches the forwarder there and turns the fast
// path on; with helperBypassEnv it bypasses that prefix. The attach mode
// comes from $CLOUDSTEER_ATTACH.
const (
	helperEnv       = "CLOUDSTEER_STEER_HELPER_IFACE"
	helperWANEnv    = "CLOUDSTEER_STEER_HELPER_WAN"
	helperBypassEnv = "CLOUDSTEER_STEER_HELPER_BYPASS"
)

func TestMain(m *testing.M) {
	if iface := os.Getenv(helperEnv); iface != "" {
		os.Exit(attachAndWait(iface))
	}
	os.Exit(m.Run())
}

func attachAndWait(iface string) int {
	s, err := New(context.Background(), Config{Interfaces: []string{iface}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if wan := os.Getenv(helperWANEnv); wan != "" {
		if err := errors.Join(s.AttachWAN([]string{wan}), s.SetFastPath(true)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if p := os.Getenv(helperBypassEnv); p != "" {
		pr, err := netip.ParsePrefix(p)
		if err == nil {
			err = s.AddBypass(pr)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	fmt.Println("attached")
	// The parent SIGKILLs us; the sleep only bounds an orphan's life.
	time.Sleep(2 * time.Minute)
	_ = s.Close()
	return 0
}

// twoHosts returns a "gw" namespace whose lan0 is a veth to eth0 in a "lan"
// namespace: 10.77.0.1/24, fd77::1/64 on lan0; 10.77.0.2/24, fd77::2/64 on
// eth0. Both namespaces are deleted when the test ends.
func twoHosts(tb testing.TB) (gw, lan string) {
	tb.Helper()
	gw, lan = privtest.NewNetNS(tb), privtest.NewNetNS(tb)
	privtest.Run(tb, gw, "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", lan)
	privtest.Run(tb, gw, "ip", "addr", "add", "10.77.0.1/24", "dev", "lan0")
	privtest.Run(tb, gw, "ip", "addr", "add", "fd77::1/64", "dev", "lan0", "nodad")
	privtest.Run(tb, gw, "ip", "link", "set", "lan0", "up")
	privtest.Run(tb, lan, "ip", "addr", "add", "10.77.0.2/24", "dev", "eth0")
	privtest.Run(tb, lan, "ip", "addr", "add", "fd77::2/64", "dev", "eth0", "nodad")
	privtest.Run(tb, lan, "ip", "link", "set", "eth0", "up")
	return gw, lan
}

// addVeth adds a veth pair name/name+"p" in namespace ns and sets name up.
// Deleting either end deletes both.
func addVeth(tb testing.TB, ns, name string) {
	tb.Helper()
	privtest.Run(tb, ns, "ip", "link", "add", name, "type", "veth", "peer", "name", name+"p")
	privtest.Run(tb, ns, "ip", "link", "set", name, "up")
}

// newIn runs New inside namespace ns and closes the Steer when the test
// ends.
func newIn(tb testing.TB, ns string, cfg Config) *Steer {
	tb.Helper()
	var s *Steer
	err := privtest.Do(ns, func() (err error) {
		s, err = New(context.Background(), cfg)
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Error(err)
		}
	})
	return s
}

// tcxIngress returns the IDs of the programs attached at ingress of iface
// in namespace ns, in the order they run: TCX links first, then cls_bpf
// filters (legacy mode).
func tcxIngress(tb testing.TB, ns, iface string) []ebpf.ProgramID {
	tb.Helper()
	var ids []ebpf.ProgramID
	err := privtest.Do(ns, func() error {
		ifc, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		t, l, err := tcx.IngressPrograms(ifc.Index)
		ids = append(t, l...)
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return ids
}

func programID(tb testing.TB, s *Steer) ebpf.ProgramID {
	tb.Helper()
	info, err := s.Program().Info()
	if err != nil {
		tb.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		tb.Fatal("kernel does not report program IDs")
	}
	return id
}

// sendUDP sends n 4-byte datagrams from namespace ns to addr. The socket
// is unconnected, so the ICMP port-unreachable answers cannot make a later
// send fail with ECONNREFUSED (and not be sent).
func sendUDP(tb testing.TB, ns, addr string, n int) {
	tb.Helper()
	err := privtest.Do(ns, func() error {
		dst, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return err
		}
		c, err := net.ListenUDP("udp", nil)
		if err != nil {
			return err
		}
		defer c.Close()
		for range n {
			if _, err := c.WriteToUDP([]byte("ping"), dst); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// dialRefused opens a TCP connection from namespace ns to addr, where
// nothing listens: one SYN out, one RST back.
func dialRefused(tb testing.TB, ns, addr string) {
	tb.Helper()
	err := privtest.Do(ns, func() error {
		var d net.Dialer
		d.SetMultipathTCP(false)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return fmt.Errorf("dial %s: connected, want refused", addr)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("dial %s: %w, want connection refused", addr, err)
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// markCounter adds an nftables table in ns that counts packets per steer
// mark at prerouting (after TCX ingress) and returns a function reading
// the count for one mark. The table goes with the namespace.
func markCounter(tb testing.TB, ns string) func(mark uint32) int {
	tb.Helper()
	privtest.RequireCommand(tb, "nft")
	var rules strings.Builder
	rules.WriteString("table inet steertest {\n chain pre {\n  type filter hook prerouting priority -300;\n")
	for _, m := range []uint32{MarkBypass, MarkHTTP, MarkTLS, MarkDNS, MarkQUIC, MarkUntrack} {
		fmt.Fprintf(&rules, "  meta mark %#08x counter\n", m)
	}
	rules.WriteString(" }\n}\n")
	cmd := privtest.Command(ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("nft -f: %v\n%s", err, out)
	}
	return func(mark uint32) int {
		tb.Helper()
		out := privtest.Run(tb, ns, "nft", "list", "chain", "inet", "steertest", "pre")
		re := regexp.MustCompile(fmt.Sprintf(`meta mark %#08x counter packets (\d+)`, mark))
		m := re.FindStringSubmatch(out)
		if m == nil {
			tb.Fatalf("no counter for mark %#08x in:\n%s", mark, out)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
}

func TestAttachClassifiesRealTraffic(t *testing.T) {
	gw, lan := twoHosts(t)
	marked := markCounter(t, gw)
	s := newIn(t, gw, Config{Interfaces: []string{"lan0"}})

	if got := s.Attached(); !slices.Equal(got, []string{"lan0"}) {
		t.Fatalf("Attached() = %v, want [lan0]", got)
	}
	if got, want := tcxIngress(t, gw, "lan0"), programID(t, s); !slices.Equal(got, []ebpf.ProgramID{want}) {
		t.Fatalf("ingress programs on lan0: %v, want [%d]", got, want)
	}
	if got, want := s.Mode(), testMode(t); got != want {
		t.Fatalf("Mode() = %s, want %s", got, want)
	}

	// Steered traffic, one class at a time.
	dialRefused(t, lan, "10.77.0.1:80")
	dialRefused(t, lan, "[fd77::1]:443")
	sendUDP(t, lan, "10.77.0.1:443", 3)
	sendUDP(t, lan, "[fd77::1]:53", 2)
	sendUDP(t, lan, "10.77.0.1:123", 1)

	// Bypass, then pause.
	if err := s.AddBypass(mustPrefix(t, "10.77.0.1/32")); err != nil {
		t.Fatal(err)
	}
	sendUDP(t, lan, "10.77.0.1:443", 2)
	if err := s.DeleteBypass(mustPrefix(t, "10.77.0.1/32")); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPaused(true); err != nil {
		t.Fatal(err)
	}
	sendUDP(t, lan, "10.77.0.1:443", 4)
	sendUDP(t, lan, "10.77.0.1:53", 1) // DNS stays steered while paused

	c := counters(t, s)
	// A 4-byte UDP datagram is a 14+20+8+4 = 46 byte frame over IPv4
	// and 14+40+8+4 = 66 over IPv6.
	want := map[Verdict]Counter{
		VerdictQUICReject: {Packets: 3, Bytes: 3 * 46},
		VerdictDNS:        {Packets: 3, Bytes: 2*66 + 46},
		VerdictBypass:     {Packets: 2, Bytes: 2 * 46},
		VerdictPaused:     {Packets: 4, Bytes: 4 * 46},
	}
	for v, w := range want {
		if c[v] != w {
			t.Errorf("counter %s = %+v, want %+v", v, c[v], w)
		}
	}
	// One SYN each; its size depends on TCP options.
	for _, v := range []Verdict{VerdictHTTP, VerdictTLS} {
		if c[v].Packets != 1 || c[v].Bytes < 54 {
			t.Errorf("counter %s = %+v, want 1 SYN", v, c[v])
		}
	}
	// ARP, neighbour discovery, the UDP 123 datagram.
	if c[VerdictOther].Packets < 2 {
		t.Errorf("counter other = %+v, want at least 2 packets", c[VerdictOther])
	}

	// The marks reached netfilter; paused packets carried none.
	for mark, n := range map[uint32]int{MarkQUIC: 3, MarkDNS: 3, MarkBypass: 2, MarkHTTP: 1, MarkTLS: 1} {
		if got := marked(mark); got != n {
			t.Errorf("nftables saw %d packets with mark %#08x, want %d", got, mark, n)
		}
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := tcxIngress(t, gw, "lan0"); len(got) != 0 {
		t.Errorf("after Close, ingress programs on lan0: %v", got)
	}
	if hasClsact(t, gw, "lan0") {
		t.Error("after Close, the clsact qdisc cloudsteer made is still there")
	}
	if got := s.Attached(); len(got) != 0 {
		t.Errorf("after Close, Attached() = %v", got)
	}
}

func TestAttachedForgetsDeletedInterface(t *testing.T) {
	ns := privtest.NewNetNS(t)
	addVeth(t, ns, "vt0")
	addVeth(t, ns, "vt1")
	s := newIn(t, ns, Config{Interfaces: []string{"vt0", "vt1"}})
	if got := s.Attached(); !slices.Equal(got, []string{"vt0", "vt1"}) {
		t.Fatalf("Attached() = %v, want [vt0 vt1]", got)
	}
	privtest.Run(t, ns, "ip", "link", "del", "vt1")
	if got := s.Attached(); !slices.Equal(got, []string{"vt0"}) {
		t.Fatalf("after deleting vt1, Attached() = %v, want [vt0]", got)
	}
}

func TestNewAttachesNothingOnError(t *testing.T) {
	ns := privtest.NewNetNS(t)
	addVeth(t, ns, "vt0")
	err := privtest.Do(ns, func() error {
		s, err := New(context.Background(), Config{Interfaces: []string{"vt0", "nosuch0"}})
		if err == nil {
			s.Close()
			return errors.New("New with a missing interface succeeded")
		}
		if !strings.Contains(err.Error(), `"nosuch0"`) {
			return fmt.Errorf("error does not name the interface: %w", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := tcxIngress(t, ns, "vt0"); len(got) != 0 {
		t.Errorf("ingress programs on vt0 after failed New: %v", got)
	}
	if hasClsact(t, ns, "vt0") {
		t.Error("clsact qdisc left after failed New")
	}
}

func TestProcessDeathDetaches(t *testing.T) {
	ns := privtest.NewNetNS(t)
	addVeth(t, ns, "vt0")

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := privtest.Command(ns, exe)
	cmd.Env = append(os.Environ(), helperEnv+"=vt0")
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

	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "attached\n" {
		t.Fatalf("helper said %q, %v; want \"attached\"", line, err)
	}
	held := tcxIngress(t, ns, "vt0")
	if len(held) != 1 {
		t.Fatalf("with the helper running, ingress programs on vt0: %v, want one", held)
	}

	// `ip netns exec` execs the helper, so the process is the helper.
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	waited = true
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("helper ended with %v, want killed by SIGKILL", err)
	}
	if testMode(t) == tcx.ModeLegacy {
		// A cls_bpf filter outlives its process (legacy.go): it stays,
		// inert without the lease, until the next start replaces it.
		if got := tcxIngress(t, ns, "vt0"); !slices.Equal(got, held) {
			t.Fatalf("after the helper was killed, ingress programs on vt0: %v, want its filter %v kept", got, held)
		}
		s := newIn(t, ns, Config{Interfaces: []string{"vt0"}})
		if got, want := tcxIngress(t, ns, "vt0"), programID(t, s); !slices.Equal(got, []ebpf.ProgramID{want}) {
			t.Fatalf("after a new start, ingress programs on vt0: %v, want only the new %d", got, want)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if hasClsact(t, ns, "vt0") {
			t.Error("clsact qdisc left after the new owner closed")
		}
	}
	if got := tcxIngress(t, ns, "vt0"); len(got) != 0 {
		t.Errorf("after the helper was killed, ingress programs on vt0: %v", got)
	}
}

package proxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy"
	"github.com/cloudsteer/cloudsteer/dataplane/proxy"
)

// The idle-flow reproducer runs the clients and a minimal CONNECT proxy in
// a child process (this test binary again), so the test process holds only
// the proxy under test: its descriptors, heap, goroutines and RSS are the
// proxy's. The child's own open file limit is separate.
const idleHelperEnv = "CLOUDSTEER_IDLE_HELPER"

// TestIdleHelperProcess is the child: it is a no-op unless run by
// startIdleHelper.
func TestIdleHelperProcess(t *testing.T) {
	if os.Getenv(idleHelperEnv) != "1" {
		t.Skip("helper process for the idle-flow tests")
	}
	raiseNoFile(t)
	n, _ := strconv.Atoi(os.Getenv("CLOUDSTEER_IDLE_FLOWS"))
	hello := clientHello(t, "idle.example.com")

	var connects, hellos atomic.Int64
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReaderSize(c, 512)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if line == "\r\n" {
						break
					}
				}
				if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
					return
				}
				connects.Add(1)
				got := make([]byte, len(hello))
				if _, err := io.ReadFull(br, got); err == nil && string(got) == string(hello) {
					hellos.Add(1)
				}
				var b [64]byte
				for {
					if _, err := br.Read(b[:]); err != nil {
						return
					}
				}
			}()
		}
	}()
	fmt.Printf("cloud %s\n", ln.Addr())

	in := bufio.NewScanner(os.Stdin)
	if !in.Scan() {
		return
	}
	target := strings.TrimPrefix(in.Text(), "go ")
	var mu sync.Mutex
	var conns []net.Conn
	var failed atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				c, err := net.Dial("tcp", target)
				if err == nil {
					_, err = c.Write(hello)
				}
				if err != nil {
					failed.Add(1)
					if c != nil {
						c.Close()
					}
					continue
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	fmt.Printf("open %d failed %d\n", len(conns), failed.Load())
	for in.Scan() { // "stat" until stdin closes
		fmt.Printf("connects %d hellos %d\n", connects.Load(), hellos.Load())
	}
	for _, c := range conns {
		c.Close()
	}
	ln.Close()
}

// idleHelper is a running child process.
type idleHelper struct {
	cloud *url.URL
	in    io.WriteCloser
	out   *bufio.Scanner
}

func startIdleHelper(tb testing.TB, n int) *idleHelper {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestIdleHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), idleHelperEnv+"=1", "CLOUDSTEER_IDLE_FLOWS="+strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		in.Close()
		cmd.Wait()
	})
	h := &idleHelper{in: in, out: bufio.NewScanner(out)}
	line := h.line(tb, "cloud ")
	h.cloud = &url.URL{Scheme: "http", Host: line}
	return h
}

// line returns the next stdout line starting with prefix, without it.
func (h *idleHelper) line(tb testing.TB, prefix string) string {
	tb.Helper()
	for h.out.Scan() {
		if s, ok := strings.CutPrefix(h.out.Text(), prefix); ok {
			return s
		}
	}
	tb.Fatalf("idle helper ended before %q: %v", prefix, h.out.Err())
	return ""
}

// open makes the child dial n flows to addr, each sending a ClientHello,
// and returns how many it holds.
func (h *idleHelper) open(tb testing.TB, addr string) (open, failed int) {
	tb.Helper()
	fmt.Fprintf(h.in, "go %s\n", addr)
	fmt.Sscanf(h.line(tb, "open "), "%d failed %d", &open, &failed)
	return open, failed
}

// stat returns the CONNECTs the child's proxy answered and the replayed
// ClientHellos it received intact.
func (h *idleHelper) stat(tb testing.TB) (connects, hellos int) {
	tb.Helper()
	fmt.Fprintf(h.in, "stat\n")
	fmt.Sscanf(h.line(tb, "connects "), "%d hellos %d", &connects, &hellos)
	return connects, hellos
}

// idleProxy starts a TLS proxy on loopback that steers every flow to
// cloud and stops it when the test ends.
func idleProxy(tb testing.TB, cloud *url.URL) (*proxy.Proxy, string) {
	tb.Helper()
	var once sync.Once
	cc, err := cloudproxy.New(cloudproxy.Config{URL: cloud})
	if err != nil {
		tb.Fatal(err)
	}
	px, err := proxy.New(proxy.Config{
		Cloud:  cc,
		Policy: &policy{},
		OriginalDst: func(*net.TCPConn) (netip.AddrPort, error) {
			return netip.MustParseAddrPort("192.0.2.1:443"), nil // never dialed: every flow goes to the cloud
		},
		OnEvent: func(ev proxy.Event) {
			once.Do(func() { tb.Logf("first event: %s: %s", ev.Kind, ev.Detail) })
		},
		Logger:          slog.New(slog.DiscardHandler),
		KeepFreedMemory: os.Getenv("CLOUDSTEER_IDLE_KEEP_FREED") != "",
	})
	if err != nil {
		tb.Fatal(err)
	}
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- px.ServeTLS(ctx, ln) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("serve returned %v", err)
		}
	})
	return px, ln.Addr().String()
}

// waitSettled waits until every one of n flows is either tunnelled (the
// child's proxy answered its CONNECT) or ended with an error in px, and
// returns the CONNECT and hello counts. It gives up, returning what it has, when
// nothing moved for stall.
func waitSettled(tb testing.TB, h *idleHelper, px *proxy.Proxy, n int, stall time.Duration) (connects, hellos int) {
	tb.Helper()
	last, lastMove := -1, time.Now()
	for {
		connects, hellos = h.stat(tb)
		st := px.Stats()
		done := hellos + int(st.UpstreamErrors+st.BadClients)
		if done >= n {
			return connects, hellos
		}
		if done != last {
			last, lastMove = done, time.Now()
		} else if time.Since(lastMove) > stall {
			tb.Logf("stalled: %d connects, stats %+v", connects, st)
			return connects, hellos
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitTrue polls cond until it holds or 30 s pass, and returns whether it
// held.
func waitTrue(cond func() bool) bool {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// raiseNoFile sets the soft open file limit to the hard limit.
func raiseNoFile(tb testing.TB) {
	tb.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Fatal(err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Fatal(err)
	}
}

// setNoFile sets the soft open file limit to n until the test ends.
func setNoFile(tb testing.TB, n uint64) {
	tb.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		tb.Fatal(err)
	}
	if n > old.Max {
		tb.Fatalf("need %d open files, hard limit is %d", n, old.Max)
	}
	lim := old
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

func openFDs(tb testing.TB) int {
	tb.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Fatal(err)
	}
	return len(ents)
}

// vmRSS returns the process's resident set from /proc/self/status.
func vmRSS(tb testing.TB) int64 {
	tb.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	tb.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// TestIdleFlowsAllReachTheCloud holds many idle steered flows (ClientHello
// sent, then silence) with an open file limit of two descriptors per flow
// plus a margin: every flow must get its CONNECT and replay its hello, and
// an idle tunnel must hold no more than its two sockets.
func TestIdleFlowsAllReachTheCloud(t *testing.T) {
	n := 3000
	if raceEnabled {
		n = 1500 // the race detector allows 8128 live goroutines
	}
	const margin = 256
	h := startIdleHelper(t, n)
	base := openFDs(t)
	setNoFile(t, uint64(base+2*n+margin))
	px, addr := idleProxy(t, h.cloud)
	trims := proxy.TrimCount()

	open, failed := h.open(t, addr)
	if open != n {
		t.Fatalf("client opened %d of %d flows (%d failed)", open, n, failed)
	}
	connects, hellos := waitSettled(t, h, px, n, 15*time.Second)
	st := px.Stats()
	if connects != n || hellos != n || st.Proxied != uint64(n) || st.UpstreamErrors != 0 || st.BadClients != 0 {
		t.Errorf("%d flows: cloud proxy answered %d CONNECTs and got %d hellos; proxy stats %+v", n, connects, hellos, st)
	}
	if got, limit := openFDs(t)-base, 2*n+margin/2; got > limit {
		t.Errorf("%d idle tunnels hold %d descriptors, want at most %d", n, got, limit)
	}
	// That burst of parked flows makes the process return its freed
	// memory (see trim.go).
	if !waitTrue(func() bool { return proxy.TrimCount() > trims }) {
		t.Errorf("no memory trim after %d flows parked", n)
	}
}

// BenchmarkIdleFlows holds CLOUDSTEER_IDLE_FLOWS (default 5000) idle
// steered flows and reports what each costs the proxy: RSS once the flows
// have settled and parked (as the daemon would show it, no forced GC), and
// 10 s later; live heap, heap in use and goroutine stacks after a GC
// (runtime/metrics); goroutines and descriptors; and how many flows got
// their CONNECT to the cloud proxy. With CLOUDSTEER_IDLE_HEAPPROFILE=file
// it also writes a heap profile of the settled flows there (add
// -test.memprofilerate=1 for every allocation; see it with
// go tool pprof -sample_index=inuse_space). Run it once: -bench IdleFlows
// -benchtime 1x.
func BenchmarkIdleFlows(b *testing.B) {
	n := 5000
	if s := os.Getenv("CLOUDSTEER_IDLE_FLOWS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	raiseNoFile(b)
	for b.Loop() {
		h := startIdleHelper(b, n)
		runtime.GC()
		before := readMem()
		rssBefore, gBefore, fdBefore := vmRSS(b), runtime.NumGoroutine(), openFDs(b)
		if os.Getenv("CLOUDSTEER_IDLE_CLASSES") != "" {
			logMemClasses(b)
		}
		px, addr := idleProxy(b, h.cloud)

		t0 := time.Now()
		open, failed := h.open(b, addr)
		connects, hellos := waitSettled(b, h, px, open, 10*time.Second)
		settle := time.Since(t0)
		time.Sleep(time.Second) // every direction has parked
		rss := vmRSS(b)         // no forced GC: what the daemon would show
		if os.Getenv("CLOUDSTEER_IDLE_CLASSES") != "" {
			logMemClasses(b)
		}
		time.Sleep(10 * time.Second)
		rss10 := vmRSS(b)
		runtime.GC()
		after := readMem()
		g, fds := runtime.NumGoroutine(), openFDs(b)
		st := px.Stats()
		if path := os.Getenv("CLOUDSTEER_IDLE_HEAPPROFILE"); path != "" {
			writeHeapProfile(b, path)
		}
		per := func(v float64) float64 { return v / float64(max(open, 1)) }
		b.ReportMetric(float64(open), "flows")
		b.ReportMetric(float64(connects), "connects")
		b.ReportMetric(float64(hellos), "hellos")
		b.ReportMetric(per(float64(rss-rssBefore)), "rss-B/flow")
		b.ReportMetric(per(float64(rss10-rssBefore)), "rss10s-B/flow")
		b.ReportMetric(per(after.live-before.live), "live-B/flow")
		b.ReportMetric(per(after.heapInuse-before.heapInuse), "heap-B/flow")
		b.ReportMetric(per(after.stacks-before.stacks), "stack-B/flow")
		b.ReportMetric(per(float64(g-gBefore)), "goroutines/flow")
		b.ReportMetric(per(float64(fds-fdBefore)), "fds/flow")
		b.Logf("%d flows open (%d failed), %d CONNECTs, %d hellos in %v; memory trims %d; RSS %.1f→%.1f MiB, %.1f MiB 10 s later; live heap %.1f→%.1f MiB; proxy stats %+v",
			open, failed, connects, hellos, settle.Round(time.Millisecond), proxy.TrimCount(), float64(rssBefore)/(1<<20), float64(rss)/(1<<20), float64(rss10)/(1<<20),
			before.live/(1<<20), after.live/(1<<20), st)
	}
}

// memSample is what runtime/metrics says about the heap and stacks.
type memSample struct {
	live      float64 // bytes of live heap objects after the last GC
	heapInuse float64 // heap objects plus unused space in their spans
	stacks    float64 // goroutine stack memory, in use or cached
}

func readMem() memSample {
	s := []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/heap/stacks:bytes"},
	}
	metrics.Read(s)
	v := func(i int) float64 { return float64(s[i].Value.Uint64()) }
	return memSample{live: v(0), heapInuse: v(1) + v(2), stacks: v(3)}
}

// logMemClasses logs every /memory/classes metric, to see what RSS holds.
func logMemClasses(tb testing.TB) {
	var s []metrics.Sample
	for _, d := range metrics.All() {
		if strings.HasPrefix(d.Name, "/memory/classes/") || strings.HasPrefix(d.Name, "/gc/heap/goal") || strings.HasPrefix(d.Name, "/gc/heap/live") {
			s = append(s, metrics.Sample{Name: d.Name})
		}
	}
	metrics.Read(s)
	for _, m := range s {
		tb.Logf("%-50s %8.1f MiB", m.Name, float64(m.Value.Uint64())/(1<<20))
	}
}

func writeHeapProfile(tb testing.TB, path string) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		tb.Fatal(err)
	}
}

// TestParkedTunnel lets a tunnel sit idle long enough for both directions
// to park (no goroutine), then uses it again, and lets another park until
// the idle timeout closes it.
func TestParkedTunnel(t *testing.T) {
	const quiet = 1500 * time.Millisecond // well past the proxy's park delay
	t.Run("resumes", func(t *testing.T) {
		e := newEnv(t, envOpts{tls: true})
		c, err := tls.Dial("tcp", e.addr, &tls.Config{ServerName: "www.example.com", RootCAs: e.ca.Pool})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		time.Sleep(quiet)
		fmt.Fprintf(c, "GET /after-park HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("request after parking: %v", err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil || !strings.Contains(string(body), "path=/after-park") {
			t.Fatalf("body %q, err %v", body, err)
		}
		c.Close()
		e.waitActive(t, 0)
		if st := e.proxy.Stats(); st.BytesDown == 0 || st.BytesUp == 0 {
			t.Errorf("stats %+v: bytes not counted", st)
		}
	})
	t.Run("idle timeout closes it", func(t *testing.T) {
		e := newEnv(t, envOpts{tls: true, idleTimeout: 2 * quiet})
		c, err := tls.Dial("tcp", e.addr, &tls.Config{ServerName: "www.example.com", RootCAs: e.ca.Pool})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, err = c.Read(make([]byte, 1))
		var ne net.Error
		if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
			t.Fatalf("read err = %v, want the proxy to close the idle tunnel", err)
		}
		e.waitActive(t, 0)
	})
	t.Run("shutdown wakes it", func(t *testing.T) {
		e := newEnv(t, envOpts{tls: true})
		c, err := tls.Dial("tcp", e.addr, &tls.Config{ServerName: "www.example.com", RootCAs: e.ca.Pool})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		time.Sleep(quiet)
		// The env's cleanup stops the proxy and fails if the parked
		// tunnel keeps serve from returning or stays active.
	})
}

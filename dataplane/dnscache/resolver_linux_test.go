package dnscache

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/cloudsteer/cloudsteer/dataplane/resolver"
	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

// The Go resolver feeds a Cache through its KernelCache hook.
var _ resolver.KernelCache = (*Cache)(nil)

// upstream starts a DNS server on the test process's loopback (where the
// resolver's upstream sockets are made) that answers
// every A question under example.com with 203.0.113.10 (TTL 300) and
// everything else NXDOMAIN, and returns its address.
func upstream(t testing.TB) netip.AddrPort {
	t.Helper()
	return upstreamIn(t, "")
}

// upstreamIn is upstream on the loopback of namespace ns ("" for the test
// process's own).
func upstreamIn(t testing.TB, ns string) netip.AddrPort {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg).SetReply(r)
		m.RecursionAvailable = true
		q := r.Question[0]
		if q.Qtype == dns.TypeA && dns.IsSubDomain("example.com.", strings.ToLower(q.Name)) {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: net.IPv4(203, 0, 113, 10)})
		} else {
			m.Rcode = dns.RcodeNameError
			soa, _ := dns.NewRR("example.com. 60 IN SOA ns.example.com. admin.example.com. 1 2 3 4 60")
			m.Ns = append(m.Ns, soa)
		}
		if opt := r.IsEdns0(); opt != nil {
			m.SetEdns0(1232, false)
		}
		_ = w.WriteMsg(m)
	})
	var pc net.PacketConn
	listen := func() error {
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		return err
	}
	var err error
	if ns == "" {
		err = listen()
	} else {
		err = privtest.Do(ns, listen)
	}
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: h}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// serveResolver runs a Go resolver in the gateway namespace on addr
// (a resolver address on the gateway's lo) until the test ends.
func serveResolver(t testing.TB, ns, addr string, cfg resolver.Config) *resolver.Resolver {
	t.Helper()
	r, err := resolver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var pc net.PacketConn
	privtest.InNetNS(t, ns, func() {
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			t.Fatal(err)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, pc, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return r
}

// resolverLab is the two-namespace lab without the fall-through server:
// the Go resolver itself listens on the resolver addresses.
func resolverLab(t testing.TB, withKernel bool) (*lab, *resolver.Resolver) {
	t.Helper()
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "ip", "dig")
	l := &lab{client: privtest.NewNetNS(t), gw: privtest.NewNetNS(t), gwIf: "lan0"}
	l.link(t)
	cfg := resolver.Config{Upstreams: []netip.AddrPort{upstream(t)}}
	if withKernel {
		privtest.InNetNS(t, l.gw, func() {
			c, err := New(context.Background(), []string{l.gwIf}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			l.cache = c
		})
		t.Cleanup(func() {
			if err := l.cache.Close(); err != nil {
				t.Error(err)
			}
		})
		cfg.KernelCache = l.cache
	}
	r := serveResolver(t, l.gw, labResolver4+":53", cfg)
	return l, r
}

func TestResolverFeedsKernel(t *testing.T) {
	l, r := resolverLab(t, true)
	out := l.dig(t, "@"+labResolver4, "+noedns", "www.example.com", "A")
	if !strings.Contains(out, "203.0.113.10") {
		t.Fatalf("first answer:\n%s", out)
	}
	if s := mustStats(t, l.cache); s.Misses != 1 || s.Hits != 0 || s.Entries != 1 {
		t.Fatalf("after the first query: %+v", s)
	}
	goQueries := r.Stats().Queries
	for _, name := range []string{"www.example.com", "WWW.EXAMPLE.com"} {
		out = l.dig(t, "@"+labResolver4, "+noedns", name, "A")
		if !strings.Contains(out, "203.0.113.10") || !strings.Contains(out, ";"+name+".") {
			t.Fatalf("cached answer:\n%s", out)
		}
	}
	if s := mustStats(t, l.cache); s.Hits != 2 {
		t.Fatalf("kernel stats %+v, want 2 hits", s)
	}
	if q := r.Stats().Queries; q != goQueries {
		t.Fatalf("the Go resolver saw %d more queries", q-goQueries)
	}
}

// BenchmarkDnsperf compares the Go resolver alone, with the eBPF cache in
// front of it, and unbound, all names cached, dnsperf in a client
// namespace through a veth (no nftables on any path). It reports q/s at
// full load (dnsperf -c 8 -q 200, as bench/ runs it) and the CPU time the
// client and the server spend per query at a fixed 20000 q/s, which other
// load on the machine disturbs less. Run it with -benchtime=1x;
// DNSPERF_SECONDS sets each run's length (default 5).
func BenchmarkDnsperf(b *testing.B) {
	privtest.RequireCommand(b, "dnsperf")
	secs := "5"
	if s := os.Getenv("DNSPERF_SECONDS"); s != "" {
		secs = s
	}
	qfile := filepath.Join(b.TempDir(), "queries")
	var lines []string
	for i := range 100 {
		lines = append(lines, fmt.Sprintf("host%d.example.com A", i))
	}
	if err := os.WriteFile(qfile, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	qps := regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)
	done := regexp.MustCompile(`Queries completed:\s+(\d+)`)
	for _, bench := range []string{"go", "bpf", "unbound"} {
		b.Run(bench, func(b *testing.B) {
			var l *lab
			serverCPU := selfCPU
			if bench == "unbound" {
				var pid int
				l, pid = unboundLab(b)
				serverCPU = func() time.Duration { return procCPU(pid) }
			} else {
				l, _ = resolverLab(b, bench == "bpf")
			}
			// Warm the caches.
			base := []string{"dnsperf", "-f", "inet", "-s", labResolver4, "-d", qfile, "-t", "2"}
			privtest.Run(b, l.client, append(base, "-n", "2")...)
			for range b.N {
				out := privtest.Run(b, l.client, append(base, "-l", secs, "-c", "8", "-q", "200")...)
				m := qps.FindStringSubmatch(out)
				if m == nil {
					b.Fatalf("no rate in dnsperf output:\n%s", out)
				}
				v, _ := strconv.ParseFloat(m[1], 64)
				b.ReportMetric(v, "q/s")

				s0 := serverCPU()
				cmd := privtest.Command(l.client, append(base, "-l", secs, "-c", "8", "-Q", "20000")...)
				outb, err := cmd.CombinedOutput()
				if err != nil {
					b.Fatalf("dnsperf: %v\n%s", err, outb)
				}
				server := serverCPU() - s0
				ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
				client := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
				m = done.FindStringSubmatch(string(outb))
				n, _ := strconv.ParseFloat(m[1], 64)
				b.ReportMetric(float64(client.Microseconds())/n, "client-µs/q")
				b.ReportMetric(float64(server.Microseconds())/n, "server-µs/q")
				b.ReportMetric(float64((client+server).Microseconds())/n, "total-µs/q")
				if l.cache != nil {
					b.Logf("kernel: %+v", mustStats(b, l.cache))
				}
			}
		})
	}
}

// selfCPU is the CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is the CPU time process pid has used (all its threads).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command: utime and stime are the
	// 12th and 13th, in clock ticks (100 per second on Linux).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// unboundLab is the two-namespace lab with unbound (2 threads, forwarding
// to a Go upstream on the gateway's loopback) on the resolver address.
func unboundLab(b *testing.B) (*lab, int) {
	b.Helper()
	privtest.RequireCommand(b, "unbound")
	l := &lab{client: privtest.NewNetNS(b), gw: privtest.NewNetNS(b), gwIf: "lan0"}
	l.link(b)
	up := upstreamIn(b, l.gw)
	dir := b.TempDir()
	conf := filepath.Join(dir, "unbound.conf")
	text := fmt.Sprintf(`server:
	interface: %s
	port: 53
	access-control: 10.10.0.0/24 allow
	do-ip6: no
	username: ""
	chroot: ""
	directory: "%s"
	pidfile: ""
	use-syslog: no
	logfile: ""
	verbosity: 0
	do-daemonize: no
	num-threads: 2
	so-reuseport: yes
	module-config: "iterator"
	qname-minimisation: no
	do-not-query-localhost: no
	msg-cache-size: 16m
	rrset-cache-size: 32m
forward-zone:
	name: "."
	forward-addr: %s@%d
`, labResolver4, dir, up.Addr(), up.Port())
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := privtest.Command(l.gw, "unbound", "-d", "-c", conf)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for i := 0; ; i++ {
		if strings.Contains(l.dig(b, "@"+labResolver4, "+noedns", "host0.example.com", "A"), "203.0.113.10") {
			break
		}
		if i == 50 {
			b.Fatal("unbound does not answer")
		}
	}
	return l, cmd.Process.Pid
}

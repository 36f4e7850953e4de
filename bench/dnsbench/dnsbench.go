// Package dnsbench measures the resolver's cache-miss path per upstream
// transport on loopback: plain DNS, DoT, DoH (HTTP/2), DoH over HTTP/3 and
// DoQ to the lab's encrypted DNS servers (lab/servers), side by side with
// unbound forwarding the same queries over DoT (forward-tls-upstream). Every
// query names a new name, so each is a cache miss that goes upstream.
// Latency is measured with one client asking in turn (p50, p99); queries/s
// with Concurrency clients for Duration.
package dnsbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/miekg/dns"

	"github.com/cloudsteer/cloudsteer/dataplane/resolver"
	"github.com/cloudsteer/cloudsteer/dataplane/resolver/transport"
	"github.com/cloudsteer/cloudsteer/lab/servers"
)

// Options of a run; zero fields take the defaults.
type Options struct {
	// Queries is how many sequential queries measure latency (default 2000).
	Queries int
	// Concurrency is how many clients measure throughput (default 32).
	Concurrency int
	// Duration of the throughput phase (default 3s).
	Duration time.Duration
	// Unbound is the unbound binary ("" looks up "unbound" on PATH; when
	// absent the unbound row is left out, with Row.Err saying why).
	Unbound string
	Logger  *slog.Logger
}

// Row is one transport's result.
type Row struct {
	Name            string
	Queries         int
	P50, P99        time.Duration
	QPS             float64
	Errors          int64 // failed queries in both phases
	UpstreamConns   int64 // connections the upstream server accepted
	UpstreamQueries int64
	Err             error
}

const serverName = "dns.bench.test"

// handler answers every A query with an address from the name.
type handler struct{ n atomic.Int64 }

func (h *handler) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	h.n.Add(1)
	m := new(dns.Msg).SetReply(r)
	m.RecursionAvailable = true
	if len(r.Question) == 1 && r.Question[0].Qtype == dns.TypeA {
		q := r.Question[0]
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: net.IPv4(198, 18, byte(len(q.Name)), 1)}}
	}
	w.WriteMsg(m)
}

// Run measures every transport and returns the rows in table order.
func Run(ctx context.Context, o Options) ([]Row, error) {
	if o.Queries <= 0 {
		o.Queries = 2000
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 32
	}
	if o.Duration <= 0 {
		o.Duration = 3 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	dir, err := os.MkdirTemp("", "dnsbench")
	if err != nil {
		return nil, fmt.Errorf("make temp dir: %w", err)
	}
	defer os.RemoveAll(dir)
	ca, err := servers.LoadOrCreateCA(dir)
	if err != nil {
		return nil, err
	}
	lo := netip.MustParseAddr("127.0.0.1")
	leaf, err := ca.Issue([]string{serverName}, []net.IP{lo.AsSlice()})
	if err != nil {
		return nil, err
	}
	h := &handler{}
	enc, err := servers.StartEncryptedDNS(ctx, servers.EncryptedDNSConfig{Addr: lo, Cert: leaf, Handler: h, Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	defer enc.Close()
	plain, stopPlain, err := startPlain(h)
	if err != nil {
		return nil, err
	}
	defer stopPlain()

	spec := func(k transport.Kind, ap netip.AddrPort) transport.Spec {
		return transport.Spec{Kind: k, Host: serverName, Port: ap.Port(), Path: "/dns-query", Addrs: []netip.Addr{ap.Addr()}}
	}
	type target struct {
		name  string
		spec  transport.Spec
		conns func() int64
	}
	conns := func(i int) func() int64 {
		return func() int64 {
			a, b, c, d := enc.Conns()
			return []int64{a, b, c, d}[i]
		}
	}
	targets := []target{
		{"resolver, plain udp", transport.Spec{Kind: transport.Plain, Host: plain.Addr().String(), Port: plain.Port(), Addrs: []netip.Addr{plain.Addr()}}, func() int64 { return 0 }}, // udp: no connections
		{"resolver, dot", spec(transport.TLS, enc.DoT), conns(0)},
		{"resolver, doh (http/2)", spec(transport.HTTPS, enc.DoH), conns(1)},
		{"resolver, doh (http/3)", spec(transport.HTTP3, enc.DoH3), conns(2)},
		{"resolver, doq", spec(transport.QUIC, enc.DoQ), conns(3)},
	}
	var rows []Row
	for i, t := range targets {
		before, beforeQ := t.conns(), h.n.Load()
		r, err := resolver.New(resolver.Config{Servers: []transport.Spec{t.spec}, RootCAs: ca.Pool(), Logger: o.Logger, CacheSize: 1 << 20})
		if err != nil {
			return nil, err
		}
		row := measureResolver(ctx, r, fmt.Sprintf("r%d", i), o)
		row.Name = t.name
		row.UpstreamConns, row.UpstreamQueries = t.conns()-before, h.n.Load()-beforeQ
		rows = append(rows, row)
	}
	before, beforeQ := conns(0)(), h.n.Load()
	row := measureUnbound(ctx, dir, enc.DoT, o)
	row.UpstreamConns, row.UpstreamQueries = conns(0)()-before, h.n.Load()-beforeQ
	rows = append(rows, row)
	return rows, nil
}

// startPlain runs a plain DNS server (UDP and TCP) on a loopback port.
func startPlain(h dns.Handler) (netip.AddrPort, func(), error) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return netip.AddrPort{}, nil, err
	}
	ap := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	ln, err := net.Listen("tcp", ap.String())
	if err != nil {
		pc.Close()
		return netip.AddrPort{}, nil, err
	}
	srvs := []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h, MaxTCPQueries: -1}}
	var wg sync.WaitGroup
	for _, s := range srvs {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		wg.Go(func() { s.ActivateAndServe() })
		<-started
	}
	return ap, func() {
		for _, s := range srvs {
			s.Shutdown()
		}
		wg.Wait()
	}, nil
}

// measureResolver serves r on a loopback UDP socket and measures it.
func measureResolver(ctx context.Context, r *resolver.Resolver, prefix string, o Options) Row {
	defer r.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return Row{Err: err}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, pc, nil) }()
	defer func() { cancel(); <-done }()
	return measure(ctx, pc.LocalAddr().String(), prefix, o)
}

// measure asks addr over UDP: o.Queries in turn for latency, then
// o.Concurrency clients for o.Duration for queries/s; every name is new.
func measure(ctx context.Context, addr, prefix string, o Options) Row {
	var row Row
	var errs atomic.Int64
	co, err := dns.Dial("udp", addr)
	if err != nil {
		return Row{Err: err}
	}
	lat := make([]time.Duration, 0, o.Queries)
	// A short warm-up opens the upstream connection (the handshake is not
	// a cache miss's cost).
	for i := range 20 + o.Queries {
		start := time.Now()
		if err := askOne(co, fmt.Sprintf("l%d.%s.bench.example.", i, prefix)); err != nil {
			errs.Add(1)
			continue
		}
		if i >= 20 {
			lat = append(lat, time.Since(start))
		}
	}
	co.Close()
	slices.Sort(lat)
	if len(lat) > 0 {
		row.P50, row.P99 = lat[len(lat)/2], lat[len(lat)*99/100]
	}
	row.Queries = len(lat)
	var total atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(o.Duration)
	start := time.Now()
	for w := range o.Concurrency {
		wg.Go(func() {
			co, err := dns.Dial("udp", addr)
			if err != nil {
				errs.Add(1)
				return
			}
			defer co.Close()
			for i := 0; time.Now().Before(end) && ctx.Err() == nil; i++ {
				if err := askOne(co, fmt.Sprintf("t%d-%d.%s.bench.example.", w, i, prefix)); err != nil {
					errs.Add(1)
					continue
				}
				total.Add(1)
			}
		})
	}
	wg.Wait()
	row.QPS = float64(total.Load()) / time.Since(start).Seconds()
	row.Errors = errs.Load()
	return row
}

func askOne(co *dns.Conn, name string) error {
	q := new(dns.Msg).SetQuestion(name, dns.TypeA)
	co.SetDeadline(time.Now().Add(2 * time.Second))
	if err := co.WriteMsg(q); err != nil {
		return err
	}
	for {
		m, err := co.ReadMsg()
		if err != nil {
			return err
		}
		if m.Id != q.Id {
			continue // a late answer to a query that timed out
		}
		if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
			return fmt.Errorf("%s: rcode %d, %d answers", name, m.Rcode, len(m.Answer))
		}
		return nil
	}
}

// measureUnbound runs unbound forwarding everything over DoT to dot and
// measures it like the resolver.
func measureUnbound(ctx context.Context, dir string, dot netip.AddrPort, o Options) Row {
	row := Row{Name: "unbound, forward over dot"}
	bin := o.Unbound
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("unbound"); err != nil {
			row.Err = errors.New("unbound not installed")
			return row
		}
	}
	// A free loopback port for unbound (UDP and TCP).
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		row.Err = err
		return row
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	conf := filepath.Join(dir, "unbound.conf")
	text := fmt.Sprintf(`server:
  interface: 127.0.0.1@%d
  port: %d
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "%s"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  do-ip6: no
  do-not-query-localhost: no
  num-threads: 2
  msg-cache-size: 64m
  rrset-cache-size: 64m
  outgoing-range: 1024
  num-queries-per-thread: 1024
  tls-cert-bundle: "%s"
  harden-dnssec-stripped: no
  module-config: "iterator"
  access-control: 127.0.0.0/8 allow
forward-zone:
  name: "."
  forward-tls-upstream: yes
  forward-addr: %s@%d#%s
remote-control:
  control-enable: no
`, port, port, dir, filepath.Join(dir, servers.CAFile), dot.Addr(), dot.Port(), serverName)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		row.Err = err
		return row
	}
	cmd := exec.CommandContext(ctx, bin, "-d", "-c", conf)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		row.Err = fmt.Errorf("start unbound: %w", err)
		return row
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		co, err := dns.Dial("udp", addr)
		if err == nil {
			err = askOne(co, "ready.bench.example.")
			co.Close()
		}
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			row.Err = fmt.Errorf("unbound did not answer: %v; %s", err, strings.TrimSpace(stderr.String()))
			return row
		}
		time.Sleep(100 * time.Millisecond)
	}
	r := measure(ctx, addr, "u", o)
	r.Name = row.Name
	return r
}

// Print writes rows as a table.
func Print(w io.Writer, rows []Row) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "transport\tcache-miss p50\tp99\tqueries/s\terrors\tupstream conns\tupstream queries\t")
	for _, r := range rows {
		if r.Err != nil {
			fmt.Fprintf(tw, "%s\t%s\t\t\t\t\t\t\n", r.Name, r.Err)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.0f\t%d\t%d\t%d\t\n", r.Name, us(r.P50), us(r.P99), r.QPS, r.Errors, r.UpstreamConns, r.UpstreamQueries)
	}
	tw.Flush()
}

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }

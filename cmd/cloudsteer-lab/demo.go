package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/gateway"
	"github.com/cloudsteer/cloudsteer/lab/servers"
)

func init() { commands["demo"] = runDemo }

// demoStep is one thing the LAN client does, and what each hop saw.
type demoStep struct {
	what, client, gateway, proxy, origin string
}

// runDemo builds the lab, runs cloudsteer in it, drives the LAN client
// through the cases a branch office meets, prints what each hop saw, and
// tears everything down (also on Ctrl-C).
func runDemo(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	binDir := fs.String("bin", "bin", "directory holding the cloudsteer and cloudsteer-lab binaries")
	prefix := fs.String("prefix", "csdemo", "namespace prefix")
	keep := fs.Bool("keep", false, "keep the lab and cloudsteer running at the end, to open the web console from the LAN namespace, until Ctrl-C")
	fwName := fs.String("firewall", string(lab.FirewallRouter), fmt.Sprintf("the lab gateway's own ruleset, one of %v (router: masquerading office router, the default; none: plain routing)", lab.Firewalls))
	if err := fs.Parse(args); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("the demo builds network namespaces: run it as root")
	}
	bin, err := filepath.Abs(*binDir)
	if err != nil {
		return err
	}
	for _, b := range []string{"cloudsteer", "cloudsteer-lab"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return fmt.Errorf("missing %s in %s: run `make build` first", b, bin)
		}
	}
	if err := lab.Cleanup(*prefix); err != nil {
		return fmt.Errorf("remove an earlier demo lab: %w", err)
	}
	dir, err := os.MkdirTemp("", "cloudsteer-demo")
	if err != nil {
		return err
	}
	say := func(format string, a ...any) { fmt.Printf("==> "+format+"\n", a...) }

	say("building the lab: namespaces %slan (client), %sgw (cloudsteer), %sinet (origins, cloud proxy, cloud DNS)", *prefix, *prefix, *prefix)
	upCtx, cancel := context.WithTimeout(ctx, 90*time.Second)
	l, err := lab.Up(upCtx, lab.Options{Prefix: *prefix, Dir: dir, LabBinary: filepath.Join(bin, "cloudsteer-lab"), Firewall: lab.Firewall(*fwName)})
	cancel()
	if err != nil {
		return fmt.Errorf("lab up: %w", err)
	}
	defer func() {
		say("tearing down")
		if err := l.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "lab close:", err)
		}
		os.RemoveAll(dir)
	}()

	say("starting cloudsteer in %s (bypass domain: bank.example)", l.NS(lab.RoleGW))
	g, err := gateway.Start(ctx, gateway.Options{Bin: filepath.Join(bin, "cloudsteer"), Lab: l, BypassDomains: []string{"bank.example"}})
	if err != nil {
		return err
	}
	defer func() {
		if g.Running() {
			g.Stop()
		}
	}()

	d := &demo{l: l, g: g, labBin: filepath.Join(bin, "cloudsteer-lab"), bin: filepath.Join(bin, "cloudsteer")}
	// Beside the router's own ruleset every flow is tracked and the eBPF
	// fast path is off: a bypassed flow is routed (and NATed) by the stack.
	bypassed := "kernel fast path"
	if l.NAT() {
		bypassed = "not steered: routed by the stack"
	}
	var steps []demoStep
	for _, step := range []func(context.Context) demoStep{
		d.dnsQuery,
		d.dnsRepeat,
		d.web("https://www.example.com", "https://www.example.com/", "www.example.com", "SNI read, CONNECT to cloud", false),
		d.web("http://news.example.com", "http://news.example.com/", "news.example.com", "absolute-form to cloud", false),
		d.web("https://scores.sports.example", "https://scores.sports.example/", "scores.sports.example", "client closed, block event logged", false),
		d.web("http://scores.sports.example", "http://scores.sports.example/", "scores.sports.example", "block page passed on", false),
		d.web("https://gw1.akaetp.net (desktop agent)", "https://gw1.akaetp.net/", "gw1.akaetp.net", "*.akaetp.net: "+bypassed, true),
		d.web("https://bank.example (admin bypass)", "https://bank.example/", "bank.example", "bypass domain: "+bypassed, true),
		d.quicAttempt,
	} {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s := step(ctx)
		steps = append(steps, s)
		say("%s: %s", s.what, s.client)
	}

	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT DID\tCLIENT SAW\tCLOUDSTEER\tCLOUD PROXY SAW\tORIGIN SAW")
	fmt.Fprintln(tw, "----------\t----------\t----------\t---------------\t----------")
	for _, s := range steps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.what, s.client, s.gateway, s.proxy, s.origin)
	}
	tw.Flush()
	fmt.Println()
	if l.NAT() {
		fmt.Println("client 10.10.0.10 on the LAN; the gateway is a masquerading office router with a stateful")
		fmt.Println("forward filter (its WAN address is 10.20.0.1): an origin that sees 10.20.0.1 was reached direct,")
		fmt.Println("by the router's NAT, untouched by cloudsteer; one that sees the cloud proxy was steered.")
	} else {
		fmt.Println("client 10.10.0.10 on the LAN; the gateway's WAN address is 10.20.0.1 (no NAT: --firewall none,")
		fmt.Println("so an origin that sees 10.10.0.10 was reached by plain routing, untouched by cloudsteer).")
	}
	fmt.Println()
	if err := d.printConsole(ctx, *prefix); err != nil {
		return fmt.Errorf("web console: %w", err)
	}
	if *keep {
		say("the lab and cloudsteer keep running; press Ctrl-C to tear everything down")
		<-ctx.Done()
	}
	return nil
}

type demo struct {
	l      *lab.Lab
	g      *gateway.Gateway
	labBin string
	bin    string // the cloudsteer binary
}

func (d *demo) run(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	cmd := d.l.Command(ctx, lab.RoleLAN, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(errb.String())
		if msg == "" {
			msg = err.Error()
		}
		return out.String(), errors.New(msg)
	}
	return out.String(), nil
}

func (d *demo) curl(ctx context.Context, url, name, addr string) (string, error) {
	port := "443"
	if strings.HasPrefix(url, "http://") {
		port = "80"
	}
	return d.run(ctx, "curl", "-sS", "--max-time", "8", "--cacert", d.l.CAFile(),
		"--resolve", name+":"+port+":"+addr, "-w", "\n[%{http_code}]", url)
}

// since returns what the cloud proxy and the origins logged since t.
func (d *demo) since(t time.Time) (proxy []servers.ProxyRecord, origin []servers.OriginRecord, dnsRecs []servers.DNSRecord) {
	time.Sleep(300 * time.Millisecond) // servers log as a request ends
	ps, _ := servers.ReadProxyLog(d.l.Path(servers.ProxyLogFile))
	for _, r := range ps {
		// Records without X-Forwarded-For are the gateway's own health
		// probes, not the client's flows.
		if !r.Time.Before(t) && r.XFF != "" {
			proxy = append(proxy, r)
		}
	}
	ors, _ := servers.ReadOriginLog(d.l.Path(servers.OriginLogFile))
	for _, r := range ors {
		if !r.Time.Before(t) {
			origin = append(origin, r)
		}
	}
	ds, _ := servers.ReadDNSLog(d.l.Path(servers.DNSLogFile))
	for _, r := range ds {
		if !r.Time.Before(t) {
			dnsRecs = append(dnsRecs, r)
		}
	}
	return proxy, origin, dnsRecs
}

func proxySummary(recs []servers.ProxyRecord) string {
	if len(recs) == 0 {
		return "nothing"
	}
	var parts []string
	for _, r := range recs {
		s := fmt.Sprintf("%s %s → %d", r.Method, r.URL, r.Status)
		if r.AuthOK {
			s += ", tenant ok"
		}
		if r.XFF != "" {
			s += ", XFF " + r.XFF
		}
		if r.Category != "" {
			s += ", category " + r.Category
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

func originSummary(recs []servers.OriginRecord) string {
	if len(recs) == 0 {
		return "nothing"
	}
	var parts []string
	for _, r := range recs {
		from, _, _ := net.SplitHostPort(r.Remote)
		parts = append(parts, fmt.Sprintf("%s %s from %s", strings.ToUpper(r.Proto), r.Site, from))
	}
	return strings.Join(parts, "; ")
}

func clientSummary(out string, err error) string {
	if err != nil {
		msg := firstLine(err.Error())
		switch {
		case strings.Contains(msg, "alert access denied"):
			return "TLS alert: access denied"
		case strings.Contains(msg, "connection refused"):
			return "connection refused"
		}
		if len(msg) > 60 {
			msg = msg[:60] + "…"
		}
		return "error: " + msg
	}
	out = strings.TrimSpace(out)
	lines := strings.Split(out, "\n")
	code := lines[len(lines)-1]
	body := firstLine(out)
	if len(body) > 40 {
		body = body[:40] + "…"
	}
	return fmt.Sprintf("%s %q", code, body)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// dig asks the address nobody runs for www.example.com, without the
// EDNS cookie option dig adds by default (stub resolvers send none), so a
// cached answer can come from the kernel.
func (d *demo) dig(ctx context.Context) (string, error) {
	return d.run(ctx, "dig", "+short", "+nocookie", "+time=3", "+tries=1", "@"+lab.NobodyDNSV4.String(), "www.example.com", "A")
}

// kernelAnswers reads cloudsteer_dns_kernel_answers_total from the
// gateway's /metrics (LAN side, no token needed).
func (d *demo) kernelAnswers(ctx context.Context) (float64, error) {
	out, err := d.run(ctx, "curl", "-sS", "--max-time", "3", "http://"+lab.GWLANV4.Addr().String()+":9080/metrics")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "cloudsteer_dns_kernel_answers_total "); ok {
			var f float64
			_, err := fmt.Sscan(v, &f)
			return f, err
		}
	}
	return 0, errors.New("no cloudsteer_dns_kernel_answers_total in /metrics")
}

// dnsRepeat asks the same name again: the eBPF answerer on the LAN
// interface answers from the resolver's cache, and nobody else sees it.
func (d *demo) dnsRepeat(ctx context.Context) demoStep {
	before, berr := d.kernelAnswers(ctx)
	start := time.Now()
	out, err := d.dig(ctx)
	_, _, dnsRecs := d.since(start)
	after, aerr := d.kernelAnswers(ctx)
	gateway := "answered in the kernel (eBPF), no socket"
	switch {
	case berr != nil || aerr != nil:
		gateway = "kernel answers unknown: " + firstLine(errors.Join(berr, aerr).Error())
	case after-before != 1:
		gateway = fmt.Sprintf("resolver answered (kernel answers +%v)", after-before)
	}
	cloud := "nothing"
	for _, r := range dnsRecs {
		if r.Server == "cloud" {
			cloud = fmt.Sprintf("cloud DNS: %s %s from %s", r.Type, r.Name, r.Remote)
		}
	}
	client := "answer " + strings.TrimSpace(out)
	if err != nil {
		client = "error: " + firstLine(err.Error())
	}
	return demoStep{what: "the same dig again", client: client, gateway: gateway, proxy: cloud, origin: "-"}
}

func (d *demo) dnsQuery(ctx context.Context) demoStep {
	start := time.Now()
	out, err := d.dig(ctx)
	_, _, dnsRecs := d.since(start)
	cloud := "nothing"
	for _, r := range dnsRecs {
		if r.Server == "cloud" {
			cloud = fmt.Sprintf("cloud DNS: %s %s from %s", r.Type, r.Name, r.Remote)
		}
	}
	client := strings.TrimSpace(out)
	if err != nil {
		client = "error: " + firstLine(err.Error())
	}
	return demoStep{what: "dig @192.0.2.53 www.example.com (nobody runs that resolver)", client: "answer " + client,
		gateway: "resolver answered, from 192.0.2.53", proxy: cloud, origin: "-"}
}

// web is a step in which the client fetches url from the lab site name,
// after resolving the name through cloudsteer when resolve is set (so a
// bypass name's address is learned first). gateway says what cloudsteer
// does with the flow.
func (d *demo) web(what, url, name, gateway string, resolve bool) func(context.Context) demoStep {
	return func(ctx context.Context) demoStep {
		s, _ := lab.SiteByName(name)
		start := time.Now()
		if resolve {
			d.run(ctx, "dig", "+short", "+time=3", "+tries=1", "@"+lab.NobodyDNSV4.String(), s.Name, "A")
		}
		out, err := d.curl(ctx, url, s.Name, s.V4.String())
		p, o, _ := d.since(start)
		client := clientSummary(out, err)
		if strings.Contains(out, "Blocked by your organization's policy") {
			client = "403 block page"
		}
		if strings.Contains(gateway, "block event logged") && !strings.Contains(d.g.Log(), "blocked by cloud proxy") {
			gateway = "client closed, but no block event in the log"
		}
		return demoStep{what: what, client: client, gateway: gateway, proxy: proxySummary(p), origin: originSummary(o)}
	}
}

func (d *demo) quicAttempt(ctx context.Context) demoStep {
	s, _ := lab.SiteByName("www.example.com")
	start := time.Now()
	out, err := d.run(ctx, d.labBin, "quic-probe", "--addr", s.V4.String()+":443", "--name", s.Name, "--ca", d.l.CAFile(), "--timeout", "3s")
	elapsed := time.Since(start).Round(time.Millisecond)
	p, o, _ := d.since(start)
	client := "answered: " + firstLine(out)
	if err != nil {
		client = fmt.Sprintf("failed after %v: %s", elapsed, clientSummary("", err))
	}
	return demoStep{what: "QUIC (UDP 443) to www.example.com", client: client, gateway: "ICMP port unreachable", proxy: proxySummary(p), origin: originSummary(o)}
}

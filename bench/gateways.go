package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cloudsteer/cloudsteer/bench/serve"
	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/gateway"
)

// Ports the comparison gateways listen on in the gateway namespace.
const (
	redsocksPort   = 12345
	squidIcptPort  = 3129
	squidPlainPort = 3128
	nftTable       = "csbench"
	squidService   = "csbenchsq"
)

// gw is a running gateway (or nothing, for GWNone).
type gw struct {
	kind string
	cs   *gateway.Gateway
	cmd  *exec.Cmd
	done chan struct{}
	stop func() error
}

// gwOptions vary a gateway from how every figure but one runs it.
type gwOptions struct {
	// defaultLimits runs cloudsteer with its default limits (no limits
	// block in the config), for the fairness figure; every other figure
	// turns the limits off.
	defaultLimits bool
	// squidCloud chains the gateway to the lab's Squid (SquidCloudAddr)
	// instead of the lean benchmark proxy.
	squidCloud bool
	// bin is the directory of the cloudsteer binary, when not
	// Options.BinDir (the A/B rows).
	bin string
}

// cloud returns the cloud proxy a gateway chains to, and the user and
// password it sends.
func (o gwOptions) cloud() (addr netip.AddrPort, user, password string) {
	if o.squidCloud {
		return SquidCloudAddr, lab.EntitlementCode, lab.SquidCodePassword
	}
	return ProxyAddr, lab.EntitlementCode, "x"
}

// startGateway starts kind in the gateway namespace and returns once it
// takes flows.
func (r *runner) startGateway(ctx context.Context, kind string) (*gw, error) {
	return r.startGatewayWith(ctx, kind, gwOptions{})
}

// startGatewayWith is startGateway with options.
func (r *runner) startGatewayWith(ctx context.Context, kind string, o gwOptions) (*gw, error) {
	g := &gw{kind: kind}
	switch kind {
	case GWNone:
		g.stop = func() error { return nil }
		return g, nil
	case GWConntrack:
		// What any office router has even with nothing steered: connection
		// tracking on every forwarded packet (here one stateful rule in
		// the forward hook, as a NAT or firewall rule would need).
		const table = "csbench_conntrack"
		rules := "add table inet " + table + "\n" +
			"add chain inet " + table + " forward { type filter hook forward priority 10 ; }\n" +
			"add rule inet " + table + " forward ct state established,related accept\n"
		cmd := r.lab.Command(ctx, lab.RoleGW, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(rules)
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("add conntrack rule: %v: %s", err, out)
		}
		g.stop = func() error {
			return r.lab.Command(context.Background(), lab.RoleGW, "nft", "delete", "table", "inet", table).Run()
		}
		return g, nil
	case GWCloudsteer:
		// Its own state directory and admin socket in the run's directory:
		// left out they are the host's /var/lib/cloudsteer and
		// /run/cloudsteer/admin.sock.
		cfg := filepath.Join(r.dir, "cloudsteer.yaml")
		cloudAddr, _, _ := o.cloud()
		cred := fmt.Sprintf("  entitlement_code: %q", lab.EntitlementCode)
		if o.squidCloud {
			// Squid wants the code as user with a password.
			cred = fmt.Sprintf("  username: %q\n  password: %q", lab.EntitlementCode, lab.SquidCodePassword)
		}
		// The health probe CONNECTs to a name both cloud proxies resolve
		// (the default, www.akamai.com, is unknown here: the proxy
		// answered 502, cloudsteer failed open and steered nothing).
		yaml := fmt.Sprintf(`lan_interfaces: [%s]
cloud_proxy:
  url: http://%s
%s
dns:
  upstreams: [%q]
bypass:
  domains: []
  cidrs: [%q]
health:
  probe_target: %s:443
log:
  level: info
state_dir: %s
admin:
  socket: %s
`, strings.Join(r.lab.LANInterfaces(), ", "), cloudAddr, cred, lab.CloudDNSV4.String(), BypassCIDR.String(), HTTPSName,
			filepath.Join(r.dir, "state"), filepath.Join(r.dir, "admin.sock"))
		if !o.defaultLimits {
			yaml += noLimits
		}
		// CLOUDSTEER_BENCH_PPROF=127.0.0.1:6060 lets a profiler reach the
		// gateway (from inside the gateway namespace) while it is measured.
		if addr := os.Getenv("CLOUDSTEER_BENCH_PPROF"); addr != "" {
			yaml += fmt.Sprintf("debug:\n  pprof_listen: %q\n", addr)
		}
		if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
			return nil, fmt.Errorf("write cloudsteer config: %w", err)
		}
		bin := r.opts.BinDir
		if o.bin != "" {
			bin = o.bin
		}
		cs, err := gateway.StartWithConfig(ctx, filepath.Join(bin, "cloudsteer"), r.lab, cfg, filepath.Join(r.dir, "cloudsteer.log"))
		if err != nil {
			return nil, err
		}
		g.cs = cs
		g.stop = func() error { return cs.Stop() }
		return g, nil
	case GWRedsocks:
		cloudAddr, user, password := o.cloud()
		conf := filepath.Join(r.dir, "redsocks.conf")
		text := fmt.Sprintf(`base {
	log_debug = off;
	log_info = off;
	log = stderr;
	daemon = off;
	redirector = iptables;
}
redsocks {
	local_ip = 0.0.0.0;
	local_port = %d;
	ip = %s;
	port = %d;
	type = http-connect;
	login = %q;
	password = %q;
}
`, redsocksPort, cloudAddr.Addr(), cloudAddr.Port(), user, password)
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			return nil, fmt.Errorf("write redsocks config: %w", err)
		}
		if err := r.startProc(ctx, g, "redsocks.log", "redsocks", "-c", conf); err != nil {
			return nil, err
		}
		if err := r.waitListen(ctx, g, redsocksPort); err != nil {
			return nil, err
		}
		if err := r.redirect(ctx, redsocksPort); err != nil {
			g.stop()
			return nil, err
		}
		return g, nil
	case GWSquid:
		if err := r.startSquid(ctx, g, o); err != nil {
			return nil, err
		}
		if err := r.redirect(ctx, squidIcptPort); err != nil {
			g.stop()
			return nil, err
		}
		return g, nil
	}
	return nil, fmt.Errorf("unknown gateway %q", kind)
}

// noLimits turns cloudsteer's limits off: in every figure but fairness one
// bench client stands for a whole office (the RSS figure holds 9 950 flows
// from it), so no per-client limits, and as many flows as the descriptors
// allow.
const noLimits = `limits:
  flows: 0
  flows_per_client: 0
  new_flows_per_second_per_client: 0
  dns_tcp_per_client: 0
  dns_queries_per_second_per_client: 0
`

// startProc starts a process in the gateway namespace, logging to file.
func (r *runner) startProc(ctx context.Context, g *gw, logName string, args ...string) error {
	f, err := os.Create(filepath.Join(r.dir, logName))
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := r.lab.Command(context.Background(), lab.RoleGW, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", args[0], err)
	}
	g.cmd, g.done = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(g.done) }()
	g.stop = func() error {
		err := r.clearRedirect()
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-g.done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-g.done
		}
		return err
	}
	return nil
}

// waitListen waits until something listens on TCP port in the gateway
// namespace, or the gateway process exits.
func (r *runner) waitListen(ctx context.Context, g *gw, port int) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		out, _ := r.lab.Command(ctx, lab.RoleGW, "ss", "-Htln", fmt.Sprintf("sport = :%d", port)).Output()
		if strings.TrimSpace(string(out)) != "" {
			return nil
		}
		select {
		case <-g.done:
			return fmt.Errorf("%s exited before listening on %d", g.kind, port)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	g.stop()
	return fmt.Errorf("%s not listening on %d after 20s", g.kind, port)
}

// redirect sends LAN TCP 443 to port in the gateway (nftables nat, like
// an admin sets up redsocks or Squid intercept).
func (r *runner) redirect(ctx context.Context, port int) error {
	rules := fmt.Sprintf(`table ip %[1]s {
	chain pre {
		type nat hook prerouting priority dstnat; policy accept;
		iifname %[2]q tcp dport 443 redirect to :%[3]d
	}
}
`, nftTable, lab.GWLANIf, port)
	cmd := r.lab.Command(ctx, lab.RoleGW, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft redirect: %w: %s", err, out)
	}
	return nil
}

func (r *runner) clearRedirect() error {
	out, err := r.lab.Command(context.Background(), lab.RoleGW, "nft", "delete", "table", "ip", nftTable).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "No such file") {
		return fmt.Errorf("nft delete table: %w: %s", err, out)
	}
	return nil
}

// startSquid runs Squid in intercept mode: peek at the ClientHello, splice,
// every tunnel through the cloud proxy as parent (never direct).
func (r *runner) startSquid(ctx context.Context, g *gw, o gwOptions) error {
	state := filepath.Join(r.dir, "squid")
	if err := os.MkdirAll(state, 0o755); err != nil {
		return err
	}
	u, err := user.Lookup("proxy")
	if err != nil {
		return fmt.Errorf("look up user proxy: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(state, uid, gid); err != nil {
		return err
	}
	var hosts strings.Builder
	for n, a := range Names() {
		fmt.Fprintf(&hosts, "%s %s\n", a, n)
	}
	if err := os.WriteFile(filepath.Join(state, "hosts"), []byte(hosts.String()), 0o644); err != nil {
		return err
	}
	cloudAddr, user, password := o.cloud()
	conf := filepath.Join(state, "squid.conf")
	text := fmt.Sprintf(`# Squid as an intercepting gateway (peek at SNI, splice) with the cloud proxy as parent.
http_port 127.0.0.1:%[1]d
https_port 0.0.0.0:%[2]d intercept ssl-bump tls-cert=%[3]s tls-key=%[4]s generate-host-certificates=off
visible_hostname squid.bench.example
cache_effective_user proxy
cache_effective_group proxy
pid_filename %[5]s/squid.pid
cache_log %[5]s/cache.log
access_log stdio:%[5]s/access.log
coredump_dir %[5]s
logfile_rotate 0
shutdown_lifetime 0 seconds
cache deny all
cache_mem 8 MB
pinger_enable off
netdb_filename none
icp_port 0
htcp_port 0
hosts_file %[5]s/hosts
dns_nameservers %[6]s
acl step1 at_step SslBump1
ssl_bump peek step1
ssl_bump splice all
cache_peer %[7]s parent %[8]d 0 no-query no-digest no-netdb-exchange login=%[9]s:%[10]s name=cloud
never_direct allow all
http_access allow all
`, squidPlainPort, squidIcptPort,
		filepath.Join(r.serveDir, serve.LeafFile), filepath.Join(r.serveDir, serve.LeafKeyFile),
		state, lab.CloudDNSV4, cloudAddr.Addr(), cloudAddr.Port(), user, password)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "squid", "-k", "parse", "-n", squidService, "-f", conf).CombinedOutput(); err != nil {
		return fmt.Errorf("squid -k parse: %w: %s", err, lastLines(string(out), 10))
	}
	if err := r.startProc(ctx, g, "squid.log", "squid", "-N", "-n", squidService, "-f", conf); err != nil {
		return err
	}
	stop := g.stop
	g.stop = func() error {
		err := stop()
		shm, _ := filepath.Glob("/dev/shm/" + squidService + "-*")
		for _, f := range shm {
			os.Remove(f)
		}
		return err
	}
	if err := r.waitListen(ctx, g, squidIcptPort); err != nil {
		return fmt.Errorf("%w: %s", err, lastLines(readFile(filepath.Join(state, "cache.log")), 10))
	}
	return nil
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// dnsServer is a DNS forwarder under test in the gateway namespace.
type dnsServer struct {
	name string
	addr string // where the LAN client sends its queries
	g    *gw
}

// startDNS starts a DNS forwarder to the cloud DNS: cloudsteer's resolver
// (queries to an address nobody runs are steered to it), dnsmasq or
// unbound (queried on the gateway's LAN address).
func (r *runner) startDNS(ctx context.Context, kind string) (*dnsServer, error) {
	gwAddr := lab.GWLANV4.Addr().String()
	switch kind {
	case "cloudsteer":
		g, err := r.startGateway(ctx, GWCloudsteer)
		if err != nil {
			return nil, err
		}
		return &dnsServer{name: kind, addr: lab.NobodyDNSV4.String(), g: g}, nil
	case "dnsmasq":
		g := &gw{kind: kind}
		err := r.startProc(ctx, g, "dnsmasq.log", "dnsmasq", "-k", "-C", "/dev/null", "--no-resolv", "--no-hosts",
			"--server="+lab.CloudDNSV4.String(), "--listen-address="+gwAddr, "--bind-interfaces",
			"--cache-size=10000", "--pid-file", "--port=53", "--dns-forward-max=1000")
		if err != nil {
			return nil, err
		}
		return &dnsServer{name: kind, addr: gwAddr, g: g}, r.waitUDP(ctx, g)
	case "unbound":
		conf := filepath.Join(r.dir, "unbound.conf")
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
	msg-cache-size: 16m
	rrset-cache-size: 32m
forward-zone:
	name: "."
	forward-addr: %s
`, gwAddr, r.dir, lab.CloudDNSV4)
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			return nil, err
		}
		g := &gw{kind: kind}
		if err := r.startProc(ctx, g, "unbound.log", "unbound", "-d", "-c", conf); err != nil {
			return nil, err
		}
		return &dnsServer{name: kind, addr: gwAddr, g: g}, r.waitUDP(ctx, g)
	}
	return nil, fmt.Errorf("unknown dns server %q", kind)
}

// waitUDP waits until something listens on UDP 53 in the gateway namespace.
func (r *runner) waitUDP(ctx context.Context, g *gw) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		out, _ := r.lab.Command(ctx, lab.RoleGW, "ss", "-Huln", "sport = :53").Output()
		if strings.TrimSpace(string(out)) != "" {
			return nil
		}
		select {
		case <-g.done:
			return errors.New(g.kind + " exited before listening on udp 53")
		case <-time.After(50 * time.Millisecond):
		}
	}
	g.stop()
	return errors.New(g.kind + " not listening on udp 53 after 20s")
}

// router loads the lab's office-router ruleset (lab.FirewallRouter:
// masquerade on the WAN, stateful forward filter) into the gateway
// namespace, for the NAT rows.
func (r *runner) router(ctx context.Context) error {
	if err := r.lab.LoadFirewall(ctx, lab.FirewallRouter); err != nil {
		return fmt.Errorf("load office router ruleset: %w", err)
	}
	return nil
}

// clearRouter removes the office-router ruleset again.
func (r *runner) clearRouter() error {
	out, err := r.lab.Command(context.Background(), lab.RoleGW, "nft", "delete", "table", "inet", lab.RouterTable).CombinedOutput()
	if err != nil {
		return fmt.Errorf("remove office router ruleset: %w: %s", err, out)
	}
	return r.lab.LoadFirewall(context.Background(), lab.FirewallNone) // the lab's record of it
}

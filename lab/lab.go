package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Roles name the lab's namespaces.
const (
	RoleLAN  = "lan"  // the LAN client
	RoleLAN2 = "lan2" // the second LAN host (only with Options.LAN2)
	RoleGW   = "gw"   // the gateway cloudsteer runs on
	RoleInet = "inet" // the internet: origins, cloud proxy, cloud DNS, Squid
)

// Roles lists the roles every lab has, in the order the namespaces are
// created; Lab.Roles adds the optional ones a lab has.
var Roles = []string{RoleLAN, RoleGW, RoleInet}

// allRoles lists every role a lab may have, for the clean-up of a lab
// whose options are unknown.
var allRoles = []string{RoleLAN, RoleLAN2, RoleGW, RoleInet}

// File names inside the lab directory. CAFileName and ReadyFileName are the
// names `cloudsteer-lab serve` uses (lab/servers cannot be imported here:
// it imports this package).
const (
	CAFileName       = "ca.pem"
	ReadyFileName    = "ready"
	ServeLogFile     = "serve.log"
	SquidAccessLog   = "squid-access.log"
	SquidCacheLog    = "squid-cache.log"
	SquidConfFile    = "squid.conf"
	InfoFile         = "lab.json"
	defaultReadyWait = 30 * time.Second
)

// Options say how to build a lab.
type Options struct {
	// Prefix starts every namespace name: <Prefix>lan, <Prefix>gw,
	// <Prefix>inet. Letters, digits, '-' and '_', at most 32 characters.
	Prefix string
	// Dir is the working directory for logs, the lab CA and configs. It is
	// created when missing.
	Dir string
	// LabBinary is the cloudsteer-lab binary; Up runs `LabBinary serve
	// --dir Dir --addr-check` in the internet namespace. Empty: no lab
	// servers.
	LabBinary string
	// Squid also starts Squid as a cloud proxy on SquidV4/SquidV6 :3128.
	Squid bool
	// Firewall is the gateway namespace's own ruleset, besides whatever
	// runs there (see firewall.go). The zero value is FirewallRouter, a
	// small office router: nftables table "inet labrouter" masquerades
	// IPv4 leaving the WAN interface (origins then see GWWANV4, not the
	// client) and filters forwarding statefully (policy drop;
	// established/related and LAN→WAN new flows pass); IPv6 is routed,
	// not translated, through the same filter. FirewallNone is a plain
	// routing gateway; FirewallFW4 and FirewallDebian are rulesets like
	// OpenWrt's and a Debian nftables.conf.
	Firewall Firewall
	// SquidHosts are names Squid resolves besides the lab sites (its
	// hosts file), for origins a program adds to the internet namespace
	// itself (the benchmark's).
	SquidHosts map[string]netip.Addr
	// LAN2 adds a second LAN host (role RoleLAN2, Client2V4/Client2V6) on
	// a LAN interface of its own on the gateway (GWLAN2If), so tests can
	// tell one client's traffic from another's.
	LAN2 bool
	// ReadyTimeout bounds the wait for the lab servers and Squid; zero
	// means 30s.
	ReadyTimeout time.Duration
	// VMGateway builds the lab for a virtual machine as the gateway (the
	// appliance image's boot test, vm.go): the gateway namespace holds
	// only bridges to the taps TapWAN and TapLAN (StartVM runs qemu there),
	// the LAN client gets its address from the VM (DHCPLease). Firewall
	// and LAN2 do not apply.
	VMGateway bool
}

// Lab is a running namespace lab. Close tears it down.
type Lab struct {
	prefix string
	dir    string
	squid  bool
	fw     Firewall
	lan2   bool
	vm     bool // Options.VMGateway
	// squidHosts are Options.SquidHosts.
	squidHosts map[string]netip.Addr
	log        *slog.Logger

	mu     sync.Mutex
	procs  []*proc
	closed bool
	// wan4 and wan6 are the gateway's WAN addresses after RenumberWAN;
	// invalid: GWWANV4 and GWWANV6.
	wan4, wan6 netip.Prefix
}

// proc is a long-running process the lab started.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when Wait returned
	err  error         // Wait's result, valid after done
}

var prefixRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// NSName returns the namespace name of role in a lab with that prefix.
func NSName(prefix, role string) string { return prefix + role }

// Up builds the lab: namespaces, links, addresses, routes, then the lab
// servers and (with opts.Squid) Squid. It returns once every address is
// usable and the services are ready. On error it tears down what it built.
func Up(ctx context.Context, opts Options) (_ *Lab, err error) {
	if !prefixRE.MatchString(opts.Prefix) {
		return nil, fmt.Errorf("lab prefix %q: want 1-32 letters, digits, '-' or '_'", opts.Prefix)
	}
	if opts.Dir == "" {
		return nil, errors.New("lab dir: empty")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("lab dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create lab dir: %w", err)
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = defaultReadyWait
	}
	if opts.Firewall == "" {
		opts.Firewall = FirewallRouter
	}
	if err := opts.Firewall.valid(); err != nil {
		return nil, err
	}
	l := &Lab{
		prefix:     opts.Prefix,
		dir:        dir,
		squid:      opts.Squid,
		fw:         opts.Firewall,
		squidHosts: opts.SquidHosts,
		lan2:       opts.LAN2,
		vm:         opts.VMGateway,
		log:        slog.With("component", "lab", "prefix", opts.Prefix),
	}
	if l.vm {
		if opts.LAN2 {
			return nil, errors.New("lab options: LAN2 with a VM gateway")
		}
		l.fw = FirewallNone // the VM is the router; the gateway namespace only bridges
	}
	for _, role := range allRoles {
		if ns := NSName(l.prefix, role); nsExists(ns) {
			return nil, fmt.Errorf("namespace %s exists: a lab with prefix %q is up (run `cloudsteer-lab down --prefix %s`)", ns, l.prefix, l.prefix)
		}
	}
	defer func() {
		if err != nil {
			if cerr := l.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("tear down: %w", cerr))
			}
		}
	}()
	if l.vm {
		// Nothing routes until the VM is up: no reachability wait.
		if err := l.buildVMTopology(ctx); err != nil {
			return nil, err
		}
	} else {
		if err := l.buildTopology(ctx); err != nil {
			return nil, err
		}
		if err := l.waitReachable(ctx); err != nil {
			return nil, err
		}
	}
	if opts.LabBinary != "" {
		if err := l.startServe(ctx, opts.LabBinary, opts.ReadyTimeout); err != nil {
			return nil, err
		}
	}
	if opts.Squid {
		if err := l.startSquid(ctx, opts.ReadyTimeout); err != nil {
			return nil, err
		}
	}
	l.log.Info("lab up", "dir", dir, "squid", opts.Squid, "firewall", l.fw, "lan2", opts.LAN2, "vm_gateway", l.vm)
	return l, nil
}

// NS returns the namespace name of a role ("lan", "gw", "inet", and
// "lan2" when the lab has it), or "" for a role the lab does not have.
func (l *Lab) NS(role string) string {
	switch role {
	case RoleLAN, RoleGW, RoleInet:
		return NSName(l.prefix, role)
	case RoleLAN2:
		if l.lan2 {
			return NSName(l.prefix, role)
		}
	}
	return ""
}

// Roles returns the roles this lab has, in creation order.
func (l *Lab) Roles() []string {
	if l.lan2 {
		return []string{RoleLAN, RoleLAN2, RoleGW, RoleInet}
	}
	return Roles
}

// NAT reports whether the gateway masquerades IPv4 (every
// Options.Firewall but FirewallNone; a VM gateway, the appliance, does).
func (l *Lab) NAT() bool { return l.vm || l.Firewall().NAT() }

// Firewall is the gateway namespace's own ruleset (Options.Firewall).
func (l *Lab) Firewall() Firewall {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fw
}

// HasLAN2 reports whether the lab has the second LAN host (Options.LAN2).
func (l *Lab) HasLAN2() bool { return l.lan2 }

// LANInterfaces returns the gateway's LAN interfaces: GWLANIf, and
// GWLAN2If when the lab has the second LAN host.
func (l *Lab) LANInterfaces() []string {
	if l.lan2 {
		return []string{GWLANIf, GWLAN2If}
	}
	return []string{GWLANIf}
}

// SeenAs returns the source address a host on the internet side sees for
// a flow the gateway merely routes (not proxies) from LAN address client:
// the gateway's WAN address for IPv4 under NAT, the client itself
// otherwise.
func (l *Lab) SeenAs(client netip.Addr) netip.Addr {
	if l.NAT() && client.Unmap().Is4() {
		return GWWANV4.Addr()
	}
	return client
}

// Prefix returns the lab's namespace prefix.
func (l *Lab) Prefix() string { return l.prefix }

// Dir returns the lab's working directory (logs, CA, configs).
func (l *Lab) Dir() string { return l.dir }

// Path returns the path of a file in the lab directory.
func (l *Lab) Path(name string) string { return filepath.Join(l.dir, name) }

// CAFile returns the path of the lab CA certificate (PEM) the lab servers
// write; origins and the lab cloud proxy use certificates it signed.
func (l *Lab) CAFile() string { return l.Path(CAFileName) }

// Command returns a command that runs args inside the namespace of role
// (through `ip netns exec`). With an unknown role, running it fails.
func (l *Lab) Command(ctx context.Context, role string, args ...string) *exec.Cmd {
	ns := l.NS(role)
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
	if ns == "" {
		cmd.Err = fmt.Errorf("run in lab role %q: unknown role", role)
	}
	return cmd
}

// Close stops the processes the lab started and every other process in its
// namespaces, and deletes the namespaces. It is safe to call more than once.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	procs := l.procs
	l.procs = nil
	l.mu.Unlock()

	for _, p := range procs {
		stopProc(p)
	}
	err := removeNamespaces(l.prefix)
	if l.squid {
		// Squid is gone: its logs are complete. Keep them in Dir.
		if kerr := l.keepSquidLogs(); kerr != nil {
			err = errors.Join(err, kerr)
		}
	}
	err = errors.Join(err, removeSquidState(l.prefix))
	l.log.Info("lab down")
	return err
}

// stopProc ends one of the lab's processes: SIGTERM, then SIGKILL if it
// has not exited after a grace period, and reaps it.
func stopProc(p *proc) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(3 * time.Second):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Cleanup removes what a lab with that prefix left behind (after a crash,
// or a `cloudsteer-lab up` that exited): it kills every process in the
// lab's namespaces, deletes the namespaces and Squid's state directory.
// Missing pieces are no error.
func Cleanup(prefix string) error {
	if !prefixRE.MatchString(prefix) {
		return fmt.Errorf("lab prefix %q: want 1-32 letters, digits, '-' or '_'", prefix)
	}
	return errors.Join(removeNamespaces(prefix), removeSquidState(prefix))
}

// removeSquidState removes Squid's state directory and shared memory of
// the lab (Squid must be gone).
func removeSquidState(prefix string) error {
	var err error
	if rerr := os.RemoveAll(squidStateDir(prefix)); rerr != nil {
		err = fmt.Errorf("remove squid state: %w", rerr)
	}
	return errors.Join(err, removeSquidShm(prefix))
}

// removeNamespaces kills every process in the lab's namespaces and deletes
// the namespaces.
func removeNamespaces(prefix string) error {
	var errs []error
	for _, role := range allRoles {
		ns := NSName(prefix, role)
		if !nsExists(ns) {
			continue
		}
		if err := killNSProcs(ns); err != nil {
			errs = append(errs, err)
		}
		if err := run(context.Background(), "ip", "netns", "del", ns); err != nil && nsExists(ns) {
			errs = append(errs, err)
		}
	}
	for _, role := range allRoles {
		if err := os.RemoveAll(filepath.Join(netnsEtc, NSName(prefix, role))); err != nil {
			errs = append(errs, fmt.Errorf("remove netns files: %w", err))
		}
	}
	return errors.Join(errs...)
}

// nsExists reports whether a named network namespace exists.
func nsExists(ns string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", ns))
	return err == nil
}

// killNSProcs ends every process in namespace ns: SIGTERM first, SIGKILL
// for those still there after a grace period. It returns once none is
// left, or with an error naming the survivors.
func killNSProcs(ns string) error {
	pids, err := nsPids(ns)
	if err != nil || len(pids) == 0 {
		return err
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(3 * time.Second)
	killed := false
	for {
		time.Sleep(50 * time.Millisecond)
		pids, err = nsPids(ns)
		if err != nil || len(pids) == 0 {
			return err
		}
		if !killed && time.Now().After(deadline) {
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			killed = true
			deadline = time.Now().Add(5 * time.Second)
			continue
		}
		if killed && time.Now().After(deadline) {
			return fmt.Errorf("processes in %s survive SIGKILL: %v", ns, pids)
		}
	}
}

// nsPids lists the processes in namespace ns that are still alive (not
// zombies waiting for a parent in another process).
func nsPids(ns string) ([]int, error) {
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		if !nsExists(ns) {
			return nil, nil
		}
		return nil, fmt.Errorf("ip netns pids %s: %w", ns, err)
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		var pid int
		if _, err := fmt.Sscan(f, &pid); err != nil || pid <= 1 || pid == os.Getpid() {
			continue
		}
		if isZombie(pid) {
			continue
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// isZombie reports whether pid has exited and waits to be reaped (a zombie
// holds no namespace reference worth waiting for).
func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // gone
	}
	// Format: pid (comm) state ...; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	return b[i+2] == 'Z'
}

// start starts a long-running process with its output in logFile and
// keeps it for Close.
func (l *Lab) start(name, logFile string, args ...string) (*proc, error) {
	f, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", name, err)
	}
	defer f.Close() // the child has its own copy
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout = f
	cmd.Stderr = f
	// Own process group: a terminal's Ctrl-C for `cloudsteer-lab up` does
	// not reach the servers it leaves running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	return p, nil
}

// startServe runs `LabBinary serve --dir Dir` in the internet namespace and
// waits for Dir/ready.
func (l *Lab) startServe(ctx context.Context, bin string, wait time.Duration) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return fmt.Errorf("lab binary: %w", err)
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("lab binary: %w", err)
	}
	ready := l.Path(ReadyFileName)
	if err := os.Remove(ready); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale ready file: %w", err)
	}
	logPath := l.Path(ServeLogFile)
	p, err := l.start("lab servers", logPath, "ip", "netns", "exec", l.NS(RoleInet), bin, "serve", "--dir", l.dir, "--addr-check")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(ready); err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("lab servers exited before ready (%v); %s:\n%s", p.err, logPath, tail(logPath, 4096))
		case <-ctx.Done():
			return fmt.Errorf("lab servers not ready after %s (no %s); %s:\n%s", wait, ready, logPath, tail(logPath, 4096))
		case <-tick.C:
		}
	}
}

// tail returns up to the last n bytes of a file, for error messages.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	off := max(st.Size()-n, 0)
	b := make([]byte, st.Size()-off)
	nr, _ := f.ReadAt(b, off)
	s := strings.TrimSpace(string(b[:nr]))
	if s == "" {
		return "(empty)"
	}
	return s
}

// Info describes a running lab; `cloudsteer-lab up` writes it to
// Dir/lab.json for the commands and scripts that use the lab later.
type Info struct {
	Prefix     string            `json:"prefix"`
	Dir        string            `json:"dir"`
	Namespaces map[string]string `json:"namespaces"` // role → namespace
	Squid      bool              `json:"squid"`
	NAT        bool              `json:"nat"`                  // the gateway masquerades IPv4: origins see GWWANV4 for routed v4 flows
	Firewall   Firewall          `json:"firewall"`             // the gateway's own ruleset (Options.Firewall)
	LAN2       bool              `json:"lan2"`                 // the second LAN host exists
	VMGateway  bool              `json:"vm_gateway,omitempty"` // Options.VMGateway
}

// Info returns the description of the lab.
func (l *Lab) Info() Info {
	ns := make(map[string]string, len(l.Roles()))
	for _, r := range l.Roles() {
		ns[r] = l.NS(r)
	}
	return Info{Prefix: l.prefix, Dir: l.dir, Namespaces: ns, Squid: l.squid, NAT: l.NAT(), Firewall: l.Firewall(), LAN2: l.lan2, VMGateway: l.vm}
}

// WriteInfo writes the lab's Info as JSON to Dir/lab.json.
func (l *Lab) WriteInfo() error {
	b, err := json.MarshalIndent(l.Info(), "", "  ")
	if err != nil {
		return fmt.Errorf("encode lab info: %w", err)
	}
	if err := os.WriteFile(l.Path(InfoFile), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write lab info: %w", err)
	}
	return nil
}

// Attach returns a Lab for a lab another process brought up (as described
// by its lab.json), so its namespaces, files and Close can be used. Close
// on it tears the lab down like Cleanup.
func Attach(info Info) (*Lab, error) {
	if !prefixRE.MatchString(info.Prefix) {
		return nil, fmt.Errorf("lab prefix %q: want 1-32 letters, digits, '-' or '_'", info.Prefix)
	}
	roles := Roles
	if info.LAN2 {
		roles = allRoles
	}
	for _, r := range roles {
		if !nsExists(NSName(info.Prefix, r)) {
			return nil, fmt.Errorf("attach lab %q: namespace %s does not exist", info.Prefix, NSName(info.Prefix, r))
		}
	}
	fw := info.Firewall
	if fw == "" { // a lab.json from before Firewall
		fw = FirewallNone
		if info.NAT {
			fw = FirewallRouter
		}
	}
	return &Lab{
		prefix: info.Prefix,
		dir:    info.Dir,
		squid:  info.Squid,
		fw:     fw,
		lan2:   info.LAN2,
		vm:     info.VMGateway,
		log:    slog.With("component", "lab", "prefix", info.Prefix),
	}, nil
}

// ReadInfo reads the lab.json in dir.
func ReadInfo(dir string) (Info, error) {
	var info Info
	b, err := os.ReadFile(filepath.Join(dir, InfoFile))
	if err != nil {
		return info, fmt.Errorf("read lab info: %w", err)
	}
	if err := json.Unmarshal(b, &info); err != nil {
		return info, fmt.Errorf("parse lab info: %w", err)
	}
	return info, nil
}

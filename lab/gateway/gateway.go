// Package gateway runs a real cloudsteer daemon in a lab's gateway
// namespace, for the end-to-end tests and the demo: it writes the config,
// starts `cloudsteer run`, waits until it steers, and stops or kills it.
package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cloudsteer/cloudsteer/lab"
)

// Options describe one gateway run.
type Options struct {
	Bin string   // the cloudsteer binary
	Lab *lab.Lab // the lab whose gw namespace it runs in
	// ProxyURL defaults to the lab cloud proxy over http.
	ProxyURL string
	// Code defaults to lab.EntitlementCode; Username/Password replace it.
	Code               string
	Username, Password string
	CAFile             string // for an https:// proxy
	BypassDomains      []string
	BypassCIDRs        []string
	Name               string // distinguishes config and log files; default "gw"
	// StateDir defaults to DIR/state-NAME in the lab directory; keep it
	// across runs to test persistence.
	StateDir string
	// NoCode starts the gateway without any credentials (to be activated).
	NoCode bool
	// Extra is appended to the config verbatim.
	Extra string
	// AdminHostnames is admin.hostnames (with a Lab only).
	AdminHostnames []string
	// Attach is dataplane.attach (auto, tcx, legacy); empty takes
	// $CLOUDSTEER_ATTACH, and without it the key is left out (auto).
	Attach string
	// ProxyURLs, when set, are written as cloud_proxy.urls (primary
	// first) instead of ProxyURL.
	ProxyURLs []string
	// DNSUpstreams replace the lab's cloud resolvers in dns.upstreams
	// (encrypted ones too: "tls://dns.cloud.example", see lab/servers).
	DNSUpstreams []string
	// DNS are more lines of the dns section, each "key: value", e.g.
	// `bootstrap: {dns.cloud.example: [198.51.100.53]}` or
	// `ca_file: /path/to/lab/ca.pem`.
	DNS []string
	// CloudProxy are more lines of the cloud_proxy section, each
	// "key: value" (failure_mode, recover_after, ...).
	CloudProxy []string
	// User runs the daemon as that unprivileged uid with only its
	// capabilities, as the systemd unit does; nil runs it as root.
	User *User
	// Env is added to the daemon's environment (NOTIFY_SOCKET=…).
	Env []string
}

// EnvAttach is the environment variable the tests set to run every
// gateway in one attach mode (CLOUDSTEER_ATTACH=legacy).
const EnvAttach = "CLOUDSTEER_ATTACH"

// User is an unprivileged identity with a capability set, for running the
// daemon as the packaged systemd unit does (User=, AmbientCapabilities=,
// CapabilityBoundingSet=, NoNewPrivileges=) through setpriv(1).
type User struct {
	UID, GID int
	// Caps are the capabilities it keeps, without the CAP_ prefix and in
	// lower case ("net_admin"); every other one is dropped from the
	// bounding, inheritable and ambient sets.
	Caps []string
}

// wrap returns args prefixed with the setpriv call that drops to u.
func (u *User) wrap(args []string) []string {
	caps := "-all"
	for _, c := range u.Caps {
		caps += ",+" + c
	}
	return append([]string{"setpriv",
		fmt.Sprintf("--reuid=%d", u.UID), fmt.Sprintf("--regid=%d", u.GID), "--clear-groups",
		"--inh-caps=" + caps, "--ambient-caps=" + caps, "--bounding-set=" + caps,
		"--no-new-privs", "--"}, args...)
}

// runtimeDir is where a gateway run as a User keeps its admin socket (the
// lab directory is root's): the unit's RuntimeDirectory.
func runtimeDir(l *lab.Lab, name string) string {
	return filepath.Join(l.Dir(), "run-"+name)
}

// SocketPath is the admin socket of a gateway run as root with that name.
func SocketPath(l *lab.Lab, name string) string {
	if name == "" {
		name = "gw"
	}
	return filepath.Join(l.Dir(), name+".sock")
}

// Socket is the admin socket of a gateway run with o (one run as a User
// has it in a directory of its own).
func Socket(o Options) string {
	name := o.Name
	if name == "" {
		name = "gw"
	}
	if o.User != nil {
		return filepath.Join(runtimeDir(o.Lab, name), "admin.sock")
	}
	return SocketPath(o.Lab, name)
}

// Gateway is a cloudsteer process running in the lab.
type Gateway struct {
	cmd     *exec.Cmd
	logFile *os.File // mirror of the output, closed when the process ends
	done    chan struct{}
	err     error

	mu  sync.Mutex
	log *bytes.Buffer
}

// ConfigYAML renders the configuration file for opts.
func ConfigYAML(o Options) string {
	url := o.ProxyURL
	if url == "" {
		url = fmt.Sprintf("http://%s:%d", lab.CloudProxyV4, lab.CloudProxyHTTPPort)
	}
	var b strings.Builder
	lanIfs := []string{lab.GWLANIf}
	if o.Lab != nil {
		lanIfs = o.Lab.LANInterfaces() // lan0, and lan1 when the lab has a second LAN host
	}
	fmt.Fprintf(&b, "lan_interfaces: [%s]\n", strings.Join(lanIfs, ", "))
	if len(o.ProxyURLs) > 0 {
		fmt.Fprintf(&b, "cloud_proxy:\n  urls: [%s]\n", quoteList(o.ProxyURLs))
	} else {
		fmt.Fprintf(&b, "cloud_proxy:\n  url: %s\n", url)
	}
	for _, line := range o.CloudProxy {
		fmt.Fprintf(&b, "  %s\n", line)
	}
	if o.Username != "" {
		fmt.Fprintf(&b, "  username: %q\n  password: %q\n", o.Username, o.Password)
	} else if !o.NoCode {
		code := o.Code
		if code == "" {
			code = lab.EntitlementCode
		}
		fmt.Fprintf(&b, "  entitlement_code: %q\n", code)
	}
	if o.CAFile != "" {
		fmt.Fprintf(&b, "  ca_file: %s\n", o.CAFile)
	}
	if len(o.DNSUpstreams) > 0 {
		fmt.Fprintf(&b, "dns:\n  upstreams: [%s]\n", quoteList(o.DNSUpstreams))
	} else {
		fmt.Fprintf(&b, "dns:\n  upstreams: [%q, %q]\n", lab.CloudDNSV4.String(), "["+lab.CloudDNSV6.String()+"]:53")
	}
	for _, line := range o.DNS {
		fmt.Fprintf(&b, "  %s\n", line)
	}
	fmt.Fprintf(&b, "bypass:\n  domains: [%s]\n  cidrs: [%s]\n", quoteList(o.BypassDomains), quoteList(o.BypassCIDRs))
	b.WriteString("log:\n  level: debug\n")
	if o.Lab != nil {
		name := o.Name
		if name == "" {
			name = "gw"
		}
		state := o.StateDir
		if state == "" {
			state = filepath.Join(o.Lab.Dir(), "state-"+name)
		}
		fmt.Fprintf(&b, "state_dir: %s\nadmin:\n  socket: %s\n", state, Socket(o))
		if len(o.AdminHostnames) > 0 {
			fmt.Fprintf(&b, "  hostnames: [%s]\n", quoteList(o.AdminHostnames))
		}
	}
	fmt.Fprintf(&b, "health:\n  probe_target: www.example.com:443\n  interval: 2s\n")
	attach := o.Attach
	if attach == "" {
		attach = os.Getenv(EnvAttach)
	}
	if attach != "" {
		fmt.Fprintf(&b, "dataplane:\n  attach: %s\n", attach)
	}
	b.WriteString(o.Extra)
	return b.String()
}

func quoteList(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = fmt.Sprintf("%q", x)
	}
	return strings.Join(q, ", ")
}

// Start writes the config (mode 0600) and starts cloudsteer in the gateway
// namespace. It returns once the daemon logs that it steers, or an error
// with the daemon's output when it exits or does not get there in time.
func Start(ctx context.Context, o Options) (*Gateway, error) {
	if o.Name == "" {
		o.Name = "gw"
	}
	cfgPath := filepath.Join(o.Lab.Dir(), o.Name+".yaml")
	if err := os.WriteFile(cfgPath, []byte(ConfigYAML(o)), 0o600); err != nil {
		return nil, fmt.Errorf("write gateway config: %w", err)
	}
	if o.User != nil {
		if err := o.User.own(o, cfgPath); err != nil {
			return nil, err
		}
	}
	return start(ctx, o.Bin, o.Lab, cfgPath, filepath.Join(o.Lab.Dir(), o.Name+".log"), o.User, o.Env)
}

// own prepares the lab for a daemon run as u, as the package and the unit
// do on a router: the config file (0600) and the state directory (0700,
// with what an earlier run left) belong to u, its runtime directory for
// the admin socket too, and the lab directory may be passed through.
func (u *User) own(o Options, cfgPath string) error {
	state := o.StateDir
	if state == "" {
		state = filepath.Join(o.Lab.Dir(), "state-"+o.Name)
	}
	if err := os.Chmod(o.Lab.Dir(), 0o711); err != nil {
		return fmt.Errorf("open lab directory to uid %d: %w", u.UID, err)
	}
	for _, dir := range []string{state, runtimeDir(o.Lab, o.Name)} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
		err := filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, u.UID, u.GID)
		})
		if err != nil {
			return fmt.Errorf("give %s to uid %d: %w", dir, u.UID, err)
		}
	}
	if err := os.Chown(cfgPath, u.UID, u.GID); err != nil {
		return fmt.Errorf("give config to uid %d: %w", u.UID, err)
	}
	return nil
}

// StartWithConfig starts cloudsteer with an existing config file.
func StartWithConfig(ctx context.Context, bin string, l *lab.Lab, cfgPath, logPath string) (*Gateway, error) {
	return start(ctx, bin, l, cfgPath, logPath, nil, nil)
}

// start is StartWithConfig as u (nil: root) with env added.
func start(ctx context.Context, bin string, l *lab.Lab, cfgPath, logPath string, u *User, env []string) (*Gateway, error) {
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open gateway log: %w", err)
	}
	g := &Gateway{log: &bytes.Buffer{}, logFile: f, done: make(chan struct{})}
	// Not CommandContext: the caller decides how the daemon ends.
	args := []string{bin, "run", "--config", cfgPath}
	if u != nil {
		args = u.wrap(args) // setpriv execs in place too
	}
	g.cmd = l.Command(context.Background(), lab.RoleGW, args...)
	if len(env) > 0 {
		g.cmd.Env = append(os.Environ(), env...)
	}
	g.cmd.Stdout = g
	g.cmd.Stderr = g
	if err := g.cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start cloudsteer: %w", err)
	}
	go func() {
		g.err = g.cmd.Wait()
		g.mu.Lock()
		g.logFile.Close()
		g.logFile = nil
		g.mu.Unlock()
		close(g.done)
	}()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if strings.Contains(g.Log(), "msg=steering") {
			return g, nil
		}
		select {
		case <-g.done:
			return nil, fmt.Errorf("cloudsteer exited (%v) before steering:\n%s", g.err, g.Log())
		case <-deadline.C:
			g.Kill()
			return nil, fmt.Errorf("cloudsteer did not start steering within 20s:\n%s", g.Log())
		case <-ctx.Done():
			g.Kill()
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

// Write collects the daemon's output (and mirrors it to the log file).
func (g *Gateway) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.logFile != nil {
		g.logFile.Write(p)
	}
	return g.log.Write(p)
}

// Log returns everything the daemon printed so far.
func (g *Gateway) Log() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.log.String()
}

// Pid is the daemon's process id.
func (g *Gateway) Pid() int { return g.cmd.Process.Pid }

// Running reports whether the daemon process is still alive.
func (g *Gateway) Running() bool {
	select {
	case <-g.done:
		return false
	default:
		return true
	}
}

// Signal sends sig to the daemon without waiting (SIGHUP: reload the
// config file).
func (g *Gateway) Signal(sig os.Signal) error {
	if !g.Running() {
		return errors.New("cloudsteer is not running")
	}
	return g.cmd.Process.Signal(sig)
}

// Stop sends SIGTERM and waits for the daemon to exit; it returns the
// exit error (nil for status 0).
func (g *Gateway) Stop() error { return g.signal(syscall.SIGTERM) }

// Kill sends SIGKILL and waits for the process to be gone.
func (g *Gateway) Kill() error {
	err := g.signal(syscall.SIGKILL)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return nil // killed, as asked
	}
	return err
}

func (g *Gateway) signal(sig syscall.Signal) error {
	if g.Running() {
		// ip netns exec (and setpriv) exec the daemon in place, so the
		// pid is cloudsteer's.
		_ = g.cmd.Process.Signal(sig)
	}
	select {
	case <-g.done:
	case <-time.After(15 * time.Second):
		_ = g.cmd.Process.Kill()
		<-g.done
		return fmt.Errorf("cloudsteer did not exit within 15s of %v", sig)
	}
	return g.err
}

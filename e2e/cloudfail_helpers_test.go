package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/servers"
)

// URLs of the failover tests' cloud proxies: the standalone primary
// (killed, made to refuse, black-holed), the lab Go proxy and Squid.
var (
	primaryURL  = fmt.Sprintf("http://%s:%d", lab.CloudProxy2V4, lab.CloudProxyHTTPPort)
	labProxyURL = fmt.Sprintf("http://%s:%d", lab.CloudProxyV4, lab.CloudProxyHTTPPort)
	squidURL    = fmt.Sprintf("http://%s:%d", lab.SquidV4, lab.SquidPort)
)

// standaloneProxy is a lab cloud proxy in its own process
// (`cloudsteer-lab proxy`) on CloudProxy2V4/V6, so that a test can kill it.
type standaloneProxy struct {
	e    *env
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// startStandalone starts the standalone proxy name and stops it when t ends.
func (e *env) startStandalone(t *testing.T, name string) *standaloneProxy {
	t.Helper()
	p := &standaloneProxy{e: e, name: name}
	p.start(t)
	t.Cleanup(p.stop)
	return p
}

func (p *standaloneProxy) start(t *testing.T) {
	t.Helper()
	ready := p.e.lab.Path(servers.StandaloneReadyFile(p.name))
	os.Remove(ready)
	cmd := p.e.lab.Command(context.Background(), lab.RoleInet, bins.lab, "proxy", "--dir", p.e.lab.Dir(), "--name", p.name,
		"--addr", lab.CloudProxy2V4.String(), "--addr", lab.CloudProxy2V6.String())
	logf, err := os.OpenFile(p.e.lab.Path("proxy-"+p.name+".log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start standalone proxy: %v", err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	done := p.done
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	if !eventually(10*time.Second, func() bool { _, err := os.Stat(ready); return err == nil }) {
		t.Fatalf("standalone proxy %s not ready in 10s", p.name)
	}
}

// kill SIGKILLs the proxy (its sockets die with it) and waits for it.
func (p *standaloneProxy) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill standalone proxy: %v", err)
	}
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		t.Fatal("standalone proxy did not die")
	}
}

// refuse makes it answer every request 407 (on) or accept again.
func (p *standaloneProxy) refuse(t *testing.T, on bool) {
	t.Helper()
	sig := syscall.SIGUSR2
	if on {
		sig = syscall.SIGUSR1
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the signal is handled asynchronously
}

func (p *standaloneProxy) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *standaloneProxy) records(t *testing.T, since time.Time) []servers.ProxyRecord {
	t.Helper()
	recs, err := servers.ReadProxyLog(p.e.lab.Path(servers.StandaloneLogFile(p.name)))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []servers.ProxyRecord
	for _, r := range recs {
		if !r.Time.Before(since) {
			out = append(out, r)
		}
	}
	return out
}

// blackhole drops (on) every TCP packet to the standalone proxy's port in
// the internet namespace: SYNs get no answer, established flows go silent.
func (e *env) blackhole(t *testing.T, on bool) {
	t.Helper()
	if !on {
		if _, err := e.run(lab.RoleInet, 5*time.Second, "nft", "delete", "table", "inet", "csblackhole"); err != nil {
			t.Fatal(err)
		}
		return
	}
	for _, cmd := range []string{
		"add table inet csblackhole",
		"add chain inet csblackhole in { type filter hook input priority -5 ; }",
		fmt.Sprintf("add rule inet csblackhole in ip daddr %s tcp dport %d drop", lab.CloudProxy2V4, lab.CloudProxyHTTPPort),
		fmt.Sprintf("add rule inet csblackhole in ip6 daddr %s tcp dport %d drop", lab.CloudProxy2V6, lab.CloudProxyHTTPPort),
	} {
		if _, err := e.run(lab.RoleInet, 5*time.Second, append([]string{"nft"}, strings.Fields(cmd)...)...); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { e.run(lab.RoleInet, 5*time.Second, "nft", "delete", "table", "inet", "csblackhole") })
}

// attempt is one request of a client loop.
type attempt struct {
	start, end time.Time
	path       string
	out        string
	err        error
}

// clientLoop fetches URL after URL (each its own path) from the LAN
// client until stopped, one at a time, and keeps every outcome.
type clientLoop struct {
	mu       sync.Mutex
	attempts []attempt
	stop     chan struct{}
	done     chan struct{}
}

// loop starts a client loop against base (https://name or http://name),
// paths /?cf=TAG-N.
func (e *env) loop(t *testing.T, base, name, addr, tag string, extra ...string) *clientLoop {
	l := &clientLoop{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for n := 0; ; n++ {
			select {
			case <-l.stop:
				return
			default:
			}
			path := fmt.Sprintf("/?cf=%s-%d", tag, n)
			a := attempt{start: time.Now(), path: path}
			a.out, a.err = e.curl(base+path, name, addr, append([]string{"--max-time", "5"}, extra...)...)
			a.end = time.Now()
			l.mu.Lock()
			l.attempts = append(l.attempts, a)
			l.mu.Unlock()
			time.Sleep(50 * time.Millisecond)
		}
	}()
	t.Cleanup(l.halt)
	return l
}

func (l *clientLoop) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	<-l.done
}

// firstOK waits up to timeout for a successful attempt that started at or
// after since and whose path the origin saw from a source for which
// from (when set) holds ("" when the origin saw none yet).
func (l *clientLoop) firstOK(e *env, since time.Time, timeout time.Duration, from func(src string) bool) (attempt, bool) {
	var got attempt
	ok := eventually(timeout, func() bool {
		var srcs map[string]string
		if from != nil {
			srcs = map[string]string{}
			for _, r := range e.originLog(since) {
				srcs[r.Path] = hostOf(r.Remote)
			}
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, a := range l.attempts {
			if a.err == nil && !a.start.Before(since) && (from == nil || from(srcs[a.path])) {
				got = a
				return true
			}
		}
		return false
	})
	return got, ok
}

// failures counts the failed attempts that started at or after since.
func (l *clientLoop) failures(since time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, a := range l.attempts {
		if a.err != nil && !a.start.Before(since) {
			n++
		}
	}
	return n
}

// gwStatus reads the gateway's status.
func (e *env) gwStatus(t *testing.T, sock string) model.Status {
	t.Helper()
	var st model.Status
	e.cliJSON(sock, &st, "status")
	return st
}

func hasReason(st model.Status, code string) bool {
	for _, r := range st.Reasons {
		if r.Code == code {
			return true
		}
	}
	return false
}

// waitReason waits up to timeout for the status to list code (or, with
// want false, not to list it).
func (e *env) waitReason(t *testing.T, sock, code string, want bool, timeout time.Duration) model.Status {
	t.Helper()
	var st model.Status
	if !eventually(timeout, func() bool { st = e.gwStatus(t, sock); return hasReason(st, code) == want }) {
		t.Fatalf("status reason %s present=%v not reached in %s: %+v", code, want, timeout, st)
	}
	return st
}

// cloudEvents returns the gateway's events of Proto "cloud".
func (e *env) cloudEvents(t *testing.T, sock string) []model.Event {
	t.Helper()
	var list api.EventList
	e.cliJSON(sock, &list, "events")
	var out []model.Event
	for _, ev := range list.Events {
		if ev.Proto == "cloud" {
			out = append(out, ev)
		}
	}
	return out
}

// originSaw returns the address the origin saw the request for path come
// from ("" when it saw none within 2 s).
func (e *env) originSaw(since time.Time, path string) string { return e.originRemote(since, path) }

// proxySawPath reports whether recs hold a request for path (absolute
// form) or, for CONNECT, any tunnel to target with the client's XFF.
func connectsFrom(recs []servers.ProxyRecord, target, xff string, status int) int {
	n := 0
	for _, r := range recs {
		if r.Method == "CONNECT" && r.Target == target && r.XFF == xff && r.Status == status {
			n++
		}
	}
	return n
}

// ipFamily is one IP family of a table-driven e2e case: which lab
// addresses the LAN client, the gateway and the cloud proxies use in it.
type ipFamily struct {
	name string // "ipv4", "ipv6": the subtest name
	v6   bool
}

// families are the two families every data-path case runs over (issue 13 §5).
var families = []ipFamily{{"ipv4", false}, {"ipv6", true}}

// pick returns v4 or v6 by the family.
func (f ipFamily) pick(v4, v6 netip.Addr) netip.Addr {
	if f.v6 {
		return v6
	}
	return v4
}

// dst is site's address of the family, as text.
func (f ipFamily) dst(s lab.Site) string { return f.pick(s.V4, s.V6).String() }

// client is the LAN client's address of the family.
func (f ipFamily) client() string { return f.pick(lab.ClientV4.Addr(), lab.ClientV6.Addr()).String() }

// gwWAN is the gateway's WAN address of the family.
func (f ipFamily) gwWAN() string { return f.pick(lab.GWWANV4.Addr(), lab.GWWANV6.Addr()).String() }

// proxyURL is the http:// URL of a lab proxy at its address of the family.
func (f ipFamily) proxyURL(v4, v6 netip.Addr, port int) string {
	return "http://" + netip.AddrPortFrom(f.pick(v4, v6), uint16(port)).String()
}

// oneOf is a source check for firstOK: the origin saw one of addrs.
func oneOf(addrs ...netip.Addr) func(src string) bool {
	return func(src string) bool {
		a, err := netip.ParseAddr(src)
		return err == nil && slices.Contains(addrs, a)
	}
}

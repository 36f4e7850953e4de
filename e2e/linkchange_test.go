package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
	"github.com/cloudsteer/cloudsteer/dataplane/tcx"
	"github.com/cloudsteer/cloudsteer/internal/privtest"
	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/gateway"
)

// Bounds on the time from a link being back until the client works again
// through it. The daemon acts within a second of the burst of netlink
// events (linkQuiet, linkMaxWait); the rest is the client's retries and
// the dials to the cloud proxy.
const (
	wanRecoverBound = 10 * time.Second
	lanRecoverBound = 5 * time.Second
)

// probeLoop runs each probe from the LAN client in a loop of its own
// until stopped and records when each probeAttempt began and ended and whether
// it succeeded.
type probeLoop struct {
	mu       sync.Mutex
	attempts map[string][]probeAttempt
	stop     chan struct{}
	wg       sync.WaitGroup
}

type probeAttempt struct {
	begin, end time.Time
	err        error
}

func (e *env) startClientLoop(t *testing.T, probes map[string]func(round int) error) *probeLoop {
	t.Helper()
	l := &probeLoop{attempts: map[string][]probeAttempt{}, stop: make(chan struct{})}
	for name, probe := range probes {
		l.wg.Go(func() {
			for i := 0; ; i++ {
				a := probeAttempt{begin: time.Now()}
				a.err = probe(i)
				a.end = time.Now()
				l.mu.Lock()
				l.attempts[name] = append(l.attempts[name], a)
				l.mu.Unlock()
				select {
				case <-l.stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
		})
	}
	t.Cleanup(l.close)
	return l
}

func (l *probeLoop) close() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// okAfter waits up to bound for every probe to succeed in an probeAttempt that
// began after since; it returns when the last of those attempts ended, or
// the last error of a probe that did not get there.
func (l *probeLoop) okAfter(since time.Time, bound time.Duration) (time.Time, error) {
	deadline := since.Add(bound)
	for {
		var last time.Time
		var missing error
		l.mu.Lock()
		for name, as := range l.attempts {
			var ok bool
			var lastErr error = fmt.Errorf("no probeAttempt began after %s", since.Format(time.StampMilli))
			for _, a := range as {
				if a.begin.Before(since) {
					continue
				}
				if a.err == nil {
					ok = true
					if a.end.After(last) {
						last = a.end
					}
					break
				}
				lastErr = a.err
			}
			if !ok && missing == nil {
				missing = fmt.Errorf("%s: %w", name, lastErr)
			}
		}
		l.mu.Unlock()
		if missing == nil && !last.IsZero() {
			return last, nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, missing
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// failedBetween reports whether an probeAttempt that ended after from and not
// after to failed: the link change really cut the client off.
func (l *probeLoop) failedBetween(from, to time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, as := range l.attempts {
		for _, a := range as {
			if a.end.After(from) && !a.end.After(to) && a.err != nil {
				return true
			}
		}
	}
	return false
}

// logLinkLines logs what the daemon said about the links (and their
// timing), for reading the test's -v output.
func logLinkLines(t *testing.T, g *gateway.Gateway) {
	for _, line := range strings.Split(g.Log(), "\n") {
		for _, k := range []string{"LAN interface", "LAN listeners", "attached again", "WAN interfaces", "WAN address", "follow interface"} {
			if strings.Contains(line, k) {
				t.Log(line)
				break
			}
		}
	}
}

// status returns the gateway's status over the admin socket.
func (e *env) status(sock string) model.Status {
	e.t.Helper()
	var st model.Status
	e.cliJSON(sock, &st, "status")
	return st
}

// ingressCount returns how many programs are attached at ingress (TCX, or cls_bpf in legacy mode) of
// dev in the gateway namespace.
func (e *env) ingressCount(t *testing.T, dev string) int {
	t.Helper()
	var n int
	err := privtest.Do(e.lab.NS(lab.RoleGW), func() error {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		// TCX links, or in legacy attach mode the cls_bpf filters.
		viaTCX, viaLegacy, err := tcx.IngressPrograms(l.Attrs().Index)
		if err != nil {
			return err
		}
		n = len(viaTCX) + len(viaLegacy)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// linkProbes are the client loop's probes, per IP family: a steered
// HTTPS flow (through the cloud proxy), a bypassed one (routed, so by the
// fast path when it is on) and a DNS query the gateway answers.
func (e *env) linkProbes(steered, bypassed lab.Site) map[string]func(int) error {
	probes := map[string]func(int) error{}
	for _, fam := range families {
		server, qtype := fam.pick(lab.NobodyDNSV4, lab.NobodyDNSV6).String(), "A"
		if fam.v6 {
			qtype = "AAAA"
		}
		probes["steered/"+fam.name] = func(i int) error {
			_, err := e.curl(fmt.Sprintf("https://%s/?case=loop%d-%s", steered.Name, i, fam.name), steered.Name, fam.dst(steered), "--max-time", "3")
			return err
		}
		probes["bypassed/"+fam.name] = func(i int) error {
			_, err := e.curl(fmt.Sprintf("https://%s/?case=loop%d-%s", bypassed.Name, i, fam.name), bypassed.Name, fam.dst(bypassed), "--max-time", "3")
			return err
		}
		probes["dns/"+fam.name] = func(int) error {
			ans, err := e.dig(server, steered.Name, qtype, "+time=1")
			if err == nil && strings.TrimSpace(ans) != fam.dst(steered) {
				err = fmt.Errorf("answer %q", ans)
			}
			return err
		}
	}
	return probes
}

// fastPathFromWANGrows downloads size bytes from a bypassed site and
// checks that the fast path's forwarder on the WAN side forwarded them.
func (e *env) fastPathFromWANGrows(t *testing.T, site lab.Site, size int, what string) {
	t.Helper()
	before := e.metric(t, `cloudsteer_fast_path_bytes_total{from="wan"}`)
	out, err := e.curl(fmt.Sprintf("https://%s/bytes?n=%d", site.Name, size), site.Name, site.V4.String(),
		"-o", "/dev/null", "-w", "%{size_download}")
	if err != nil || strings.TrimSpace(out) != fmt.Sprint(size) {
		t.Fatalf("%s: bypassed download: %q, %v", what, out, err)
	}
	if got := e.metric(t, `cloudsteer_fast_path_bytes_total{from="wan"}`) - before; got < float64(size) {
		t.Fatalf("%s: the fast path forwarded %.0f bytes from the WAN side, want at least %d (is the forwarder on the new %s?)",
			what, got, size, lab.GWWANIf)
	}
}

// TestWANChange deletes and re-creates the gateway's WAN link (a PPPoE
// re-dial) and renumbers it (a DHCP renew with a new lease) while a LAN
// client keeps making steered and bypassed flows and DNS queries: the
// client works again within wanRecoverBound of the link being back, the
// status names the WAN interface in use, and the fast path's forwarder
// forwards from the new device. After the renumbering, steered flows work
// at once: no warm connection to the cloud proxy from the old address is
// handed to them, and the gateway dials from the new one.
// It runs with the WAN interfaces found from the default routes and with
// them named in firewall.wan_interfaces.
func TestWANChange(t *testing.T) {
	for _, tc := range []struct{ name, extra string }{
		{"default routes", ""},
		{"wan_interfaces", "firewall:\n  wan_interfaces: [" + lab.GWWANIf + "]\n"},
	} {
		t.Run(tc.name, func(t *testing.T) { testWANChange(t, tc.extra) })
	}
}

func testWANChange(t *testing.T, extra string) {
	// A routing gateway with no ruleset of its own: the fast path (and
	// untracking) only run while cloudsteer's table is alone.
	e := newLabEnv(t, lab.Options{Firewall: lab.FirewallNone})
	bank := site(t, "bank.example")
	www := site(t, "www.example.com")
	g := e.startGateway(gateway.Options{BypassCIDRs: []string{bank.V4.String() + "/32", bank.V6.String() + "/128"}, Extra: extra})
	defer logLinkLines(t, g)
	sock := gateway.SocketPath(e.lab, "gw")
	if e.metric(t, "cloudsteer_fast_path") != 1 {
		t.Fatal("the fast path is not on in the lab")
	}
	if st := e.status(sock); !slices.Equal(st.WANInterfaces, []string{lab.GWWANIf}) {
		t.Fatalf("status wan_interfaces = %v, want [%s]", st.WANInterfaces, lab.GWWANIf)
	}
	e.fastPathFromWANGrows(t, bank, 1<<20, "before any change")

	loop := e.startClientLoop(t, e.linkProbes(www, bank))
	if _, err := loop.okAfter(time.Now(), 10*time.Second); err != nil {
		t.Fatalf("the client loop does not work before any change: %v", err)
	}

	for i := range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		gone := time.Now()
		if err := e.lab.DeleteWAN(ctx); err != nil {
			t.Fatal(err)
		}
		if !eventually(3*time.Second, func() bool { return len(e.status(sock).WANInterfaces) == 0 }) {
			t.Errorf("round %d: with %s gone, status wan_interfaces = %v", i, lab.GWWANIf, e.status(sock).WANInterfaces)
		}
		time.Sleep(3 * time.Second)
		if err := e.lab.AddWAN(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		back := time.Now()
		at, err := loop.okAfter(back, wanRecoverBound)
		if err != nil {
			t.Fatalf("round %d: the client does not work within %s of %s being back: %v", i, wanRecoverBound, lab.GWWANIf, err)
		}
		if !loop.failedBetween(gone, at) {
			t.Errorf("round %d: the client never failed while %s was gone", i, lab.GWWANIf)
		}
		t.Logf("round %d: %s re-created; the client works again after %s", i, lab.GWWANIf, at.Sub(back).Round(time.Millisecond))
		if st := e.status(sock); !slices.Equal(st.WANInterfaces, []string{lab.GWWANIf}) {
			t.Errorf("round %d: status wan_interfaces = %v, want [%s]", i, st.WANInterfaces, lab.GWWANIf)
		}
		e.fastPathFromWANGrows(t, bank, 1<<20, fmt.Sprintf("round %d, after re-creating %s", i, lab.GWWANIf))
	}

	// A new lease: new addresses on the same device. The loop stops
	// first, so no flow is in flight, and a few steered flows fill the
	// warm pool of connections to the cloud proxy: those are made from
	// the old address and dead after the change. Once the daemon saw the
	// address go (within linkMaxWait) no new flow may get one: it would
	// wait 5s for an answer to its CONNECT.
	loop.close()
	for i := range 4 {
		if _, err := e.curl(fmt.Sprintf("https://%s/?case=warm%d", www.Name, i), www.Name, www.V4.String(), "--max-time", "3"); err != nil {
			t.Fatalf("steered flow %d before renumbering: %v", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.lab.RenumberWAN(ctx, netip.MustParsePrefix("10.20.0.3/24"), netip.MustParsePrefix("fd00:20::3/64")); err != nil {
		t.Fatal(err)
	}
	renumbered := time.Now()
	time.Sleep(1200 * time.Millisecond)
	for i := range 4 {
		began := time.Now()
		if _, err := e.curl(fmt.Sprintf("https://%s/?case=renumbered%d", www.Name, i), www.Name, www.V4.String(), "--max-time", "2"); err != nil {
			t.Fatalf("steered flow %d, %s after renumbering: %v (after %s)", i, began.Sub(renumbered).Round(time.Millisecond), err, time.Since(began).Round(time.Millisecond))
		}
	}
	if _, err := e.dig(lab.NobodyDNSV4.String(), www.Name, "A"); err != nil {
		t.Fatalf("DNS after renumbering: %v", err)
	}
	t.Logf("WAN renumbered; steered flows work %s after", time.Since(renumbered).Round(time.Millisecond))
	e.fastPathFromWANGrows(t, bank, 1<<20, "after renumbering")
	// The gateway's own dials (to the cloud proxy) come from the new
	// address now.
	start := time.Now()
	if got := e.pathOf(t, www.Name, www.V4.String(), "renumbered"); got != "proxy" {
		t.Fatalf("a steered flow after renumbering went %s", got)
	}
	for _, r := range e.proxyLog(start) {
		if r.XFF == clientV4 && !strings.HasPrefix(r.Remote, "10.20.0.3:") {
			t.Errorf("the cloud proxy saw the gateway from %s, want the new address 10.20.0.3", r.Remote)
		}
	}
}

// TestLANChange deletes and re-creates the gateway's LAN link (a bridge
// re-made: same names and addresses, a new ifindex) while the client
// keeps working through it: status says program_not_attached exactly
// while the link is gone, and within lanRecoverBound of its return the
// client's flows are steered again (the cloud proxy sees them: the
// classifier and the listeners are back), DNS is answered, the DNS
// answerer is attached again and the admin API answers on the LAN.
func TestLANChange(t *testing.T) {
	// A routing gateway with no ruleset of its own: the fast path (and
	// untracking) only run while cloudsteer's table is alone.
	e := newLabEnv(t, lab.Options{Firewall: lab.FirewallNone})
	bank := site(t, "bank.example")
	www := site(t, "www.example.com")
	g := e.startGateway(gateway.Options{BypassCIDRs: []string{bank.V4.String() + "/32", bank.V6.String() + "/128"}})
	defer logLinkLines(t, g)
	sock := gateway.SocketPath(e.lab, "gw")
	if st := e.status(sock); hasReason(st, model.ReasonNotAttached) || !slices.Contains(st.Attached, lab.GWLANIf) {
		t.Fatalf("status before any change: attached %v, reasons %v", st.Attached, st.Reasons)
	}
	progs := e.ingressCount(t, lab.GWLANIf)
	if progs < 2 {
		t.Fatalf("%d programs at ingress (TCX or cls_bpf) of %s, want the classifier and the DNS answerer", progs, lab.GWLANIf)
	}
	if code, _, _ := e.httpCode(lab.RoleLAN, "https://10.10.0.1/"); code == 0 {
		t.Fatal("the console does not answer before any change")
	}
	loop := e.startClientLoop(t, e.linkProbes(www, bank))
	if _, err := loop.okAfter(time.Now(), 10*time.Second); err != nil {
		t.Fatalf("the client loop does not work before any change: %v", err)
	}

	for i := range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := e.lab.DeleteLAN(ctx); err != nil {
			t.Fatal(err)
		}
		if !eventually(3*time.Second, func() bool { return hasReason(e.status(sock), model.ReasonNotAttached) }) {
			t.Errorf("round %d: with %s gone, status does not say %s", i, lab.GWLANIf, model.ReasonNotAttached)
		}
		time.Sleep(time.Second)
		if err := e.lab.AddLAN(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		back := time.Now()
		at, err := loop.okAfter(back, lanRecoverBound)
		if err != nil {
			t.Fatalf("round %d: the client does not work within %s of %s being back: %v", i, lanRecoverBound, lab.GWLANIf, err)
		}
		t.Logf("round %d: %s re-created; the client works again after %s", i, lab.GWLANIf, at.Sub(back).Round(time.Millisecond))
		st := e.status(sock)
		if hasReason(st, model.ReasonNotAttached) || !slices.Contains(st.Attached, lab.GWLANIf) {
			t.Errorf("round %d: status after %s is back: attached %v, reasons %v", i, lab.GWLANIf, st.Attached, st.Reasons)
		}
		// Steered, not just working: the cloud proxy sees the client's
		// flow, over both families.
		for _, fam := range families {
			if got := e.pathOf(t, www.Name, fam.dst(www), fmt.Sprintf("lanback%d-%s", i, fam.name)); got != "proxy" {
				t.Fatalf("round %d: an %s flow after %s is back went %s, want proxy", i, fam.name, lab.GWLANIf, got)
			}
			if got := e.pathOf(t, bank.Name, fam.dst(bank), fmt.Sprintf("lanbackbypass%d-%s", i, fam.name)); got != "bypass" {
				t.Errorf("round %d: a bypassed %s flow after %s is back went %s", i, fam.name, lab.GWLANIf, got)
			}
		}
		if n := e.ingressCount(t, lab.GWLANIf); n != progs {
			t.Errorf("round %d: %d programs at ingress (TCX or cls_bpf) of the new %s, want %d (classifier and DNS answerer)", i, n, lab.GWLANIf, progs)
		}
		// The admin API's and the console's LAN listeners are bound again too.
		if e.metric(t, "cloudsteer_fast_path") != 1 {
			t.Errorf("round %d: the fast path is off after %s is back", i, lab.GWLANIf)
		}
		if code, _, _ := e.httpCode(lab.RoleLAN, "https://10.10.0.1/"); code == 0 {
			t.Errorf("round %d: the console does not answer on the new %s", i, lab.GWLANIf)
		}
	}

	// Down and up (a switch rebooting): the same device, its programs and
	// sockets stay, and status never says they are not attached.
	if _, err := e.run(lab.RoleGW, 5*time.Second, "ip", "link", "set", lab.GWLANIf, "down"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if st := e.status(sock); hasReason(st, model.ReasonNotAttached) {
		t.Errorf("with %s down, status says %s: %v", lab.GWLANIf, model.ReasonNotAttached, st.Reasons)
	}
	if _, err := e.run(lab.RoleGW, 5*time.Second, "ip", "link", "set", lab.GWLANIf, "up"); err != nil {
		t.Fatal(err)
	}
	// Linux drops an interface's static IPv6 addresses when it goes down
	// (net.ipv6.conf.*.keep_addr_on_down=0); the router's network
	// configuration puts the address back, as here.
	if _, err := e.run(lab.RoleGW, 5*time.Second, "ip", "-6", "addr", "replace", lab.GWLANV6.String(), "dev", lab.GWLANIf, "nodad"); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	at, err := loop.okAfter(up, lanRecoverBound)
	if err != nil {
		t.Fatalf("the client does not work within %s of %s up again: %v", lanRecoverBound, lab.GWLANIf, err)
	}
	t.Logf("%s down and up; the client works again after %s", lab.GWLANIf, at.Sub(up).Round(time.Millisecond))
	for _, fam := range families {
		if got := e.pathOf(t, www.Name, fam.dst(www), "lanup-"+fam.name); got != "proxy" {
			t.Fatalf("an %s flow after %s is up again went %s, want proxy", fam.name, lab.GWLANIf, got)
		}
	}
	if n := e.ingressCount(t, lab.GWLANIf); n != progs {
		t.Errorf("%d programs at ingress (TCX or cls_bpf) of %s after down and up, want %d", n, lab.GWLANIf, progs)
	}
}

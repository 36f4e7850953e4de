package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/gateway"
)

// Generous bounds: timings are logged, not asserted tightly.
const (
	failoverBound = 10 * time.Second // the design aims at ≤ 3 s
	recoverAfter  = 2 * time.Second  // cloud_proxy.recover_after in these tests
	recoverBound  = 20 * time.Second
)

// TestCloudFailFailover kills the primary cloud proxy, makes it answer
// 407 and black-holes it, each during a client loop, with the lab's Go
// proxy as the backup; then it brings the primary back.
func TestCloudFailFailover(t *testing.T) {
	e := newEnv(t, false)
	runFailover(t, e, labProxyURL, lab.CloudProxyV4.String())
}

// TestCloudFailFailoverSquid is TestCloudFailFailover with Squid as the
// backup.
func TestCloudFailFailoverSquid(t *testing.T) {
	e := newEnv(t, true)
	runFailover(t, e, squidURL, "")
}

// runFailover runs the three faults. backupSource is the address the
// origin sees the backup's flows come from ("" when not known: Squid).
func runFailover(t *testing.T, e *env, backupURL, backupSource string) {
	client := lab.ClientV4.Addr().String()
	site := lab.Sites[0]
	target := site.Name + ":443"
	primarySource := lab.CloudProxy2V4.String()
	for _, fault := range []string{"kill", "407", "blackhole"} {
		t.Run(fault, func(t *testing.T) {
			p := e.startStandalone(t, "primary")
			name := "gw-" + fault
			o := gateway.Options{Name: name, ProxyURLs: []string{primaryURL, backupURL},
				CloudProxy: []string{"recover_after: " + recoverAfter.String()}}
			if backupURL == squidURL {
				// Squid refuses an empty password; the lab Go proxy takes any.
				o.Username, o.Password = lab.EntitlementCode, lab.SquidCodePassword
			}
			e.gatewayFor(t, o)
			sock := gateway.SocketPath(e.lab, name)
			t0 := time.Now()
			l := e.loop(t, "https://"+site.Name, site.Name, site.V4.String(), fault)
			// Before the fault the primary carries the flows.
			if _, ok := l.firstOK(e, t0, 10*time.Second, func(src string) bool { return src == primarySource }); !ok {
				t.Fatalf("no flow through the primary before the fault; primary saw %d requests", len(p.records(t, t0)))
			}
			var slow chan error // a long download through the primary (blackhole: it must be cut)
			if fault == "blackhole" {
				slow = make(chan error, 1)
				go func() {
					// e.curl gives up after 15 s: the cut must come sooner.
					_, err := e.curl("https://"+site.Name+"/slow?delay=40s", site.Name, site.V4.String())
					slow <- err
				}()
				time.Sleep(500 * time.Millisecond)
			}

			switch fault {
			case "kill":
				p.kill(t)
			case "407":
				p.refuse(t, true)
			case "blackhole":
				e.blackhole(t, true)
			}
			tf := time.Now() // the fault is in place
			a, ok := l.firstOK(e, tf, 20*time.Second, func(src string) bool { return src != primarySource && src != "" })
			if !ok {
				t.Fatalf("the client never succeeded through the backup after the fault (%d failures)", l.failures(tf))
			}
			took := a.end.Sub(tf)
			t.Logf("FAILOVER %s backup=%s: client succeeded again %s after the fault (%d failed attempts between)", fault, backupURL, took.Round(time.Millisecond), l.failures(tf))
			if took > failoverBound {
				t.Errorf("failover took %s; bound %s", took, failoverBound)
			}
			// What the origin saw: the backup, not the client, not the gateway.
			src := e.originSaw(tf, a.path)
			if backupSource != "" && src != backupSource {
				t.Errorf("origin saw %s for %s; want the backup proxy %s", src, a.path, backupSource)
			}
			if src == client || src == lab.GWWANV4.Addr().String() {
				t.Errorf("origin saw %s: the flow went direct, not through the backup", src)
			}
			// What the proxies saw.
			after := tf.Add(200 * time.Millisecond)
			switch fault {
			case "kill", "blackhole":
				if recs := p.records(t, after); len(recs) > 0 {
					t.Errorf("the dead primary logged %d requests after the fault: %+v", len(recs), recs[0])
				}
			case "407":
				for _, r := range p.records(t, after) {
					if r.Status != 407 {
						t.Errorf("the refusing primary answered %d to %s", r.Status, r.Target)
					}
				}
			}
			e.assertBackupSaw(t, backupURL, tf, target, client)

			// Status, metrics and events say so.
			st := e.waitReason(t, sock, model.ReasonProxyOnBackup, true, 10*time.Second)
			if len(st.CloudProxies) != 2 || st.CloudProxies[0].Healthy || !st.CloudProxies[1].Active || st.CloudProxy != backupURL {
				t.Errorf("status while on the backup: cloud_proxy %q, proxies %+v", st.CloudProxy, st.CloudProxies)
			}
			if st.State != model.Protected {
				t.Errorf("state on a backup: %s, want protected", st.State)
			}
			if v := e.metric(t, fmt.Sprintf("cloudsteer_cloud_proxy_active{url=%q}", backupURL)); v != 1 {
				t.Errorf("cloud_proxy_active of the backup: %v", v)
			}
			if v := e.metric(t, "cloudsteer_cloud_proxy_switches_total"); v < 1 {
				t.Errorf("cloud_proxy_switches_total: %v", v)
			}
			if !hasCloudEvent(e.cloudEvents(t, sock), "cloud_proxy_switch", backupURL) {
				t.Errorf("no cloud_proxy_switch event to %s: %+v", backupURL, e.cloudEvents(t, sock))
			}
			if slow != nil {
				select {
				case err := <-slow:
					if err == nil {
						t.Error("the download through the black-holed primary completed")
					}
					t.Logf("the tunnel through the black-holed primary was cut %s after the fault: %v", time.Since(tf).Round(time.Millisecond), err)
					if d := time.Since(tf); d > 8*time.Second {
						t.Errorf("the tunnel through the black-holed primary was cut only %s after the fault", d)
					}
				case <-time.After(15 * time.Second):
					t.Error("the tunnel through the black-holed primary was not cut within 15 s of the fault")
				}
			}

			// Recovery: the primary comes back; new flows go to it again,
			// but only once it has been healthy for recover_after.
			tr := time.Now()
			switch fault {
			case "kill":
				p.start(t)
			case "407":
				p.refuse(t, false)
			case "blackhole":
				e.blackhole(t, false)
			}
			a, ok = l.firstOK(e, tr, recoverBound, func(src string) bool { return src == primarySource })
			if !ok {
				t.Fatalf("new flows did not go back to the primary within %s", recoverBound)
			}
			back := a.start.Sub(tr)
			t.Logf("RECOVERY %s: first flow through the primary started %s after it was fixed", fault, back.Round(time.Millisecond))
			if back < recoverAfter-200*time.Millisecond {
				t.Errorf("back on the primary %s after it was fixed: sooner than recover_after %s", back, recoverAfter)
			}
			e.waitReason(t, sock, model.ReasonProxyOnBackup, false, 10*time.Second)
			if v := e.metric(t, fmt.Sprintf("cloudsteer_cloud_proxy_active{url=%q}", primaryURL)); v != 1 {
				t.Errorf("cloud_proxy_active of the primary after recovery: %v", v)
			}
		})
	}
}

// assertBackupSaw checks the backup proxy logged a tunnel to target for
// client after since.
func (e *env) assertBackupSaw(t *testing.T, backupURL string, since time.Time, target, client string) {
	t.Helper()
	if backupURL == squidURL {
		ok := eventually(10*time.Second, func() bool {
			recs, err := e.lab.SquidLog()
			if err != nil {
				return false
			}
			for _, r := range recs {
				if r.Method == "CONNECT" && r.URL == target && r.XFF == client && !r.Start().Before(since.Add(-time.Second)) {
					return true
				}
			}
			return false
		})
		if !ok {
			t.Errorf("Squid logged no CONNECT %s for %s after the fault", target, client)
		}
		return
	}
	if n := connectsFrom(e.proxyLog(since), target, client, 200); n == 0 {
		t.Errorf("the backup lab proxy logged no CONNECT %s for %s after the fault", target, client)
	}
}

func hasCloudEvent(evs []model.Event, reason, name string) bool {
	for _, ev := range evs {
		if ev.Reason == reason && (name == "" || ev.Name == name) {
			return true
		}
	}
	return false
}

// TestCloudFailOpen: one cloud proxy, failure_mode open. While it is dead
// the client reaches the origin direct (the origin sees the gateway, no
// proxy sees the request); status and events say so; it is used again
// once back.
func TestCloudFailOpen(t *testing.T) {
	eachNAT(t, func(t *testing.T, nat bool) {
		e := newLabEnv(t, lab.Options{Firewall: firewallFor(nat)})
		site := lab.Sites[0]
		p := e.startStandalone(t, "primary")
		g := e.gatewayFor(t, gateway.Options{ProxyURL: primaryURL, CloudProxy: []string{"failure_mode: open", "recover_after: " + recoverAfter.String()}})
		_ = g
		sock := gateway.SocketPath(e.lab, "")
		t0 := time.Now()
		for _, scheme := range []string{"https", "http"} {
			l := e.loop(t, scheme+"://"+site.Name, site.Name, site.V4.String(), "open-"+scheme)
			if _, ok := l.firstOK(e, t0, 10*time.Second, func(src string) bool { return src == lab.CloudProxy2V4.String() }); !ok {
				t.Fatalf("%s: no flow through the cloud proxy before the fault", scheme)
			}
			l.halt()
		}
		tf := time.Now()
		p.kill(t)
		gwSeen := lab.GWWANV4.Addr().String() // the gateway dials the origin itself
		for _, scheme := range []string{"https", "http"} {
			l := e.loop(t, scheme+"://"+site.Name, site.Name, site.V4.String(), "opendown-"+scheme)
			a, ok := l.firstOK(e, tf, 20*time.Second, nil)
			if !ok {
				t.Fatalf("%s: the client never succeeded with the cloud proxy dead (failure_mode open)", scheme)
			}
			t.Logf("FAIL-OPEN %s: client succeeded direct %s after the kill", scheme, a.end.Sub(tf).Round(time.Millisecond))
			if src := e.originSaw(tf, a.path); src != gwSeen {
				t.Errorf("%s: origin saw %q; want the gateway's WAN address %s", scheme, src, gwSeen)
			}
			if !strings.Contains(a.out, "hello from "+site.Name) {
				t.Errorf("%s: body %q", scheme, a.out)
			}
			l.halt()
			for _, r := range e.proxyLog(tf) {
				t.Errorf("the lab proxy saw %s %s: nothing should reach a proxy", r.Method, r.URL)
			}
		}
		st := e.waitReason(t, sock, model.ReasonProxyFailedOpen, true, 10*time.Second)
		if st.State != model.NotProtected || st.FailureMode != "open" {
			t.Errorf("status while failed open: state %s, failure_mode %q", st.State, st.FailureMode)
		}
		if v := e.metric(t, `cloudsteer_proxy_requests_total{outcome="failed_open"}`); v < 2 {
			t.Errorf("failed_open requests: %v", v)
		}
		if !hasCloudEvent(e.cloudEvents(t, sock), "cloud_proxy_failed_open", "") {
			t.Errorf("no cloud_proxy_failed_open event: %+v", e.cloudEvents(t, sock))
		}
		// A long download that went direct is cut once the proxy is back
		// (its client reconnects, inspected).
		slow := make(chan error, 1)
		go func() {
			_, err := e.curl("https://"+site.Name+"/slow?delay=40s&cf=opendirect", site.Name, site.V4.String())
			slow <- err
		}()
		time.Sleep(500 * time.Millisecond)
		// Back: inspected again after recover_after.
		tr := time.Now()
		p.start(t)
		l := e.loop(t, "https://"+site.Name, site.Name, site.V4.String(), "openback")
		a, ok := l.firstOK(e, tr, recoverBound, func(src string) bool { return src == lab.CloudProxy2V4.String() })
		if !ok {
			t.Fatal("flows did not go back through the cloud proxy")
		}
		t.Logf("RECOVERY open: through the proxy again %s after its restart", a.start.Sub(tr).Round(time.Millisecond))
		e.waitReason(t, sock, model.ReasonProxyFailedOpen, false, 10*time.Second)
		select {
		case err := <-slow:
			if err == nil {
				t.Error("the direct download completed; want it cut at the recovery")
			}
			t.Logf("the direct download was cut %s after the proxy restart: %v", time.Since(tr).Round(time.Millisecond), err)
			if d := time.Since(tr); d > 7*time.Second {
				// (curl itself gives up 10 s after its start)
				t.Errorf("the direct download ended only %s after the restart: not cut at the recovery", d)
			}
		case <-time.After(8 * time.Second):
			t.Error("the download that went direct was not cut after the recovery")
		}
		if !hasCloudEvent(e.cloudEvents(t, sock), "cloud_proxy_recovered", primaryURL) {
			t.Errorf("no cloud_proxy_recovered event: %+v", e.cloudEvents(t, sock))
		}
	})
}

// TestCloudFailClosed: one cloud proxy, failure_mode closed. While it is
// dead plain HTTP gets the local page (English or Japanese by
// Accept-Language), TLS an alert, a bypass destination still works and
// DNS still answers; nothing reaches the origin except the bypass flow.
func TestCloudFailClosed(t *testing.T) {
	e := newEnv(t, false)
	site := lab.Sites[0]
	bank, _ := lab.SiteByName("bank.example")
	p := e.startStandalone(t, "primary")
	e.gatewayFor(t, gateway.Options{ProxyURL: primaryURL, BypassDomains: []string{"bank.example"},
		CloudProxy: []string{"failure_mode: closed", "recover_after: " + recoverAfter.String()}})
	sock := gateway.SocketPath(e.lab, "")
	t0 := time.Now()
	if out, err := e.curl("https://"+site.Name+"/?cf=before", site.Name, site.V4.String()); err != nil || e.originSaw(t0, "/?cf=before") != lab.CloudProxy2V4.String() {
		t.Fatalf("before the fault: %q %v", out, err)
	}
	tf := time.Now()
	p.kill(t)
	// Wait for the gateway to call it: the first flows fail plainly.
	e.waitReason(t, sock, model.ReasonProxyFailedClosed, true, 10*time.Second)
	t.Logf("FAIL-CLOSED: decided %s after the kill", time.Since(tf).Round(time.Millisecond))
	td := time.Now()

	for _, c := range []struct{ lang, want string }{
		{"", "Web access is stopped"},
		{"en-US,en;q=0.9", "Web access is stopped"},
		{"ja,en-US;q=0.8", "Webアクセスを停止しています"},
		{"fr-FR, ja;q=0.5, en;q=0.3", "Webアクセスを停止しています"},
	} {
		args := []string{"-i"}
		if c.lang != "" {
			args = append(args, "-H", "Accept-Language: "+c.lang)
		}
		out, err := e.curl("http://"+site.Name+"/?cf=closed", site.Name, site.V4.String(), args...)
		if err != nil {
			t.Fatalf("http while closed (%q): %v", c.lang, err)
		}
		if !strings.HasPrefix(out, "HTTP/1.1 503") || !strings.Contains(out, c.want) || !strings.Contains(out, "cloud_proxy_failed_closed") {
			t.Errorf("http while closed, Accept-Language %q: want 503 with %q:\n%s", c.lang, c.want, out)
		}
	}
	out, err := e.curl("https://"+site.Name+"/?cf=closedtls", site.Name, site.V4.String(), "-v")
	if err == nil {
		t.Errorf("https while closed succeeded: %q", out)
	} else if !strings.Contains(err.Error(), "alert access denied") {
		// access_denied (49), not the internal_error of a failed dial
		t.Errorf("https while closed: want a TLS access_denied alert, got %v", err)
	}
	// The bypass destination still works (straight to the origin).
	if out, err := e.curl("https://bank.example/?cf=closedbypass", "bank.example", bank.V4.String()); err != nil || !strings.Contains(out, "hello from bank.example") {
		t.Errorf("bypass while closed: %q %v", out, err)
	}
	// DNS still works.
	if ans, err := e.dig(lab.NobodyDNSV4.String(), "news.example.com", "A"); err != nil || !strings.Contains(ans, "203.0.113.11") {
		t.Errorf("dns while closed: %q %v", ans, err)
	}
	for _, r := range e.originLog(td) {
		if r.Site != "bank.example" {
			t.Errorf("the origin %s saw %s %s while closed", r.Site, r.Method, r.Path)
		}
	}
	st := e.gwStatus(t, sock)
	if st.FailureMode != "closed" || !hasReason(st, model.ReasonProxyFailedClosed) {
		t.Errorf("status while closed: %+v", st)
	}
	if v := e.metric(t, `cloudsteer_proxy_requests_total{outcome="failed_closed"}`); v < 5 {
		t.Errorf("failed_closed requests: %v, want ≥ 5 (4 pages, 1 alert)", v)
	}
	if !hasCloudEvent(e.cloudEvents(t, sock), "cloud_proxy_failed_closed", "") {
		t.Errorf("no cloud_proxy_failed_closed event: %+v", e.cloudEvents(t, sock))
	}
	// Back.
	p.start(t)
	if !eventually(recoverBound, func() bool {
		_, err := e.curl("https://"+site.Name+"/?cf=closedback", site.Name, site.V4.String())
		return err == nil
	}) {
		t.Fatal("https did not work again after the proxy came back")
	}
	e.waitReason(t, sock, model.ReasonProxyFailedClosed, false, 10*time.Second)
}

// TestCloudFailDNSFirstResolverDead: the first cloud resolver black-holes
// queries; only the first query after start pays its timeout, the next
// ones go to the second resolver at once, and status and metrics say so.
func TestCloudFailDNSFirstResolverDead(t *testing.T) {
	e := newEnv(t, false)
	dead := "198.51.100.99" // routed into the internet namespace, where nobody has it: dropped
	e.gatewayFor(t, gateway.Options{DNSUpstreams: []string{dead, lab.CloudDNSV4.String()}})
	sock := gateway.SocketPath(e.lab, "")
	var took []time.Duration
	for i := range 15 {
		start := time.Now()
		// Names nobody asked before: each one goes upstream (NXDOMAIN is an answer).
		if _, err := e.dig(lab.NobodyDNSV4.String(), fmt.Sprintf("n%d-%d.example.com", i, start.UnixNano()), "A"); err != nil {
			t.Fatalf("query %d: %v", i, err)
		}
		took = append(took, time.Since(start))
	}
	t.Logf("DNS with a dead first resolver, per query: %v", took)
	for i, d := range took[1:] {
		if d > time.Second {
			t.Errorf("query %d took %s: the dead first resolver still costs a timeout", i+1, d)
		}
	}
	st := e.waitReason(t, sock, model.ReasonDNSOnBackup, true, 5*time.Second)
	if len(st.DNSUpstreams) != 2 || st.DNSUpstreams[0].Healthy || !st.DNSUpstreams[1].Active {
		t.Errorf("status dns upstreams: %+v", st.DNSUpstreams)
	}
	if v := e.metric(t, `cloudsteer_dns_upstream_active{upstream="198.51.100.53:53"}`); v != 1 {
		t.Errorf("dns_upstream_active of the second resolver: %v", v)
	}
	if !hasCloudEventProto(e, t, sock, "dns", "cloud_dns_switch") {
		t.Error("no cloud_dns_switch event")
	}
}

func hasCloudEventProto(e *env, t *testing.T, sock, proto, reason string) bool {
	var list api.EventList
	e.cliJSON(sock, &list, "events")
	for _, ev := range list.Events {
		if ev.Proto == proto && ev.Reason == reason {
			return true
		}
	}
	return false
}

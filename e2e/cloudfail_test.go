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
// proxy as the backup; then it brings the primary back. Per IP family:
// the LAN client's flows and the gateway's connections to both cloud
// proxies (configured by address literal) are of that family.
func TestCloudFailFailover(t *testing.T) {
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			e := newEnv(t, false)
			runFailover(t, e, fam, fam.proxyURL(lab.CloudProxyV4, lab.CloudProxyV6, lab.CloudProxyHTTPPort),
				oneOf(lab.CloudProxyV4, lab.CloudProxyV6))
		})
	}
}

// TestCloudFailFailoverSquid is TestCloudFailFailover with Squid as the
// backup (IPv4 only: the gateway's failover does not depend on which
// proxy software the backup runs, and TestCloudFailFailover covers IPv6).
func TestCloudFailFailoverSquid(t *testing.T) {
	e := newEnv(t, true)
	runFailover(t, e, families[0], squidURL, nil)
}

// runFailover runs the three faults over family fam. backupSource checks
// the address the origin sees the backup's flows come from (nil when not
// known: Squid).
func runFailover(t *testing.T, e *env, fam ipFamily, backupURL string, backupSource func(string) bool) {
	client := fam.client()
	site := lab.Sites[0]
	target := site.Name + ":443"
	primaryURL := fam.proxyURL(lab.CloudProxy2V4, lab.CloudProxy2V6, lab.CloudProxyHTTPPort)
	// The primary dials the origin by name, over either family.
	fromPrimary := oneOf(lab.CloudProxy2V4, lab.CloudProxy2V6)
	direct := oneOf(lab.ClientV4.Addr(), lab.ClientV6.Addr(), lab.GWWANV4.Addr(), lab.GWWANV6.Addr())
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
			l := e.loop(t, "https://"+site.Name, site.Name, fam.dst(site), fault)
			// Before the fault the primary carries the flows.
			if _, ok := l.firstOK(e, t0, 10*time.Second, fromPrimary); !ok {
				t.Fatalf("no flow through the primary before the fault; primary saw %d requests", len(p.records(t, t0)))
			}
			if n := connectsFrom(p.records(t, t0), target, client, 200); n == 0 {
				t.Fatalf("the primary logged no CONNECT %s for the %s client %s", target, fam.name, client)
			}
			// The gateway reached the primary over the family of its URL.
			for _, r := range p.records(t, t0) {
				if hostOf(r.Remote) != fam.gwWAN() {
					t.Fatalf("the primary saw the gateway from %s, want its %s WAN address %s", r.Remote, fam.name, fam.gwWAN())
				}
			}
			var slow chan error // a long download through the primary (blackhole: it must be cut)
			if fault == "blackhole" {
				slow = make(chan error, 1)
				go func() {
					// e.curl gives up after 15 s: the cut must come sooner.
					_, err := e.curl("https://"+site.Name+"/slow?delay=40s", site.Name, fam.dst(site))
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
			a, ok := l.firstOK(e, tf, 20*time.Second, func(src string) bool { return !fromPrimary(src) && src != "" })
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
			if backupSource != nil && !backupSource(src) {
				t.Errorf("origin saw %s for %s; want the backup proxy", src, a.path)
			}
			if direct(src) {
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
			if backupURL != squidURL {
				for _, r := range e.proxyLog(tf) {
					if hostOf(r.Remote) != fam.gwWAN() {
						t.Errorf("the backup saw the gateway from %s, want its %s WAN address %s", r.Remote, fam.name, fam.gwWAN())
						break
					}
				}
			}

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
			a, ok = l.firstOK(e, tr, recoverBound, fromPrimary)
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
// once back. HTTP and HTTPS over IPv4 and IPv6 before and during the
// fault.
func TestCloudFailOpen(t *testing.T) {
	eachNAT(t, func(t *testing.T, nat bool) {
		e := newLabEnv(t, lab.Options{Firewall: firewallFor(nat)})
		site := lab.Sites[0]
		p := e.startStandalone(t, "primary")
		g := e.gatewayFor(t, gateway.Options{ProxyURL: primaryURL, CloudProxy: []string{"failure_mode: open", "recover_after: " + recoverAfter.String()}})
		_ = g
		sock := gateway.SocketPath(e.lab, "")
		fromProxy := oneOf(lab.CloudProxy2V4, lab.CloudProxy2V6)
		t0 := time.Now()
		for _, fam := range families {
			for _, scheme := range []string{"https", "http"} {
				l := e.loop(t, scheme+"://"+site.Name, site.Name, fam.dst(site), "open-"+fam.name+"-"+scheme)
				if _, ok := l.firstOK(e, t0, 10*time.Second, fromProxy); !ok {
					t.Fatalf("%s %s: no flow through the cloud proxy before the fault", fam.name, scheme)
				}
				l.halt()
			}
		}
		tf := time.Now()
		p.kill(t)
		for _, fam := range families {
			gwSeen := fam.gwWAN() // the gateway dials the origin itself, at the address of the client's family
			for _, scheme := range []string{"https", "http"} {
				l := e.loop(t, scheme+"://"+site.Name, site.Name, fam.dst(site), "opendown-"+fam.name+"-"+scheme)
				a, ok := l.firstOK(e, tf, 20*time.Second, nil)
				if !ok {
					t.Fatalf("%s %s: the client never succeeded with the cloud proxy dead (failure_mode open)", fam.name, scheme)
				}
				t.Logf("FAIL-OPEN %s %s: client succeeded direct %s after the kill", fam.name, scheme, a.end.Sub(tf).Round(time.Millisecond))
				if src := e.originSaw(tf, a.path); src != gwSeen {
					t.Errorf("%s %s: origin saw %q; want the gateway's WAN address %s", fam.name, scheme, src, gwSeen)
				}
				if !strings.Contains(a.out, "hello from "+site.Name) {
					t.Errorf("%s %s: body %q", fam.name, scheme, a.out)
				}
				l.halt()
				for _, r := range e.proxyLog(tf) {
					t.Errorf("the lab proxy saw %s %s: nothing should reach a proxy", r.Method, r.URL)
				}
			}
		}
		st := e.waitReason(t, sock, model.ReasonProxyFailedOpen, true, 10*time.Second)
		if st.State != model.NotProtected || st.FailureMode != "open" {
			t.Errorf("status while failed open: state %s, failure_mode %q", st.State, st.FailureMode)
		}
		if v := e.metric(t, `cloudsteer_proxy_requests_total{outcome="failed_open"}`); v < 4 {
			t.Errorf("failed_open requests: %v, want ≥ 4 (http and https, two families)", v)
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
		a, ok := l.firstOK(e, tr, recoverBound, fromProxy)
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
// Each over IPv4 and IPv6.
func TestCloudFailClosed(t *testing.T) {
	e := newEnv(t, false)
	site := lab.Sites[0]
	bank, _ := lab.SiteByName("bank.example")
	p := e.startStandalone(t, "primary")
	e.gatewayFor(t, gateway.Options{ProxyURL: primaryURL, BypassDomains: []string{"bank.example"},
		CloudProxy: []string{"failure_mode: closed", "recover_after: " + recoverAfter.String()}})
	sock := gateway.SocketPath(e.lab, "")
	fromProxy := oneOf(lab.CloudProxy2V4, lab.CloudProxy2V6)
	t0 := time.Now()
	for _, fam := range families {
		path := "/?cf=before-" + fam.name
		if out, err := e.curl("https://"+site.Name+path, site.Name, fam.dst(site)); err != nil || !fromProxy(e.originSaw(t0, path)) {
			t.Fatalf("%s before the fault: %q %v", fam.name, out, err)
		}
	}
	tf := time.Now()
	p.kill(t)
	// Wait for the gateway to call it: the first flows fail plainly.
	e.waitReason(t, sock, model.ReasonProxyFailedClosed, true, 10*time.Second)
	t.Logf("FAIL-CLOSED: decided %s after the kill", time.Since(tf).Round(time.Millisecond))
	td := time.Now()

	for _, fam := range families {
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
			out, err := e.curl("http://"+site.Name+"/?cf=closed", site.Name, fam.dst(site), args...)
			if err != nil {
				t.Fatalf("%s http while closed (%q): %v", fam.name, c.lang, err)
			}
			if !strings.HasPrefix(out, "HTTP/1.1 503") || !strings.Contains(out, c.want) || !strings.Contains(out, "cloud_proxy_failed_closed") {
				t.Errorf("%s http while closed, Accept-Language %q: want 503 with %q:\n%s", fam.name, c.lang, c.want, out)
			}
		}
		out, err := e.curl("https://"+site.Name+"/?cf=closedtls", site.Name, fam.dst(site), "-v")
		if err == nil {
			t.Errorf("%s https while closed succeeded: %q", fam.name, out)
		} else if !strings.Contains(err.Error(), "alert access denied") {
			// access_denied (49), not the internal_error of a failed dial
			t.Errorf("%s https while closed: want a TLS access_denied alert, got %v", fam.name, err)
		}
		// The bypass destination still works (straight to the origin).
		if out, err := e.curl("https://bank.example/?cf=closedbypass-"+fam.name, "bank.example", fam.dst(bank)); err != nil || !strings.Contains(out, "hello from bank.example") {
			t.Errorf("%s bypass while closed: %q %v", fam.name, out, err)
		}
		// DNS still works.
		server, qtype, want := fam.pick(lab.NobodyDNSV4, lab.NobodyDNSV6).String(), "A", "203.0.113.11"
		if fam.v6 {
			qtype, want = "AAAA", "2001:db8:113::11"
		}
		if ans, err := e.dig(server, "news.example.com", qtype); err != nil || !strings.Contains(ans, want) {
			t.Errorf("%s dns while closed: %q %v", fam.name, ans, err)
		}
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
	if v := e.metric(t, `cloudsteer_proxy_requests_total{outcome="failed_closed"}`); v < 10 {
		t.Errorf("failed_closed requests: %v, want ≥ 10 (4 pages, 1 alert, per family)", v)
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
// Per family: the resolvers' addresses and the LAN client's queries.
func TestCloudFailDNSFirstResolverDead(t *testing.T) {
	e := newEnv(t, false)
	for _, fam := range []struct {
		ipFamily
		dead, live, qtype string
	}{
		// Routed into the internet namespace, where nobody has them: dropped.
		{families[0], "198.51.100.99", lab.CloudDNSV4.String() + ":53", "A"},
		{families[1], "[2001:db8:51::99]", "[" + lab.CloudDNSV6.String() + "]:53", "AAAA"},
	} {
		t.Run(fam.name, func(t *testing.T) {
			name := "gw-dns-" + fam.name
			e.gatewayFor(t, gateway.Options{Name: name, DNSUpstreams: []string{fam.dead, fam.live}})
			sock := gateway.SocketPath(e.lab, name)
			server := fam.pick(lab.NobodyDNSV4, lab.NobodyDNSV6).String()
			var took []time.Duration
			for i := range 15 {
				start := time.Now()
				// Names nobody asked before: each one goes upstream (NXDOMAIN is an answer).
				if _, err := e.dig(server, fmt.Sprintf("n%d-%d.example.com", i, start.UnixNano()), fam.qtype); err != nil {
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
			if v := e.metric(t, fmt.Sprintf("cloudsteer_dns_upstream_active{upstream=%q}", fam.live)); v != 1 {
				t.Errorf("dns_upstream_active of the second resolver: %v", v)
			}
			if !hasCloudEventProto(e, t, sock, "dns", "cloud_dns_switch") {
				t.Error("no cloud_dns_switch event")
			}
		})
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

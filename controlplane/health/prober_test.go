package health_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/health"
	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy"
)

func TestProbeNow(t *testing.T) {
	target, _ := startTarget(t)
	open := startProxy(t, target, nil)
	blocking := startProxy(t, target, map[string]string{"www.example.com": "Test"})
	dnsDown := errors.New("no answer from 198.51.100.53:53")
	tests := []struct {
		name        string
		cloud       *cloudproxy.Client
		dns         health.DNSChecker
		proxyOK     bool
		refused     bool
		proxyErrHas string // in ProxyErr's text
		dnsOK       bool
	}{
		{"tunnel 200", client(t, open, code), fakeDNS{}, true, false, "", true},
		{"probe target blocked 403 proves the code", client(t, blocking, code), fakeDNS{}, true, false, "", true},
		{"code rejected 407", client(t, open, "00000000-0000-0000-0000-000000000000"), fakeDNS{}, false, true, "407", true},
		{"no credentials 407", client(t, open, ""), fakeDNS{}, false, true, "407", true},
		{"proxy closes at once", client(t, startCloser(t), code), fakeDNS{}, false, false, "read CONNECT answer", true},
		{"proxy port closed", client(t, deadURL(t), code), fakeDNS{}, false, false, "dial cloud proxy", true},
		{"no cloud proxy", nil, fakeDNS{}, false, false, "no cloud proxy", true},
		{"dns failing", client(t, open, code), fakeDNS{dnsDown}, true, false, "", false},
		{"no resolver skips dns", client(t, open, code), nil, true, false, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := prober(tc.cloud, tc.dns)
			if !p.Last().Time.IsZero() {
				t.Fatal("Last before any probe has a time")
			}
			r := p.ProbeNow(context.Background())
			if r.Time.IsZero() {
				t.Error("Result has no time")
			}
			if (r.ProxyErr == nil) != tc.proxyOK || r.ProxyRefused != tc.refused {
				t.Errorf("ProxyErr = %v, ProxyRefused = %v; want ok=%v refused=%v", r.ProxyErr, r.ProxyRefused, tc.proxyOK, tc.refused)
			}
			if r.ProxyErr != nil && !strings.Contains(r.ProxyErr.Error(), tc.proxyErrHas) {
				t.Errorf("ProxyErr %q does not mention %q", r.ProxyErr, tc.proxyErrHas)
			}
			if tc.refused {
				var re *cloudproxy.RefusedError
				if !errors.As(r.ProxyErr, &re) || re.StatusCode != http.StatusProxyAuthRequired {
					t.Errorf("ProxyErr %v is not a 407 RefusedError", r.ProxyErr)
				}
			}
			if (r.DNSErr == nil) != tc.dnsOK || (r.DNSErr != nil && !errors.Is(r.DNSErr, dnsDown)) {
				t.Errorf("DNSErr = %v, want ok=%v", r.DNSErr, tc.dnsOK)
			}
			if r.OK() != (tc.proxyOK && tc.dnsOK) {
				t.Errorf("OK() = %v", r.OK())
			}
			last := p.Last()
			if !last.Time.Equal(r.Time) || last.ProxyErr != r.ProxyErr || last.DNSErr != r.DNSErr {
				t.Errorf("Last = %+v, want the probe's result %+v", last, r)
			}
		})
	}
}

func TestProbeClosesTunnel(t *testing.T) {
	target, closed := startTarget(t)
	p := prober(client(t, startProxy(t, target, nil), code), fakeDNS{})
	if r := p.ProbeNow(context.Background()); r.ProxyErr != nil {
		t.Fatal(r.ProxyErr)
	}
	// The target sees EOF only when the prober closed the tunnel (the
	// test proxy passes the close on). The bound is for liveness only:
	// a kept tunnel would never close.
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("the probe target never saw the tunnel close")
	}
}

func TestProbeCancelledNotRecorded(t *testing.T) {
	p := prober(client(t, startCloser(t), code), fakeDNS{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := p.ProbeNow(ctx)
	if r.ProxyErr == nil {
		t.Error("a cancelled probe passed")
	}
	if !p.Last().Time.IsZero() {
		t.Errorf("a cancelled probe was recorded: %+v", p.Last())
	}
}

func TestRun(t *testing.T) {
	target, _ := startTarget(t)
	u := startProxy(t, target, nil)
	good, bad := client(t, u, code), client(t, u, "wrong")
	current := make(chan *cloudproxy.Client, 1)
	current <- bad
	cloud := func() *cloudproxy.Client { c := <-current; current <- c; return c }
	p := health.NewProber(health.ProberConfig{Cloud: cloud, ProbeTarget: probeTarget, Resolver: fakeDNS{}, Interval: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	waitFor(t, p, func(r health.Result) bool { return r.ProxyRefused })
	<-current
	current <- good // the code was replaced: the next probes use the new client
	waitFor(t, p, func(r health.Result) bool { return r.OK() })
	cancel()
	<-done
}

// waitFor polls Last until ok holds; the test's own deadline bounds it.
func waitFor(t *testing.T, p *health.Prober, ok func(health.Result) bool) {
	t.Helper()
	for !ok(p.Last()) {
		time.Sleep(5 * time.Millisecond)
	}
}

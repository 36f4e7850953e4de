package health_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/bypass"
	"github.com/cloudsteer/cloudsteer/controlplane/health"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// wellInputs returns DiagnoseInputs under which every check passes: a real
// loopback cloud proxy accepting the code, real listening sockets, and
// hooks reporting a healthy dataplane.
func wellInputs(t *testing.T) health.DiagnoseInputs {
	t.Helper()
	target, _ := startTarget(t)
	proxy := startProxy(t, target, nil)
	tlsLn := listen(t)
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { udp.Close() })
	var entries []model.BypassEntry
	for _, d := range bypass.SystemDomains {
		entries = append(entries, model.BypassEntry{Value: d, Kind: model.BypassDomain, Enabled: true, System: true, Source: "system"})
	}
	entries = append(entries,
		model.BypassEntry{Value: "bank.example", Kind: model.BypassDomain, Enabled: true, Source: "api"},
		model.BypassEntry{Value: "192.0.2.0/24", Kind: model.BypassCIDR, Enabled: false, Source: "config"},
	)
	return health.DiagnoseInputs{
		Interfaces:   []string{"lan0", "lan1"},
		Attached:     func() []string { return []string{"lan1", "lan0"} },
		TablePresent: func() (bool, error) { return true, nil },
		Prober:       prober(client(t, proxy, code), fakeDNS{}),
		Components: map[string]func(context.Context) error{
			"tls proxy":          health.SocketCheck(tlsLn.(*net.TCPListener)),
			"dns resolver (udp)": health.SocketCheck(udp.(*net.UDPConn)),
		},
		BypassPrefixes: func() ([]netip.Prefix, error) {
			return []netip.Prefix{netip.MustParsePrefix("203.0.113.40/32"), netip.MustParsePrefix("2001:db8:113::40/128")}, nil
		},
		Code:   func() string { return code },
		Bypass: func() []model.BypassEntry { return entries },
	}
}

func TestDiagnosePasses(t *testing.T) {
	d := wellInputs(t)
	d.Now = func() time.Time { return now }
	rep := health.Diagnose(context.Background(), d)
	if !rep.OK {
		t.Errorf("quick test failed: %+v", rep.Checks)
	}
	if !rep.Time.Equal(now) {
		t.Errorf("report time %v, want %v", rep.Time, now)
	}
	want := []string{health.CheckInstall, health.CheckNetwork, health.CheckComponents, health.CheckSettings}
	if len(rep.Checks) != len(want) {
		t.Fatalf("%d checks, want %d", len(rep.Checks), len(want))
	}
	details := map[string][]string{
		health.CheckInstall:    {"lan0, lan1", "no policy routing"},
		health.CheckNetwork:    {"accepts the entitlement code", "cloud DNS answers"},
		health.CheckComponents: {"tls proxy", "2 entries"},
		health.CheckSettings:   {"3315…a8e3", "5 bypass entries (4 enabled)"},
	}
	for i, c := range rep.Checks {
		if c.Name != want[i] || !c.OK || c.Took <= 0 {
			t.Errorf("check %d = %+v, want %s passing with a duration", i, c, want[i])
		}
		for _, w := range details[c.Name] {
			if !strings.Contains(c.Detail, w) {
				t.Errorf("%s detail %q does not mention %q", c.Name, c.Detail, w)
			}
		}
	}
	if d.Prober.Last().Time.IsZero() {
		t.Error("the network check's fresh probe was not recorded for the status")
	}
}

func TestDiagnoseFails(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *testing.T, d *health.DiagnoseInputs)
		check  string
		detail string
	}{
		{"not attached on one interface", func(t *testing.T, d *health.DiagnoseInputs) {
			d.Attached = func() []string { return []string{"lan0"} }
		}, health.CheckInstall, "not attached on lan1"},
		{"no interfaces configured", func(t *testing.T, d *health.DiagnoseInputs) {
			d.Interfaces = nil
		}, health.CheckInstall, "no LAN interface"},
		{"nftables table missing", func(t *testing.T, d *health.DiagnoseInputs) {
			d.TablePresent = func() (bool, error) { return false, nil }
		}, health.CheckInstall, "nftables table missing"},
		{"nftables unreadable", func(t *testing.T, d *health.DiagnoseInputs) {
			d.TablePresent = func() (bool, error) { return false, errors.New("netlink: permission denied") }
		}, health.CheckInstall, "permission denied"},
		{"install hook hangs", func(t *testing.T, d *health.DiagnoseInputs) {
			release := make(chan struct{})
			t.Cleanup(func() { close(release) })
			d.Attached = func() []string { <-release; return nil }
			d.CheckTimeout = time.Second
		}, health.CheckInstall, "no result within"},
		{"proxy rejects the code", func(t *testing.T, d *health.DiagnoseInputs) {
			target, _ := startTarget(t)
			d.Prober = prober(client(t, startProxy(t, target, nil), "wrong"), fakeDNS{})
		}, health.CheckNetwork, "rejects the entitlement code (407)"},
		{"proxy closes the connection", func(t *testing.T, d *health.DiagnoseInputs) {
			d.Prober = prober(client(t, startCloser(t), code), fakeDNS{})
		}, health.CheckNetwork, "unreachable"},
		{"proxy port closed", func(t *testing.T, d *health.DiagnoseInputs) {
			d.Prober = prober(client(t, deadURL(t), code), fakeDNS{})
		}, health.CheckNetwork, "connection refused"},
		{"cloud dns failing", func(t *testing.T, d *health.DiagnoseInputs) {
			target, _ := startTarget(t)
			d.Prober = prober(client(t, startProxy(t, target, nil), code), fakeDNS{errors.New("all upstreams timed out")})
		}, health.CheckNetwork, "all upstreams timed out"},
		{"no prober", func(t *testing.T, d *health.DiagnoseInputs) {
			d.Prober = nil
		}, health.CheckNetwork, "no prober"},
		{"listener closed", func(t *testing.T, d *health.DiagnoseInputs) {
			ln := listen(t)
			ln.Close()
			d.Components["http proxy"] = health.SocketCheck(ln.(*net.TCPListener))
		}, health.CheckComponents, "http proxy: inspect socket"},
		{"tcp socket not listening", func(t *testing.T, d *health.DiagnoseInputs) {
			ln := listen(t)
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			d.Components["dns resolver (tcp)"] = health.SocketCheck(c.(*net.TCPConn))
		}, health.CheckComponents, "dns resolver (tcp): socket is not listening"},
		{"component reports failure", func(t *testing.T, d *health.DiagnoseInputs) {
			d.Components["resolver"] = func(context.Context) error { return errors.New("serve loop ended") }
		}, health.CheckComponents, "resolver: serve loop ended"},
		{"no components", func(t *testing.T, d *health.DiagnoseInputs) {
			d.Components = nil
		}, health.CheckComponents, "no components"},
		{"bypass map unreadable", func(t *testing.T, d *health.DiagnoseInputs) {
			d.BypassPrefixes = func() ([]netip.Prefix, error) { return nil, errors.New("map closed") }
		}, health.CheckComponents, "read bypass map: map closed"},
		{"no code", func(t *testing.T, d *health.DiagnoseInputs) {
			d.Code = func() string { return "" }
		}, health.CheckSettings, "no entitlement code"},
		{"code malformed", func(t *testing.T, d *health.DiagnoseInputs) {
			d.Code = func() string { return "3315471d-b831-48ed-a621-17042a74a8eZ" }
		}, health.CheckSettings, "not well-formed"},
		{"bypass everything", func(t *testing.T, d *health.DiagnoseInputs) {
			addBypass(d, model.BypassEntry{Value: "0.0.0.0/0", Kind: model.BypassCIDR, Enabled: true})
		}, health.CheckSettings, "bypass everything"},
		{"bypass everything v6", func(t *testing.T, d *health.DiagnoseInputs) {
			addBypass(d, model.BypassEntry{Value: "::/0", Kind: model.BypassCIDR, Enabled: true})
		}, health.CheckSettings, "bypass everything"},
		{"invalid domain", func(t *testing.T, d *health.DiagnoseInputs) {
			addBypass(d, model.BypassEntry{Value: "*.com", Kind: model.BypassDomain, Enabled: true})
		}, health.CheckSettings, "wildcard needs at least two labels"},
		{"unknown kind", func(t *testing.T, d *health.DiagnoseInputs) {
			addBypass(d, model.BypassEntry{Value: "x", Kind: "regex", Enabled: true})
		}, health.CheckSettings, "unknown kind"},
		{"system entry missing", func(t *testing.T, d *health.DiagnoseInputs) {
			entries := d.Bypass()[1:]
			d.Bypass = func() []model.BypassEntry { return entries }
		}, health.CheckSettings, "system bypass " + bypass.SystemDomains[0] + " missing"},
		{"system entry disabled", func(t *testing.T, d *health.DiagnoseInputs) {
			entries := slices.Clone(d.Bypass())
			entries[2].Enabled = false
			d.Bypass = func() []model.BypassEntry { return entries }
		}, health.CheckSettings, "system bypass " + bypass.SystemDomains[2] + " disabled"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := wellInputs(t)
			tc.change(t, &d)
			rep := health.Diagnose(context.Background(), d)
			if rep.OK {
				t.Error("report OK despite a failing check")
			}
			for _, c := range rep.Checks {
				if c.Name != tc.check {
					if !c.OK {
						t.Errorf("%s failed too: %s", c.Name, c.Detail)
					}
					continue
				}
				if c.OK {
					t.Errorf("%s passed: %s", c.Name, c.Detail)
				}
				if !strings.Contains(c.Detail, tc.detail) {
					t.Errorf("%s detail %q does not mention %q", c.Name, c.Detail, tc.detail)
				}
			}
		})
	}
}

// addBypass adds e to the bypass list d reports.
func addBypass(d *health.DiagnoseInputs, e model.BypassEntry) {
	entries := append(slices.Clone(d.Bypass()), e)
	d.Bypass = func() []model.BypassEntry { return entries }
}

// TestDiagnoseBudget checks that a check stuck past the whole budget still
// yields a report with every check, the stuck one failed.
func TestDiagnoseBudget(t *testing.T) {
	d := wellInputs(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	d.Components = map[string]func(context.Context) error{"stuck": func(context.Context) error { <-release; return nil }}
	d.Budget = time.Second
	rep := health.Diagnose(context.Background(), d)
	if rep.OK || len(rep.Checks) != 4 {
		t.Fatalf("report %+v, want 4 checks and not OK", rep)
	}
	for _, c := range rep.Checks {
		if (c.Name == health.CheckComponents) == c.OK {
			t.Errorf("check %+v: only components should fail", c)
		}
	}
}

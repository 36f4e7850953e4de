package health_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/health"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// healthy returns Inputs with nothing wrong.
func healthy() health.Inputs {
	return health.Inputs{
		HasCode:      true,
		Now:          now,
		Interfaces:   []string{"lan0", "lan1"},
		Attached:     []string{"lan0", "lan1"},
		TablePresent: true,
		Probe:        health.Result{Time: now.Add(-10 * time.Second)},
	}
}

func TestReasonsAndState(t *testing.T) {
	tests := []struct {
		name   string
		change func(*health.Inputs)
		codes  []string
		state  model.Protection
		// words must appear in the message of the first reason
		words []string
	}{
		{"all well", func(*health.Inputs) {}, nil, model.Protected, nil},
		{"no code", func(in *health.Inputs) { in.HasCode = false },
			[]string{model.ReasonNoCode}, model.NotProtected, []string{"activate"}},
		{"no code and proxy 407 lists the code only", func(in *health.Inputs) {
			in.HasCode = false
			in.Probe.ProxyErr, in.Probe.ProxyRefused = errors.New("407"), true
		}, []string{model.ReasonNoCode}, model.NotProtected, nil},
		{"one interface not attached", func(in *health.Inputs) { in.Attached = []string{"lan0"} },
			[]string{model.ReasonNotAttached}, model.NotProtected, []string{"lan1"}},
		{"attached nowhere", func(in *health.Inputs) { in.Attached = nil },
			[]string{model.ReasonNotAttached, model.ReasonNotAttached}, model.NotProtected, []string{"lan0"}},
		{"no interfaces at all", func(in *health.Inputs) { in.Interfaces, in.Attached = nil, nil },
			[]string{model.ReasonNotAttached}, model.NotProtected, []string{"any LAN interface"}},
		{"table missing", func(in *health.Inputs) { in.TablePresent = false },
			[]string{model.ReasonNoFirewallTable}, model.NotProtected, []string{"nftables"}},
		{"another firewall drops the redirects", func(in *health.Inputs) {
			in.FirewallBlock = "dropped by inet filter input; nft add rule inet filter input ct status dnat accept"
		}, []string{model.ReasonFirewallBlocks}, model.NotProtected, []string{"nft add rule inet filter input ct status dnat accept"}},
		{"proxy unreachable", func(in *health.Inputs) { in.Probe.ProxyErr = errors.New("dial cloud proxy: connection refused") },
			[]string{model.ReasonProxyUnreachable}, model.NotProtected, []string{"connection refused"}},
		{"proxy refuses code", func(in *health.Inputs) {
			in.Probe.ProxyErr, in.Probe.ProxyRefused = errors.New("407"), true
		}, []string{model.ReasonProxyRefusesCode}, model.NotProtected, []string{"407"}},
		{"dns failing is listed but not blocking", func(in *health.Inputs) { in.Probe.DNSErr = errors.New("cloud dns: timeout") },
			[]string{model.ReasonDNSFailing}, model.Protected, []string{"timeout"}},
		{"QUIC by name unavailable is listed but not blocking", func(in *health.Inputs) {
			in.QUICGateOff = "the kernel has neither nft_queue nor the xtables NFQUEUE target"
		}, []string{model.ReasonQUICByNameUnavailable}, model.Protected, []string{"nft_queue", "bypass map", "fall back to TCP"}},
		{"not probed yet is listed but not blocking", func(in *health.Inputs) { in.Probe = health.Result{} },
			[]string{model.ReasonHealthNotYetProbed}, model.Protected, []string{"not been checked"}},
		{"on a backup is listed but not blocking", func(in *health.Inputs) {
			in.Cloud = []model.CloudProxyState{{URL: "http://p1:8080", Error: "connection refused"}, {URL: "http://p2:8080", Healthy: true, Active: true}}
		}, []string{model.ReasonProxyOnBackup}, model.Protected, []string{"http://p1:8080", "connection refused", "http://p2:8080"}},
		{"every proxy down, open: blocking, no unreachable twice", func(in *health.Inputs) {
			in.FailureMode = "open"
			in.Cloud = []model.CloudProxyState{{URL: "http://p1:8080", Error: "i/o timeout"}, {URL: "http://p2:8080"}}
			in.Probe.ProxyErr = errors.New("no cloud proxy is healthy")
		}, []string{model.ReasonProxyFailedOpen}, model.NotProtected, []string{"direct", "i/o timeout"}},
		{"every proxy down, closed: listed, not blocking", func(in *health.Inputs) {
			in.FailureMode = "closed"
			in.Cloud = []model.CloudProxyState{{URL: "http://p1:8080", Error: "i/o timeout"}}
			in.Probe.ProxyErr = errors.New("no cloud proxy is healthy")
		}, []string{model.ReasonProxyFailedClosed}, model.Protected, []string{"bypass"}},
		{"every proxy refusing the code: failed open and refuses code", func(in *health.Inputs) {
			in.FailureMode = "open"
			in.Cloud = []model.CloudProxyState{{URL: "http://p1:8080", Error: "407"}}
			in.Probe.ProxyErr, in.Probe.ProxyRefused = errors.New("407"), true
		}, []string{model.ReasonProxyFailedOpen, model.ReasonProxyRefusesCode}, model.NotProtected, nil},
		{"primary healthy, backup down: nothing to say", func(in *health.Inputs) {
			in.Cloud = []model.CloudProxyState{{URL: "http://p1:8080", Healthy: true, Active: true}, {URL: "http://p2:8080"}}
		}, nil, model.Protected, nil},
		{"paused until a time", func(in *health.Inputs) {
			in.Paused = model.PauseState{Paused: true, Since: now.Add(-time.Minute), Until: now.Add(time.Hour)}
		}, []string{model.ReasonPaused}, model.Paused, []string{now.Add(time.Hour).Format(time.RFC3339)}},
		{"paused until resumed", func(in *health.Inputs) { in.Paused = model.PauseState{Paused: true} },
			[]string{model.ReasonPaused}, model.Paused, []string{"until resumed"}},
		{"expired pause is no reason", func(in *health.Inputs) {
			in.Paused = model.PauseState{Paused: true, Until: now.Add(-time.Second)}
		}, nil, model.Protected, nil},
		{"paused wins over blocking reasons, which are still listed", func(in *health.Inputs) {
			in.Paused = model.PauseState{Paused: true}
			in.TablePresent = false
			in.Probe.ProxyErr = errors.New("timeout")
		}, []string{model.ReasonPaused, model.ReasonNoFirewallTable, model.ReasonProxyUnreachable}, model.Paused, nil},
		{"several at once in a fixed order", func(in *health.Inputs) {
			in.HasCode = false
			in.Attached = []string{"lan1"}
			in.TablePresent = false
			in.Probe.ProxyErr = errors.New("timeout")
			in.Probe.DNSErr = errors.New("servfail")
		}, []string{model.ReasonNoCode, model.ReasonNotAttached, model.ReasonNoFirewallTable, model.ReasonProxyUnreachable, model.ReasonDNSFailing},
			model.NotProtected, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := healthy()
			tc.change(&in)
			rs := health.Reasons(in)
			var codes []string
			for _, r := range rs {
				codes = append(codes, r.Code)
				if r.Message == "" {
					t.Errorf("reason %s has no message", r.Code)
				}
			}
			if !slices.Equal(codes, tc.codes) {
				t.Errorf("reason codes = %q, want %q", codes, tc.codes)
			}
			for _, w := range tc.words {
				if len(rs) == 0 || !strings.Contains(rs[0].Message, w) {
					t.Errorf("first reason %+v does not mention %q", rs, w)
				}
			}
			if got := health.State(in); got != tc.state {
				t.Errorf("State = %s, want %s", got, tc.state)
			}
			st := health.Status(in)
			if st.State != tc.state || len(st.Reasons) != len(rs) || st.Reasons == nil {
				t.Errorf("Status = %+v, want state %s and the %d reasons", st, tc.state, len(rs))
			}
			if in.Paused.ActiveAt(now) != !st.PauseUntil.IsZero() && !in.Paused.Until.IsZero() {
				t.Errorf("Status.PauseUntil = %v with pause %+v", st.PauseUntil, in.Paused)
			}
			if !st.CheckedAt.Equal(in.Probe.Time) {
				t.Errorf("Status.CheckedAt = %v, want %v", st.CheckedAt, in.Probe.Time)
			}
		})
	}
}

func TestBlocking(t *testing.T) {
	blocking := map[string]bool{
		model.ReasonNoCode:                true,
		model.ReasonProxyUnreachable:      true,
		model.ReasonProxyRefusesCode:      true,
		model.ReasonNotAttached:           true,
		model.ReasonNoFirewallTable:       true,
		model.ReasonFirewallBlocks:        true,
		model.ReasonDNSFailing:            false,
		model.ReasonPaused:                false,
		model.ReasonHealthNotYetProbed:    false,
		model.ReasonQUICByNameUnavailable: false,
		"something_new":                   false,
	}
	for code, want := range blocking {
		if got := health.Blocking(code); got != want {
			t.Errorf("Blocking(%q) = %v, want %v", code, got, want)
		}
	}
}

package daemon

import (
	"strings"
	"testing"

	"github.com/cloudsteer/cloudsteer/controlplane/config"
)

func capsConfig(t *testing.T, consoleOn bool) *config.Config {
	t.Helper()
	cfg := &config.Config{}
	cfg.Listen.HTTPPort, cfg.Listen.TLSPort, cfg.Listen.DNSPort = 15080, 15443, 15053
	cfg.Admin.Port = 9080
	cfg.Console.Enabled = &consoleOn
	cfg.Console.Port = 443
	return cfg
}

func TestNeededCaps(t *testing.T) {
	names := func(cs []neededCap) string {
		var out []string
		for _, c := range cs {
			out = append(out, c.name)
		}
		return strings.Join(out, " ")
	}
	if got := names(neededCaps(capsConfig(t, true), 1024)); got != "CAP_NET_ADMIN CAP_BPF CAP_PERFMON CAP_NET_BIND_SERVICE" {
		t.Fatalf("console on 443/80: %s", got)
	}
	if got := names(neededCaps(capsConfig(t, false), 1024)); got != "CAP_NET_ADMIN CAP_BPF CAP_PERFMON" {
		t.Fatalf("console off, high ports: %s", got)
	}
	// A lowered ip_unprivileged_port_start makes 443 unprivileged.
	if got := names(neededCaps(capsConfig(t, true), 80)); got != "CAP_NET_ADMIN CAP_BPF CAP_PERFMON" {
		t.Fatalf("unprivileged ports from 80: %s", got)
	}
	cfg := capsConfig(t, false)
	cfg.Listen.DNSPort = 53
	need := neededCaps(cfg, 1024)
	if names(need) != "CAP_NET_ADMIN CAP_BPF CAP_PERFMON CAP_NET_BIND_SERVICE" || !strings.Contains(need[3].why, "listen.dns_port 53") {
		t.Fatalf("dns_port 53: %+v", need)
	}
}

func TestMissingCaps(t *testing.T) {
	need := neededCaps(capsConfig(t, true), 1024)
	all := uint64(1)<<capNetAdmin | 1<<capBPF | 1<<capPerfmon | 1<<capNetBindService
	if err := missingCaps(need, all, 998); err != nil {
		t.Fatalf("all present: %v", err)
	}
	err := missingCaps(need, all&^(1<<capBPF), 998)
	if err == nil || !strings.Contains(err.Error(), "CAP_BPF (") || strings.Contains(err.Error(), "CAP_NET_ADMIN") || !strings.Contains(err.Error(), "uid 998") {
		t.Fatalf("without CAP_BPF: %v", err)
	}
	err = missingCaps(need, 0, 998)
	for _, c := range []string{"CAP_NET_ADMIN", "CAP_BPF", "CAP_PERFMON", "CAP_NET_BIND_SERVICE (ports below 1024: console.port 443, console.http_port 80)"} {
		if err == nil || !strings.Contains(err.Error(), c) {
			t.Fatalf("none present: %v lacks %s", err, c)
		}
	}
}

package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const good = `
lan_interfaces: [lan0]
cloud_proxy:
  url: http://198.51.100.10:8080
  entitlement_code: 3315471D-b831-48ed-a621-17042a74a8e3
dns:
  upstreams: ["198.51.100.53", "[2001:db8:51::53]:5353"]
bypass:
  domains: [bank.example, "*.corp.example", ".bücher.example"]
  cidrs: [192.0.2.0/24, "2001:db8:2::1"]
`

func TestParseGood(t *testing.T) {
	c, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen.TLSPort != DefaultTLSPort || c.Listen.HTTPPort != DefaultHTTPPort || c.Listen.DNSPort != DefaultDNSPort {
		t.Errorf("default ports not set: %+v", c.Listen)
	}
	if c.DNS.Timeout.D() != DefaultDNSTimeout || c.CloudProxy.ConnectTimeout.D() != 5*time.Second {
		t.Errorf("default timeouts not set")
	}
	if c.CloudProxy.WarmConnections == nil || *c.CloudProxy.WarmConnections != DefaultWarmConnections || c.CloudProxy.WarmMaxAge.D() != DefaultWarmMaxAge {
		t.Errorf("default warm pool not set: %v %v", c.CloudProxy.WarmConnections, c.CloudProxy.WarmMaxAge)
	}
	if c.DNS.KernelCache == nil || !*c.DNS.KernelCache {
		t.Errorf("dns.kernel_cache not on by default")
	}
	if c.Firewall.UntrackUnsteered == nil || !*c.Firewall.UntrackUnsteered {
		t.Errorf("firewall.untrack_unsteered not on by default")
	}
	if c.Firewall.FastPath == nil || !*c.Firewall.FastPath || len(c.Firewall.WANInterfaces) != 0 {
		t.Errorf("firewall.fast_path not on by default, or WAN interfaces set: %+v", c.Firewall)
	}
	if c.Dataplane.Attach != "auto" {
		t.Errorf("dataplane.attach = %q, want auto by default", c.Dataplane.Attach)
	}
	for _, m := range []string{"auto", "tcx", "legacy"} {
		if c, err := Parse([]byte(good + "dataplane:\n  attach: " + m + "\n")); err != nil || c.Dataplane.Attach != m {
			t.Errorf("dataplane.attach: %s parsed as %v, %v", m, c, err)
		}
	}
	tracked, err := Parse([]byte(good + "firewall:\n  untrack_unsteered: false\n"))
	if err != nil {
		t.Fatal(err)
	}
	if *tracked.Firewall.UntrackUnsteered {
		t.Errorf("firewall.untrack_unsteered: false parsed as on")
	}
	off, err := Parse([]byte(strings.Replace(good, "entitlement_code:", "warm_connections: 0\n  entitlement_code:", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if *off.CloudProxy.WarmConnections != 0 {
		t.Errorf("warm_connections: 0 read as %d", *off.CloudProxy.WarmConnections)
	}
	ups := c.DNS.UpstreamNames()
	if len(ups) != 2 || ups[0] != "198.51.100.53:53" || ups[1] != "[2001:db8:51::53]:5353" {
		t.Errorf("upstreams = %v", ups)
	}
	if got := strings.Join(c.Bypass.DomainPatterns(), ","); got != "bank.example,*.corp.example,.xn--bcher-kva.example" {
		t.Errorf("domains = %s", got)
	}
	if got := c.Bypass.Prefixes(); len(got) != 2 || got[1].String() != "2001:db8:2::1/128" {
		t.Errorf("prefixes = %v", got)
	}
	u, p := c.CloudProxy.Credentials()
	if u != "3315471d-b831-48ed-a621-17042a74a8e3" || p != "" {
		t.Errorf("credentials = %q %q", u, p)
	}
}

func TestParseBad(t *testing.T) {
	tests := []struct {
		name, doc, key string
	}{
		{"empty file", ``, "(file)"},
		{"unknown key", good + "\nbogus: 1\n", "(file)"},
		{"no interfaces", strings.Replace(good, "lan_interfaces: [lan0]", "", 1), "lan_interfaces"},
		{"duplicate interface", strings.Replace(good, "[lan0]", "[lan0, lan0]", 1), "lan_interfaces[1]"},
		{"bad interface", strings.Replace(good, "[lan0]", "[\"lan 0\"]", 1), "lan_interfaces[0]"},
		{"no proxy url", strings.Replace(good, "url: http://198.51.100.10:8080", "", 1), "cloud_proxy.url"},
		{"socks url", strings.Replace(good, "http://198", "socks5://198", 1), "cloud_proxy.url"},
		{"url with credentials", strings.Replace(good, "http://198", "http://u:p@198", 1), "cloud_proxy.url"},
		{"url with path", strings.Replace(good, ":8080", ":8080/x", 1), "cloud_proxy.url"},
		{"bad port", strings.Replace(good, ":8080", ":99999", 1), "cloud_proxy.url"},
		{"code not uuid", strings.Replace(good, "3315471D-b831", "3315471D-b83", 1), "cloud_proxy.entitlement_code"},
		{"relative state dir", good + "state_dir: state\n", "state_dir"},
		{"admin port clash", good + "admin:\n  port: 15053\n", "admin.port"},
		{"bad probe target", good + "health:\n  probe_target: www.akamai.com\n", "health.probe_target"},
		{"negative warm pool", strings.Replace(good, "entitlement_code:", "warm_connections: -1\n  entitlement_code:", 1), "cloud_proxy.warm_connections"},
		{"huge warm pool", strings.Replace(good, "entitlement_code:", "warm_connections: 5000\n  entitlement_code:", 1), "cloud_proxy.warm_connections"},
		{"user without password", strings.Replace(good, "entitlement_code:", "username: branch\n  entitlement_code:", 1), "cloud_proxy.password"},
		{"ca file for http", strings.Replace(good, "entitlement_code:", "ca_file: /etc/hostname\n  entitlement_code:", 1), "cloud_proxy.ca_file"},
		{"no dns", strings.Replace(good, `upstreams: ["198.51.100.53", "[2001:db8:51::53]:5353"]`, "timeout: 1s", 1), "dns.upstreams"},
		{"dns name", strings.Replace(good, `"198.51.100.53"`, `"dns.example"`, 1), "dns.upstreams[0]"},
		{"bad timeout", strings.Replace(good, "dns:", "dns:\n  timeout: soon", 1), "(file)"},
		{"bad domain", strings.Replace(good, "bank.example", "a.*.example", 1), "bypass.domains[0]"},
		{"everything bypass", strings.Replace(good, "192.0.2.0/24", "0.0.0.0/0", 1), "bypass.cidrs[0]"},
		{"duplicate ports", good + "listen:\n  http_port: 15443\n", "listen.tls_port"},
		{"tiny header cap", good + "proxy:\n  max_header_bytes: 10\n", "proxy.max_header_bytes"},
		{"log level", good + "log:\n  level: loud\n", "log.level"},
		{"wan is lan", good + "firewall:\n  wan_interfaces: [lan0]\n", "firewall.wan_interfaces[0]"},
		{"wan is lo", good + "firewall:\n  wan_interfaces: [wan0, lo]\n", "firewall.wan_interfaces[1]"},
		{"wan twice", good + "firewall:\n  wan_interfaces: [wan0, wan0]\n", "firewall.wan_interfaces[1]"},
		{"two halves of IPv4", strings.Replace(good, "192.0.2.0/24", "0.0.0.0/1, 128.0.0.0/1", 1), "bypass.cidrs"},
		{"a /7", strings.Replace(good, "192.0.2.0/24", "10.0.0.0/7", 1), "bypass.cidrs"},
		{"two /8s", strings.Replace(good, "192.0.2.0/24", "10.0.0.0/8, 11.0.0.0/8", 1), "bypass.cidrs"},
		{"a v6 /16 and more", strings.Replace(good, "192.0.2.0/24", "\"2a00::/16\"", 1), "bypass.cidrs"},
		{"bad admin hostname", good + "admin:\n  hostnames: [\"gw lan\"]\n", "admin.hostnames[0]"},
		{"attach mode", good + "dataplane:\n  attach: clsact\n", "dataplane.attach"},
		{"pprof off loopback", good + "debug:\n  pprof_listen: 0.0.0.0:6060\n", "debug.pprof_listen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("Parse: err = %v, want *config.Error", err)
			}
			if ce.Key != tt.key {
				t.Fatalf("error key = %q (%v), want %q", ce.Key, err, tt.key)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
			if strings.Contains(err.Error(), "3315471") {
				t.Fatalf("error leaks the entitlement code: %q", err)
			}
		})
	}
}

func TestCodeOptional(t *testing.T) {
	// A gateway may start without a code and be activated later.
	c, err := Parse([]byte(strings.Replace(good, "entitlement_code: 3315471D-b831-48ed-a621-17042a74a8e3", "", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if u, _ := c.CloudProxy.Credentials(); u != "" || c.HasSecrets() {
		t.Fatalf("credentials without a code: %q", u)
	}
	if c.StateDir != DefaultStateDir || c.Admin.Port != DefaultAdminPort || c.Admin.Socket != DefaultAdminSocket {
		t.Fatalf("admin defaults: %+v %s", c.Admin, c.StateDir)
	}
}

func TestUnknownKeyNamesLine(t *testing.T) {
	_, err := Parse([]byte(good + "\nlisten:\n  tls_prot: 1\n"))
	if err == nil || !strings.Contains(err.Error(), `unknown key "tls_prot"`) || !strings.Contains(err.Error(), "line") {
		t.Fatalf("err = %v", err)
	}
}

func TestLoadRefusesReadableSecrets(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(p, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("Load of a 0644 file with a secret: err = %v", err)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err != nil {
		t.Fatalf("Load 0600: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Fatal("Load of a missing file succeeded")
	}
}

func TestBroadBypass(t *testing.T) {
	for _, tc := range []struct {
		cidrs string
		broad bool
	}{
		{"10.0.0.0/8", false},
		{"10.0.0.0/8 10.1.0.0/16 10.2.3.4/32", false}, // nested: still one /8
		{"10.0.0.0/8 11.0.0.0/9", true},
		{"10.0.0.0/9 10.128.0.0/9", false},
		{"10.0.0.0/9 10.128.0.0/9 11.0.0.1/32", true},
		{"0.0.0.0/1 128.0.0.0/1", true},
		{"2a00::/16", false},
		{"2a00::/16 2a01::1/128", true},
		{"2a00::/17 2a00:8000::/17", false},
		{"::ffff:10.0.0.0/104", false},
		{"::ffff:10.0.0.0/104 11.0.0.0/32", true},
		{"10.0.0.0/8 2a00::/16", false}, // counted per family
	} {
		var ps []netip.Prefix
		for _, f := range strings.Fields(tc.cidrs) {
			ps = append(ps, netip.MustParsePrefix(f))
		}
		if got := BroadBypass(ps) != ""; got != tc.broad {
			t.Errorf("%s: broad = %v (%q), want %v", tc.cidrs, got, BroadBypass(ps), tc.broad)
		}
	}
	doc := strings.Replace(good, "192.0.2.0/24", "10.0.0.0/8, 11.0.0.0/8", 1)
	if _, err := Parse([]byte(doc)); !strings.Contains(fmt.Sprint(err), "bypass.allow_broad_cidrs") {
		t.Errorf("two /8s: error does not name the key: %v", err)
	}
	if _, err := Parse([]byte(strings.Replace(doc, "bypass:", "bypass:\n  allow_broad_cidrs: true", 1))); err != nil {
		t.Errorf("two /8s with allow_broad_cidrs: %v", err)
	}
}

func TestQUICByName(t *testing.T) {
	c, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	// On by default (issue 13 §3: bypass sites keep HTTP/3 by name).
	if c.Firewall.QUICByName == nil || !*c.Firewall.QUICByName || c.Firewall.QUICQueue != DefaultQUICQueue {
		t.Fatalf("defaults: quic_by_name %v, quic_queue %d", c.Firewall.QUICByName, c.Firewall.QUICQueue)
	}
	c, err = Parse([]byte(good + "firewall:\n  quic_by_name: false\n  quic_queue: 77\n"))
	if err != nil || *c.Firewall.QUICByName || c.Firewall.QUICQueue != 77 {
		t.Fatalf("set: %+v, %v", c.Firewall, err)
	}
}

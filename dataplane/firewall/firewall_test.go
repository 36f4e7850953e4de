package firewall

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

// Marks as docs/design.md lists them (bpf/steer.c is their source).
var testMarks = Marks{HTTP: 0x0c570002, TLS: 0x0c570003, DNS: 0x0c570004, QUIC: 0x0c570005, Untrack: 0x0c570006}

// childEnv makes the test binary act as a process that installs the table
// and then waits to be killed (TestOwnerTableDiesWithProcess).
const childEnv = "CLOUDSTEER_FIREWALL_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(runChild())
	}
	os.Exit(m.Run())
}

// runChild installs the table in its own network namespace, says
// "ready PID" on stdout and blocks until it is killed.
func runChild() int {
	if _, err := New(context.Background(), testConfig()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("ready %d\n", os.Getpid())
	select {}
}

func testConfig() Config {
	return Config{
		LANInterfaces: []string{"lan0"},
		Marks:         testMarks,
		HTTPPort:      15080,
		TLSPort:       15443,
		DNSPort:       53,
		GuardTCPPorts: []uint16{15000},
	}
}

// newTable installs cfg's table in namespace ns and closes it when the
// test ends.
func newTable(tb testing.TB, ns string, cfg Config) *Table {
	tb.Helper()
	var tab *Table
	if err := privtest.Do(ns, func() (err error) {
		tab, err = New(context.Background(), cfg)
		return err
	}); err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() {
		if err := tab.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return tab
}

// tableNames lists `nft list tables` inside ns.
func tableNames(tb testing.TB, ns string) []string {
	tb.Helper()
	out := privtest.Run(tb, ns, "nft", "list", "tables")
	return strings.Fields(strings.ReplaceAll(out, "table", ""))
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want []string // substrings of the error; none: valid
	}{
		{name: "valid", edit: func(*Config) {}},
		{name: "valid two LANs no guard ports", edit: func(c *Config) {
			c.LANInterfaces = []string{"lan0", "lan1"}
			c.GuardTCPPorts = nil
		}},
		{name: "no LAN interface", edit: func(c *Config) { c.LANInterfaces = nil }, want: []string{"no LAN interface"}},
		{name: "empty interface name", edit: func(c *Config) { c.LANInterfaces = []string{""} }, want: []string{"empty name"}},
		{name: "interface name too long", edit: func(c *Config) { c.LANInterfaces = []string{"abcdefghijklmnop"} }, want: []string{"longer than 15 bytes"}},
		{name: "interface name with slash", edit: func(c *Config) { c.LANInterfaces = []string{"lan/0"} }, want: []string{"not a valid interface name"}},
		{name: "lo listed", edit: func(c *Config) { c.LANInterfaces = []string{"lan0", "lo"} }, want: []string{"lo is always allowed"}},
		{name: "duplicate interface", edit: func(c *Config) { c.LANInterfaces = []string{"lan0", "lan0"} }, want: []string{`"lan0" listed twice`}},
		{name: "http port 0", edit: func(c *Config) { c.HTTPPort = 0 }, want: []string{"HTTPPort is 0"}},
		{name: "dns port 0", edit: func(c *Config) { c.DNSPort = 0 }, want: []string{"DNSPort is 0"}},
		{name: "guard port 0", edit: func(c *Config) { c.GuardTCPPorts = []uint16{0} }, want: []string{"GuardTCPPorts[0] is 0"}},
		{name: "http equals tls", edit: func(c *Config) { c.TLSPort = c.HTTPPort }, want: []string{"TCP port 15080 used twice (HTTPPort and TLSPort)"}},
		{name: "guard equals dns", edit: func(c *Config) { c.GuardTCPPorts = []uint16{15000, 53} }, want: []string{"TCP port 53 used twice (DNSPort and GuardTCPPorts[1])"}},
		{name: "guard twice", edit: func(c *Config) { c.GuardTCPPorts = []uint16{15000, 15000} }, want: []string{"(GuardTCPPorts[0] and GuardTCPPorts[1])"}},
		{name: "mark 0", edit: func(c *Config) { c.Marks.QUIC = 0 }, want: []string{"mark QUIC is 0"}},
		{name: "marks equal", edit: func(c *Config) { c.Marks.TLS = c.Marks.HTTP }, want: []string{"marks HTTP and TLS are both 0x0c570002"}},
		{name: "table name too long", edit: func(c *Config) { c.TableName = strings.Repeat("x", 256) }, want: []string{"table name longer than 255 bytes"}},
		{name: "several problems, one line each", edit: func(c *Config) {
			c.LANInterfaces = nil
			c.HTTPPort = 0
			c.TLSPort = c.DNSPort
		}, want: []string{"no LAN interface: need at least one\n", "HTTPPort is 0\n", "TCP port 53 used twice (TLSPort and DNSPort)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.TableName = DefaultTableName
			tt.edit(&cfg)
			err := cfg.validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("validate: %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("validate: nil, want error with %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestNewBadConfigCreatesNothing(t *testing.T) {
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "nft", "ip")
	ns := privtest.NewNetNS(t)
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no LAN interface", func(c *Config) { c.LANInterfaces = nil }, "no LAN interface"},
		{"port 0", func(c *Config) { c.TLSPort = 0 }, "TLSPort is 0"},
		{"duplicate ports", func(c *Config) { c.GuardTCPPorts = []uint16{c.HTTPPort} }, "used twice"},
		{"mark 0", func(c *Config) { c.Marks.DNS = 0 }, "mark DNS is 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			tt.edit(&cfg)
			err := privtest.Do(ns, func() error {
				tab, err := New(context.Background(), cfg)
				if err == nil {
					tab.Close()
				}
				return err
			})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v, want error with %q", err, tt.want)
			}
			if got := tableNames(t, ns); len(got) != 0 {
				t.Fatalf("tables after failed New: %v, want none", got)
			}
		})
	}
}

func TestRulesPresentThenGone(t *testing.T) {
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "nft", "ip")
	ns := privtest.NewNetNS(t)
	cfg := testConfig()
	cfg.LANInterfaces = []string{"lan0", "lan1"}
	cfg.GuardTCPPorts = []uint16{15000, 15001}
	tab := newTable(t, ns, cfg)

	if ok, err := tab.Present(); err != nil || !ok {
		t.Fatalf("Present = %v, %v; want true", ok, err)
	}
	if tab.Replaced() {
		t.Error("Replaced() = true in a fresh namespace")
	}
	// nft 1.0.6's JSON prints table flags wrongly; the text form is right.
	if text := privtest.Run(t, ns, "nft", "list", "table", "inet", "cloudsteer"); !strings.Contains(text, "flags owner") {
		t.Errorf("table lacks the owner flag:\n%s", text)
	}

	l, ok := listTable(t, ns, "cloudsteer")
	if !ok {
		t.Fatal("table inet cloudsteer not found")
	}
	wantChains := map[string]chainInfo{
		"prerouting":  {Type: "nat", Hook: "prerouting", Prio: -100, Policy: "accept"},
		"forward":     {Type: "filter", Hook: "forward", Prio: 0, Policy: "accept"},
		"input":       {Type: "filter", Hook: "input", Prio: 0, Policy: "accept"},
		"reach":       {Type: "filter", Hook: "input", Prio: 2147483646, Policy: "accept"},
		"reach_first": {Type: "filter", Hook: "input", Prio: -2147483647, Policy: "accept"},
	}
	if diff := cmp.Diff(wantChains, l.chains); diff != "" {
		t.Errorf("chains (-want +got):\n%s", diff)
	}
	wantSets := map[string]setInfo{"listener_ifaces": {Type: "ifname", Elems: []string{"lan0", "lan1", "lo"}}}
	if diff := cmp.Diff(wantSets, l.sets); diff != "" {
		t.Errorf("sets (-want +got):\n%s", diff)
	}
	wantRules := map[string][]string{
		"prerouting": {
			"meta mark == 0x0c570004 meta l4proto == udp counter redirect :53",
			"meta mark == 0x0c570004 meta l4proto == tcp counter redirect :53",
			"meta mark == 0x0c570002 fib [daddr] type == local counter return",
			"meta mark == 0x0c570002 tcp flags & [syn ack] == syn counter redirect :15080",
			"meta mark == 0x0c570003 fib [daddr] type == local counter return",
			"meta mark == 0x0c570003 tcp flags & [syn ack] == syn counter redirect :15443",
		},
		"forward": {
			"meta mark == 0x0c570005 meta l4proto == udp ct state in new counter reject icmpx port-unreachable",
		},
		"input": {
			"tcp dport == {15000,15001,15080,15443,53} meta iifname != @listener_ifaces counter drop",
			"udp dport == 53 meta iifname != @listener_ifaces counter drop",
			"tcp dport == {15080,15443,53} ct status in dnat counter accept",
			"udp dport == 53 ct status in dnat counter accept",
			"tcp dport == 53 meta mark == 0x0c570004 counter accept",
			"udp dport == 53 meta mark == 0x0c570004 counter accept",
			"tcp dport == {15080,15443,53} counter drop",
			"udp dport == 53 counter drop",
		},
		"reach":       reachRules,
		"reach_first": reachRules,
	}
	for chain, want := range wantRules {
		if diff := cmp.Diff(want, l.ruleTexts(chain)); diff != "" {
			t.Errorf("chain %s rules (-want +got):\n%s", chain, diff)
		}
	}

	if err := tab.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, ok := listTable(t, ns, "cloudsteer"); ok {
		t.Error("table still listed after Close")
	}
	if got := tableNames(t, ns); len(got) != 0 {
		t.Errorf("tables after Close: %v, want none", got)
	}
	if ok, err := tab.Present(); err != nil || ok {
		t.Errorf("Present after Close = %v, %v; want false", ok, err)
	}
	if err := tab.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestCustomTableName(t *testing.T) {
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "nft", "ip")
	ns := privtest.NewNetNS(t)
	cfg := testConfig()
	cfg.TableName = "cs_test"
	tab := newTable(t, ns, cfg)
	if got := tableNames(t, ns); !cmp.Equal(got, []string{"inet", "cs_test"}) {
		t.Fatalf("tables = %v, want [inet cs_test]", got)
	}
	if tab.Name() != "cs_test" {
		t.Errorf("Name() = %q", tab.Name())
	}
}

func TestReplacesLeftoverTable(t *testing.T) {
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "nft", "ip")
	ns := privtest.NewNetNS(t)
	// A leftover without the owner flag, e.g. from `nft -f` or an old version.
	privtest.Run(t, ns, "nft", "add table inet cloudsteer; add chain inet cloudsteer stale; add set inet cloudsteer listener_ifaces { type ipv4_addr; }")
	tab := newTable(t, ns, testConfig())
	if !tab.Replaced() {
		t.Error("Replaced() = false, want true")
	}
	l, ok := listTable(t, ns, "cloudsteer")
	if !ok {
		t.Fatal("table gone")
	}
	if _, stale := l.chains["stale"]; stale {
		t.Error("the leftover's chain survived")
	}
	if len(l.rules["input"]) == 0 || l.sets["listener_ifaces"].Type != "ifname" {
		t.Errorf("new table not installed: %+v", l)
	}
	if ok, err := tab.Present(); err != nil || !ok {
		t.Errorf("Present = %v, %v; want true", ok, err)
	}
}

func TestRefusesTableOwnedByRunningProcess(t *testing.T) {
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "nft", "ip")
	ns := privtest.NewNetNS(t)
	first := newTable(t, ns, testConfig())
	cfg := testConfig()
	cfg.HTTPPort = 16080 // a different layout, to see that nothing changed
	err := privtest.Do(ns, func() error {
		tab, err := New(context.Background(), cfg)
		if err == nil {
			tab.Close()
		}
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "owned by a running process") {
		t.Fatalf("second New: %v, want an 'owned by a running process' error", err)
	}
	if ok, err := first.Present(); err != nil || !ok {
		t.Fatalf("first table Present = %v, %v; want true", ok, err)
	}
	l, _ := listTable(t, ns, "cloudsteer")
	if got := l.ruleTexts("prerouting")[3]; !strings.Contains(got, ":15080") {
		t.Errorf("first table's rules changed: %q", got)
	}
}

func TestOwnerTableDiesWithProcess(t *testing.T) {
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "nft", "ip")
	ns := privtest.NewNetNS(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := privtest.Command(ns, exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("child: %v (stdout %q)", err, line)
	}
	f := strings.Fields(line)
	if len(f) != 2 || f[0] != "ready" {
		t.Fatalf("child said %q", line)
	}
	pid, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatal(err)
	}
	if got := tableNames(t, ns); !cmp.Equal(got, []string{"inet", "cloudsteer"}) {
		t.Fatalf("tables while the child runs = %v, want [inet cloudsteer]", got)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want killed by SIGKILL", err)
	}
	// The kernel releases the owner's table when the process's netlink
	// socket is closed, which happens before wait(2) returns.
	if got := tableNames(t, ns); len(got) != 0 {
		t.Fatalf("tables after SIGKILL = %v, want none", got)
	}
}

// reachRules are the counting rules of both reach chains (reach.go).
var reachRules = []string{
	"meta nfproto == ipv4 tcp dport == {15080,15443} tcp flags & [syn ack] == syn ct status in dnat counter",
	"meta nfproto == ipv4 udp dport == 53 meta mark == 0x0c570004 counter",
	"meta nfproto == ipv4 tcp dport == 53 meta mark == 0x0c570004 counter",
	"meta nfproto == ipv6 tcp dport == {15080,15443} tcp flags & [syn ack] == syn ct status in dnat counter",
	"meta nfproto == ipv6 udp dport == 53 meta mark == 0x0c570004 counter",
	"meta nfproto == ipv6 tcp dport == 53 meta mark == 0x0c570004 counter",
}

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/gateway"
)

// reason returns the status reason with that code, if any.
func reason(st model.Status, code string) (model.Reason, bool) {
	for _, r := range st.Reasons {
		if r.Code == code {
			return r, true
		}
	}
	return model.Reason{}, false
}

// gwTables lists the gateway namespace's nft tables.
func (e *env) gwTables(t *testing.T) string {
	t.Helper()
	out, err := e.run(lab.RoleGW, 5*time.Second, "nft", "list", "tables")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestFW4FlushRuleset runs cloudsteer beside an OpenWrt-fw4-like ruleset
// and does what an fw4 reload does to it: `nft flush ruleset`, then the
// fw4 table again. cloudsteer's owner-flagged table survives the flush
// (the kernel skips tables other processes own), steering and DNS go on
// through it, and after fw4 is back everything still works.
func TestFW4FlushRuleset(t *testing.T) {
	e := newLabEnv(t, lab.Options{Firewall: lab.FirewallFW4})
	e.startGateway(gateway.Options{})
	sock := gateway.SocketPath(e.lab, "gw")
	www := site(t, "www.example.com")

	check := func(t *testing.T, when string) {
		t.Helper()
		for _, addr := range []string{www.V4.String(), www.V6.String()} {
			if got := e.pathOf(t, "www.example.com", addr, "fw4-"+when); got != "proxy" {
				t.Errorf("%s: flow to %s went %s, want proxy", when, addr, got)
			}
		}
		if ans, err := e.dig(lab.NobodyDNSV4.String(), "www.example.com", "A"); err != nil || strings.TrimSpace(ans) != www.V4.String() {
			t.Errorf("%s: dig = %q, %v", when, ans, err)
		}
		var st model.Status
		if !eventually(10*time.Second, func() bool { st = e.status(sock); return st.State == model.Protected }) {
			t.Errorf("%s: status %+v", when, st)
		}
	}
	check(t, "before")
	if _, err := e.run(lab.RoleGW, 5*time.Second, "nft", "flush", "ruleset"); err != nil {
		t.Fatal(err)
	}
	tables := e.gwTables(t)
	if strings.TrimSpace(tables) != "table inet cloudsteer" {
		t.Fatalf("after flush ruleset the tables are:\n%s\nwant only cloudsteer's", tables)
	}
	check(t, "flushed")
	if err := e.lab.LoadFirewall(context.Background(), lab.FirewallFW4); err != nil {
		t.Fatal(err)
	}
	if tables := e.gwTables(t); !strings.Contains(tables, "table inet cloudsteer") || !strings.Contains(tables, "table inet fw4") {
		t.Fatalf("after reloading fw4 the tables are:\n%s", tables)
	}
	check(t, "reloaded")
}

// TestFirewallBlocksRedirect runs cloudsteer beside a Debian-style
// nftables.conf whose input chain (policy drop, only lo and established
// accepted) drops what cloudsteer redirects. cloudsteer notices from its
// counters, says not_protected: firewall_blocks_redirect with the exact
// rule to add, and holds steering off, so the client reaches the origin
// direct meanwhile. Once the admin adds the rule, protection comes back by
// itself. cloudsteer never touches the other table.
func TestFirewallBlocksRedirect(t *testing.T) {
	e := newLabEnv(t, lab.Options{Firewall: lab.FirewallDebian})
	g := e.startGateway(gateway.Options{})
	sock := gateway.SocketPath(e.lab, "gw")
	www := site(t, "www.example.com")
	const fix = "nft add rule inet filter input ct status dnat accept"
	before, _ := e.run(lab.RoleGW, 5*time.Second, "nft", "list", "table", "inet", lab.DebianTable)

	start := time.Now()
	var st model.Status
	var path string
	detected := eventually(40*time.Second, func() bool {
		path = e.pathOf(t, "www.example.com", www.V4.String(), "debian-blocked")
		st = e.status(sock)
		_, ok := reason(st, model.ReasonFirewallBlocks)
		return ok && path == "bypass"
	})
	if !detected {
		t.Fatalf("no firewall_blocks_redirect with the LAN going direct after %v: last flow went %s, status %+v",
			time.Since(start).Round(time.Second), path, st)
	}
	t.Logf("detected and going direct after %v", time.Since(start).Round(100*time.Millisecond))
	r, _ := reason(st, model.ReasonFirewallBlocks)
	if st.State != model.NotProtected {
		t.Errorf("state %s, want not_protected", st.State)
	}
	for _, want := range []string{fix, "inet filter input"} {
		if !strings.Contains(r.Message, want) {
			t.Errorf("reason message lacks %q:\n%s", want, r.Message)
		}
	}
	if !strings.Contains(g.Log(), "another firewall drops the traffic cloudsteer redirects") {
		t.Error("the block was not logged")
	}
	// Fail-open holds: every flow meanwhile reaches the origin direct.
	for i := range 3 {
		if got := e.pathOf(t, "www.example.com", www.V6.String(), fmt.Sprintf("debian-direct%d", i)); got != "bypass" {
			t.Errorf("while blocked: flow went %s, want bypass (direct)", got)
		}
	}
	// DNS goes direct too (a pause alone keeps it redirected, into the
	// drop): a query to a real resolver is answered by that resolver,
	// which sees the client itself (IPv6 is not masqueraded).
	dnsStart := time.Now()
	if ans, err := e.run(lab.RoleLAN, 10*time.Second, "dig", "+short", "+time=2", "+tries=2", "@"+lab.CloudDNSV6.String(), "news.example.com", "AAAA"); err != nil || strings.TrimSpace(ans) == "" {
		t.Errorf("while blocked: dig @%s = %q, %v", lab.CloudDNSV6, ans, err)
	}
	direct := eventually(2*time.Second, func() bool {
		for _, r := range e.dnsLog(dnsStart) {
			if r.Server == "cloud" && r.Name == "news.example.com." && hostOf(r.Remote) == clientV6 {
				return true
			}
		}
		return false
	})
	if !direct {
		t.Errorf("while blocked: the cloud resolver did not get the client's query direct: %+v", e.dnsLog(dnsStart))
	}
	if after, _ := e.run(lab.RoleGW, 5*time.Second, "nft", "list", "table", "inet", lab.DebianTable); after != before {
		t.Errorf("the other table changed:\n%s\nwas\n%s", after, before)
	}

	// The admin adds the one rule.
	if _, err := e.run(lab.RoleGW, 5*time.Second, strings.Fields(fix)...); err != nil {
		t.Fatal(err)
	}
	fixed := time.Now()
	back := eventually(30*time.Second, func() bool {
		path = e.pathOf(t, "www.example.com", www.V4.String(), "debian-fixed")
		st = e.status(sock)
		_, blocked := reason(st, model.ReasonFirewallBlocks)
		return path == "proxy" && !blocked && st.State == model.Protected
	})
	if !back {
		t.Fatalf("protection not back after the rule: flow went %s, status %+v", path, st)
	}
	t.Logf("protected again %v after the rule", time.Since(fixed).Round(100*time.Millisecond))
	if ans, err := e.dig(lab.NobodyDNSV4.String(), "www.example.com", "A"); err != nil || strings.TrimSpace(ans) != www.V4.String() {
		t.Errorf("dig after the fix = %q, %v", ans, err)
	}
}

// TestUntrackedFlowsSurviveNAT starts long downloads of a bypassed site
// over IPv4 and IPv6 while cloudsteer is alone in the gateway namespace
// (so they are not tracked and go through the eBPF fast path), then loads
// a masquerading office router with a stateful forward filter beside it.
// Every byte must still arrive (through the window of up to a second
// before cloudsteer notices, and after conntrack picked the flows up
// mid-stream), and new flows must work and be masqueraded.
func TestUntrackedFlowsSurviveNAT(t *testing.T) {
	e := newLabEnv(t, lab.Options{Firewall: lab.FirewallNone})
	e.startGateway(gateway.Options{BypassDomains: []string{"bank.example"}})
	bank := site(t, "bank.example")
	if e.metric(t, "cloudsteer_untracking_unsteered") != 1 {
		t.Fatal("untracking is off with cloudsteer alone")
	}
	for _, q := range []struct{ qtype, addr string }{{"A", bank.V4.String()}, {"AAAA", bank.V6.String()}} {
		if ans, err := e.dig(lab.NobodyDNSV4.String(), "bank.example", q.qtype); err != nil || !strings.Contains(ans, q.addr) {
			t.Fatalf("dig bank.example %s = %q, %v", q.qtype, ans, err)
		}
	}
	const size = 24 << 20 // 6s at 4 MB/s
	type dl struct {
		name string
		done chan error
	}
	var dls []dl
	for _, addr := range []string{bank.V4.String(), bank.V6.String()} {
		d := dl{addr, make(chan error, 1)}
		go func() {
			out, err := e.curl(fmt.Sprintf("https://bank.example/bytes?n=%d", size), "bank.example", addr,
				"--limit-rate", "4M", "-o", "/dev/null", "-w", "%{size_download}")
			if err == nil && strings.TrimSpace(out) != fmt.Sprint(size) {
				err = fmt.Errorf("got %s bytes, want %d", out, size)
			}
			d.done <- err
		}()
		dls = append(dls, d)
	}
	time.Sleep(1500 * time.Millisecond) // the downloads run, untracked
	if ct, _ := e.run(lab.RoleGW, 5*time.Second, "cat", "/proc/net/nf_conntrack"); strings.Contains(ct, "dport=443 ") {
		t.Errorf("a bypassed download is tracked while cloudsteer is alone:\n%s", ct)
	}
	if err := e.lab.LoadFirewall(context.Background(), lab.FirewallRouter); err != nil {
		t.Fatal(err)
	}
	loaded := time.Now()
	if !eventually(5*time.Second, func() bool { return e.metric(t, "cloudsteer_untracking_unsteered") == 0 }) {
		t.Fatal("untracking still on beside the office router")
	}
	t.Logf("untracking off %v after the router was loaded", time.Since(loaded).Round(10*time.Millisecond))
	for _, d := range dls {
		if err := <-d.done; err != nil {
			t.Errorf("download from %s that started untracked broke after the NAT appeared: %v", d.name, err)
		}
	}
	// New flows: routed through conntrack now, IPv4 masqueraded.
	for _, addr := range []string{bank.V4.String(), bank.V6.String()} {
		start := time.Now()
		path := "/?case=after-nat-" + strings.ReplaceAll(addr, ":", "-")
		if _, err := e.curl("https://bank.example"+path, "bank.example", addr); err != nil {
			t.Fatalf("new flow to %s: %v", addr, err)
		}
		client := clientV4
		if strings.Contains(addr, ":") {
			client = clientV6
		}
		if got, want := e.originRemote(start, path), e.seenAs(client); got != want {
			t.Errorf("new flow to %s: origin saw %q, want %q", addr, got, want)
		}
	}
}

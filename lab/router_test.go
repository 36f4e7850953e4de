package lab_test

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/servers"
)

// TestNATAndSecondLAN checks the default office-router gateway
// (FirewallRouter, the zero Options.Firewall) and
// the second LAN host (Options.LAN2): what the origin sees from each
// client, that the forward filter keeps the internet out of the LAN, and
// that teardown removes the second host too.
func TestNATAndSecondLAN(t *testing.T) {
	privtest.RequireCommand(t, "curl", "nft")
	prefix := privtest.Unique("cslab")
	// Registered first, so it runs after the lab's Close.
	t.Cleanup(func() {
		if _, err := os.Stat(filepath.Join("/etc/netns", prefix+lab.RoleLAN2)); err == nil {
			t.Errorf("/etc/netns of %s left behind", lab.RoleLAN2)
		}
	})
	l := upLab(t, lab.Options{Prefix: prefix, LabBinary: labBinary(t), LAN2: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t.Run("roles", func(t *testing.T) {
		if !slices.Equal(l.Roles(), []string{lab.RoleLAN, lab.RoleLAN2, lab.RoleGW, lab.RoleInet}) {
			t.Errorf("Roles() = %v", l.Roles())
		}
		if l.NS(lab.RoleLAN2) != prefix+lab.RoleLAN2 {
			t.Errorf("NS(lan2) = %q", l.NS(lab.RoleLAN2))
		}
		if out := run(t, l, lab.RoleLAN2, "ip", "-o", "addr", "show", "dev", lab.Client2If); !strings.Contains(out, lab.Client2V4.String()) || !strings.Contains(out, lab.Client2V6.String()) {
			t.Errorf("lan2 addresses:\n%s", out)
		}
		if !slices.Equal(l.LANInterfaces(), []string{lab.GWLANIf, lab.GWLAN2If}) {
			t.Errorf("LANInterfaces() = %v", l.LANInterfaces())
		}
		info := l.Info()
		if !info.NAT || info.Firewall != lab.FirewallRouter || !info.LAN2 || info.Namespaces[lab.RoleLAN2] != prefix+lab.RoleLAN2 {
			t.Errorf("info %+v", info)
		}
		conf := run(t, l, lab.RoleLAN2, "cat", "/etc/resolv.conf")
		if !strings.Contains(conf, "nameserver "+lab.NobodyDNSV4.String()) {
			t.Errorf("lan2 resolv.conf:\n%s", conf)
		}
	})

	// The origin sees the gateway's WAN address for routed IPv4 and each
	// client itself for IPv6.
	www := lab.Sites[0]
	for _, tc := range []struct {
		role   string
		client netip.Addr
		dst    netip.Addr
		want   netip.Addr
	}{
		{lab.RoleLAN, lab.ClientV4.Addr(), www.V4, lab.GWWANV4.Addr()},
		{lab.RoleLAN, lab.ClientV6.Addr(), www.V6, lab.ClientV6.Addr()},
		{lab.RoleLAN2, lab.Client2V4.Addr(), www.V4, lab.GWWANV4.Addr()},
		{lab.RoleLAN2, lab.Client2V6.Addr(), www.V6, lab.Client2V6.Addr()},
	} {
		t.Run("origin sees/"+tc.role+"/"+tc.client.String(), func(t *testing.T) {
			if got := l.SeenAs(tc.client); got != tc.want {
				t.Errorf("SeenAs(%s) = %s, want %s", tc.client, got, tc.want)
			}
			path := "/?case=nat-" + tc.role + "-" + tc.client.String()
			url := "http://" + net.JoinHostPort(tc.dst.String(), "80") + path
			if out := run(t, l, tc.role, "curl", "-sS", "--max-time", "5", "-g", url); !strings.Contains(out, "hello from") {
				t.Fatalf("curl %s: %q", url, out)
			}
			recs, err := servers.ReadOriginLog(l.Path(servers.OriginLogFile))
			if err != nil {
				t.Fatal(err)
			}
			var remote string
			for _, r := range recs {
				if r.Path == path {
					remote, _, _ = net.SplitHostPort(r.Remote)
				}
			}
			if remote != tc.want.String() {
				t.Fatalf("origin saw %q, want %s", remote, tc.want)
			}
		})
	}

	// The last subtest: it removes the router table to show the pings it
	// refuses would pass without it.
	t.Run("internet cannot open flows into the LAN", func(t *testing.T) {
		tables := run(t, l, lab.RoleGW, "nft", "list", "tables")
		if !strings.Contains(tables, "table inet "+lab.RouterTable) {
			t.Fatalf("gateway tables:\n%s", tables)
		}
		targets := []netip.Addr{lab.ClientV4.Addr(), lab.ClientV6.Addr(), lab.Client2V4.Addr(), lab.Client2V6.Addr()}
		for _, dst := range targets {
			pctx, pcancel := context.WithTimeout(ctx, time.Second)
			err := l.Ping(pctx, lab.RoleInet, dst)
			pcancel()
			if err == nil {
				t.Errorf("internet reached LAN host %s through the office router", dst)
			}
		}
		run(t, l, lab.RoleGW, "nft", "delete", "table", "inet", lab.RouterTable)
		for _, dst := range targets {
			pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
			if err := l.Ping(pctx, lab.RoleInet, dst); err != nil {
				t.Errorf("without the router table the internet still cannot reach %s (%v): the check above proves nothing", dst, err)
			}
			pcancel()
		}
	})
}

// TestNoRouterWithoutNAT checks that a lab with FirewallNone has no
// ruleset of its own in the gateway namespace (tests of cloudsteer's
// untracking expect none) and, without Options.LAN2, no second LAN host.
func TestNoRouterWithoutNAT(t *testing.T) {
	privtest.RequireCommand(t, "nft")
	l := upLab(t, lab.Options{Firewall: lab.FirewallNone})
	if out := strings.TrimSpace(run(t, l, lab.RoleGW, "nft", "list", "tables")); out != "" {
		t.Errorf("gateway tables without NAT:\n%s", out)
	}
	if l.NS(lab.RoleLAN2) != "" || l.HasLAN2() || l.NAT() {
		t.Errorf("lab without options has lan2 %q, NAT %v", l.NS(lab.RoleLAN2), l.NAT())
	}
	if err := l.Command(context.Background(), lab.RoleLAN2, "true").Run(); err == nil {
		t.Error("Command ran in lan2 of a lab without it")
	}
	if got := l.SeenAs(lab.ClientV4.Addr()); got != lab.ClientV4.Addr() {
		t.Errorf("SeenAs without NAT = %s", got)
	}
}

// TestFirewallRulesets brings up a lab with each other gateway ruleset:
// nft accepts it, its tables are there, and the LAN reaches the internet
// through it over IPv4 and IPv6 (Up waits for that), with IPv4
// masqueraded; LoadFirewall adds one to a running lab.
func TestFirewallRulesets(t *testing.T) {
	privtest.RequireCommand(t, "nft")
	for _, tc := range []struct {
		fw     lab.Firewall
		tables []string
	}{
		{lab.FirewallFW4, []string{"table inet " + lab.FW4Table}},
		{lab.FirewallDebian, []string{"table inet " + lab.RouterTable, "table inet " + lab.DebianTable}},
	} {
		t.Run(string(tc.fw), func(t *testing.T) {
			l := upLab(t, lab.Options{Firewall: tc.fw})
			out := run(t, l, lab.RoleGW, "nft", "list", "tables")
			for _, tab := range tc.tables {
				if !strings.Contains(out, tab) {
					t.Errorf("gateway tables lack %q:\n%s", tab, out)
				}
			}
			if !l.NAT() || l.Firewall() != tc.fw || l.SeenAs(lab.ClientV4.Addr()) != lab.GWWANV4.Addr() {
				t.Errorf("NAT %v, Firewall %q, SeenAs %s", l.NAT(), l.Firewall(), l.SeenAs(lab.ClientV4.Addr()))
			}
		})
	}
	t.Run("load", func(t *testing.T) {
		l := upLab(t, lab.Options{Firewall: lab.FirewallNone})
		if err := l.LoadFirewall(context.Background(), lab.FirewallRouter); err != nil {
			t.Fatal(err)
		}
		if out := run(t, l, lab.RoleGW, "nft", "list", "tables"); !strings.Contains(out, "table inet "+lab.RouterTable) {
			t.Errorf("after LoadFirewall: %s", out)
		}
		if !l.NAT() {
			t.Error("NAT() false after loading the router")
		}
		if err := l.LoadFirewall(context.Background(), "nonsense"); err == nil {
			t.Error("LoadFirewall took an unknown ruleset")
		}
	})
}

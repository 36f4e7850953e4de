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

// TestNATAndSecondLAN checks the office-router gateway (Options.NAT) and
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
	l := upLab(t, lab.Options{Prefix: prefix, LabBinary: labBinary(t), NAT: true, LAN2: true})
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
		if !info.NAT || !info.LAN2 || info.Namespaces[lab.RoleLAN2] != prefix+lab.RoleLAN2 {
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

// TestNoRouterWithoutNAT checks that a lab without Options.NAT has no
// ruleset of its own in the gateway namespace (tests of cloudsteer's
// untracking expect none) and no second LAN host.
func TestNoRouterWithoutNAT(t *testing.T) {
	privtest.RequireCommand(t, "nft")
	l := upLab(t, lab.Options{})
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

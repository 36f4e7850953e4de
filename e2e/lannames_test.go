package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/gateway"
)

// networkdLeases is a lease file as systemd-networkd 257's DHCP server
// writes it (PersistLeases=yes), for the given host name → IPv4 address
// leases expiring at exp.
func networkdLeases(exp time.Time, leases ...[2]string) string {
	var b strings.Builder
	b.WriteString(`{"BootID":"0b5c1d0f7c3e4f3a9d1f2e3c4b5a6978","Address":[10,10,0,1],"PrefixLength":24,"Leases":[`)
	for i, l := range leases {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"ClientId":[1,82,84,0,18,52,%d],"Address":[%s],"Hostname":%q,"ExpirationUSec":72338380895,"ExpirationRealtimeUSec":%d}`,
			i, strings.ReplaceAll(l[1], ".", ","), l[0], exp.UnixMicro())
	}
	b.WriteString("]}\n")
	return b.String()
}

// TestLANHostNames: the names LAN devices gave the DHCP server (lease
// files in networkd's format) resolve at the gateway, alone and under
// dns.local_domain, with PTR records, over IPv4 and IPv6 and UDP and TCP;
// a renamed or expired lease follows within the poll interval; a device
// cannot take wpad or the gateway's own name; unleased names under the
// private local domain get NXDOMAIN from the gateway; the cloud resolver
// sees none of these names.
func TestLANHostNames(t *testing.T) {
	e := newLabEnv(t, lab.Options{})
	dir := filepath.Join(t.TempDir(), "dhcp-server-lease")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lease := filepath.Join(dir, "lan0")
	write := func(body string) {
		t.Helper()
		tmp := filepath.Join(dir, ".#lan0tmp")
		if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, lease); err != nil { // as networkd does
			t.Fatal(err)
		}
	}
	client := lab.ClientV4.Addr().String()
	write(networkdLeases(time.Now().Add(time.Hour), [2]string{"NAS", "10.10.0.20"}, [2]string{"pc1", client},
		[2]string{"wpad", "10.10.0.66"}, [2]string{"gateway", "10.10.0.67"}))
	e.startGateway(gateway.Options{
		AdminHostnames: []string{"gateway.lan"},
		DNS:            []string{"dhcp_leases_dir: " + dir},
	})
	start := time.Now()
	for _, server := range []string{lab.NobodyDNSV4.String(), lab.NobodyDNSV6.String()} {
		for _, proto := range []string{"+notcp", "+tcp"} {
			e.expectDig(server, proto,
				digCase{"nas.lan", "A", "10.10.0.20"},
				digCase{"NAS", "A", "10.10.0.20"},
				digCase{"pc1.lan", "A", client},
				digCase{"nas.lan", "AAAA", ""}, // DHCPv4 leases: NODATA
				digCase{"10.10.0.20", "-x", "nas.lan."},
				digCase{client, "-x", "pc1.lan."},
				digCase{"gateway.lan", "A", lab.GWLANV4.Addr().String()}, // the gateway's own, not the lease
			)
		}
	}
	// wpad and unleased names under .lan: NXDOMAIN from the gateway.
	for _, name := range []string{"wpad.lan", "printer.lan"} {
		out, err := e.run(lab.RoleLAN, 10*time.Second, "dig", "+time=3", "+tries=1", "@"+lab.NobodyDNSV4.String(), name, "A")
		if err != nil || !strings.Contains(out, "status: NXDOMAIN") {
			t.Fatalf("%s: want NXDOMAIN: %v\n%s", name, err, out)
		}
	}
	// A device renamed (new file content) and a lease that expires.
	write(networkdLeases(time.Now().Add(4*time.Second), [2]string{"nas2", "10.10.0.20"}))
	if !eventually(10*time.Second, func() bool {
		a, err := e.dig(lab.NobodyDNSV4.String(), "nas2.lan", "A")
		b, _ := e.dig(lab.NobodyDNSV4.String(), "nas.lan", "A")
		return err == nil && strings.TrimSpace(a) == "10.10.0.20" && strings.TrimSpace(b) == ""
	}) {
		t.Fatal("the renamed lease did not answer within 10 s")
	}
	if !eventually(15*time.Second, func() bool {
		a, err := e.dig(lab.NobodyDNSV4.String(), "nas2.lan", "A")
		return err == nil && strings.TrimSpace(a) == ""
	}) {
		t.Fatal("the expired lease still answered after 15 s")
	}
	for _, r := range e.dnsLog(start) {
		n := strings.ToLower(r.Name)
		if strings.HasSuffix(n, ".lan.") || n == "nas." || strings.HasSuffix(n, ".10.10.in-addr.arpa.") {
			t.Errorf("the %s resolver saw %s", r.Server, r.Name)
		}
	}
}

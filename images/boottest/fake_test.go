//go:build boottest

package boottest

import (
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/lab"
)

// TestHarnessFake boots the stand-in image fake/mkfake.sh builds (set
// BOOTTEST_FAKE to its .img.xz) to check the harness itself: UEFI boot of
// the GPT/ESP layout, taps in the lab, a DHCP lease from the VM, the LAN
// and WAN paths, the port scanner (it must see the fake's LAN web server
// and nothing on the WAN), the ESP writing and the timeline. It is a
// development aid, not part of CI: without BOOTTEST_FAKE it skips.
func TestHarnessFake(t *testing.T) {
	img := os.Getenv("BOOTTEST_FAKE")
	if img == "" {
		t.Skip("set BOOTTEST_FAKE to an image from fake/mkfake.sh")
	}
	r := boot(t, bootOptions{arch: "amd64", image: img, mem: 256, bootWait: 3 * time.Minute,
		esp: []ESPFile{{Path: "/cloudsteer/router.conf", Data: []byte("# written by the harness test\n")}}})
	if r.lease.Addr.Masked() != netip.MustParsePrefix("192.168.77.0/24") || r.router != netip.MustParseAddr("192.168.77.1") {
		r.fatalf(r.t, "lease %+v", r.lease)
	}
	r.step("lan web server", func(t *testing.T) {
		out, err := r.run(lab.RoleLAN, 20*time.Second, "curl", "-sS", "--max-time", "10", "http://"+r.router.String()+"/")
		if err != nil || !strings.Contains(out, "fake cloudsteer LAN page") {
			r.fatalf(t, "LAN page: %q %v", out, err)
		}
	})
	r.step("scanner sees the LAN server", func(t *testing.T) {
		res, err := ScanTCP(r.lab.NS(lab.RoleLAN), r.router, AllPorts()[:1024], 1024, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("LAN 1-1024: %s", res)
		if len(res.Open) != 1 || res.Open[0] != 80 {
			t.Fatalf("LAN scan: %s, want only 80 open", res)
		}
	})
	r.step("wan scan", func(t *testing.T) {
		res, err := ScanTCP(r.lab.NS(lab.RoleInet), lab.VMWANV4.Addr(), AllPorts(), 4096, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("WAN 1-65535: %s", res)
		if len(res.Open) != 0 || res.Refused+res.Silent < 65000 {
			t.Fatalf("WAN scan: %s", res)
		}
	})
	r.step("wan udp probes", func(t *testing.T) {
		res, err := ProbeUDP(r.lab.NS(lab.RoleInet), lab.VMWANV4.Addr(), wanUDPProbes(), 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("WAN UDP: %s", res)
		if len(res.Open) != 0 {
			t.Fatalf("WAN UDP: %s", res)
		}
	})
	r.step("esp written", func(t *testing.T) {
		b, err := ReadESP(r.ctx, r.m.Disk, "/cloudsteer/router.conf")
		if err != nil || !strings.Contains(string(b), "written by the harness test") {
			t.Fatalf("router.conf on the ESP: %q %v", b, err)
		}
	})
}

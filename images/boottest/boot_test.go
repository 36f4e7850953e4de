//go:build boottest

package boottest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/servers"
)

// The lab's view of the appliance.
var (
	lanNet = netip.MustParsePrefix("192.168.77.0/24") // the image's default LAN
	vmWAN  = lab.VMWANV4.Addr()
)

// routerConf is the router.conf the boot test writes onto the ESP: the
// WAN static in the lab (the lab's internet side runs no DHCP server),
// the lab's resolvers and cloud proxy, the tenant's code. NIC roles stay
// auto: the first NIC (the WAN tap) is the WAN. proxyPassword, when the
// image's router.conf knows the key, is sent with the code (the lab's
// Squid refuses an empty password).
func routerConf(proxy string, passwordKey string) []byte {
	var b strings.Builder
	b.WriteString("# written by the cloudsteer boot test\n")
	fmt.Fprintf(&b, "wan_mode = static\nwan_address = %s\nwan_gateway = %s\nwan_dns = %s\n", lab.VMWANV4, lab.InetV4.Addr(), lab.CloudDNSV4)
	fmt.Fprintf(&b, "cloud_proxy = %s\n", proxy)
	fmt.Fprintf(&b, "dns = %s\n", lab.CloudDNSV4)
	if passwordKey != "" {
		fmt.Fprintf(&b, "%s = %s\n", passwordKey, lab.SquidCodePassword)
	}
	fmt.Fprintf(&b, "entitlement_code = %s\n", lab.EntitlementCode)
	return []byte(b.String())
}

// proxyPasswordKeyRE finds a router.conf key for the cloud proxy's
// password in the image's commented example.
var proxyPasswordKeyRE = regexp.MustCompile(`(?m)^#?\s*((?:cloud_)?proxy_password)\s*=`)

// setupLinkRE is the one-time setup link the first-boot banner prints.
var setupLinkRE = regexp.MustCompile(`https://192\.168\.77\.1/setup\?token=[A-Za-z0-9_-]+`)

// TestBootAMD64 boots the x86_64 image as the lab's gateway and checks the
// router from its LAN client and the internet side.
func TestBootAMD64(t *testing.T) {
	img := findImage(t, "amd64")
	requireUpgradeTools(t)
	var ready <-chan *bundles
	r, useSquid := bootAppliance(t, "amd64", img, func(disk string) {
		ready = makeBundles(t.Context(), disk, t.TempDir(), "amd64")
	})
	r.checkRouter(useSquid)
	r.checkFlowOffload()
	// The upgrades do not depend on the router checks: run them either
	// way. The WAN scan runs while the first bundle is written.
	r.checkUpgrades(ready, r.checkWAN)
}

// TestBootARM64 boots the arm64 image (qemu-system-aarch64 -M virt, TCG,
// AAVMF) as the lab's gateway: a lease from it, its console answering on
// the LAN (waitHealthy), cloudsteer's API answering there (401 without a
// session: it is cloudsteer's API, not a placeholder), and over SSH an
// aarch64 system whose cloudsteer is active and reports its status.
func TestBootARM64(t *testing.T) {
	img := findImage(t, "arm64")
	r, _ := bootAppliance(t, "arm64", img, nil)
	r.step("console login page on the lan", func(t *testing.T) {
		out, err := r.run(lab.RoleLAN, 40*time.Second, "curl", "-sSk", "-L", "--max-time", "30", "-w", "\n%{http_code}", "https://"+r.router.String()+"/login")
		if err != nil || !strings.HasSuffix(out, "\n200") || !(strings.Contains(out, `data-test="setup-needed"`) || strings.Contains(out, `data-test="login-form"`)) {
			t.Fatalf("console /login: %v\n%s", err, out)
		}
	})
	r.step("api answers on the lan", func(t *testing.T) {
		out, err := r.run(lab.RoleLAN, 40*time.Second, "curl", "-sSk", "--max-time", "30", "-w", "\n%{http_code}", "https://"+r.router.String()+"/api/v1/status")
		if err != nil || !strings.HasSuffix(out, "\n401") || !strings.Contains(out, `"code":"unauthorized"`) {
			t.Fatalf("GET /api/v1/status without a session: want cloudsteer's 401 JSON: %v\n%s", err, out)
		}
	})
	r.step("cloudsteer running on aarch64", func(t *testing.T) {
		out, err := r.ssh(60*time.Second, "uname -m; systemctl is-active cloudsteer.service; cloudsteer status")
		if err != nil {
			r.fatalf(t, "ssh: %v\n%s", err, out)
		}
		lines := strings.SplitN(out, "\n", 3)
		if len(lines) < 3 || lines[0] != "aarch64" || lines[1] != "active" {
			t.Fatalf("want aarch64 and cloudsteer active, got:\n%s", out)
		}
		t.Logf("cloudsteer status:\n%s", lines[2])
	})
}

// bootAppliance boots the image with the lab's router.conf: Squid as the
// cloud proxy when the image's router.conf can carry the password Squid
// needs, else the lab's own cloud proxy (which takes the code alone).
//
// beforeBoot, when set, sees the decompressed disk before the VM starts.
func bootAppliance(t *testing.T, arch, img string, beforeBoot func(disk string)) (*vmRun, bool) {
	t.Helper()
	privtest.RequireCommand(t, "ssh", "ssh-keygen")
	pub := sshKey(t)
	key := ""
	r := boot(t, bootOptions{arch: arch, image: img, espFunc: func(disk string) ([]ESPFile, error) {
		if beforeBoot != nil {
			beforeBoot(disk)
		}
		// The key is looked up in the image's own example file.
		if ex, err := ReadESP(t.Context(), disk, "/cloudsteer/router.conf"); err == nil {
			if m := proxyPasswordKeyRE.FindSubmatch(ex); m != nil {
				key = string(m[1])
			}
		} else {
			t.Logf("read the image's router.conf: %v", err)
		}
		proxy := fmt.Sprintf("http://%s:%d", lab.SquidV4, lab.SquidPort)
		if key == "" {
			proxy = fmt.Sprintf("http://%s:%d", lab.CloudProxyV4, lab.CloudProxyHTTPPort)
			t.Logf("the image's router.conf has no proxy password key: using the lab cloud proxy %s (Squid needs a password with the code)", proxy)
		}
		files := []ESPFile{
			{Path: "/cloudsteer/router.conf", Data: routerConf(proxy, key)},
			{Path: "/cloudsteer/authorized_keys", Data: pub},
		}
		if os.Getenv("BOOTTEST_JOURNAL_CONSOLE") == "1" {
			// Debugging: the journal on the serial console (slows the boot).
			const entry = "/loader/entries/cloudsteer-a.conf"
			e, err := ReadESP(t.Context(), disk, entry)
			if err != nil {
				return nil, err
			}
			e = regexp.MustCompile(`(?m)^(options .*)$`).ReplaceAll(e, []byte("$1 systemd.journald.forward_to_console=1"))
			files = append(files, ESPFile{Path: entry, Data: e})
		}
		return files, nil
	}})
	if !lanNet.Contains(r.lease.Addr.Addr()) || r.router != netip.MustParseAddr("192.168.77.1") {
		r.fatalf(r.t, "lease %+v: want an address in %s from 192.168.77.1", r.lease, lanNet)
	}
	r.waitHealthy()
	return r, key != ""
}

// waitHealthy waits until the console answers on the LAN (cloudsteer is
// up) and notes when the serial console showed the health gate passing.
func (r *vmRun) waitHealthy() {
	r.t.Helper()
	url := "https://" + r.router.String() + "/login"
	wait := healthyWait
	if r.arch == "arm64" {
		wait = arm64HealthyWait
	}
	var last string
	ok := eventually(wait, 3*time.Second, func() bool {
		out, err := r.run(lab.RoleLAN, 15*time.Second, "curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", url)
		last = fmt.Sprintf("%s %v", out, err)
		return err == nil && (out == "200" || out == "303")
	})
	if !ok {
		r.fatalf(r.t, "the console at %s did not answer within %s of the lease (last: %s)", url, wait, last)
	}
	r.tl.Mark("cloudsteer up (console answers)")
	if l, ok := r.con.Find(0, regexp.MustCompile(`cloudsteer-healthy|Reached target.*[Bb]oot [Cc]ompletion`)); ok {
		r.t.Logf("serial: %q at +%s", l.Text, l.At.Sub(r.started).Round(time.Second))
	}
}

// checkRouter runs the router checks of issue 12's boot test.
func (r *vmRun) checkRouter(useSquid bool) {
	www, _ := lab.SiteByName("www.example.com")
	bypass, _ := lab.SiteByName("gw1.akaetp.net") // a system bypass domain (*.akaetp.net)
	bank, _ := lab.SiteByName("bank.example")
	client := r.lease.Addr.Addr().String()
	ca := r.lab.CAFile()
	curl := func(url string) (string, error) {
		// Names resolve through the VM: the client's resolv.conf holds
		// the lease's DNS server.
		return r.run(lab.RoleLAN, 40*time.Second, "curl", "-sS", "--max-time", "30", "--retry", "2", "--retry-all-errors", "--cacert", ca, url)
	}

	r.step("dhcp lease", func(t *testing.T) {
		if len(r.lease.DNS) == 0 || r.lease.DNS[0] != r.router {
			t.Fatalf("lease DNS %v, want the router %s", r.lease.DNS, r.router)
		}
		out, err := r.run(lab.RoleLAN, 5*time.Second, "ip", "-4", "route", "show", "default")
		if err != nil || !strings.Contains(out, "via "+r.router.String()) {
			t.Fatalf("client default route: %q %v", out, err)
		}
	})

	r.step("dns through the vm", func(t *testing.T) {
		start := time.Now()
		out, err := r.run(lab.RoleLAN, 20*time.Second, "dig", "+short", "+time=5", "+tries=2", "@"+r.router.String(), bank.Name, "A")
		if err != nil || strings.TrimSpace(out) != bank.V4.String() {
			t.Fatalf("dig @%s %s: %q %v, want %s", r.router, bank.Name, out, err, bank.V4)
		}
		// The answer came from the lab's cloud DNS, asked by the VM from
		// its WAN address.
		var seen []servers.DNSRecord
		ok := eventually(5*time.Second, 200*time.Millisecond, func() bool {
			recs, _ := servers.ReadDNSLog(r.lab.Path(servers.DNSLogFile))
			seen = seen[:0]
			for _, rec := range recs {
				if !rec.Time.Before(start.Add(-time.Second)) && rec.Name == bank.Name+"." {
					seen = append(seen, rec)
					if hostOf(rec.Remote) == vmWAN.String() && rec.Server == "cloud" {
						return true
					}
				}
			}
			return false
		})
		if !ok {
			t.Fatalf("the cloud DNS saw no query for %s from the VM's WAN %s: %+v", bank.Name, vmWAN, seen)
		}
	})

	r.step("lan host names from the dhcp server", func(t *testing.T) {
		// networkd's DHCP server kept the client's lease with the host
		// name udhcpc sent, and handed out the domain; cloudsteer answers
		// the name (and the address by PTR) from the lease file.
		if r.lease.Domain != "lan" {
			t.Errorf("lease domain (option 15) %q, want lan", r.lease.Domain)
		}
		name := lab.LeaseHostname(lab.RoleLAN) + ".lan"
		var out string
		ok := eventually(10*time.Second, 500*time.Millisecond, func() bool {
			out, _ = r.run(lab.RoleLAN, 10*time.Second, "dig", "+short", "+time=3", "+tries=1", "@"+r.router.String(), name, "A")
			return strings.TrimSpace(out) == client
		})
		if !ok {
			t.Fatalf("dig %s @%s: %q, want the client's lease %s", name, r.router, out, client)
		}
		out, err := r.run(lab.RoleLAN, 10*time.Second, "dig", "+short", "+time=3", "+tries=1", "@"+r.router.String(), "-x", client)
		if err != nil || strings.TrimSpace(out) != name+"." {
			t.Errorf("dig -x %s @%s: %q %v, want %s.", client, r.router, out, err, name)
		}
	})

	r.step("https through the cloud proxy", func(t *testing.T) {
		start := time.Now()
		body, err := curl("https://www.example.com/?case=vm-steered")
		if err != nil || !strings.Contains(body, "hello from www.example.com via https") {
			r.fatalf(t, "steered HTTPS: %q %v", body, err)
		}
		if useSquid {
			var recs []lab.SquidRecord
			ok := eventually(10*time.Second, 200*time.Millisecond, func() bool {
				recs, _ = r.lab.SquidLog()
				for _, rec := range recs {
					if !rec.Time.Before(start.Truncate(time.Second)) && rec.Method == "CONNECT" && rec.URL == "www.example.com:443" &&
						rec.XFF == client && rec.User == lab.EntitlementCode && rec.Status == 200 && rec.Client == vmWAN {
						return true
					}
				}
				return false
			})
			if !ok {
				t.Fatalf("Squid saw no CONNECT www.example.com:443 from %s with the code and XFF %s: %+v", vmWAN, client, recs)
			}
		} else {
			var recs []servers.ProxyRecord
			ok := eventually(10*time.Second, 200*time.Millisecond, func() bool {
				recs, _ = servers.ReadProxyLog(r.lab.Path(servers.ProxyLogFile))
				for _, rec := range recs {
					if !rec.Time.Before(start) && rec.Method == "CONNECT" && rec.Target == "www.example.com:443" &&
						rec.XFF == client && rec.AuthOK && rec.User == lab.EntitlementCode && hostOf(rec.Remote) == vmWAN.String() {
						return true
					}
				}
				return false
			})
			if !ok {
				t.Fatalf("the cloud proxy saw no CONNECT www.example.com:443 from %s with the code and XFF %s: %+v", vmWAN, client, recs)
			}
		}
		// The origin was reached by the proxy, not by the VM.
		for _, rec := range originLog(r, start) {
			if rec.Path == "/?case=vm-steered" && hostOf(rec.Remote) == vmWAN.String() {
				t.Fatalf("the origin saw the steered request straight from the VM: %+v", rec)
			}
		}
	})

	r.step("bypass name goes direct", func(t *testing.T) {
		start := time.Now()
		body, err := curl("https://" + bypass.Name + "/?case=vm-bypass")
		if err != nil || !strings.Contains(body, "hello from "+bypass.Name+" via https") {
			r.fatalf(t, "bypass HTTPS: %q %v", body, err)
		}
		var remote string
		eventually(5*time.Second, 200*time.Millisecond, func() bool {
			for _, rec := range originLog(r, start) {
				if rec.Path == "/?case=vm-bypass" {
					remote = hostOf(rec.Remote)
					return true
				}
			}
			return false
		})
		if remote != vmWAN.String() {
			t.Fatalf("the bypass origin saw %q, want the VM's WAN address %s (direct, NATed)", remote, vmWAN)
		}
		time.Sleep(time.Second) // Squid logs when a transaction ends
		recs, _ := r.lab.SquidLog()
		for _, rec := range recs {
			if !rec.Time.Before(start.Truncate(time.Second)) && strings.Contains(rec.URL, bypass.Name) {
				t.Fatalf("Squid saw the bypass name: %+v", rec)
			}
		}
		precs, _ := servers.ReadProxyLog(r.lab.Path(servers.ProxyLogFile))
		for _, rec := range precs {
			if !rec.Time.Before(start) && strings.Contains(rec.Target, bypass.Name) {
				t.Fatalf("the cloud proxy saw the bypass name: %+v", rec)
			}
		}
	})

	r.step("quic rejected", func(t *testing.T) {
		// A steered destination: UDP 443 is refused (ICMP port
		// unreachable), so browsers fall back to TCP at once.
		err := privtest.Do(r.lab.NS(lab.RoleLAN), func() error {
			c, err := net.Dial("udp", net.JoinHostPort(www.V4.String(), "443"))
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write([]byte("quic initial")); err != nil {
				return err
			}
			_, err = c.Read(make([]byte, 64))
			if !errors.Is(err, syscall.ECONNREFUSED) {
				return fmt.Errorf("UDP 443 to %s: read %v, want ECONNREFUSED (ICMP port unreachable)", www.Name, err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		out, err := r.run(lab.RoleLAN, 20*time.Second, bins.lab, "quic-probe", "--addr", www.V4.String()+":443",
			"--name", www.Name, "--ca", r.lab.CAFile(), "--timeout", "5s")
		if err == nil {
			t.Fatalf("QUIC to a steered destination worked: %q", out)
		}
		// The control: QUIC to a bypass destination passes the VM, so the
		// refusal above is the VM's doing.
		out, err = r.run(lab.RoleLAN, 30*time.Second, bins.lab, "quic-probe", "--addr", bypass.V4.String()+":443",
			"--name", bypass.Name, "--ca", r.lab.CAFile(), "--timeout", "10s")
		if err != nil || !strings.Contains(out, "hello from "+bypass.Name+" via quic") {
			t.Fatalf("QUIC to the bypass destination %s: %q %v", bypass.Name, out, err)
		}
	})

	r.step("console login page on the lan", func(t *testing.T) {
		// No admin yet: /login sends to /setup, which asks for the setup
		// link; the banner's link opens the setup form.
		out, err := r.run(lab.RoleLAN, 40*time.Second, "curl", "-sSk", "-L", "--max-time", "30", "-w", "\n%{http_code} %{url_effective}", "https://"+r.router.String()+"/login")
		if err != nil {
			t.Fatalf("console: %v", err)
		}
		if !strings.HasSuffix(out, "200 https://192.168.77.1/setup") || !strings.Contains(out, `data-test="setup-needed"`) {
			if !strings.Contains(out, `data-test="login-form"`) {
				t.Fatalf("console /login: want the setup-needed page (no admin yet) or the login form, got:\n%s", out)
			}
		}
		link, ok := r.con.Find(0, setupLinkRE)
		if !ok {
			t.Fatalf("no setup link (%s) on the serial console", setupLinkRE)
		}
		u := setupLinkRE.FindString(link.Text)
		out, err = r.run(lab.RoleLAN, 40*time.Second, "curl", "-sSk", "--max-time", "30", "-w", "\n%{http_code}", u)
		if err != nil || !strings.HasSuffix(out, "\n200") || !strings.Contains(out, `data-test="setup-form"`) {
			t.Fatalf("the banner's setup link does not open the setup form: %v\n%s", err, out)
		}
	})
}

// checkWAN checks that nothing listens on the WAN side (checkUpgrades runs
// it while the first upgrade bundle is written).
func (r *vmRun) checkWAN() {
	r.step("nothing listens on the wan", func(t *testing.T) {
		inet := r.lab.NS(lab.RoleInet)
		// The scanner's control: it finds the console on the LAN side.
		lanRes, err := ScanTCP(r.lab.NS(lab.RoleLAN), r.router, []int{22, 80, 443}, 16, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !containsPort(lanRes.Open, 443) {
			t.Fatalf("control scan of the LAN side found no console on 443: %s", lanRes)
		}
		res, err := ScanTCP(inet, vmWAN, AllPorts(), 4096, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("TCP 1-65535 on the WAN %s: %s", vmWAN, res)
		if len(res.Open) > 0 {
			t.Fatalf("TCP ports open on the WAN: %v", res.Open)
		}
		ures, err := ProbeUDP(inet, vmWAN, wanUDPProbes(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("UDP probes on the WAN: %s", ures)
		if len(ures.Open) > 0 {
			t.Fatalf("UDP services answer on the WAN: %v", ures.Open)
		}
	})
}

func containsPort(ps []int, p int) bool {
	for _, x := range ps {
		if x == p {
			return true
		}
	}
	return false
}

// originLog returns the origin records since start.
func originLog(r *vmRun, since time.Time) []servers.OriginRecord {
	recs, _ := servers.ReadOriginLog(r.lab.Path(servers.OriginLogFile))
	var out []servers.OriginRecord
	for _, rec := range recs {
		if !rec.Time.Before(since) {
			out = append(out, rec)
		}
	}
	return out
}

// hostOf strips the port from an ip:port as a log writes it.
func hostOf(addrPort string) string {
	h, _, err := net.SplitHostPort(addrPort)
	if err != nil {
		return addrPort
	}
	return h
}

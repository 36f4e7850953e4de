package appliance

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
	"github.com/cloudsteer/cloudsteer/internal/sdcontainer"
)

// routerRoot makes the trixie root (cached in bin/cache), with the
// image's overlay and a freshly built cloudsteer.
func routerRoot(t *testing.T, withCloudsteer bool) string {
	t.Helper()
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(repo, "bin", "cache", "debian-trixie-appliance-2.tar")
	if _, err := os.Stat(tarball); err != nil {
		os.MkdirAll(filepath.Dir(tarball), 0o755)
		start := time.Now()
		out, err := exec.Command("mmdebstrap", "--variant=minbase", "--format=tar",
			"--include=systemd,systemd-resolved,nftables,iproute2,udev,openssh-server,ppp", "--quiet",
			"--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/doc/*",
			"--dpkgopt=path-exclude=/usr/share/locale/*", "--dpkgopt=path-exclude=/usr/share/info/*",
			"trixie", tarball+".part", debianMirror()).CombinedOutput()
		if err != nil {
			os.Remove(tarball + ".part")
			t.Fatalf("mmdebstrap trixie: %v\n%s", err, out)
		}
		if err := os.Rename(tarball+".part", tarball); err != nil {
			t.Fatal(err)
		}
		t.Logf("made the trixie root in %s", time.Since(start).Round(time.Second))
	}
	root := t.TempDir()
	os.Chmod(root, 0o755)
	privtest.Run(t, "", "tar", "-C", root, "--numeric-owner", "-xpf", tarball, "--exclude=./dev/*")
	privtest.Run(t, "", "cp", "-a", filepath.Join(repo, "images", "rootfs")+"/.", root+"/")
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(root, "usr/bin/cloudsteer"), "./cmd/cloudsteer")
	build.Dir = repo
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build cloudsteer: %v\n%s", err, out)
	}
	// Image-only pieces that need the real disk or would touch the host
	// (sysctl, binfmt, the clock, udev on the host's devices, getty).
	for _, u := range []string{"efi.mount", "var.mount"} {
		os.Remove(filepath.Join(root, "usr/lib/systemd/system", u))
		os.Remove(filepath.Join(root, "usr/lib/systemd/system/local-fs.target.wants", u))
	}
	if withCloudsteer {
		// The service as the package installs it (its user, the unit,
		// enabled); the image's drop-in points it at the generated config.
		privtest.Run(t, "", "chroot", root, "useradd", "--system", "--user-group", "--home-dir", "/var/lib/cloudsteer",
			"--no-create-home", "--shell", "/usr/sbin/nologin", "cloudsteer")
		privtest.Run(t, "", "cp", filepath.Join(repo, "packaging/cloudsteer.service"), filepath.Join(root, "usr/lib/systemd/system/"))
		os.Symlink("/usr/lib/systemd/system/cloudsteer.service", filepath.Join(root, "etc/systemd/system/multi-user.target.wants/cloudsteer.service"))
	} else {
		os.Remove(filepath.Join(root, "usr/lib/systemd/system/multi-user.target.wants/cloudsteer-banner.service"))
	}
	for _, u := range []string{"systemd-sysctl.service", "systemd-binfmt.service", "systemd-timesyncd.service",
		"systemd-udevd.service", "systemd-udev-trigger.service", "getty.target", "console-getty.service",
		"systemd-networkd-wait-online.service"} {
		os.Symlink("/dev/null", filepath.Join(root, "etc/systemd/system", u))
	}
	if os.Getenv("APPLIANCE_DEBUG") != "" {
		os.MkdirAll(filepath.Join(root, "etc/systemd/system/systemd-networkd.service.d"), 0o755)
		os.WriteFile(filepath.Join(root, "etc/systemd/system/systemd-networkd.service.d/debug.conf"), []byte("[Service]\nEnvironment=SYSTEMD_LOG_LEVEL=debug\n"), 0o644)
	}
	return root
}

func debianMirror() string {
	b, _ := os.ReadFile("/etc/apt/sources.list.d/debian.sources")
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "URIs:" && strings.HasSuffix(strings.TrimSuffix(f[1], "/"), "/debian") {
			return f[1]
		}
	}
	return "http://deb.debian.org/debian"
}

// router is a booted root's systemd (internal/sdcontainer) in the
// gateway's network namespace, with the router's NICs already in it.
type router struct {
	*sdcontainer.System
	ns string
}

func bootRouter(t *testing.T, root, ns string) *router {
	t.Helper()
	return &router{System: sdcontainer.Boot(t, root, sdcontainer.Options{NetNS: ns}), ns: ns}
}

// dial connects from namespace ns to addr, sends nothing and returns
// what the server wrote.
func dial(ns, addr string, timeout time.Duration) (string, error) {
	var got string
	err := privtest.Do(ns, func() error {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		b, err := io.ReadAll(c)
		got = string(b)
		return err
	})
	return got, err
}

// serveAddr serves the caller's address (as the server sees it) on addr
// inside ns.
func serveAddr(t *testing.T, ns, addr string) {
	privtest.ServeTCP(t, ns, addr, func(c net.Conn) {
		io.WriteString(c, c.RemoteAddr().(*net.TCPAddr).IP.String())
		c.Close()
	})
}

// lab is a booted router between a WAN peer and a LAN client namespace.
type lab struct {
	r            *router
	gw, wan, lan string
	rc           string // router.conf, as the host sees it
}

// startLab makes the namespaces and veths (wan0 ↔ uplink 203.0.113.1/24
// in the WAN peer, lan0 ↔ client in the LAN client), writes router.conf,
// runs beforeBoot (a server on the WAN side, say) and boots the router.
func startLab(t *testing.T, root, conf string, beforeBoot func(wan string)) *lab {
	t.Helper()
	gw, wan, lan := privtest.NewNetNS(t), privtest.NewNetNS(t), privtest.NewNetNS(t)
	privtest.Run(t, gw, "ip", "link", "add", "wan0", "type", "veth", "peer", "name", "uplink", "netns", wan)
	privtest.Run(t, gw, "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "client", "netns", lan)
	privtest.Run(t, wan, "ip", "addr", "add", "203.0.113.1/24", "dev", "uplink")
	privtest.Run(t, wan, "ip", "link", "set", "uplink", "up")
	privtest.Run(t, lan, "ip", "link", "set", "client", "up")
	rc := filepath.Join(root, "efi/cloudsteer/router.conf")
	os.MkdirAll(filepath.Dir(rc), 0o700)
	if err := os.WriteFile(rc, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if beforeBoot != nil {
		beforeBoot(wan)
	}
	bootStart := time.Now()
	r := bootRouter(t, root, gw)
	t.Logf("systemd up in %s", time.Since(bootStart).Round(100*time.Millisecond))
	return &lab{r: r, gw: gw, wan: wan, lan: lan, rc: rc}
}

// lease gets the LAN client a DHCP lease from the router (busybox udhcpc;
// the script applies the address and default route) and returns its
// fields (ip, mask, router, dns).
func (l *lab) lease(t *testing.T) map[string]string {
	t.Helper()
	r, lan := l.r, l.lan
	// The LAN client's lease from networkd's DHCP server.
	script := filepath.Join(t.TempDir(), "udhcpc.sh")
	os.WriteFile(script, []byte(`#!/bin/sh
case "$1" in bound|renew)
	echo "LEASE ip=$ip mask=$mask router=$router dns=$dns"
	ip addr add "$ip/$mask" dev "$interface"
	ip route add default via "$router" dev "$interface"
esac
`), 0o755)
	leaseStart := time.Now()
	out, err := privtest.Command(lan, "udhcpc", "-i", "client", "-f", "-q", "-n", "-t", "20", "-T", "1", "-s", script).CombinedOutput()
	if err != nil {
		n, _ := r.Exec("networkctl", "status", "lan0", "--no-pager")
		j, _ := r.Exec("journalctl", "--no-pager", "-b", "-o", "short-monotonic", "-u", "systemd-networkd", "-u", "cloudsteer-appliance-configure")
		ls, _ := r.Exec("ls", "-l", "/run/systemd/network")
		t.Fatalf("no DHCP lease: %v\n%s\n%s\n%s\n%s", err, out[max(0, len(out)-300):], n, j, ls)
	}
	var lease string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "LEASE ") {
			lease = l
		}
	}
	t.Logf("%s (in %s)", lease, time.Since(leaseStart).Round(100*time.Millisecond))
	f := map[string]string{}
	for _, kv := range strings.Fields(lease)[1:] {
		k, v, _ := strings.Cut(kv, "=")
		f[k] = v
	}
	ip, err := netip.ParseAddr(f["ip"])
	if err != nil || f["mask"] != "24" || f["router"] != "192.168.77.1" || f["dns"] != "192.168.77.1" {
		t.Fatalf("lease %q", lease)
	}
	if b := ip.As4(); b[0] != 192 || b[1] != 168 || b[2] != 77 || b[3] < 100 || b[3] > 249 {
		t.Fatalf("lease address %s outside the pool .100-.249", ip)
	}
	return f
}

// TestRouterBoots boots the image's overlay on a Debian 13 root (systemd
// 257 as PID 1 in namespaces of the test's own) with two veth NICs: the
// WAN towards a peer namespace (a static uplink, 203.0.113.0/24), the LAN
// towards a client namespace. It checks the whole boot chain: router.conf
// read by cloudsteer-appliance-configure (the code imported and removed
// from the file), the firewall loaded without flowtables (this kernel has
// none), the LAN client's DHCP lease from systemd-networkd (address,
// router and DNS = the LAN address), the router's resolver answering on
// the LAN address, LAN→WAN masqueraded, and nothing from the WAN reaching
// the router or the LAN.
func TestRouterBoots(t *testing.T) {
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "mmdebstrap", "ip", "nft", "unshare", "nsenter", "udhcpc", "go")
	start := time.Now()
	root := routerRoot(t, true)
	t.Logf("root ready in %s", time.Since(start).Round(time.Second))

	const code = "3315471d-b831-48ed-a621-17042a74a8e3"
	conf := "# test\nwan = wan0\nlan = lan0\nwan_mode = static\nwan_address = 203.0.113.2/24\nwan_gateway = 203.0.113.1\n" +
		"wan_dns = 203.0.113.53\ncloud_proxy = http://203.0.113.1:3128\nentitlement_code = " + code + "\n"
	// SSH on: the admin's key on the boot partition (CRLF: Notepad).
	os.MkdirAll(filepath.Join(root, "efi/cloudsteer"), 0o700)
	const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHRlc3RrZXl0ZXN0a2V5dGVzdGtleXRlc3RrZXl0ZXN0 admin@office"
	os.WriteFile(filepath.Join(root, "efi/cloudsteer/authorized_keys"), []byte(key+"\r\n"), 0o600)
	l := startLab(t, root, conf, nil)
	r, gw, wan, lan, rc := l.r, l.gw, l.wan, l.lan, l.rc

	for _, u := range []string{"cloudsteer-appliance-configure.service", "cloudsteer-firewall.service", "systemd-networkd.service", "systemd-resolved.service", "cloudsteer.service"} {
		if s := strings.TrimSpace(r.Must("systemctl", "show", "-P", "ActiveState", u)); s != "active" {
			out, _ := r.Exec("journalctl", "--no-pager", "-b", "-u", u)
			t.Fatalf("%s is %s:\n%s", u, s, out)
		}
	}
	if st := r.Must("cat", StatusFile); !strings.Contains(st, "router.conf: ok") || !strings.Contains(st, "wan: wan0") || !strings.Contains(st, "lan: lan0") {
		t.Fatalf("status:\n%s", st)
	}
	// The code left router.conf for the data partition.
	if b, _ := os.ReadFile(rc); strings.Contains(string(b), code) || !strings.Contains(string(b), ImportedComment) {
		t.Fatalf("router.conf after import:\n%s", b)
	}
	if fi, err := os.Stat(filepath.Join(root, DefaultStateDir, CodeFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("imported code: %v %v", fi, err)
	}
	if j := r.Must("journalctl", "--no-pager", "-b", "-o", "cat"); strings.Contains(j, code) {
		t.Fatal("the entitlement code is in the journal")
	}
	fw := r.Must("journalctl", "--no-pager", "-b", "-o", "cat", "-u", "cloudsteer-firewall.service")
	if !strings.Contains(fw, "loaded without flowtable offload") {
		t.Fatalf("firewall journal:\n%s", fw)
	}
	// The table is there (what it does is checked with traffic below).
	privtest.Run(t, gw, "nft", "list", "table", "inet", "cloudsteer-router")

	f := l.lease(t)

	// Every generated networkd file of the golden cases parses without a
	// warning in networkd 257 (they match no link here), and the units
	// pass systemd-analyze verify.
	goldens, _ := filepath.Glob("testdata/golden/*/run/systemd/network/*.network")
	for _, g := range goldens {
		b, _ := os.ReadFile(g)
		name := "90-golden-" + filepath.Base(filepath.Dir(filepath.Dir(filepath.Dir(filepath.Dir(g))))) + "-" + filepath.Base(g)
		// Through the root's /var (its /tmp and /run are its own tmpfs).
		if err := os.WriteFile(filepath.Join(root, "var/tmp", name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		r.Must("mv", "/var/tmp/"+name, NetworkDir+"/"+name)
	}
	r.Must("networkctl", "reload")
	time.Sleep(time.Second)
	nj := r.Must("journalctl", "--no-pager", "-b", "-o", "cat", "-u", "systemd-networkd", "-u", "systemd-resolved")
	for _, l := range strings.Split(nj, "\n") {
		if strings.Contains(l, "cloudsteer") && (strings.Contains(l, "Unknown") || strings.Contains(l, "Failed to parse") || strings.Contains(l, "ignoring")) {
			t.Errorf("networkd/resolved: %s", l)
		}
	}
	if len(goldens) < 10 {
		t.Fatalf("only %d golden network files", len(goldens))
	}
	if out, err := r.Exec("systemd-analyze", "verify", "cloudsteer-appliance-configure.service", "cloudsteer-firewall.service",
		"cloudsteer-banner.service", "cloudsteer-healthy.service"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	// DNS from the LAN is answered at the router's address (cloudsteer
	// steers it to its resolver, whose upstream is the router's own).
	if err := dnsAnswers(lan, "192.168.77.1:53"); err != nil {
		j, _ := r.Exec("journalctl", "--no-pager", "-b", "-o", "cat", "-u", "cloudsteer")
		t.Fatalf("DNS from the LAN: %v\n%s", err, j[max(0, len(j)-3000):])
	}

	// A web flow cloudsteer redirects to its proxy arrives on the input
	// chain from the LAN: a connection to an address that is nowhere
	// (198.51.100.80) is accepted by cloudsteer's proxy, so the
	// handshake completes only if the firewall lets the redirect in.
	if err := privtest.Do(lan, func() error {
		c, err := net.DialTimeout("tcp", "198.51.100.80:80", 5*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		t.Fatalf("LAN web flow redirected to cloudsteer: %v", err)
	}

	// LAN → WAN: masqueraded to the WAN address.
	serveAddr(t, wan, "203.0.113.1:8080")
	if got, err := dial(lan, "203.0.113.1:8080", 5*time.Second); err != nil || got != "203.0.113.2" {
		t.Fatalf("LAN → WAN: the WAN peer saw %q (%v), want the masqueraded 203.0.113.2", got, err)
	}

	// Nothing from the WAN: a listener on every address of the router
	// answers the LAN, not the WAN (dropped: a timeout, no reset); the
	// LAN client's own listener is not reachable from the WAN either.
	serveAddr(t, gw, ":2222")
	if got, err := dial(lan, "192.168.77.1:2222", 5*time.Second); err != nil || got != f["ip"] {
		t.Fatalf("LAN → router: %q %v", got, err)
	}
	privtest.Run(t, wan, "ip", "route", "add", "192.168.77.0/24", "via", "203.0.113.2")
	for _, a := range []string{"203.0.113.2:2222", "192.168.77.1:2222", "192.168.77.1:53", "203.0.113.2:53"} {
		if got, err := dial(wan, a, 2*time.Second); err == nil {
			t.Errorf("WAN → router %s connected (%q)", a, got)
		} else if !os.IsTimeout(err) && !strings.Contains(err.Error(), "timeout") {
			t.Errorf("WAN → router %s: %v, want a silent drop (timeout)", a, err)
		}
	}
	serveAddr(t, lan, ":8081")
	if got, err := dial(wan, f["ip"]+":8081", 2*time.Second); err == nil {
		t.Errorf("WAN → LAN client connected (%q)", got)
	}
	if out, err := privtest.Command(wan, "ping", "-c", "1", "-W", "1", "203.0.113.2").CombinedOutput(); err == nil {
		t.Errorf("the router answers ping from the WAN:\n%s", out)
	}

	// IPv6: the router answers a router solicitation on the LAN with a
	// router advertisement (networkd's IPv6SendRA=).
	if err := privtest.Do(lan, routerAdvertised); err != nil {
		t.Errorf("LAN router advertisement: %v", err)
	}

	// SSH: on (the key is there), keys copied without the CR and 0600,
	// a host key made on /var, root by key only, on the LAN address only;
	// the LAN reaches it, the WAN does not (above: nothing answers there).
	for deadline := time.Now().Add(30 * time.Second); ; {
		if s := strings.TrimSpace(r.Must("systemctl", "show", "-P", "ActiveState", "ssh.service")); s == "active" {
			break
		} else if time.Now().After(deadline) {
			j, _ := r.Exec("journalctl", "--no-pager", "-b", "-o", "cat", "-u", "ssh")
			t.Fatalf("ssh.service is %s:\n%s", s, j)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if ak := r.Must("stat", "-c", "%a %U %s", "/run/cloudsteer-appliance/ssh/authorized_keys"); strings.TrimSpace(ak) != fmt.Sprintf("600 root %d", len(key)+1) {
		t.Errorf("authorized_keys: %s", ak)
	}
	if hk := r.Must("stat", "-c", "%a", DefaultStateDir+"/ssh/ssh_host_ed25519_key"); strings.TrimSpace(hk) != "600" {
		t.Errorf("host key mode %s", hk)
	}
	sshT := r.Must("sshd", "-T")
	for _, want := range []string{"passwordauthentication no", "kbdinteractiveauthentication no", "permitrootlogin without-password",
		"listenaddress 192.168.77.1:22", "authorizedkeysfile /run/cloudsteer-appliance/ssh/authorized_keys",
		"hostkey /var/lib/cloudsteer-appliance/ssh/ssh_host_ed25519_key", "allowusers root"} {
		if !strings.Contains(sshT, want+"\n") {
			t.Errorf("sshd -T lacks %q", want)
		}
	}
	if strings.Count(sshT, "listenaddress ") != 1 || strings.Count(sshT, "hostkey ") != 1 {
		t.Errorf("sshd listens or keys beyond the LAN address and the /var key:\n%s", sshT)
	}
	if got, err := dialBanner(lan, "192.168.77.1:22"); err != nil || !strings.HasPrefix(got, "SSH-2.0-") {
		t.Errorf("SSH from the LAN: %q %v", got, err)
	}
	if got, err := dial(wan, "203.0.113.2:22", 2*time.Second); err == nil {
		t.Errorf("SSH from the WAN connected (%q)", got)
	}

	// PPPoE: pppd of the root accepts the options file the generator
	// writes (pppd's dryrun: the options parsed, the plugin loaded).
	pppDir := filepath.Join(root, "var/tmp")
	c, _ := Parse([]byte("wan_mode = pppoe\npppoe_user = user@isp.example\npppoe_password = \"p a\\\"ss\"\n"))
	files, err := Generate(c, Roles{WAN: NIC{Name: "wan0"}, LAN: NIC{Name: "lan0"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if f.Path == PPPOptions {
			os.WriteFile(filepath.Join(pppDir, "ppp-options"), f.Data, 0o600)
			// The same without the plugin (which stops pppd at once on
			// a kernel without PPPoE): pppd's own options.
			var core []string
			for _, l := range strings.Split(string(f.Data), "\n") {
				if !strings.HasPrefix(l, "plugin ") && !strings.HasPrefix(l, "nic-") {
					core = append(core, l)
				}
			}
			os.WriteFile(filepath.Join(pppDir, "ppp-core"), []byte(strings.Join(core, "\n")), 0o600)
		}
	}
	if out, err := r.Exec("pppd", "file", "/var/tmp/ppp-core", "dryrun"); strings.Contains(out, "unrecognized option") || strings.Contains(out, "In file") ||
		(err != nil && !strings.Contains(out, "no device specified")) {
		t.Errorf("pppd refuses the generated options: %v\n%s", err, out)
	}
	out, err := r.Exec("pppd", "file", "/var/tmp/ppp-options", "dryrun")
	switch {
	case strings.Contains(out, "unrecognized option") || strings.Contains(out, "In file") || !strings.Contains(out, "Plugin pppoe.so loaded"):
		t.Errorf("pppd refuses the generated options: %v\n%s", err, out)
	case err == nil:
		t.Logf("pppd dryrun accepted the generated options")
	case !kernelHas("CONFIG_PPP") && strings.Contains(out, "/dev/ppp"):
		// This kernel has no PPP: the plugin loaded and stopped pppd
		// at its kernel check (its nic- option is not checked here).
		t.Logf("pppd parsed the generated options and loaded pppoe.so; no PPP in this kernel (%s)", strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:]))
	default:
		t.Errorf("pppd dryrun of the generated options: %v\n%s", err, out)
	}

	// cloudsteer runs on the generated config (as the shipped unit with
	// the image's drop-in), and the banner unit put the console's address
	// and a setup link into the login prompt's issue file.
	if out := r.Must("systemctl", "show", "-P", "ExecStart", "cloudsteer.service"); !strings.Contains(out, CloudsteerConfig) {
		t.Errorf("cloudsteer.service ExecStart: %s", out)
	}
	var issue string
	for deadline := time.Now().Add(60 * time.Second); ; {
		if s := strings.TrimSpace(r.Must("systemctl", "show", "-P", "ActiveState", "cloudsteer-banner.service")); s == "active" || s == "failed" {
			issue, _ = r.Exec("cat", "/run/issue.d/50-cloudsteer.issue")
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("cloudsteer-banner.service did not finish in 60 s")
		}
		time.Sleep(500 * time.Millisecond)
	}
	if !strings.Contains(issue, "https://192.168.77.1") || !strings.Contains(issue, "/setup?token=") || !strings.Contains(issue, "Certificate SHA-256") {
		j, _ := r.Exec("journalctl", "--no-pager", "-b", "-o", "cat", "-u", "cloudsteer", "-u", "cloudsteer-banner")
		t.Fatalf("banner:\n%s\njournal:\n%s", issue, j)
	}
	if j := r.Must("journalctl", "--no-pager", "-b", "-o", "cat", "-u", "cloudsteer-banner"); strings.Contains(j, "token=") {
		t.Errorf("the banner's setup link is in the journal:\n%s", j)
	}
	t.Logf("router test took %s", time.Since(start).Round(time.Second))
}

// TestFirewallRuleset loads the image's firewall.nft with each generated
// interface file (a mount namespace puts it at its /run path) into a
// network namespace of its own, reloads it (the file replaces its table
// whole), and tries offload.nft: loaded where the kernel has flowtables,
// else refused by the kernel (not by nft's parser) while the firewall
// stays.
func TestFirewallRuleset(t *testing.T) {
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "nft", "unshare")
	dir, err := filepath.Abs("../../images/rootfs/usr/lib/cloudsteer/appliance")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"default", "pppoe", "ipv4-only"} {
		vars, _ := filepath.Abs(filepath.Join("testdata/golden", name, FirewallVars))
		script := `set -e
# The interfaces of the generated names (testRoles), so only a kernel
# without flowtables can refuse offload.nft.
ip link add enp1s0 type veth peer name enp2s0
mount -t tmpfs tmpfs /run
mkdir -p ` + RunDir + `
cp "$1" ` + FirewallVars + `
nft -f "$2/firewall.nft"
nft -f "$2/firewall.nft"
nft list table inet cloudsteer-router
if nft -f "$2/offload.nft" 2>/tmp/offload.err; then echo OFFLOAD-LOADED; else cat /tmp/offload.err; echo OFFLOAD-REFUSED; fi
nft list table inet cloudsteer-router
nft list table inet cloudsteer-router | grep -c "policy drop"`
		out, err := exec.Command("unshare", "--net", "--mount", "sh", "-c", script, "fw", vars, dir).CombinedOutput()
		s := string(out)
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, s)
		}
		switch has := kernelHas("CONFIG_NF_FLOW_TABLE"); {
		case has && strings.Contains(s, "OFFLOAD-LOADED") && strings.Contains(s, "flow add @f"):
			t.Logf("%s: flowtable offload loaded", name)
		case !has && strings.Contains(s, "OFFLOAD-REFUSED") && strings.Contains(s, "Could not process rule") && !strings.Contains(s, "syntax error"):
			t.Logf("%s: the kernel has no flowtables (CONFIG_NF_FLOW_TABLE unset): offload refused, the firewall stays", name)
		default:
			t.Fatalf("%s: kernel has flowtables: %v; offload.nft:\n%s", name, has, s)
		}
		if !strings.HasSuffix(strings.TrimSpace(s), "\n2") {
			t.Fatalf("%s: input and forward policies not both drop after the offload attempt:\n%s", name, s)
		}
	}
}

// kernelHas reports whether the running kernel's config sets opt (y or m),
// from /proc/config.gz or /boot/config-RELEASE.
func kernelHas(opt string) bool {
	out, err := exec.Command("sh", "-c", "zcat /proc/config.gz 2>/dev/null || cat /boot/config-$(uname -r)").Output()
	if err != nil {
		return false
	}
	return strings.Contains(string(out), "\n"+opt+"=y") || strings.Contains(string(out), "\n"+opt+"=m")
}

// TestRouterDHCPWAN boots the default WAN mode (a DHCP client) against a
// DHCP server on the WAN peer (busybox udhcpd), with a router.conf that
// names the NICs and has a bad lan_address line (the LAN comes up with
// the default address, the status names the line): the WAN takes the server's address, its DNS
// server reaches the router's resolver, the LAN client's traffic leaves
// masqueraded to the DHCP address, and cloudsteer's config says what is
// missing (no cloud proxy: a name that never resolves, so it fails
// open; DNS through the router's resolver; no code).
func TestRouterDHCPWAN(t *testing.T) {
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "mmdebstrap", "ip", "nft", "unshare", "nsenter", "udhcpc", "busybox", "go")
	start := time.Now()
	root := routerRoot(t, false)
	dir := t.TempDir()
	// A mistake on line 3: the addresses are the defaults, the NICs
	// named on valid lines stay, the status names the line.
	l := startLab(t, root, "wan = wan0\nlan = lan0\nlan_address = 10.0.0.1/33\n", func(wan string) {
		conf := filepath.Join(dir, "udhcpd.conf")
		os.WriteFile(conf, []byte("start 203.0.113.50\nend 203.0.113.60\ninterface uplink\noption subnet 255.255.255.0\n"+
			"option router 203.0.113.1\noption dns 203.0.113.53\nlease_file "+dir+"/leases\npidfile "+dir+"/pid\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "leases"), nil, 0o644)
		srv := privtest.Command(wan, "busybox", "udhcpd", "-f", conf)
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	})
	var wanAddr string
	for deadline := time.Now().Add(30 * time.Second); ; {
		out := privtest.Run(t, l.gw, "ip", "-4", "-o", "addr", "show", "dev", "wan0")
		if m := regexp.MustCompile(`inet (203\.0\.113\.(5\d|60))/24`).FindStringSubmatch(out); m != nil {
			wanAddr = m[1]
			break
		}
		if time.Now().After(deadline) {
			j, _ := l.r.Exec("journalctl", "--no-pager", "-b", "-u", "systemd-networkd")
			t.Fatalf("no DHCP address on the WAN:\n%s\n%s", out, j)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("WAN address %s from DHCP", wanAddr)
	if out := l.r.Must("resolvectl", "dns", "wan0"); !strings.Contains(out, "203.0.113.53") {
		t.Errorf("the WAN's DHCP DNS server did not reach resolved: %s", out)
	}
	y := l.r.Must("cat", CloudsteerConfig)
	if !strings.Contains(y, UnsetProxy) || !strings.Contains(y, `upstreams: ["127.0.0.53"]`) || strings.Contains(y, "entitlement_code") {
		t.Errorf("cloudsteer config without cloud settings:\n%s", y)
	}
	if st := l.r.Must("cat", StatusFile); !strings.Contains(st, "entitlement code: none") || !strings.Contains(st, "cloud proxy: not set") ||
		!strings.Contains(st, "router.conf line 3: lan_address:") || !strings.Contains(st, "lan: lan0 (") || !strings.Contains(st, "192.168.77.1/24") {
		t.Errorf("status:\n%s", st)
	}
	l.lease(t)
	// No cloudsteer here: the router's resolver answers on the LAN
	// address itself (DNSStubListenerExtra=, what the LAN uses while
	// cloudsteer is not running).
	if err := dnsAnswers(l.lan, "192.168.77.1:53"); err != nil {
		t.Errorf("the router's resolver on the LAN address: %v", err)
	}
	serveAddr(t, l.wan, "203.0.113.1:8080")
	if got, err := dial(l.lan, "203.0.113.1:8080", 5*time.Second); err != nil || got != wanAddr {
		t.Fatalf("LAN → WAN: the WAN peer saw %q (%v), want the masqueraded %s", got, err, wanAddr)
	}
	t.Logf("router test took %s", time.Since(start).Round(time.Second))
}

// routerAdvertised sends a router solicitation from the LAN client
// ("client") and waits 5 s for a router advertisement.
func routerAdvertised() error {
	c, err := net.ListenPacket("ip6:58", "::")
	if err != nil {
		return err
	}
	defer c.Close()
	raw, err := c.(*net.IPConn).SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	raw.Control(func(fd uintptr) {
		// ND messages must arrive with hop limit 255.
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IPV6, syscall.IPV6_MULTICAST_HOPS, 255)
	})
	if serr != nil {
		return serr
	}
	// The link-local address needs DAD first.
	var werr error
	for range 20 {
		if _, werr = c.WriteTo([]byte{133, 0, 0, 0, 0, 0, 0, 0}, &net.IPAddr{IP: net.ParseIP("ff02::2"), Zone: "client"}); werr == nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if werr != nil {
		return werr
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("no router advertisement: %w", err)
		}
		if n > 0 && buf[0] == 134 {
			if ip := from.(*net.IPAddr).IP; !ip.IsLinkLocalUnicast() {
				return fmt.Errorf("router advertisement from %s, not a link-local address", ip)
			}
			return nil
		}
	}
}

// dnsAnswers sends one DNS query (A _gateway., which systemd-resolved
// synthesizes) from namespace ns to server over UDP and waits 3 s for the
// answer: any response with the query's ID is nil (whatever its rcode),
// silence or an ICMP error is an error.
func dnsAnswers(ns, server string) error {
	return privtest.Do(ns, func() error {
		q := dnsmessage.Message{
			Header:    dnsmessage.Header{ID: 0x5ca1, RecursionDesired: true},
			Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("_gateway."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
		}
		b, err := q.Pack()
		if err != nil {
			return err
		}
		c, err := net.Dial("udp", server)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write(b); err != nil {
			return err
		}
		buf := make([]byte, 1500)
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		var m dnsmessage.Message
		if err := m.Unpack(buf[:n]); err != nil {
			return fmt.Errorf("bad answer: %w", err)
		}
		if !m.Header.Response || m.Header.ID != q.Header.ID {
			return fmt.Errorf("not an answer to the query: %+v", m.Header)
		}
		return nil
	})
}

// dialBanner connects from ns and returns the first line the server sends.
func dialBanner(ns, addr string) (string, error) {
	var line string
	err := privtest.Do(ns, func() error {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		line, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	return line, err
}

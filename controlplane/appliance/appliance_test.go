package appliance

import (
	"context"
	"flag"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/cloudsteer/cloudsteer/controlplane/config"
)

var update = flag.Bool("update", false, "rewrite the golden files")

const exampleFile = "../../images/rootfs/usr/share/cloudsteer/router.conf.example"

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

var testRoles = Roles{
	WAN: NIC{Name: "enp1s0", MAC: mustMAC("52:54:00:00:00:01"), Index: 2, Device: "/sys/devices/pci0000:00/0000:00:02.0/0000:01:00.0"},
	LAN: NIC{Name: "enp2s0", MAC: mustMAC("52:54:00:00:00:02"), Index: 3, Device: "/sys/devices/pci0000:00/0000:00:02.1/0000:02:00.0"},
}

// TestExampleIsTheDefault: the shipped example (all comments) parses
// cleanly to exactly the defaults, and uncommenting every line of it
// gives a valid file too (each documented example value is accepted).
func TestExampleIsTheDefault(t *testing.T) {
	data, err := os.ReadFile(exampleFile)
	if err != nil {
		t.Fatal(err)
	}
	c, errs := Parse(data)
	if len(errs) > 0 || len(c.Warnings) > 0 {
		t.Fatalf("example: %v %v", errs, c.Warnings)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Fatalf("example parses to %+v, want the defaults %+v", c, Default())
	}
	// Every documented key appears in the example.
	for _, k := range keys {
		if !strings.Contains(string(data), "#"+k+" = ") {
			t.Errorf("example does not show key %s", k)
		}
	}
	// Uncomment the static example lines (wan_mode = static).
	var on []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "#") && strings.Contains(l, " = ") && !strings.HasPrefix(l, "# ") {
			l = strings.TrimPrefix(l, "#")
			if strings.HasPrefix(l, "wan_mode") {
				l = "wan_mode = static"
			}
		}
		on = append(on, l)
	}
	c, errs = Parse([]byte(strings.Join(on, "\n")))
	if len(errs) > 0 {
		t.Fatalf("example with every line on: %v", errs)
	}
	if c.WANMode != ModeStatic || c.EntitlementCode == "" || len(c.CloudProxies) != 1 || len(c.Warnings) != 2 {
		t.Fatalf("example with every line on: %+v", c)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string // each an error's text, in order
	}{
		{"no equals", "wan_mode dhcp\n", []string{"router.conf line 1: not a key = value line"}},
		{"unknown key", "# c\nwan_iface = eth0\n", []string{"router.conf line 2: wan_iface: unknown key"}},
		{"twice", "ipv6 = on\nipv6 = off\n", []string{"router.conf line 2: ipv6: set twice (first on line 1)"}},
		{"bad mode", "wan_mode = dhcp6\n", []string{`line 1: wan_mode: "dhcp6" is not dhcp, static or pppoe`}},
		{"static without address", "wan_mode = static\nwan_gateway = 203.0.113.1\n", []string{"line 1: wan_mode: static needs wan_address"}},
		{"gateway outside", "wan_mode = static\nwan_address = 203.0.113.2/24\nwan_gateway = 198.51.100.1\n", []string{"line 3: wan_gateway: 198.51.100.1 is not another address in wan_address's subnet 203.0.113.0/24"}},
		{"pppoe without password", "wan_mode = pppoe\npppoe_user = u\n", []string{"line 1: wan_mode: pppoe needs pppoe_password"}},
		{"lan v6", "lan_address = fd00::1/64\n", []string{"line 1: lan_address:"}},
		{"lan network address", "lan_address = 192.168.77.0/24\n", []string{"line 1: lan_address:"}},
		{"pool outside", "dhcp_pool = 10.0.0.10-10.0.0.20\n", []string{"line 1: dhcp_pool: 10.0.0.10-10.0.0.20 is not inside the LAN subnet 192.168.77.0/24"}},
		{"pool holds router", "dhcp_pool = 192.168.77.1-192.168.77.20\n", []string{"line 1: dhcp_pool: holds the LAN address"}},
		{"proxy no port", "cloud_proxy = http://proxy.example\n", []string{`line 1: cloud_proxy: "http://proxy.example" is not http://host:port`}},
		{"proxy creds in url", "cloud_proxy = http://u:p@proxy.example:8080\n", []string{"line 1: cloud_proxy:"}},
		{"dns name", "dns = dns.example\n", []string{`line 1: dns: "dns.example" is not an IP address`}},
		{"bad code", "entitlement_code = 1234\n", []string{"line 1: entitlement_code: not an entitlement code"}},
		{"same nic", "wan = eth0\nlan = eth0\n", []string{"line 2: lan: names the same NIC as wan"}},
		{"bad mac", "wan = 00:11:22:33:44:zz\n", []string{"line 1: wan:"}},
		{"lan overlaps wan", "wan_mode = static\nwan_address = 192.168.77.2/24\nwan_gateway = 192.168.77.254\n", []string{"lan_address: 192.168.77.0/24 overlaps the WAN's subnet"}},
		{"quote", "ntp = \"a\"b\n", []string{"line 1: ntp: must not contain quotes"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errs := Parse([]byte(tc.in))
			if len(errs) != len(tc.want) {
				t.Fatalf("got %d errors %v, want %d", len(errs), errs, len(tc.want))
			}
			for i, e := range errs {
				if !strings.Contains(e.Error(), tc.want[i]) {
					t.Errorf("error %d = %q, want it to contain %q", i, e, tc.want[i])
				}
			}
		})
	}
}

// TestParseForms: CRLF and a BOM (Notepad), quotes, case of keys and
// values, lists with commas or spaces, MAC selectors.
func TestParseForms(t *testing.T) {
	in := "\xef\xbb\xbf; Windows\r\nWAN = 00-11-22-33-44-55\r\nlan = enp3s0\r\nwan_mode = PPPoE\r\npppoe_user = \"a b@isp\"\r\npppoe_password = \" p#w=\\\"x \"\r\n" +
		"dns = 198.51.100.53 [2001:db8::53]:5353,198.51.100.54\r\nipv6 = off\r\n"
	c, errs := Parse([]byte(in))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if c.WAN.MAC.String() != "00:11:22:33:44:55" || c.LAN.Name != "enp3s0" || c.WANMode != ModePPPoE ||
		c.PPPoEUser != "a b@isp" || c.PPPoEPassword != ` p#w=\"x ` || c.IPv6 ||
		!reflect.DeepEqual(c.DNS, []string{"198.51.100.53", "[2001:db8::53]:5353", "198.51.100.54"}) {
		t.Fatalf("%+v", c)
	}
}

// TestSecretsNeverEchoed: a bad password or code line does not repeat
// the value.
func TestSecretsNeverEchoed(t *testing.T) {
	_, errs := Parse([]byte("entitlement_code = hunter2-secret\npppoe_password = \"\"\nwan_mode = pppoe\npppoe_user = u\n"))
	if len(errs) == 0 {
		t.Fatal("no errors")
	}
	for _, e := range errs {
		if strings.Contains(e.Error(), "hunter2") {
			t.Errorf("error echoes the secret: %s", e)
		}
	}
}

func TestPool(t *testing.T) {
	for _, tc := range []struct {
		conf      string
		off, size uint32
	}{
		{"", 100, 150},
		{"lan_address = 10.1.0.1/16", 100, 150},
		{"lan_address = 192.168.77.120/24", 10, 90},
		{"lan_address = 192.168.77.1/28", 0, 0},
		{"dhcp_pool = 192.168.77.2-192.168.77.9", 2, 8},
	} {
		c, errs := Parse([]byte(tc.conf))
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		if off, size := c.Pool(); off != tc.off || size != tc.size {
			t.Errorf("%q: pool %d+%d, want %d+%d", tc.conf, off, size, tc.off, tc.size)
		}
	}
}

// TestGenerateGolden compares every generated file with testdata/golden
// (go test -run Golden -update rewrites them).
func TestGenerateGolden(t *testing.T) {
	for _, tc := range []struct{ name, conf, code string }{
		{"default", "", ""},
		{"dhcp-full", "cloud_proxy = http://proxy.example.net:8080, https://backup.example.net:443\ndns = 198.51.100.53, [2001:db8::53]:53\nntp = ntp.example.net\nlan_address = 10.20.0.1/16\ndhcp_pool = 10.20.1.0-10.20.1.255\n", "3315471d-b831-48ed-a621-17042a74a8e3"},
		{"static", "wan_mode = static\nwan_address = 203.0.113.2/24\nwan_gateway = 203.0.113.1\nwan_dns = 203.0.113.53, 2001:db8::35\ncloud_proxy = http://proxy.example.net:8080\n", ""},
		{"pppoe", "wan_mode = pppoe\npppoe_user = user@isp.example\npppoe_password = \"s3cr\\\"et \"\ncloud_proxy = http://proxy.example.net:8080\n", ""},
		{"ipv4-only", "ipv6 = off\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, errs := Parse([]byte(tc.conf))
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			files, err := Generate(c, testRoles, tc.code)
			if err != nil {
				t.Fatal(err)
			}
			again, _ := Generate(c, testRoles, tc.code)
			if !reflect.DeepEqual(files, again) {
				t.Fatal("Generate is not deterministic")
			}
			dir := filepath.Join("testdata", "golden", tc.name)
			if *update {
				os.RemoveAll(dir)
			}
			seen := map[string]bool{}
			for _, f := range files {
				p := filepath.Join(dir, f.Path)
				seen[p] = true
				if *update {
					if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(p, f.Data, 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				want, err := os.ReadFile(p)
				if err != nil {
					t.Errorf("%s generated, no golden file: %v", f.Path, err)
					continue
				}
				if string(want) != string(f.Data) {
					t.Errorf("%s differs from %s:\n--- got\n%s\n--- want\n%s", f.Path, p, f.Data, want)
				}
				if secret := strings.Contains(string(f.Data), "password") || strings.Contains(string(f.Data), "entitlement_code"); secret && f.Mode != 0o600 {
					t.Errorf("%s holds a secret with mode %o", f.Path, f.Mode)
				}
			}
			filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
				if err == nil && !fi.IsDir() && !seen[p] {
					t.Errorf("golden file %s not generated", p)
				}
				return nil
			})
			for _, f := range files {
				if f.Path == CloudsteerConfig {
					if _, err := config.Parse(f.Data); err != nil {
						t.Errorf("cloudsteer refuses the generated config: %v", err)
					}
				}
			}
		})
	}
}

// fakeSysfs builds /sys/class/net entries: name -> (device path or "",
// MAC, ifindex).
func fakeSysfs(t *testing.T, nics map[string][3]string) string {
	t.Helper()
	root := t.TempDir()
	for name, v := range nics {
		d := filepath.Join(root, "class", "net", name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		typ := "1"
		if name == "lo" {
			typ = "772"
		}
		os.WriteFile(filepath.Join(d, "type"), []byte(typ+"\n"), 0o644)
		os.WriteFile(filepath.Join(d, "address"), []byte(v[1]+"\n"), 0o644)
		os.WriteFile(filepath.Join(d, "ifindex"), []byte(v[2]+"\n"), 0o644)
		if v[0] != "" {
			dev := filepath.Join(root, "devices", v[0])
			os.MkdirAll(dev, 0o755)
			rel, _ := filepath.Rel(d, dev)
			if err := os.Symlink(rel, filepath.Join(d, "device")); err != nil {
				t.Fatal(err)
			}
		}
		if strings.HasPrefix(name, "wl") {
			os.MkdirAll(filepath.Join(d, "wireless"), 0o755)
		}
	}
	return root
}

// TestNICOrder: the default roles follow the bus, not the names: a NIC
// named to sort first but sitting later on the bus is the LAN; virtual
// and wireless interfaces never take a default role.
func TestNICOrder(t *testing.T) {
	sys := fakeSysfs(t, map[string][3]string{
		"lo":     {"", "00:00:00:00:00:00", "1"},
		"eth9":   {"pci0000:00/0000:00:1c.0/0000:01:00.0", "52:54:00:00:00:01", "5"},
		"eth0":   {"pci0000:00/0000:00:1c.1/0000:02:00.0", "52:54:00:00:00:02", "4"},
		"enp3s0": {"pci0000:00/0000:00:1c.2/0000:03:00.0", "52:54:00:00:00:03", "6"},
		"veth0":  {"", "52:54:00:00:00:04", "7"},
		"wlp4s0": {"pci0000:00/0000:00:02.0/0000:04:00.0", "52:54:00:00:00:05", "8"},
	})
	nics, err := ListNICs(sys)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range nics {
		names = append(names, n.Name)
	}
	if got := strings.Join(names, " "); got != "eth9 eth0 enp3s0 veth0" {
		t.Fatalf("order %q", got)
	}
	r := PickRoles(Default(), nics)
	if r.WAN.Name != "eth9" || r.LAN.Name != "eth0" || len(r.Problems) > 0 {
		t.Fatalf("default roles %+v", r)
	}
	c, _ := Parse([]byte("wan = 52:54:00:00:00:03\n"))
	if r = PickRoles(c, nics); r.WAN.Name != "enp3s0" || r.LAN.Name != "eth9" {
		t.Fatalf("wan by MAC: %+v", r)
	}
	c, _ = Parse([]byte("lan = veth0\n"))
	if r = PickRoles(c, nics); r.WAN.Name != "eth9" || r.LAN.Name != "veth0" {
		t.Fatalf("lan by name: %+v", r)
	}
	c, _ = Parse([]byte("lan = nosuch0\n"))
	if r = PickRoles(c, nics); r.LAN.Name != "eth0" || len(r.Problems) != 1 || !strings.Contains(r.Problems[0], "nosuch0") {
		t.Fatalf("missing named lan falls back to the default: %+v", r)
	}
	one := []NIC{nics[0]}
	if r = PickRoles(Default(), one); r.LAN.Name != "eth9" || r.WAN.Name != "" || len(r.Problems) != 1 {
		t.Fatalf("one NIC: %+v", r)
	}
}

// TestConfigureImportsCode: the code moves to the state dir (0600) and
// router.conf's line becomes a comment (CRLF kept); the next boot still
// has it; the generated files are where networkd and cloudsteer look.
func TestConfigureImportsCode(t *testing.T) {
	sys := fakeSysfs(t, map[string][3]string{
		"wan0": {"pci0000:00/0000:00:02.0/0000:01:00.0", "52:54:00:00:00:01", "2"},
		"lan0": {"pci0000:00/0000:00:03.0/0000:02:00.0", "52:54:00:00:00:02", "3"},
	})
	root, state := t.TempDir(), filepath.Join(t.TempDir(), "state")
	rc := filepath.Join(t.TempDir(), "router.conf")
	const code = "3315471d-b831-48ed-a621-17042a74a8e3"
	orig := "# mine\r\ncloud_proxy = http://proxy.example.net:8080\r\nentitlement_code = " + strings.ToUpper(code) + "\r\nipv6 = on\r\n"
	if err := os.WriteFile(rc, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	o := Options{Root: root, RouterConf: rc, StateDir: state, Sysfs: sys}
	// The unit's umask must not make the directories unreadable to
	// networkd and resolved (which run as their own users).
	old := syscall.Umask(0o077)
	st, err := Configure(context.Background(), o)
	syscall.Umask(old)
	for _, d := range []string{NetworkDir, "/run/systemd/resolved.conf.d", RunDir} {
		if fi, err := os.Stat(filepath.Join(root, d)); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: %v %v, want mode 0755", d, fi, err)
		}
	}
	for _, f := range []string{NetworkDir + "/10-cloudsteer-lan.network", ResolvedDropIn} {
		if fi, err := os.Stat(filepath.Join(root, f)); err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: %v %v, want mode 0644", f, fi, err)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if !st.Imported || !st.HasCode || len(st.Problems) > 0 || st.WAN.Name != "wan0" || st.LAN.Name != "lan0" {
		t.Fatalf("status %+v", st)
	}
	b, _ := os.ReadFile(rc)
	if want := "# mine\r\ncloud_proxy = http://proxy.example.net:8080\r\n" + ImportedComment + "\r\nipv6 = on\r\n"; string(b) != want {
		t.Fatalf("router.conf now\n%q\nwant\n%q", b, want)
	}
	fi, err := os.Stat(filepath.Join(state, CodeFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("code file: %v %v", fi, err)
	}
	check := func() {
		t.Helper()
		y, err := os.ReadFile(filepath.Join(root, CloudsteerConfig))
		if err != nil || !strings.Contains(string(y), `entitlement_code: "`+code+`"`) || !strings.Contains(string(y), `lan_interfaces: ["lan0"]`) {
			t.Fatalf("cloudsteer config: %v\n%s", err, y)
		}
		if fi, _ := os.Stat(filepath.Join(root, CloudsteerConfig)); fi.Mode().Perm() != 0o600 {
			t.Fatalf("cloudsteer config mode %o", fi.Mode().Perm())
		}
		if _, err := config.Load(filepath.Join(root, CloudsteerConfig)); err != nil {
			t.Fatal(err)
		}
		n, err := os.ReadFile(filepath.Join(root, NetworkDir, "10-cloudsteer-lan.network"))
		if err != nil || !strings.Contains(string(n), "Name=lan0\n") {
			t.Fatalf("lan network: %v\n%s", err, n)
		}
	}
	check()
	// Second boot: the code comes from the state dir.
	st, err = Configure(context.Background(), o)
	if err != nil || st.Imported || !st.HasCode {
		t.Fatalf("second boot: %+v %v", st, err)
	}
	check()

	// A broken file: default addresses and WAN mode, the status names
	// the line, the NICs and cloud settings of good lines stay, stale
	// files go.
	os.WriteFile(rc, []byte("cloud_proxy = http://proxy.example.net:8080\nlan = lan0\nwan = wan0\nwan_mode = pppoe\npppoe_user = u\npppoe_password = p\nlan_address = 10.0.0.1/33\n"), 0o644)
	if _, err := Configure(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, PPPOptions)); err == nil {
		t.Fatal("pppd options written from a broken file")
	}
	os.WriteFile(rc, []byte("wan_mode = pppoe\npppoe_user = u\npppoe_password = p\n"), 0o644)
	if _, err := Configure(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(root, PPPOptions)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("pppd options: %v %v", fi, err)
	}
	os.WriteFile(rc, []byte("cloud_proxy = http://proxy.example.net:8080\nlan_address = 10.0.0.1/33\n"), 0o644)
	st, err = Configure(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, PPPOptions)); err == nil {
		t.Fatal("stale pppd options left")
	}
	status, _ := os.ReadFile(filepath.Join(root, StatusFile))
	if !strings.Contains(string(status), "router.conf line 2: lan_address:") || !strings.Contains(string(status), "192.168.77.1/24") {
		t.Fatalf("status:\n%s", status)
	}
	y, _ := os.ReadFile(filepath.Join(root, CloudsteerConfig))
	if !strings.Contains(string(y), "proxy.example.net") {
		t.Fatalf("cloud proxy of a good line dropped:\n%s", y)
	}
	n, _ := os.ReadFile(filepath.Join(root, NetworkDir, "10-cloudsteer-lan.network"))
	if !strings.Contains(string(n), "Address=192.168.77.1/24") || !strings.Contains(string(n), "Name=lan0\n") {
		t.Fatalf("lan network of a broken file:\n%s", n)
	}
	// The named NICs of a broken file stay (swapped from the bus order).
	os.WriteFile(rc, []byte("wan = lan0\nlan = wan0\nwan_mode = static\n"), 0o644)
	if st, err = Configure(context.Background(), o); err != nil || st.WAN.Name != "lan0" || st.LAN.Name != "wan0" || len(st.Problems) != 3 || st.Mode != ModeDHCP {
		t.Fatalf("broken file with named NICs: %+v %v", st, err)
	}
}

// FuzzParse: no input panics; every error names a line of the input (or
// 0 for a missing key) and never repeats a secret; a file without errors
// always generates files cloudsteer accepts.
func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile(exampleFile); err == nil {
		f.Add(string(b))
	}
	f.Add("wan_mode = static\nwan_address = 203.0.113.2/24\nwan_gateway = 203.0.113.1\n")
	f.Add("wan_mode = pppoe\npppoe_user = a\npppoe_password = \"x\\\"\"\n")
	f.Add("cloud_proxy = https://p.example:443\ndns = [2001:db8::1]:53\nlan_address = 10.0.0.1/8\ndhcp_pool = 10.0.0.2-10.255.255.254\n")
	f.Fuzz(func(t *testing.T, in string) {
		c, errs := Parse([]byte(in))
		nlines := strings.Count(in, "\n") + 1
		for _, e := range errs {
			if e.Line < 0 || e.Line > nlines {
				t.Fatalf("error on line %d of %d: %v", e.Line, nlines, e)
			}
		}
		if len(errs) > 0 {
			return
		}
		if c.PPPoEPassword != "" && len(c.PPPoEPassword) > 3 {
			for _, w := range c.Warnings {
				if strings.Contains(w.Error(), c.PPPoEPassword) {
					t.Fatalf("warning echoes the password: %v", w)
				}
			}
		}
		if _, err := Generate(c, testRoles, ""); err != nil {
			t.Fatalf("valid router.conf %q does not generate: %v", in, err)
		}
	})
}

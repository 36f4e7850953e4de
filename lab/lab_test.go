package lab_test

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/servers"
)

// goBuild builds a main package of this module into a temporary directory.
func goBuild(tb testing.TB, pkg string) string {
	tb.Helper()
	privtest.RequireCommand(tb, "go")
	bin := filepath.Join(tb.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// labBinary builds the real cloudsteer-lab command.
func labBinary(tb testing.TB) string {
	tb.Helper()
	return goBuild(tb, "../cmd/cloudsteer-lab")
}

// upLab brings a lab up with a unique prefix and closes it when the test
// ends; it also fails the test if anything of the lab is left after Close.
func upLab(tb testing.TB, opts lab.Options) *lab.Lab {
	tb.Helper()
	privtest.RequireRoot(tb)
	privtest.RequireCommand(tb, "ip", "sysctl")
	if opts.Prefix == "" {
		opts.Prefix = privtest.Unique("cslab")
	}
	if opts.Dir == "" {
		opts.Dir = tb.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := lab.Up(ctx, opts)
	if err != nil {
		tb.Fatalf("lab.Up: %v", err)
	}
	tb.Cleanup(func() {
		if err := l.Close(); err != nil {
			tb.Errorf("lab.Close: %v", err)
		}
		requireGone(tb, opts.Prefix)
	})
	return l
}

// requireGone fails the test if any namespace of the lab with that prefix
// or its Squid state is still there.
func requireGone(tb testing.TB, prefix string) {
	tb.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		tb.Fatalf("ip netns list: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], prefix) {
			tb.Errorf("namespace %s left behind", f[0])
		}
	}
	for _, left := range []string{
		filepath.Join("/run/cloudsteer-lab", prefix),
		filepath.Join("/etc/netns", prefix+lab.RoleLAN),
		filepath.Join("/etc/netns", prefix+lab.RoleGW),
		filepath.Join("/etc/netns", prefix+lab.RoleInet),
	} {
		if _, err := os.Stat(left); err == nil {
			tb.Errorf("%s left behind", left)
		}
	}
	if shm, _ := filepath.Glob("/dev/shm/cslab" + prefix + "-*"); len(shm) > 0 {
		tb.Errorf("squid shared memory left behind: %v", shm)
	}
}

// TestFileNames checks that the lab looks for the files `serve` writes
// (lab cannot import lab/servers, which imports it).
func TestFileNames(t *testing.T) {
	tests := []struct{ name, lab, servers string }{
		{"ca", lab.CAFileName, servers.CAFile},
		{"ready", lab.ReadyFileName, servers.ReadyFile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.lab != tt.servers {
				t.Errorf("lab uses %q, servers write %q", tt.lab, tt.servers)
			}
		})
	}
}

func TestOptionsValidation(t *testing.T) {
	tests := []struct {
		name string
		opts lab.Options
		want string
	}{
		{"empty prefix", lab.Options{Dir: t.TempDir()}, "lab prefix"},
		{"prefix with slash", lab.Options{Prefix: "a/b", Dir: t.TempDir()}, "lab prefix"},
		{"prefix with space", lab.Options{Prefix: "a b", Dir: t.TempDir()}, "lab prefix"},
		{"prefix too long", lab.Options{Prefix: strings.Repeat("a", 33), Dir: t.TempDir()}, "lab prefix"},
		{"empty dir", lab.Options{Prefix: "ok"}, "lab dir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := lab.Up(context.Background(), tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Up(%+v) = %v, want error containing %q", tt.opts, err, tt.want)
			}
		})
	}
	if err := lab.Cleanup("../etc"); err == nil {
		t.Fatal("Cleanup accepted a prefix with a path in it")
	}
}

func TestLab(t *testing.T) {
	privtest.RequireCommand(t, "squid", "htpasswd", "curl")
	l := upLab(t, lab.Options{LabBinary: labBinary(t), Squid: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t.Run("namespaces", func(t *testing.T) {
		for _, role := range lab.Roles {
			ns := l.NS(role)
			if ns != l.Prefix()+role {
				t.Errorf("NS(%q) = %q", role, ns)
			}
			if _, err := os.Stat(filepath.Join("/run/netns", ns)); err != nil {
				t.Errorf("namespace %s: %v", ns, err)
			}
		}
		if ns := l.NS("dmz"); ns != "" {
			t.Errorf("NS(dmz) = %q, want empty", ns)
		}
		if err := l.Command(ctx, "dmz", "true").Run(); err == nil {
			t.Error("Command with an unknown role ran")
		}
	})

	t.Run("ready", func(t *testing.T) {
		if _, err := os.Stat(filepath.Join(l.Dir(), lab.ReadyFileName)); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("reach sites through the gateway", func(t *testing.T) {
		for _, s := range lab.Sites {
			for _, dst := range []netip.Addr{s.V4, s.V6} {
				pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
				err := l.Ping(pctx, lab.RoleLAN, dst)
				pcancel()
				if err != nil {
					t.Errorf("%s %s: %v", s.Name, dst, err)
				}
			}
		}
		// The path goes through the gateway: without forwarding there,
		// the LAN client reaches nothing beyond it.
		run(t, l, lab.RoleGW, "sysctl", "-qw", "net.ipv4.ip_forward=0")
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		err := l.Ping(pctx, lab.RoleLAN, lab.Sites[0].V4)
		pcancel()
		run(t, l, lab.RoleGW, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		if err == nil {
			t.Error("LAN client reached a site with forwarding off on the gateway")
		}
	})

	t.Run("no route out of the lab", func(t *testing.T) {
		tests := []struct {
			role   string
			family string
			want   []string // default routes as "via ADDR dev IF"
			links  []string
		}{
			{lab.RoleLAN, "-4", []string{"via 10.10.0.1 dev eth0"}, []string{"lo", "eth0"}},
			{lab.RoleLAN, "-6", []string{"via fd00:10::1 dev eth0"}, []string{"lo", "eth0"}},
			{lab.RoleGW, "-4", []string{"via 10.20.0.2 dev wan0"}, []string{"lo", "lan0", "wan0"}},
			{lab.RoleGW, "-6", []string{"via fd00:20::2 dev wan0"}, []string{"lo", "lan0", "wan0"}},
			{lab.RoleInet, "-4", nil, []string{"lo", "eth0"}},
			{lab.RoleInet, "-6", nil, []string{"lo", "eth0"}},
		}
		for _, tt := range tests {
			t.Run(tt.role+tt.family, func(t *testing.T) {
				out := run(t, l, tt.role, "ip", tt.family, "-o", "route", "show", "default")
				var got []string
				for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
					f := strings.Fields(line)
					if len(f) >= 5 {
						got = append(got, strings.Join(f[1:5], " "))
					} else if len(f) > 0 {
						got = append(got, line)
					}
				}
				if !slices.Equal(got, tt.want) {
					t.Errorf("default routes %v, want %v", got, tt.want)
				}
				var links []string
				for _, line := range strings.Split(strings.TrimSpace(run(t, l, tt.role, "ip", "-o", "link", "show")), "\n") {
					if f := strings.Fields(line); len(f) > 1 {
						name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
						links = append(links, name)
					}
				}
				slices.Sort(links)
				want := slices.Clone(tt.links)
				slices.Sort(want)
				if !slices.Equal(links, want) {
					t.Errorf("links %v, want %v", links, want)
				}
			})
		}
	})

	t.Run("resolv.conf", func(t *testing.T) {
		for role, servers := range lab.Nameservers {
			if l.NS(role) == "" {
				continue // a role this lab does not have
			}
			conf := run(t, l, role, "cat", "/etc/resolv.conf")
			for _, a := range servers {
				if !strings.Contains(conf, "nameserver "+a.String()+"\n") {
					t.Errorf("%s resolv.conf lacks %s:\n%s", role, a, conf)
				}
			}
		}
		// The gateway resolves lab names through the cloud DNS.
		out := run(t, l, lab.RoleGW, "getent", "ahostsv4", "www.example.com")
		if !strings.HasPrefix(out, lab.Sites[0].V4.String()+" ") {
			t.Errorf("gateway resolved www.example.com as:\n%s", out)
		}
	})

	t.Run("squid", func(t *testing.T) {
		testSquid(ctx, t, l)
	})

	t.Run("squid stops when its client leaves", func(t *testing.T) {
		testSquidAbort(ctx, t, l)
	})

	t.Run("info", func(t *testing.T) {
		if err := l.WriteInfo(); err != nil {
			t.Fatal(err)
		}
		info, err := lab.ReadInfo(l.Dir())
		if err != nil {
			t.Fatal(err)
		}
		if info.Prefix != l.Prefix() || info.Namespaces[lab.RoleGW] != l.NS(lab.RoleGW) || !info.Squid {
			t.Errorf("info %+v does not describe the lab", info)
		}
	})
}

// testSquid sends CONNECTs through Squid from the gateway namespace and
// checks the answers and what Squid logged.
func testSquid(ctx context.Context, t *testing.T, l *lab.Lab) {
	proxy := "http://" + netip.AddrPortFrom(lab.SquidV4, lab.SquidPort).String()
	proxy6 := "http://" + netip.AddrPortFrom(lab.SquidV6, lab.SquidPort).String()
	tests := []struct {
		name        string
		proxy       string
		user        string // user:password
		url         string
		xff         string
		wantConnect string // CONNECT answer status
		wantHTTP    string // origin answer status ("000" when there is no tunnel)
		wantUser    string // user in the log
	}{
		{"code as user", proxy, lab.EntitlementCode + ":" + lab.SquidCodePassword, "https://www.example.com/", "10.10.0.10", "200", "200", lab.EntitlementCode},
		{"chain user over ipv6", proxy6, lab.ChainUser + ":" + lab.ChainPassword, "https://news.example.com/", "fd00:10::10", "200", "200", lab.ChainUser},
		{"code without password", proxy, lab.EntitlementCode + ":", "https://www.example.com/", "10.10.0.11", "407", "000", ""},
		{"wrong password", proxy, lab.ChainUser + ":nope", "https://www.example.com/", "10.10.0.12", "407", "000", ""},
		{"sports blocked", proxy, lab.EntitlementCode + ":" + lab.SquidCodePassword, "https://scores.sports.example/", "10.10.0.13", "403", "000", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := l.Command(ctx, lab.RoleGW, "curl", "-sS", "-o", "/dev/null",
				"-w", "%{http_connect} %{http_code}",
				"--max-time", "10",
				"--noproxy", "", "-x", tt.proxy, "--proxy-user", tt.user,
				"--proxy-header", "X-Forwarded-For: "+tt.xff,
				"--cacert", l.CAFile(), tt.url)
			out, _ := cmd.Output() // a refused CONNECT makes curl fail: the codes say how
			if got := strings.TrimSpace(string(out)); got != tt.wantConnect+" "+tt.wantHTTP {
				t.Fatalf("curl via %s: connect/http status %q, want %q", tt.proxy, got, tt.wantConnect+" "+tt.wantHTTP)
			}
			host := strings.TrimSuffix(strings.TrimPrefix(tt.url, "https://"), "/") + ":443"
			rec := waitSquidRecord(t, l, func(r lab.SquidRecord) bool { return r.XFF == tt.xff })
			if rec.Method != "CONNECT" || rec.URL != host || rec.Status != atoi(t, tt.wantConnect) {
				t.Errorf("squid logged %+v, want CONNECT %s status %s", rec, host, tt.wantConnect)
			}
			if tt.wantUser != "" && rec.User != tt.wantUser {
				t.Errorf("squid logged user %q, want %q", rec.User, tt.wantUser)
			}
			wantClient := lab.GWWANV4.Addr()
			if tt.proxy == proxy6 {
				wantClient = lab.GWWANV6.Addr()
			}
			if rec.Client != wantClient {
				t.Errorf("squid saw client %s, want the gateway's WAN address %s", rec.Client, wantClient)
			}
		})
	}
}

// testSquidAbort aborts a large download through Squid and checks the
// log fields the abort tests rely on: Squid logs the transaction with the
// bytes it sent and its duration, and the origin's record says its
// transfer ended early, soon after the client left.
func testSquidAbort(ctx context.Context, t *testing.T, l *lab.Lab) {
	const size = 10_000_000_000
	url := "http://news.example.com/bytes?n=10000000000&case=squid-abort"
	start := time.Now()
	cmd := l.Command(ctx, lab.RoleGW, "curl", "-sS", "-o", "/dev/null", "--max-time", "1", "--noproxy", "",
		"-x", "http://"+netip.AddrPortFrom(lab.SquidV4, lab.SquidPort).String(),
		"--proxy-user", lab.EntitlementCode+":"+lab.SquidCodePassword, url)
	_ = cmd.Run() // curl fails: it gave up after 1s, as asked
	left := time.Now()
	rec := waitSquidRecord(t, l, func(r lab.SquidRecord) bool { return r.URL == url })
	if rec.Method != "GET" || rec.Status != 200 || rec.Bytes <= 0 || rec.Bytes >= size/10 || rec.UpstreamBytes <= 0 {
		t.Errorf("squid logged %+v: want GET 200 with some bytes sent and read, far below %d", rec, size)
	}
	if rec.Duration < 500*time.Millisecond || rec.Duration > 5*time.Second || rec.Start().Before(start.Add(-time.Second)) {
		t.Errorf("squid logged duration %s (start %s, curl ran %s..%s)", rec.Duration, rec.Start(), start, left)
	}
	var or servers.OriginRecord
	deadline := time.Now().Add(5 * time.Second)
	for {
		recs, err := servers.ReadOriginLog(l.Path(servers.OriginLogFile))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if strings.HasSuffix(r.Path, "case=squid-abort") {
				or = r
			}
		}
		if or.Ended() || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !or.Ended() || or.Complete || or.Err == "" || or.Bytes <= 0 || or.Bytes >= size/10 {
		t.Fatalf("origin record %+v: want an early end after some bytes", or)
	}
	if d := or.End.Sub(left); d > time.Second {
		t.Errorf("origin transfer ended %s after curl left, want within 1s", d)
	} else {
		t.Logf("origin transfer ended %s after curl left; squid sent %d bytes in %s", d, rec.Bytes, rec.Duration)
	}

	// A request still waiting for its head: Squid gives it up too, and
	// the origin sees that.
	slowURL := "http://news.example.com/slow?delay=8s&case=squid-abort-slow"
	cmd = l.Command(ctx, lab.RoleGW, "curl", "-sS", "-o", "/dev/null", "--max-time", "1", "--noproxy", "",
		"-x", "http://"+netip.AddrPortFrom(lab.SquidV4, lab.SquidPort).String(),
		"--proxy-user", lab.EntitlementCode+":"+lab.SquidCodePassword, slowURL)
	_ = cmd.Run()
	left = time.Now()
	rec = waitSquidRecord(t, l, func(r lab.SquidRecord) bool { return r.URL == slowURL })
	if d := rec.Time.Sub(left); d > time.Second {
		t.Errorf("squid logged the abandoned request %s after curl left, want within 1s", d)
	}
	or = servers.OriginRecord{}
	deadline = time.Now().Add(5 * time.Second)
	for !or.Ended() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		recs, err := servers.ReadOriginLog(l.Path(servers.OriginLogFile))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if strings.HasSuffix(r.Path, "case=squid-abort-slow") {
				or = r
			}
		}
	}
	if !or.Ended() || or.Complete || or.Status != 0 || !strings.Contains(or.Err, "waiting for the head") {
		t.Fatalf("origin record %+v: want the wait for the head ended early", or)
	}
	if d := or.End.Sub(left); d > time.Second {
		t.Errorf("origin saw the abandoned request end %s after curl left, want within 1s", d)
	} else {
		t.Logf("origin saw the abandoned request end %s after curl left", d)
	}
}

// waitSquidRecord waits for a Squid log record that match accepts (Squid
// writes a CONNECT's line when the tunnel closes).
func waitSquidRecord(t *testing.T, l *lab.Lab, match func(lab.SquidRecord) bool) lab.SquidRecord {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		recs, err := l.SquidLog()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if match(r) {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no matching squid log record; have %+v", recs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	for _, c := range s {
		if c < '0' || c > '9' {
			t.Fatalf("not a number: %q", s)
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// run runs a command in a lab namespace and returns its output.
func run(t *testing.T, l *lab.Lab, role string, args ...string) string {
	t.Helper()
	out, err := l.Command(context.Background(), role, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s in %s: %v\n%s", strings.Join(args, " "), role, err, out)
	}
	return string(out)
}

func TestCloseRemovesEverything(t *testing.T) {
	privtest.RequireCommand(t, "squid", "htpasswd")
	prefix := privtest.Unique("cslab")
	dir := t.TempDir()
	l := upLab(t, lab.Options{Prefix: prefix, Dir: dir, LabBinary: goBuild(t, "./testdata/stubserve"), Squid: true})
	// A process started in the lab by someone else must go too.
	sleeper := l.Command(context.Background(), lab.RoleLAN, "sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- sleeper.Wait() }()

	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	requireGone(t, prefix)
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Error("a process in the lab's LAN namespace survived Close")
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// Squid's logs stay in Dir as regular files.
	fi, err := os.Lstat(filepath.Join(dir, lab.SquidCacheLog))
	if err != nil || !fi.Mode().IsRegular() {
		t.Errorf("squid cache log after Close: %v, %v", fi, err)
	}
}

func TestCleanupAfterCrash(t *testing.T) {
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "squid", "htpasswd")
	bin := labBinary(t)
	tests := []struct {
		name     string
		down     func(t *testing.T, prefix, dir string)
		keepsLog bool
	}{
		{"Cleanup", func(t *testing.T, prefix, dir string) {
			if err := lab.Cleanup(prefix); err != nil {
				t.Fatalf("Cleanup: %v", err)
			}
		}, false},
		{"cloudsteer-lab down --prefix", func(t *testing.T, prefix, dir string) {
			if out, err := exec.Command(bin, "down", "--prefix", prefix).CombinedOutput(); err != nil {
				t.Fatalf("cloudsteer-lab down: %v\n%s", err, out)
			}
		}, false},
		{"cloudsteer-lab down --dir", func(t *testing.T, prefix, dir string) {
			if out, err := exec.Command(bin, "down", "--dir", dir).CombinedOutput(); err != nil {
				t.Fatalf("cloudsteer-lab down: %v\n%s", err, out)
			}
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := privtest.Unique("cslab")
			dir := t.TempDir()
			t.Cleanup(func() { _ = lab.Cleanup(prefix) })
			// `cloudsteer-lab up` brings the lab up and exits: its lab is
			// what a crashed test leaves behind.
			out, err := exec.Command(bin, "up", "--prefix", prefix, "--dir", dir, "--squid").CombinedOutput()
			if err != nil {
				t.Fatalf("cloudsteer-lab up: %v\n%s", err, out)
			}
			info, err := lab.ReadInfo(dir)
			if err != nil {
				t.Fatal(err)
			}
			if info.Prefix != prefix || info.Namespaces[lab.RoleInet] != prefix+lab.RoleInet || !info.Squid {
				t.Fatalf("lab.json %+v", info)
			}
			pids := nsPids(t, prefix+lab.RoleInet)
			if len(pids) < 2 {
				t.Fatalf("want the lab servers and squid running in %sinet, have pids %v", prefix, pids)
			}
			// A second lab with the same prefix is refused, and leaves
			// the first one alone.
			if _, err := lab.Up(context.Background(), lab.Options{Prefix: prefix, Dir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "exists") {
				t.Fatalf("Up over a running lab: %v", err)
			}
			if got := nsPids(t, prefix+lab.RoleInet); len(got) != len(pids) {
				t.Fatalf("refused Up touched the running lab: pids %v, were %v", got, pids)
			}

			tt.down(t, prefix, dir)
			requireGone(t, prefix)
			for _, pid := range pids {
				if alive(pid) {
					t.Errorf("process %s of the crashed lab survived", pid)
				}
			}
			fi, err := os.Lstat(filepath.Join(dir, lab.SquidCacheLog))
			if kept := err == nil && fi.Mode().IsRegular(); kept != tt.keepsLog {
				t.Errorf("squid log kept in dir: %v, want %v", kept, tt.keepsLog)
			}
			if err := lab.Cleanup(prefix); err != nil {
				t.Errorf("Cleanup of nothing: %v", err)
			}
		})
	}
}

// alive reports whether process pid exists and is not a zombie (the lab's
// processes outlive `cloudsteer-lab up`, so init reaps them, in its time).
func alive(pid string) bool {
	b, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

func nsPids(t *testing.T, ns string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		t.Fatalf("ip netns pids %s: %v", ns, err)
	}
	return strings.Fields(string(out))
}

func TestUpFailureTearsDown(t *testing.T) {
	privtest.RequireRoot(t)
	prefix := privtest.Unique("cslab")
	t.Setenv("STUBSERVE_FAIL", "stub: cannot bind 203.0.113.10:443")
	_, err := lab.Up(context.Background(), lab.Options{Prefix: prefix, Dir: t.TempDir(), LabBinary: goBuild(t, "./testdata/stubserve")})
	t.Cleanup(func() { _ = lab.Cleanup(prefix) })
	if err == nil {
		t.Fatal("Up succeeded with a lab binary that fails")
	}
	if !strings.Contains(err.Error(), "stub: cannot bind 203.0.113.10:443") {
		t.Errorf("Up error does not show the server's stderr: %v", err)
	}
	requireGone(t, prefix)
}

package main

import (
	"bytes"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
	"github.com/cloudsteer/cloudsteer/lab/servers"
)

// buildLabBinary compiles this command once per test.
func buildLabBinary(tb testing.TB) string {
	tb.Helper()
	privtest.RequireCommand(tb, "go")
	bin := filepath.Join(tb.TempDir(), "cloudsteer-lab")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		tb.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// labNS creates a namespace with every lab service address on lo.
func labNS(tb testing.TB) string {
	tb.Helper()
	ns := privtest.NewNetNS(tb)
	for _, a := range (servers.Config{Dir: "unused"}).Addrs() {
		if a.Is4() {
			privtest.Run(tb, ns, "ip", "addr", "add", netip.PrefixFrom(a, 32).String(), "dev", "lo")
		} else {
			privtest.Run(tb, ns, "ip", "addr", "add", netip.PrefixFrom(a, 128).String(), "dev", "lo", "nodad")
		}
	}
	return ns
}

// startServe runs `serve --dir dir --addr-check` in ns and waits for the
// ready file; the process is killed when the test ends.
func startServe(tb testing.TB, bin, ns, dir string) *exec.Cmd {
	tb.Helper()
	cmd := privtest.Command(ns, bin, "serve", "--dir", dir, "--addr-check")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(dir, servers.ReadyFile)); err == nil {
			return cmd
		}
		select {
		case <-exited:
			tb.Fatalf("serve exited before ready: %v\n%s", cmd.ProcessState, out.String())
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("serve not ready\n%s", out.String())
		}
	}
}

func TestServeAndQUICProbe(t *testing.T) {
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "dig")
	bin := buildLabBinary(t)
	ns := labNS(t)
	dir := t.TempDir()
	cmd := startServe(t, bin, ns, dir)
	ca := filepath.Join(dir, servers.CAFile)

	cases := []struct {
		name    string
		args    []string
		want    string // in the combined output
		wantErr bool
	}{
		{"probe v4", []string{"quic-probe", "--addr", "203.0.113.10:443", "--name", "www.example.com", "--ca", ca}, "hello from www.example.com via quic\n", false},
		{"probe v6", []string{"quic-probe", "--addr", "[2001:db8:113::11]:443", "--name", "news.example.com", "--ca", ca, "--timeout", "5s"}, "hello from news.example.com via quic\n", false},
		{"probe wrong name", []string{"quic-probe", "--addr", "203.0.113.10:443", "--name", "evil.example.org", "--ca", ca}, "certificate", true},
		{"probe closed port", []string{"quic-probe", "--addr", "203.0.113.10:444", "--name", "www.example.com", "--timeout", "2s"}, "connection refused", true},
		{"probe bad address", []string{"quic-probe", "--addr", "www.example.com", "--name", "x"}, "want ip:port", true},
		{"probe missing flags", []string{"quic-probe"}, "usage: quic-probe", true},
		{"unknown command", []string{"nope"}, `unknown command "nope"`, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := privtest.Command(ns, append([]string{bin}, tc.args...)...).CombinedOutput()
			if (err != nil) != tc.wantErr || !strings.Contains(string(out), tc.want) {
				t.Fatalf("err %v, output %q, want it to contain %q", err, out, tc.want)
			}
		})
	}
	if out := privtest.Run(t, ns, "dig", "+short", "@198.51.100.53", "www.example.com"); strings.TrimSpace(out) != "203.0.113.10" {
		t.Errorf("cloud DNS answered %q", out)
	}
	recs, err := servers.ReadOriginLog(filepath.Join(dir, servers.OriginLogFile))
	if err != nil {
		t.Fatal(err)
	}
	quic := 0
	for _, r := range recs {
		if r.Proto == "quic" && r.Status == 200 {
			quic++
		}
	}
	if quic != 2 {
		t.Errorf("%d answered quic records, want 2: %+v", quic, recs)
	}

	// SIGTERM: a clean exit that removes the ready file.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(dir, servers.ReadyFile)); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("ready file still there after SIGTERM")
		}
	}
	// A second serve in the same dir keeps the CA.
	before, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	ns2 := labNS(t)
	startServe(t, bin, ns2, dir)
	after, err := os.ReadFile(ca)
	if err != nil || !bytes.Equal(before, after) {
		t.Errorf("CA changed across restarts (%v)", err)
	}
}

func TestServeAddrCheck(t *testing.T) {
	privtest.RequireRoot(t)
	bin := buildLabBinary(t)
	ns := privtest.NewNetNS(t) // no lab addresses
	out, err := privtest.Command(ns, bin, "serve", "--dir", t.TempDir(), "--addr-check").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not assigned in this namespace: 203.0.113.10 2001:db8:113::10") {
		t.Fatalf("err %v, output %q", err, out)
	}
}

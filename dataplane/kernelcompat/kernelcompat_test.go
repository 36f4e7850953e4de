package kernelcompat

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

// kernel is one fetched kernel (a line of fetch-kernels.sh).
type kernel struct{ suite, version, vmlinuz string }

func fetchKernels(t *testing.T) []kernel {
	t.Helper()
	out, err := exec.Command("../../scripts/fetch-kernels.sh").Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("fetch kernels: %v\n%s", err, stderr)
	}
	var ks []kernel
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			t.Fatalf("fetch-kernels printed %q", line)
		}
		ks = append(ks, kernel{f[0], f[1], f[2]})
	}
	return ks
}

// newc writes a gzip'd cpio (newc) archive holding one executable, /init.
func newc(init []byte) []byte {
	var raw bytes.Buffer
	entry := func(name string, mode uint32, data []byte) {
		fmt.Fprintf(&raw, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			1, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
		raw.WriteString(name)
		raw.WriteByte(0)
		for raw.Len()%4 != 0 {
			raw.WriteByte(0)
		}
		raw.Write(data)
		for raw.Len()%4 != 0 {
			raw.WriteByte(0)
		}
	}
	entry("init", 0o100755, init)
	entry("TRAILER!!!", 0, nil)
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write(raw.Bytes())
	w.Close()
	return gz.Bytes()
}

// major, minor of a Debian kernel version ("6.12.117+deb13-amd64").
func majorMinor(v string) (int, int) {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return 0, 0
	}
	a, _ := strconv.Atoi(parts[0])
	b, _ := strconv.Atoi(strings.TrimLeft(parts[1], "0123456789")[:0] + strings.TrimRightFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	return a, b
}

// TestProgramsLoadOnDebianKernels boots each Debian kernel with the probe
// as /init and wants every program accepted in legacy mode everywhere and
// in TCX mode on 6.6 and later, as root and with only the packaged
// service's capabilities (the verifier is stricter without CAP_SYS_ADMIN).
func TestProgramsLoadOnDebianKernels(t *testing.T) {
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "qemu-system-x86_64", "apt-get", "dpkg-deb")
	dir := t.TempDir()
	probe := filepath.Join(dir, "init")
	build := exec.Command("go", "build", "-o", probe, "./probe")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the probe: %v\n%s", err, out)
	}
	bin, err := os.ReadFile(probe)
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(dir, "initrd.gz")
	if err := os.WriteFile(initrd, newc(bin), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, k := range fetchKernels(t) {
		t.Run(k.suite+"-"+k.version, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			start := time.Now()
			// No network device at all: nothing can leave the VM.
			cmd := exec.CommandContext(ctx, "qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-nographic",
				"-no-reboot", "-nic", "none", "-kernel", k.vmlinuz, "-initrd", initrd,
				"-append", "console=ttyS0 panic=-1 quiet")
			out, err := cmd.CombinedOutput()
			t.Logf("%s booted and probed in %s", k.version, time.Since(start).Round(time.Millisecond))
			got := map[string]string{}
			var done bool
			sc := bufio.NewScanner(bytes.NewReader(out))
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				line := strings.TrimSpace(sc.Text())
				i := strings.Index(line, "PROBE ")
				if i < 0 {
					continue
				}
				f := strings.Fields(line[i:])
				if len(f) >= 3 && f[1] == "fail" && f[2] == "mount" {
					t.Errorf("probe: %s", line[i:])
				}
				switch {
				case len(f) >= 2 && f[1] == "done":
					done = true
				case len(f) >= 4 && (f[1] == "ok" || f[1] == "fail"):
					got[f[2]+" "+strings.TrimSuffix(f[3], ":")] = strings.Join(f[1:], " ")
				}
			}
			if !done {
				tail := out
				if len(tail) > 4000 {
					tail = tail[len(tail)-4000:]
				}
				t.Fatalf("the probe did not finish (qemu: %v); console tail:\n%s", err, tail)
			}
			maj, min := majorMinor(k.version)
			tcx := maj > 6 || maj == 6 && min >= 6
			for _, prog := range []string{"steer", "dnscache"} {
				modes := []string{"legacy", "legacy/service"}
				if tcx {
					modes = append(modes, "tcx", "tcx/service")
				}
				for _, mode := range modes {
					v := got[prog+" "+mode]
					if !strings.HasPrefix(v, "ok") {
						t.Errorf("%s on %s (%s): %s", prog, k.version, mode, v)
					} else {
						t.Logf("%s on %s (%s): ok", prog, k.version, mode)
					}
				}
			}
		})
	}
}

// Command probe is the /init of the kernel compatibility test's initramfs
// (dataplane/kernelcompat): it mounts what the eBPF loader reads, asks the
// kernel's verifier to take cloudsteer's programs in each attach mode the
// kernel has, prints one line per program and mode ("PROBE ok ..." or
// "PROBE fail ..."), then "PROBE done" and powers the machine off.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cloudsteer/cloudsteer/dataplane/dnscache"
	"github.com/cloudsteer/cloudsteer/dataplane/steer"
	"github.com/cloudsteer/cloudsteer/dataplane/tcx"
)

func main() {
	// cilium/ebpf reads /proc/self/mountinfo once per process, possibly
	// before main: mount first, then start again as a process that finds
	// /proc there.
	if os.Getenv("PROBE_MOUNTED") == "" {
		mount()
		os.Setenv("PROBE_MOUNTED", "1")
		err := unix.Exec("/init", []string{"/init"}, os.Environ())
		fmt.Printf("PROBE fail mount exec: %v\n", err)
		return
	}
	probe()
}

// mount mounts /proc and /sys.
func mount() {
	for _, m := range []struct{ src, dst, fs string }{{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}} {
		os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.fs, 0, ""); err != nil {
			fmt.Printf("PROBE fail mount %s: %v\n", m.dst, err)
		}
	}
}

// probe asks the verifier and powers off.
func probe() {
	var uts unix.Utsname
	unix.Uname(&uts)
	fmt.Printf("PROBE kernel %s\n", strings.TrimRight(string(uts.Release[:]), "\x00"))
	for _, c := range []struct {
		mode tcx.Mode
		as   string // "root", or "service": the unit's capabilities only
	}{{tcx.ModeTCX, "root"}, {tcx.ModeLegacy, "root"}, {tcx.ModeTCX, "service"}, {tcx.ModeLegacy, "service"}} {
		mode := c.mode
		for _, p := range []struct {
			name   string
			verify func(tcx.Mode) error
		}{{"steer", steer.Verify}, {"dnscache", dnscache.Verify}} {
			var err error
			if c.as == "service" {
				err = asService(func() error { return p.verify(mode) })
			} else {
				err = p.verify(mode)
			}
			label := string(mode)
			if c.as == "service" {
				label += "/service"
			}
			if err != nil {
				msg := err.Error()
				if i := strings.Index(msg, "\n"); i > 0 {
					// The verifier log's last lines say why.
					lines := strings.Split(msg, "\n")
					if len(lines) > 12 {
						lines = append(lines[:2], lines[len(lines)-10:]...)
					}
					msg = strings.Join(lines, " | ")
				}
				fmt.Printf("PROBE fail %s %s: %s\n", p.name, label, msg)
				continue
			}
			fmt.Printf("PROBE ok %s %s\n", p.name, label)
		}
	}
	fmt.Println("PROBE done")
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}

// The capabilities of packaging/cloudsteer.service.
const (
	capNetBindService = 10
	capNetAdmin       = 12
	capPerfmon        = 38
	capBPF            = 39
)

// asService runs f on a thread of its own that holds only the service's
// capabilities (capabilities are per thread; the thread is dropped after).
func asService(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		var set [2]uint32
		for _, c := range []uint{capNetBindService, capNetAdmin, capPerfmon, capBPF} {
			set[c/32] |= 1 << (c % 32)
		}
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		data := [2]unix.CapUserData{{Effective: set[0], Permitted: set[0]}, {Effective: set[1], Permitted: set[1]}}
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			errc <- fmt.Errorf("capset: %w", err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

package daemon

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cloudsteer/cloudsteer/controlplane/config"
)

// Capabilities.
//
// cloudsteer runs as root or, as the packaged systemd unit runs it, as
// its own user with only the capabilities it needs (the unit's
// AmbientCapabilities). Without one of them a kernel call fails late with
// a bare "operation not permitted" (or, for CAP_BPF, a misleading advice
// about RLIMIT_MEMLOCK from the eBPF library), so Start checks the
// effective set first and names what is missing and what it is for.

// Capability numbers (linux/capability.h).
const (
	capNetBindService = 10
	capNetAdmin       = 12
	capPerfmon        = 38
	capBPF            = 39
)

// neededCap is a capability cloudsteer needs and why.
type neededCap struct {
	bit  uint
	name string
	why  string
}

// neededCaps returns the capabilities cfg needs; CAP_NET_BIND_SERVICE
// only when a configured port is below unprivStart (the kernel's
// net.ipv4.ip_unprivileged_port_start).
func neededCaps(cfg *config.Config, unprivStart int) []neededCap {
	caps := []neededCap{
		{capNetAdmin, "CAP_NET_ADMIN", "the nftables table, attaching the eBPF programs"},
		{capBPF, "CAP_BPF", "the eBPF maps and programs"},
		// Without it the verifier sanitises pointer arithmetic against
		// Spectre v1, which makes the classifier too complex for Linux
		// 6.12's verifier and the DNS answerer's map access illegal
		// (dataplane/kernelcompat shows both).
		{capPerfmon, "CAP_PERFMON", "the verifier's full rules for the eBPF programs"},
	}
	var low []string
	for _, p := range configuredPorts(cfg) {
		if p.port != 0 && int(p.port) < unprivStart {
			low = append(low, fmt.Sprintf("%s %d", p.key, p.port))
		}
	}
	if len(low) > 0 {
		caps = append(caps, neededCap{capNetBindService, "CAP_NET_BIND_SERVICE", "ports below " + strconv.Itoa(unprivStart) + ": " + strings.Join(low, ", ")})
	}
	return caps
}

type portKey struct {
	key  string
	port uint16
}

// configuredPorts are the ports the daemon listens on.
func configuredPorts(cfg *config.Config) []portKey {
	ps := []portKey{{"listen.http_port", cfg.Listen.HTTPPort}, {"listen.tls_port", cfg.Listen.TLSPort},
		{"listen.dns_port", cfg.Listen.DNSPort}, {"admin.port", cfg.Admin.Port}}
	if cfg.Console.On() {
		ps = append(ps, portKey{"console.port", cfg.Console.Port}, portKey{"console.http_port", cfg.Console.PlainHTTPPort()})
	}
	return ps
}

// unprivilegedPortStart reads net.ipv4.ip_unprivileged_port_start of the
// daemon's network namespace (1024 when it cannot be read).
func unprivilegedPortStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	if err != nil {
		return 1024
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 1024
	}
	return n
}

// effectiveCaps returns the process's effective capability set.
func effectiveCaps() (uint64, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, fmt.Errorf("read capabilities: %w", err)
	}
	return uint64(data[0].Effective) | uint64(data[1].Effective)<<32, nil
}

// missingCaps is the error for the needed capabilities not in eff, nil
// when none is missing.
func missingCaps(need []neededCap, eff uint64, uid int) error {
	var miss []string
	for _, c := range need {
		if eff&(1<<c.bit) == 0 {
			miss = append(miss, c.name+" ("+c.why+")")
		}
	}
	if len(miss) == 0 {
		return nil
	}
	return fmt.Errorf("missing capabilities: cloudsteer runs as uid %d without %s; run it as root or give it these "+
		"(the packaged unit's AmbientCapabilities= and CapabilityBoundingSet=, or setpriv/capsh --ambient-caps)",
		uid, strings.Join(miss, ", "))
}

// checkCapabilities fails when the process lacks a capability cfg needs.
func checkCapabilities(cfg *config.Config) error {
	eff, err := effectiveCaps()
	if err != nil {
		return err
	}
	return missingCaps(neededCaps(cfg, unprivilegedPortStart()), eff, os.Geteuid())
}

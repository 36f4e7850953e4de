package tcx

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// MinKernel is the oldest Linux cloudsteer runs on: its nftables table is
// owner-flagged (deleted by the kernel with the process, so a crash never
// leaves redirects to dead listeners), which needs 5.12. Kernels from 5.12
// to 6.5 attach the programs in legacy mode; 6.6 and later have TCX.
var MinKernel = [2]int{5, 12}

// KernelRelease is uname -r, prefixed with "Linux".
func KernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown kernel"
	}
	return "Linux " + unix.ByteSliceToString(u.Release[:])
}

// CheckKernel returns an error saying what is missing when release (as
// uname -r prints it, "6.1.0-18-amd64") is older than MinKernel; a release
// it cannot read is let through (the steps that need the features then
// fail with their own messages).
func CheckKernel(release string) error {
	major, minor, ok := parseRelease(release)
	if !ok {
		return nil
	}
	if major > MinKernel[0] || major == MinKernel[0] && minor >= MinKernel[1] {
		return nil
	}
	return fmt.Errorf("cloudsteer needs Linux >= %d.%d and this is Linux %s: its nftables table must be owner-flagged "+
		"(5.12) so that a crash cannot leave redirects behind; upgrade the kernel (Debian 12's 6.1 and OpenWrt 23.05's 5.15 work, "+
		"in legacy attach mode)", MinKernel[0], MinKernel[1], release)
}

func parseRelease(r string) (major, minor int, ok bool) {
	r = strings.TrimPrefix(r, "Linux ")
	parts := strings.SplitN(r, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err := strconv.Atoi(parts[0])
	if err != nil {
		return 0, 0, false
	}
	digits := parts[1]
	if i := strings.IndexFunc(digits, func(c rune) bool { return c < '0' || c > '9' }); i >= 0 {
		digits = digits[:i]
	}
	minor, err = strconv.Atoi(digits)
	if err != nil {
		return 0, 0, false
	}
	return major, minor, true
}

// Release returns this machine's release as uname -r prints it.
func Release() string { return strings.TrimPrefix(KernelRelease(), "Linux ") }

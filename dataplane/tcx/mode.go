package tcx

import (
	"errors"
	"fmt"
	"math"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Mode is how the programs are attached at ingress.
type Mode string

// The attach modes.
const (
	// ModeAuto probes the kernel: TCX where it has it (Linux >= 6.6),
	// legacy otherwise.
	ModeAuto Mode = "auto"
	// ModeTCX attaches bpf_links at TCX ingress; they go with the process.
	ModeTCX Mode = "tcx"
	// ModeLegacy attaches direct-action cls_bpf filters to a clsact qdisc
	// over netlink; they outlive a killed process (see legacy.go).
	ModeLegacy Mode = "legacy"
)

// EnvMode is the environment variable that picks the mode when a caller
// leaves it unset (the zero Mode): the tests' switch to run every
// privileged test in legacy mode. The daemon always passes its config key
// (dataplane.attach), so the variable never changes what it does.
const EnvMode = "CLOUDSTEER_ATTACH"

// ParseMode checks a mode's name; "" is ModeAuto.
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case "", ModeAuto:
		return ModeAuto, nil
	case ModeTCX, ModeLegacy:
		return Mode(s), nil
	}
	return "", fmt.Errorf("%q is not one of auto, tcx, legacy", s)
}

// probeTCX is ProbeTCX; tests replace it to act as an older kernel.
var probeTCX = ProbeTCX

// ProbeTCX reports whether the kernel has TCX: nil when it does, an error
// wrapping ebpf.ErrNotSupported when it does not, another error when the
// probe itself could not run (no permission to load a program). It
// attaches nothing: the probe asks for a TCX link on an interface index
// that does not exist, which a kernel with TCX refuses with ENODEV.
func ProbeTCX() error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SchedCLS,
		License:      "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()},
	})
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("probe TCX: load a test program: %w (needs root, or CAP_BPF and CAP_NET_ADMIN)", err)
	}
	if err != nil {
		return fmt.Errorf("probe TCX: load a test program: %w", err)
	}
	defer prog.Close()
	lk, err := link.AttachTCX(link.TCXOptions{Interface: math.MaxInt32, Program: prog, Attach: ebpf.AttachTCXIngress})
	switch {
	case err == nil:
		lk.Close()
		return nil
	case errors.Is(err, unix.ENODEV):
		return nil
	case errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("TCX needs Linux >= 6.6; running %s: %w", KernelRelease(), err)
	default:
		return fmt.Errorf("probe TCX: %w", err)
	}
}

// Choose resolves m to ModeTCX or ModeLegacy and says why: the zero Mode
// takes $CLOUDSTEER_ATTACH (or auto), auto probes the kernel and falls
// back to legacy when TCX is not supported, tcx fails on a kernel without
// TCX, legacy is taken as asked.
func Choose(m Mode) (Mode, string, error) {
	why := "configured"
	if m == "" {
		env := os.Getenv(EnvMode)
		var err error
		if m, err = ParseMode(env); err != nil {
			return "", "", fmt.Errorf("$%s: %w", EnvMode, err)
		}
		if env != "" {
			why = "$" + EnvMode
		}
	}
	switch m {
	case ModeLegacy:
		return ModeLegacy, why, nil
	case ModeTCX:
		if err := probeTCX(); err != nil {
			return "", "", fmt.Errorf("attach mode tcx: %w (use auto or legacy)", err)
		}
		return ModeTCX, why, nil
	case ModeAuto:
		err := probeTCX()
		switch {
		case err == nil:
			return ModeTCX, "auto: the kernel has TCX", nil
		case errors.Is(err, ebpf.ErrNotSupported):
			return ModeLegacy, "auto: no TCX in " + KernelRelease() + ", using clsact/cls_bpf", nil
		default:
			return "", "", err
		}
	}
	return "", "", fmt.Errorf("attach mode %q is not one of auto, tcx, legacy", m)
}

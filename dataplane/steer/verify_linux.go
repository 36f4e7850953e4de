package steer

import (
	"github.com/cilium/ebpf"

	"github.com/cloudsteer/cloudsteer/dataplane/tcx"
)

// Verify loads the classifier and forwarder into the kernel for mode and
// closes them again, attaching nothing: it tells whether this kernel's
// verifier takes them (the kernel compatibility test boots Debian's
// kernels with it, see dataplane/kernelcompat).
func Verify(mode tcx.Mode) error {
	spec, err := loadSteer()
	if err != nil {
		return err
	}
	if mode == tcx.ModeLegacy {
		for _, p := range spec.Programs {
			p.AttachType = ebpf.AttachNone
		}
	}
	var objs steerObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return explainLoad(err)
	}
	return objs.Close()
}

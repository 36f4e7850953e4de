package dnscache

import (
	"github.com/cilium/ebpf"

	"github.com/cloudsteer/cloudsteer/dataplane/tcx"
)

// Verify loads the DNS answerer into the kernel for mode and closes it
// again, attaching nothing: it tells whether this kernel's verifier takes
// it (see dataplane/kernelcompat).
func Verify(mode tcx.Mode) error {
	spec, err := loadDnscache()
	if err != nil {
		return err
	}
	if mode == tcx.ModeLegacy {
		for _, p := range spec.Programs {
			p.AttachType = ebpf.AttachNone
		}
	}
	var objs dnscacheObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return explainLoad(err)
	}
	return objs.Close()
}

package daemon

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/cilium/ebpf"

	"github.com/cloudsteer/cloudsteer/controlplane/config"
	"github.com/cloudsteer/cloudsteer/dataplane/tcx"
)

// chooseAttach resolves dataplane.attach (auto probes for TCX) and logs
// the mode.
func chooseAttach(cfg *config.Config, log *slog.Logger) (tcx.Mode, error) {
	mode, why, err := tcx.Choose(tcx.Mode(cfg.Dataplane.Attach))
	if errors.Is(err, ebpf.ErrNotSupported) {
		return "", &config.Error{Key: "dataplane.attach", Problem: err.Error()}
	}
	if err != nil {
		return "", fmt.Errorf("choose eBPF attach mode: %w", err)
	}
	log.With("component", "daemon").Info("eBPF attach mode", "mode", mode, "why", why, "kernel", tcx.Release())
	return mode, nil
}

// removeStale removes the legacy filters a killed cloudsteer left in this
// namespace, whatever the mode: the new programs take their place. It runs
// once the owner-flagged table exists, which proves that no other
// cloudsteer runs here (whose filters would not be stale).
func removeStale(log *slog.Logger) {
	log = log.With("component", "daemon")
	removed, err := tcx.RemoveStale()
	for _, r := range removed {
		log.Info("removed a filter a killed cloudsteer left", "interface", r.Interface, "filter", r.Filter, "priority", fmt.Sprintf("%#x", r.Priority))
	}
	if err != nil {
		log.Warn("remove stale cloudsteer filters", "err", err)
	}
}

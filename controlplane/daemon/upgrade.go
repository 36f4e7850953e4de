package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"

	"github.com/cloudsteer/cloudsteer/controlplane/console"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
	"github.com/cloudsteer/cloudsteer/controlplane/upgrade"
)

// UpgradeSpoolDir is the directory, in the state directory, where the
// console leaves an upgrade bundle for cloudsteer-upgrade.service.
const UpgradeSpoolDir = "upgrade"

// UpgradeKey is the public key upgrade bundles are verified with on the
// image.
const UpgradeKey = "/usr/share/cloudsteer/upgrade.pub"

// imageState is the appliance image as the daemon sees it: the slots'
// paths (nil when not looked at: tests) and the key.
type imageState struct {
	sys *upgrade.System
	key string
}

// newImageState is the image as it is on the appliance.
func newImageState(log *slog.Logger) imageState {
	sys := upgrade.Default()
	sys.Log = log
	return imageState{sys: &sys, key: UpgradeKey}
}

// imageStatus is Status's Image: nil off the image. As the daemon cannot
// read the root-only ESP, Boot, Other and Upgrade are usually empty here
// (EntriesError says why); `cloudsteer status` as root fills them in.
func (d *Daemon) imageStatus() *model.ImageStatus {
	if d.image.sys == nil {
		return nil
	}
	st, err := d.image.sys.Inspect()
	if err != nil {
		return nil
	}
	return st
}

func (d *Daemon) spoolDir() string { return filepath.Join(d.cfg.StateDir, UpgradeSpoolDir) }

// ReceiveUpgrade implements console.Backend: it verifies the bundle while
// saving it in the spool, where the root unit picks it up.
func (b consoleBackend) ReceiveUpgrade(ctx context.Context, r io.Reader) (string, error) {
	d := b.d
	if d.imageStatus() == nil {
		return "", model.Plain(model.ErrForbidden, "upgrades are for the cloudsteer appliance image; this gateway does not run from it")
	}
	pub, err := upgrade.LoadPublicKey(d.image.key)
	if err != nil {
		return "", fmt.Errorf("upgrade key: %w", err)
	}
	running := d.imageStatus().Version
	// The root unit refuses a version that is not newer too; say so before
	// the rest of the bundle is read.
	newer := func(m *upgrade.Manifest) error {
		if running != "" && upgrade.CompareVersions(m.Version, running) <= 0 {
			return fmt.Errorf("version %s is not newer than the running %s", m.Version, running)
		}
		return nil
	}
	m, err := upgrade.Receive(ctx, d.spoolDir(), r, pub, newer)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return "", err
		}
		return "", model.Plain(model.ErrInvalid, err.Error())
	}
	d.log.Info("upgrade bundle received", "component", "upgrade", "version", m.Version)
	return m.Version, nil
}

// UpgradeState implements console.Backend.
func (b consoleBackend) UpgradeState(ctx context.Context) (console.UpgradeState, bool) {
	st, ok, err := upgrade.ReadSpoolState(b.d.spoolDir())
	if err != nil || !ok {
		return console.UpgradeState{}, false
	}
	return console.UpgradeState{State: st.State, Version: st.Version, Error: st.Error, Time: st.Time}, true
}

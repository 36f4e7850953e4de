package upgrade

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// The console's upgrade goes through a spool directory, because the daemon
// runs as an unprivileged user and cannot write partitions or the ESP:
//
//  1. The daemon (console upload or URL) streams the bundle into
//     DIR/bundle.partial, verifying it as it goes (signature, sizes,
//     hashes; so the admin hears at once about a wrong key), and renames
//     it to DIR/bundle.
//  2. cloudsteer-upgrade.path (PathExists=DIR/bundle) starts
//     cloudsteer-upgrade.service, a root oneshot: `cloudsteer upgrade
//     --spool DIR` (InstallSpool). It opens DIR/bundle without following
//     links, takes it out of the directory, and installs it exactly as the
//     CLI does, writing its progress to DIR/result.json.
//
// Nothing the daemon writes is trusted by root: the install verifies the
// bundle again while it streams, and compares what it wrote (read back
// from the partition) with the signed manifest, so changing the file under
// root's feet only makes the install fail. Install refuses a version that
// is not newer than the running one, so a daemon cannot replay an old
// signed bundle. The daemon can start a reboot into a newer signed image,
// no more.
const (
	SpoolBundle  = "bundle"
	SpoolPartial = "bundle.partial"
	SpoolResult  = "result.json"
)

// SpoolState is DIR/result.json: where the console's upgrade stands.
type SpoolState struct {
	State   string    `json:"state"` // "received", "installing", "rebooting", "installed", "failed"
	Version string    `json:"version,omitempty"`
	Error   string    `json:"error,omitempty"`
	Time    time.Time `json:"time"`
}

// Spool states.
const (
	SpoolReceived   = "received"
	SpoolInstalling = "installing"
	SpoolRebooting  = "rebooting"
	SpoolInstalled  = "installed" // written, no reboot asked
	SpoolFailed     = "failed"
)

// MaxBundle is the largest bundle the spool takes.
const MaxBundle = MaxManifest + ed25519.SignatureSize + MaxRoot + MaxKernel + MaxInitrd + 64<<10

// Receive streams a bundle from r into dir (created 0700), verifying it
// fully, and hands it to the root unit by renaming it to dir/bundle.
// check, when set, sees the manifest as soon as its signature holds and
// may refuse the bundle before the rest is read. On any error nothing is
// left for the unit.
func Receive(ctx context.Context, dir string, r io.Reader, pub ed25519.PublicKey, check func(*Manifest) error) (*Manifest, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("receive bundle: %w", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, SpoolBundle)); err == nil {
		return nil, errors.New("receive bundle: an upgrade is already waiting to be installed")
	}
	tmp := filepath.Join(dir, SpoolPartial)
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("receive bundle: %w", err)
	}
	fail := func(err error) (*Manifest, error) {
		f.Close()
		os.Remove(tmp)
		return nil, err
	}
	lr := &io.LimitedReader{R: &ctxReader{ctx, r}, N: MaxBundle + 1}
	br, err := Open(io.TeeReader(lr, f), pub)
	if err != nil {
		return fail(fmt.Errorf("receive bundle: %w", err))
	}
	m := br.Manifest()
	if check != nil {
		if err := check(m); err != nil {
			return fail(fmt.Errorf("receive bundle: %w", err))
		}
	}
	for {
		_, fr, err := br.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err == nil {
			_, err = io.Copy(io.Discard, fr)
		}
		if err != nil {
			return fail(fmt.Errorf("receive bundle: %w", err))
		}
	}
	if lr.N <= 0 {
		return fail(errors.New("receive bundle: too large"))
	}
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("receive bundle: %w", err))
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("receive bundle: %w", err)
	}
	_ = writeSpoolState(dir, SpoolState{State: SpoolReceived, Version: m.Version, Time: time.Now()})
	if err := os.Rename(tmp, filepath.Join(dir, SpoolBundle)); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("receive bundle: %w", err)
	}
	return m, nil
}

// ReadSpoolState reads dir/result.json; ok is false when there is none.
func ReadSpoolState(dir string) (st SpoolState, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, SpoolResult))
	if errors.Is(err, os.ErrNotExist) {
		return st, false, nil
	}
	if err != nil {
		return st, false, fmt.Errorf("read upgrade state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, false, fmt.Errorf("read upgrade state: %w", err)
	}
	return st, true, nil
}

// InstallSpool is the root unit's side: it takes dir/bundle and installs
// it with sys, recording progress in dir/result.json. It does not follow
// a link at dir/bundle and reads only a regular file.
func InstallSpool(ctx context.Context, sys System, dir string, pub ed25519.PublicKey, opts InstallOptions) error {
	path := filepath.Join(dir, SpoolBundle)
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("take spooled bundle: open %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("take spooled bundle: %w", err)
	}
	// Out of the directory before anything else, so the path unit does not
	// start again for it.
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("take spooled bundle: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("take spooled bundle: %s is not a regular file", path)
	}
	record := func(st SpoolState) {
		st.Time = time.Now()
		if err := writeSpoolState(dir, st); err != nil {
			sys.log().Warn("write upgrade state", "err", err)
		}
	}
	record(SpoolState{State: SpoolInstalling})
	state := SpoolRebooting
	if opts.NoReboot {
		state = SpoolInstalled
	}
	inner := opts
	inner.NoReboot = true
	res, err := sys.Install(ctx, f, pub, inner)
	if err != nil {
		record(SpoolState{State: SpoolFailed, Error: err.Error()})
		return err
	}
	record(SpoolState{State: state, Version: res.Manifest.Version})
	if opts.NoReboot {
		return nil
	}
	_, err = sys.reboot(ctx)
	if err != nil {
		record(SpoolState{State: SpoolFailed, Version: res.Manifest.Version, Error: err.Error()})
	}
	return err
}

// writeSpoolState replaces dir/result.json. The directory belongs to the
// unprivileged daemon, so the file is made under a fresh random name with
// O_EXCL|O_NOFOLLOW (never through a link the daemon planted) and renamed
// into place (a rename replaces a link, it does not follow it).
func writeSpoolState(dir string, st SpoolState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(dir, ".result-"+hex.EncodeToString(rnd[:]))
	fd, err := unix.Open(tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), tmp)
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	f.Chmod(0o644)
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, SpoolResult))
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
	"github.com/cloudsteer/cloudsteer/controlplane/upgrade"
)

// DefaultUpgradeKey is where the image keeps the public key upgrades are
// verified with.
const DefaultUpgradeKey = "/usr/share/cloudsteer/upgrade.pub"

// system returns the slots' System (the image's paths unless a test set
// c.upgradeSys).
func (c *cli) system() upgrade.System {
	if c.upgradeSys != nil {
		return *c.upgradeSys
	}
	return upgrade.Default()
}

const upgradeUse = "upgrade FILE|URL|- [--no-reboot] [--tries N] [--pub KEY]"

// cmdUpgrade writes a bundle into the inactive slot and reboots into it.
// It runs as root: the daemon has no access to the partitions or the ESP.
func cmdUpgrade(ctx context.Context, c *cli, args []string) int {
	fs := c.flags("upgrade")
	noReboot := fs.Bool("no-reboot", false, "write the slot and its entry, do not reboot")
	tries := fs.Int("tries", 3, fmt.Sprintf("boots the new slot gets to come up healthy (1..%d)", upgrade.MaxTries))
	pubPath := fs.String("pub", DefaultUpgradeKey, "the public key bundles must be signed for")
	spool := fs.String("spool", "", "take the bundle the console left in this directory (cloudsteer-upgrade.service)")
	writeState := fs.Bool("write-state", false, "record the boot slots' state for the daemon (cloudsteer-image-state.service)")
	want := 1
	for _, a := range args {
		if a == "--" {
			break
		}
		for _, f := range []string{"spool", "write-state"} {
			if strings.HasPrefix(a, "--"+f) || strings.HasPrefix(a, "-"+f) {
				want = 0
			}
		}
	}
	pos, code := c.parse(fs, args, want, upgradeUse)
	if code != exitOK {
		return code
	}
	if *tries < 1 || *tries > upgrade.MaxTries {
		return c.usageErr("upgrade: --tries must be from 1 to %d", upgrade.MaxTries)
	}
	if c.geteuid() != 0 {
		fmt.Fprintln(c.stderr, "cloudsteer: upgrade: must be run as root (it writes the inactive root partition and the boot partition)")
		return exitFail
	}
	sys := c.system()
	if *writeState {
		st, err := sys.Inspect()
		if err == nil {
			err = upgrade.WriteState(sys.StateFile, st)
		}
		if err != nil {
			return c.fail(err)
		}
		return exitOK
	}
	// Off the image, say so before anything else goes wrong.
	if _, err := sys.CurrentSlot(); err != nil {
		return c.fail(fmt.Errorf("upgrade: %w", err))
	}
	pub, err := upgrade.LoadPublicKey(*pubPath)
	if err != nil {
		return c.fail(err)
	}
	opts := upgrade.InstallOptions{Tries: *tries, NoReboot: *noReboot,
		Progress: func(f string, a ...any) { fmt.Fprintf(c.stdout, f+"\n", a...) }}
	if *spool != "" {
		if err := upgrade.InstallSpool(ctx, sys, *spool, pub, opts); err != nil {
			return c.fail(err)
		}
		return exitOK
	}
	src, closeSrc, err := c.openBundle(ctx, pos[0])
	if err != nil {
		return c.fail(err)
	}
	defer closeSrc()
	res, err := sys.Install(ctx, src, pub, opts)
	if err != nil {
		return c.fail(err)
	}
	if !res.Rebooted {
		fmt.Fprintf(c.stdout, "cloudsteer %s is in slot %s; reboot to start it (it has %d tries to come up healthy, else the gateway goes back to slot %s)\n",
			res.Manifest.Version, res.To, *tries, res.From)
	}
	return exitOK
}

// openBundle opens a bundle file, stdin ("-") or an http(s) URL. Nothing
// is trusted from the source: the bundle is verified as it streams.
func (c *cli) openBundle(ctx context.Context, arg string) (io.Reader, func(), error) {
	switch {
	case arg == "-":
		return c.stdin, func() {}, nil
	case strings.HasPrefix(arg, "https://") || strings.HasPrefix(arg, "http://"):
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, arg, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("upgrade: %w", err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, nil, fmt.Errorf("upgrade: download: %w", err)
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return nil, nil, fmt.Errorf("upgrade: download %s: HTTP %d", arg, resp.StatusCode)
		}
		return resp.Body, func() { resp.Body.Close() }, nil
	}
	f, err := os.Open(arg)
	if err != nil {
		return nil, nil, fmt.Errorf("upgrade: %w", err)
	}
	return f, func() { f.Close() }, nil
}

// cmdHealth is the boot's health gate: it exits 0 once the daemon answers
// and its dataplane is up, or 1 after --wait with the reason.
func cmdHealth(ctx context.Context, c *cli, args []string) int {
	fs := c.flags("health")
	wait := fs.Duration("wait", 0, "keep asking this long (0: ask once)")
	interval := fs.Duration("interval", time.Second, "time between tries")
	if _, code := c.parse(fs, args, 0, "health [--wait D]"); code != exitOK {
		return code
	}
	deadline := time.Now().Add(*wait)
	for {
		why, err := c.healthOnce(ctx)
		if err == nil && why == "" {
			return exitOK
		}
		if err != nil {
			why = oneLine(err.Error())
		}
		if !time.Now().Before(deadline) || ctx.Err() != nil {
			if *wait > 0 {
				fmt.Fprintf(c.stderr, "cloudsteer: not healthy after %s: %s\n", *wait, why)
			} else {
				fmt.Fprintf(c.stderr, "cloudsteer: not healthy: %s\n", why)
			}
			return exitFail
		}
		select {
		case <-ctx.Done():
		case <-time.After(*interval):
		}
	}
}

// dataplaneDown are the reasons that say the dataplane itself is not up
// (as opposed to failing open for a reason it names: no code, cloud proxy
// down, paused).
var dataplaneDown = []string{model.ReasonNotAttached, model.ReasonNoFirewallTable}

// healthOnce asks the daemon once; it returns "" when healthy, else why not.
func (c *cli) healthOnce(ctx context.Context) (string, error) {
	st, _, err := get[model.Status](ctx, c, "GET", "/status", nil)
	if err != nil {
		var nr *notRunningError
		if errors.As(err, &nr) {
			return nr.msg, nil
		}
		return "", err
	}
	for _, r := range st.Reasons {
		if contains(dataplaneDown, r.Code) {
			return r.Code + ": " + r.Message, nil
		}
	}
	var codes []string
	for _, r := range st.Reasons {
		codes = append(codes, r.Code)
	}
	switch st.State {
	case model.Protected:
		fmt.Fprintln(c.stdout, "healthy: protected")
	case model.Paused:
		fmt.Fprintln(c.stdout, "healthy: paused")
	case model.NotProtected:
		if len(codes) == 0 {
			return "not protected, and the status names no reason", nil
		}
		fmt.Fprintf(c.stdout, "healthy: dataplane up, failing open (%s)\n", strings.Join(codes, ", "))
	default:
		return fmt.Sprintf("unknown state %q", st.State), nil
	}
	return "", nil
}

// localImage reads the image's state on this machine (as root it can read
// the ESP, which the daemon cannot); nil when not on the image.
func (c *cli) localImage() *model.ImageStatus {
	if c.inspect == nil {
		return nil
	}
	st, err := c.inspect()
	if err != nil {
		return nil
	}
	return st
}

// imageLines adds the image's lines to status.
func imageLines(w io.Writer, img *model.ImageStatus) {
	if img == nil {
		return
	}
	fmt.Fprintf(w, "Image:\tcloudsteer %s (slot %s)\n", orDash(img.Version), img.Slot)
	switch {
	case img.Upgrade != "":
		fmt.Fprintf(w, "Upgrade:\t%s\n", img.Upgrade)
	case img.EntriesError != "":
		fmt.Fprintf(w, "Upgrade:\tunknown (%s; run as root)\n", oneLine(img.EntriesError))
	}
}

// mergeImage puts the locally read image state into st; it reports
// whether it changed anything.
func (c *cli) mergeImage(st *model.Status) bool {
	local := c.localImage()
	if local == nil || (st.Image != nil && st.Image.EntriesError == "" && local.EntriesError != "") {
		return false
	}
	st.Image = local
	return true
}

func marshalLine(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

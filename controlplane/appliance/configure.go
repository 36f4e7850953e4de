package appliance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Defaults of Options.
const (
	DefaultRouterConf = "/efi/cloudsteer/router.conf"
	DefaultStateDir   = "/var/lib/cloudsteer-appliance"
	// CodeFile (in the state dir) holds the imported entitlement code.
	CodeFile = "entitlement-code"
)

// ImportedComment replaces router.conf's entitlement_code line once the
// code is kept on the data partition.
const ImportedComment = "# entitlement_code: imported into the router's data partition and removed from this file; to replace it, add a new entitlement_code = line (or use the console)"

// Options say where Configure reads and writes.
type Options struct {
	// Root prefixes every path written (tests); "" is /.
	Root       string
	RouterConf string // default DefaultRouterConf (not under Root)
	StateDir   string // default DefaultStateDir (not under Root)
	Sysfs      string // default /sys
	// Wait bounds the wait for the NICs to appear (and for udev to name
	// them); 0 does not wait.
	Wait time.Duration
	Log  *slog.Logger
}

// Status is what Configure did, for the status file and the console.
type Status struct {
	Problems []string // router.conf errors, missing NICs: the reasons for a fallback
	Warnings []string
	WAN, LAN NIC
	Mode     string
	Imported bool // the entitlement code moved from router.conf to the state dir
	HasCode  bool
}

// Text is the status file's content.
func (s *Status) Text(c *Conf) string {
	var b strings.Builder
	if len(s.Problems) == 0 {
		b.WriteString("router.conf: ok\n")
	} else {
		b.WriteString("router.conf: problems (the network part uses the defaults where it says so):\n")
		for _, p := range s.Problems {
			b.WriteString("  " + p + "\n")
		}
	}
	for _, w := range s.Warnings {
		b.WriteString("warning: " + w + "\n")
	}
	nic := func(n NIC) string {
		if n.Name == "" {
			return "none"
		}
		d := n.Device
		if d == "" {
			d = "virtual"
		}
		return fmt.Sprintf("%s (%s, %s)", n.Name, n.MAC, d)
	}
	fmt.Fprintf(&b, "wan: %s, %s\n", nic(s.WAN), c.WANMode)
	fmt.Fprintf(&b, "lan: %s, %s\n", nic(s.LAN), c.LANAddress)
	code := "none (the LAN is not protected until a code is set: router.conf or the console)"
	if s.HasCode {
		code = "set"
	}
	fmt.Fprintf(&b, "entitlement code: %s\n", code)
	if len(c.CloudProxies) == 0 {
		b.WriteString("cloud proxy: not set in router.conf (cloud_proxy = ...): cloudsteer fails open\n")
	}
	return b.String()
}

func (o *Options) defaults() {
	if o.RouterConf == "" {
		o.RouterConf = DefaultRouterConf
	}
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir
	}
	if o.Sysfs == "" {
		o.Sysfs = "/sys"
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	o.Log = o.Log.With("component", "appliance")
}

// Configure reads router.conf and writes the router's files. Mistakes in
// router.conf are not errors: the network part falls back to the
// defaults, and the status (returned, logged and written to the status
// file) says why. Errors are failures to write.
func Configure(ctx context.Context, o Options) (*Status, error) {
	o.defaults()
	st := &Status{}
	c := Default()
	data, err := os.ReadFile(o.RouterConf)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		st.Warnings = append(st.Warnings, o.RouterConf+" not found: defaults")
	case err != nil:
		st.Problems = append(st.Problems, fmt.Sprintf("read %s: %v; using the defaults", o.RouterConf, err))
	default:
		parsed, errs := Parse(data)
		for _, e := range errs {
			st.Problems = append(st.Problems, e.Error())
		}
		for _, w := range parsed.Warnings {
			st.Warnings = append(st.Warnings, w.Error())
		}
		if len(errs) == 0 {
			c = parsed
		} else {
			// The addresses and the WAN mode fall back to the defaults.
			// Valid lines choosing the NICs still apply (a default pick
			// could swap the roles and serve DHCP to the provider), and
			// so do the cloud settings (they cannot cut the LAN off).
			c.WAN, c.LAN = parsed.WAN, parsed.LAN
			c.CloudProxies, c.DNS, c.NTP = parsed.CloudProxies, parsed.DNS, parsed.NTP
			c.EntitlementCode, c.CodeLine = parsed.EntitlementCode, parsed.CodeLine
			st.Problems = append(st.Problems, "the WAN and LAN addresses use the defaults until router.conf is fixed")
		}
	}
	st.Mode = c.WANMode

	code, err := o.entitlementCode(c, data, st)
	if err != nil {
		st.Problems = append(st.Problems, err.Error())
	}
	st.HasCode = code != ""

	roles := o.waitRoles(ctx, c)
	st.WAN, st.LAN = roles.WAN, roles.LAN
	st.Problems = append(st.Problems, roles.Problems...)

	files, err := Generate(c, roles, code)
	if err != nil {
		// cloudsteer's config refused what router.conf gave (cannot
		// happen for lines Parse accepted; kept as a guard): run with
		// the default cloud settings.
		st.Problems = append(st.Problems, err.Error())
		d := *c
		d.CloudProxies, d.DNS = nil, nil
		if files, err = Generate(&d, roles, code); err != nil {
			return st, err
		}
	}
	if err := o.write(files); err != nil {
		return st, err
	}
	for _, p := range st.Problems {
		o.Log.Warn("router.conf", "problem", p)
	}
	for _, w := range st.Warnings {
		o.Log.Info("router.conf", "warning", w)
	}
	o.Log.Info("configured", "wan", roles.WAN.Name, "wan_mode", c.WANMode, "lan", roles.LAN.Name,
		"lan_address", c.LANAddress.String(), "entitlement_code_set", st.HasCode, "imported", st.Imported)
	if err := writeFile(filepath.Join(o.Root, StatusFile), []byte(st.Text(c)), 0o644); err != nil {
		return st, err
	}
	return st, nil
}

// entitlementCode moves a code from router.conf to the state dir (once)
// and returns the code in force.
func (o *Options) entitlementCode(c *Conf, data []byte, st *Status) (string, error) {
	path := filepath.Join(o.StateDir, CodeFile)
	if c.EntitlementCode != "" {
		if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
			return c.EntitlementCode, fmt.Errorf("import entitlement code: %w; it stays in router.conf", err)
		}
		if err := writeFile(path, []byte(c.EntitlementCode+"\n"), 0o600); err != nil {
			return c.EntitlementCode, fmt.Errorf("import entitlement code: %w; it stays in router.conf", err)
		}
		if err := rewriteCodeLine(o.RouterConf, data, c.CodeLine); err != nil {
			return c.EntitlementCode, fmt.Errorf("remove the imported entitlement code from %s: %w", o.RouterConf, err)
		}
		st.Imported = true
		return c.EntitlementCode, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read imported entitlement code: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// rewriteCodeLine replaces line n (1-based) of the file with
// ImportedComment, keeping the file's line endings, atomically (a rename
// in the same directory, which FAT supports).
func rewriteCodeLine(path string, data []byte, n int) error {
	lines := bytes.SplitAfter(data, []byte("\n"))
	if n < 1 || n > len(lines) {
		return fmt.Errorf("line %d out of range", n)
	}
	l := lines[n-1]
	eol := ""
	switch {
	case bytes.HasSuffix(l, []byte("\r\n")):
		eol = "\r\n"
	case bytes.HasSuffix(l, []byte("\n")):
		eol = "\n"
	}
	lines[n-1] = []byte(ImportedComment + eol)
	// No chmod: FAT (the ESP) refuses it; the mount's umask rules.
	return writeFileMode(path, bytes.Join(lines, nil), 0o600, false)
}

// waitRoles picks the NIC roles, waiting up to o.Wait for the NICs to
// appear and for udev to finish with them (their final names).
func (o *Options) waitRoles(ctx context.Context, c *Conf) Roles {
	deadline := time.Now().Add(o.Wait)
	for {
		nics, err := ListNICs(o.Sysfs)
		var r Roles
		if err != nil {
			r.Problems = []string{err.Error()}
		} else {
			r = PickRoles(c, nics)
		}
		if len(r.Problems) == 0 && o.udevDone(r.WAN, r.LAN) || !time.Now().Before(deadline) {
			return r
		}
		select {
		case <-ctx.Done():
			return r
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// udevDone reports whether udev has processed the NICs (so they have
// their final names); true when udev does not run.
func (o *Options) udevDone(nics ...NIC) bool {
	if _, err := os.Stat(filepath.Join(o.Root, "/run/udev/control")); err != nil {
		return true
	}
	for _, n := range nics {
		if n.Name == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(o.Root, "/run/udev/data/n"+strconv.Itoa(n.Index))); err != nil {
			return false
		}
	}
	return true
}

func (o *Options) write(files []File) error {
	keep := map[string]bool{}
	for _, f := range files {
		keep[f.Path] = true
		p := filepath.Join(o.Root, f.Path)
		dirMode := os.FileMode(0o755)
		if f.Path == PPPOptions {
			dirMode = 0o700
		}
		if err := mkdirAll(filepath.Dir(p), dirMode); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
		if err := writeFile(p, f.Data, f.Mode); err != nil {
			return err
		}
		if f.Owner != "" {
			if u, err := user.Lookup(f.Owner); err == nil {
				uid, _ := strconv.Atoi(u.Uid)
				gid, _ := strconv.Atoi(u.Gid)
				if err := os.Chown(p, uid, gid); err != nil {
					return fmt.Errorf("chown %s: %w", p, err)
				}
			}
		}
	}
	for _, g := range Generated {
		if !keep[g] {
			if err := os.Remove(filepath.Join(o.Root, g)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("remove stale %s: %w", g, err)
			}
		}
	}
	return nil
}

// mkdirAll is os.MkdirAll that gives each directory it makes exactly
// mode, whatever the umask (networkd and resolved read theirs as other
// users).
func mkdirAll(dir string, mode os.FileMode) error {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		return nil
	}
	if parent := filepath.Dir(dir); parent != dir {
		if err := mkdirAll(parent, 0o755); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, mode); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return os.Chmod(dir, mode)
}

// writeFile writes data to path atomically with mode (a temporary file
// in the same directory, synced, renamed).
func writeFile(path string, data []byte, mode os.FileMode) error {
	return writeFileMode(path, data, mode, true)
}

func writeFileMode(path string, data []byte, mode os.FileMode, chmod bool) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil && chmod {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

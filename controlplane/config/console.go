package config

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// Console configures the web console, served over HTTPS on the LAN
// interfaces only (never the WAN, never lo).
type Console struct {
	// Enabled turns the console on; left out, it is on.
	Enabled *bool `yaml:"enabled"`
	// Port is the HTTPS port on the LAN addresses (default 443).
	Port uint16 `yaml:"port"`
	// HTTPPort is the plain-HTTP LAN port: it only redirects to HTTPS,
	// except the CA download (/ca, /ca.cer). Left out it is 80; 0 is off.
	HTTPPort *uint16 `yaml:"http_port"`
	// CertFile and KeyFile are an admin-provided PEM pair (leaf first,
	// then intermediates); the key file must be mode 0600 or stricter and
	// owned by root. Left out, the gateway makes and keeps its own
	// self-signed certificate in state_dir.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// InspectionCA is the path of the cloud provider's inspection CA
	// certificate (PEM or DER) that LAN clients must trust. When set the
	// console offers it for download and refuses uploads.
	InspectionCA string `yaml:"inspection_ca"`
	// SetupLinkTTL is how long a first-run setup link stays valid
	// (default 24h).
	SetupLinkTTL Duration `yaml:"setup_link_ttl"`
}

// Console defaults.
const (
	DefaultConsolePort     = 443
	DefaultConsoleHTTPPort = 80
	DefaultSetupLinkTTL    = 24 * time.Hour
	// MaxSetupLinkTTL bounds console.setup_link_ttl.
	MaxSetupLinkTTL = 30 * 24 * time.Hour
)

// On reports whether the console is enabled.
func (c *Console) On() bool { return c.Enabled == nil || *c.Enabled }

// PlainHTTPPort is the redirecting HTTP port, 0 when off.
func (c *Console) PlainHTTPPort() uint16 {
	if c.HTTPPort == nil {
		return DefaultConsoleHTTPPort
	}
	return *c.HTTPPort
}

func (c *Console) setDefaults() {
	if c.Enabled == nil {
		on := true
		c.Enabled = &on
	}
	if c.Port == 0 {
		c.Port = DefaultConsolePort
	}
	if c.HTTPPort == nil {
		p := uint16(DefaultConsoleHTTPPort)
		c.HTTPPort = &p
	}
	if c.SetupLinkTTL == 0 {
		c.SetupLinkTTL = Duration(DefaultSetupLinkTTL)
	}
}

// validate checks the console keys; the ports are checked with the other
// listeners' in Validate.
func (c *Console) validate() error {
	if c.SetupLinkTTL < Duration(time.Minute) || c.SetupLinkTTL > Duration(MaxSetupLinkTTL) {
		return bad("console.setup_link_ttl", "must be between 1m and %s", MaxSetupLinkTTL)
	}
	switch {
	case c.CertFile != "" && c.KeyFile == "":
		return bad("console.key_file", "required when cert_file is set")
	case c.KeyFile != "" && c.CertFile == "":
		return bad("console.cert_file", "required when key_file is set")
	}
	if c.CertFile != "" {
		if !filepath.IsAbs(c.CertFile) {
			return bad("console.cert_file", "%q is not an absolute path", c.CertFile)
		}
		if _, err := os.Stat(c.CertFile); err != nil {
			return bad("console.cert_file", "%v", err)
		}
		if err := checkKeyFile(c.KeyFile); err != nil {
			return err
		}
	}
	if c.InspectionCA != "" {
		if !filepath.IsAbs(c.InspectionCA) {
			return bad("console.inspection_ca", "%q is not an absolute path", c.InspectionCA)
		}
		if _, err := LoadInspectionCA(c.InspectionCA); err != nil {
			return bad("console.inspection_ca", "%v", err)
		}
	}
	return nil
}

// geteuid is os.Geteuid (tests play a non-root daemon).
var geteuid = os.Geteuid

// checkKeyFile refuses a private key that group or others may read or
// that is not owned by root (or by the user the daemon runs as: the
// packaged service's, or tests run unprivileged): whoever may write or
// read it could serve or impersonate the console. A daemon not run as
// root needs the key to be its own, as it cannot read root's.
func checkKeyFile(path string) error {
	if !filepath.IsAbs(path) {
		return bad("console.key_file", "%q is not an absolute path", path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return bad("console.key_file", "%v", err)
	}
	if !fi.Mode().IsRegular() {
		return bad("console.key_file", "%s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return bad("console.key_file", "%s has mode %04o; a private key must be 0600 or stricter: run chmod 600 %s", path, perm, path)
	}
	euid := geteuid()
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != euid {
		return bad("console.key_file", "%s is owned by uid %d, not root: run chown root %s", path, st.Uid, path)
	} else if ok && euid != 0 && int(st.Uid) != euid {
		// The packaged service runs as its own user, without
		// CAP_DAC_OVERRIDE: a root-owned 0600 key is unreadable to it.
		return bad("console.key_file", "%s is root's and cloudsteer runs as uid %d, which cannot read it: run chown %d %s", path, euid, euid, path)
	}
	return nil
}

// LoadInspectionCA reads console.inspection_ca and returns the
// certificate's DER (see model.ParseCACert for what is accepted).
func LoadInspectionCA(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, model.MaxCACertBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	der, err := model.ParseCACert(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return der, nil
}

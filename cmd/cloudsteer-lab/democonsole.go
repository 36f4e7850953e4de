package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/gateway"
)

// cloudsteerCLI runs `cloudsteer --socket <the lab gateway's socket> args`
// in the gateway namespace, as root, and returns its output.
func (d *demo) cloudsteerCLI(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	full := append([]string{d.bin, "--socket", gateway.SocketPath(d.l, "gw")}, args...)
	cmd := d.l.Command(ctx, lab.RoleGW, full...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(errb.String())
		if msg == "" {
			msg = err.Error()
		}
		return nil, errors.New("cloudsteer " + strings.Join(args, " ") + ": " + msg)
	}
	return out.Bytes(), nil
}

// printConsole prints the web console's URL, certificate fingerprint and
// a fresh setup link (from `cloudsteer console`, as an admin would get
// them), and how to open it from the LAN client's namespace.
func (d *demo) printConsole(ctx context.Context, prefix string) error {
	raw, err := d.cloudsteerCLI(ctx, "console", "info", "--json")
	if err != nil {
		return err
	}
	var info api.ConsoleInfo
	if err := json.Unmarshal(raw, &info); err != nil {
		return fmt.Errorf("read console info: %w", err)
	}
	if !info.Enabled || len(info.URLs) == 0 {
		fmt.Println("The web console is off in this lab.")
		return nil
	}
	url := info.URLs[0]
	fmt.Printf("Web console:          %s (from the LAN client %s only)\n", url, lab.ClientV4.Addr())
	fmt.Printf("Certificate SHA-256:  %s\n", info.Fingerprint)
	if info.AdminSetUp {
		fmt.Printf("Admin:                %s (a new setup link: cloudsteer console reset-admin)\n", info.User)
	} else {
		raw, err := d.cloudsteerCLI(ctx, "console", "setup-link", "--json")
		if err != nil {
			return err
		}
		var l api.SetupLink
		if err := json.Unmarshal(raw, &l); err != nil {
			return fmt.Errorf("read setup link: %w", err)
		}
		fmt.Printf("Setup link (one use): %s\n", l.URL)
	}
	lanNS := d.l.NS(lab.RoleLAN)
	fmt.Println()
	fmt.Println("To open it (run as root on this machine while the lab is up, e.g. with --keep):")
	fmt.Printf("  ip netns exec %s curl -k %s\n", lanNS, url)
	fmt.Printf("  ip netns exec %s chromium --no-sandbox --user-data-dir=$(mktemp -d) --ignore-certificate-errors '%s'\n", lanNS, url)
	fmt.Printf("  (chromium needs your display: keep DISPLAY or WAYLAND_DISPLAY; the certificate is self-signed,\n")
	fmt.Printf("   compare its fingerprint with the one above; `cloudsteer-lab down --prefix %s` removes a lab left behind)\n", prefix)
	return nil
}

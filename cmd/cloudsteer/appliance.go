package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/controlplane/appliance"
	"github.com/cloudsteer/cloudsteer/controlplane/config"
)

const applianceUsage = `usage: cloudsteer appliance <command> [flags]   (the router image's own commands)

  configure [--router-conf FILE] [--state-dir DIR] [--wait D]
      read router.conf and write the router's files into /run (networkd, pppd, the
      firewall's interface names, cloudsteer's config); run at every boot before
      systemd-networkd and cloudsteer. Mistakes in router.conf fall back to the
      defaults (status in ` + appliance.StatusFile + `), exit 0
  check [FILE]
      validate a router.conf (default ` + appliance.DefaultRouterConf + `): one line per
      problem, exit 2 when there is one
  banner [--wait D] [--issue FILE]
      wait for cloudsteer, then print the console's URL, certificate fingerprint and
      (before the admin exists) a one-time setup link on the system consoles and into
      the login prompt's issue file
`

// cmdAppliance runs `cloudsteer appliance ...`.
func cmdAppliance(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, applianceUsage)
		return exitConfig
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	fs := flag.NewFlagSet("appliance "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, applianceUsage) }
	switch args[0] {
	case "configure":
		conf := fs.String("router-conf", appliance.DefaultRouterConf, "router.conf to read")
		state := fs.String("state-dir", appliance.DefaultStateDir, "where the imported entitlement code is kept")
		wait := fs.Duration("wait", 15*time.Second, "longest wait for the NICs")
		if err := fs.Parse(args[1:]); err != nil || fs.NArg() > 0 {
			return exitConfig
		}
		log := slog.New(slog.NewTextHandler(stderr, nil))
		st, err := appliance.Configure(ctx, appliance.Options{RouterConf: *conf, StateDir: *state, Wait: *wait, Log: log})
		if err != nil {
			log.Error("configure failed", "component", "appliance", "err", err)
			return exitFail
		}
		if len(st.Problems) > 0 {
			fmt.Fprintf(stdout, "configured with problems (see %s)\n", appliance.StatusFile)
		} else {
			fmt.Fprintln(stdout, "configured")
		}
		return exitOK
	case "check":
		if err := fs.Parse(args[1:]); err != nil || fs.NArg() > 1 {
			return exitConfig
		}
		path := appliance.DefaultRouterConf
		if fs.NArg() == 1 {
			path = fs.Arg(0)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintln(stderr, "cloudsteer appliance check:", err)
			return exitConfig
		}
		c, errs := appliance.Parse(data)
		for _, w := range c.Warnings {
			fmt.Fprintln(stderr, "warning:", w)
		}
		for _, e := range errs {
			fmt.Fprintln(stderr, e)
		}
		if len(errs) > 0 {
			return exitConfig
		}
		fmt.Fprintln(stdout, "router.conf ok")
		return exitOK
	case "banner":
		wait := fs.Duration("wait", 3*time.Minute, "longest wait for cloudsteer")
		issue := fs.String("issue", "/run/issue.d/50-cloudsteer.issue", "issue file for the login prompt")
		socket := fs.String("socket", config.DefaultAdminSocket, "the daemon's unix socket")
		if err := fs.Parse(args[1:]); err != nil || fs.NArg() > 0 {
			return exitConfig
		}
		return banner(ctx, *socket, *wait, *issue, stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, applianceUsage)
		return exitOK
	}
	fmt.Fprintf(stderr, "cloudsteer: unknown appliance command %q\n%s", args[0], applianceUsage)
	return exitConfig
}

// banner waits for the daemon and writes the console's address (and a
// setup link while there is no admin) to every active system console.
func banner(ctx context.Context, socket string, wait time.Duration, issue string, stdout, stderr io.Writer) int {
	var text bytes.Buffer
	c := &cli{stdout: &text, stderr: stderr, stdin: strings.NewReader(""), socket: socket, now: time.Now, loc: time.Local, geteuid: os.Geteuid}
	deadline := time.Now().Add(wait)
	var info api.ConsoleInfo
	for {
		var err error
		info, _, err = get[api.ConsoleInfo](ctx, c, "GET", "/console", nil)
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			text.Reset()
			fmt.Fprintf(&text, "cloudsteer did not answer within %s: %v\n", wait, err)
			break
		}
		time.Sleep(time.Second)
	}
	var out bytes.Buffer
	out.WriteString("\n=== cloudsteer router ===\n")
	if text.Len() == 0 {
		c.printConsole(info)
		if info.Enabled && !info.AdminSetUp {
			if l, raw, err := get[api.SetupLink](ctx, c, "POST", "/console/setup-link", nil); err == nil {
				c.printLink(l, raw)
			} else {
				fmt.Fprintf(&text, "setup link: %v\n", err)
			}
		}
	}
	out.Write(text.Bytes())
	if st, err := os.ReadFile(appliance.StatusFile); err == nil {
		out.Write(st)
	}
	out.WriteString("\n")
	var wrote []string
	for _, tty := range activeConsoles() {
		f, err := os.OpenFile("/dev/"+tty, os.O_WRONLY|syscall.O_NOCTTY, 0)
		if err != nil {
			continue
		}
		if _, err := f.Write(bytes.ReplaceAll(out.Bytes(), []byte("\n"), []byte("\r\n"))); err == nil {
			wrote = append(wrote, tty)
		}
		f.Close()
	}
	if issue != "" {
		if err := os.MkdirAll(filepath.Dir(issue), 0o755); err == nil {
			// agetty treats backslashes as escapes; the text has none.
			if err := os.WriteFile(issue, bytes.ReplaceAll(out.Bytes(), []byte(`\`), []byte(`\\`)), 0o644); err == nil {
				wrote = append(wrote, issue)
			}
		}
	}
	// Not the text itself: the setup link stays off the journal.
	fmt.Fprintf(stdout, "banner written to %s\n", strings.Join(wrote, ", "))
	return exitOK
}

// activeConsoles are the kernel's consoles (console= on the command line:
// tty0 and the serial one), from /sys/class/tty/console/active.
func activeConsoles() []string {
	b, err := os.ReadFile("/sys/class/tty/console/active")
	if err != nil {
		return []string{"console"}
	}
	var ttys []string
	for _, t := range strings.Fields(string(b)) {
		if !strings.ContainsAny(t, "/.") {
			ttys = append(ttys, t)
		}
	}
	if len(ttys) == 0 {
		return []string{"console"}
	}
	return ttys
}

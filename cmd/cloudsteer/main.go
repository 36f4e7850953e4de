// Command cloudsteer is the branch-office gateway: `cloudsteer run --config
// FILE` steers the LAN's DNS and web traffic to the cloud proxy, and the
// admin commands (status, bypass, pause, resume, events, activate,
// diagnose, token, console) drive the running daemon over its unix socket.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/cloudsteer/cloudsteer/controlplane/config"
	"github.com/cloudsteer/cloudsteer/controlplane/daemon"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit statuses a script can trust.
const (
	exitOK     = 0
	exitFail   = 1 // runtime failure
	exitConfig = 2 // bad configuration or usage
)

const usage = `usage: cloudsteer <command> [flags]

commands:
  run --config FILE          run the gateway until SIGTERM/SIGINT; SIGHUP re-reads FILE
  check-config --config FILE validate a configuration file and exit
  cleanup                    remove the eBPF filters a killed cloudsteer left (legacy attach mode)
  appliance configure|check|banner  the router image's boot-time commands (cloudsteer appliance help)
  version                    print the version
  help                       this text, with the admin commands
`

func main() {
	os.Exit(mainErr(os.Args[1:], os.Stdout, os.Stderr))
}

func mainErr(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitConfig
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stderr)
	case "check-config":
		return cmdCheckConfig(args[1:], stdout, stderr)
	case "cleanup":
		return cmdCleanup(args[1:], stdout, stderr)
	case "appliance":
		return cmdAppliance(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "cloudsteer", version)
		return exitOK
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage+"\n"+cliUsage)
		return exitOK
	default:
		if isCLI(args) {
			return runCLI(args, stdout, stderr)
		}
		fmt.Fprintf(stderr, "cloudsteer: unknown command %q\n%s", args[0], usage)
		return exitConfig
	}
}

func loadConfig(name string, args []string, stderr io.Writer) (*config.Config, int) {
	cfg, _, code := loadConfigPath(name, args, stderr)
	return cfg, code
}

// loadConfigPath is loadConfig that also returns the file's path.
func loadConfigPath(name string, args []string, stderr io.Writer) (*config.Config, string, int) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/cloudsteer/cloudsteer.yaml", "configuration file")
	if err := fs.Parse(args); err != nil {
		return nil, "", exitConfig
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "cloudsteer %s: unexpected argument %q\n", name, fs.Arg(0))
		return nil, "", exitConfig
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return nil, "", exitConfig
	}
	return cfg, *path, exitOK
}

func cmdCheckConfig(args []string, stdout, stderr io.Writer) int {
	cfg, code := loadConfig("check-config", args, stderr)
	if cfg == nil {
		return code
	}
	if err := daemon.CheckEnvironment(cfg); err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	fmt.Fprintln(stdout, "config ok")
	return exitOK
}

func cmdRun(args []string, stderr io.Writer) int {
	cfg, path, code := loadConfigPath("run", args, stderr)
	if cfg == nil {
		return code
	}
	log := newLogger(cfg.Log, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	daemon.Version = version
	// SIGHUP re-reads and validates the file; the daemon applies what can
	// change at run time.
	reload := func() (*config.Config, error) { return config.Load(path) }
	if err := daemon.Run(ctx, cfg, log, reload); err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			fmt.Fprintln(stderr, ce)
			return exitConfig
		}
		log.Error("cloudsteer stopped", "err", err)
		return exitFail
	}
	return exitOK
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/config"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
	"github.com/cloudsteer/cloudsteer/controlplane/upgrade"
)

// Exit statuses of the admin commands beyond exitOK, exitFail (the daemon
// answered an error) and exitConfig (usage error).
const (
	exitNotRunning   = 3 // no daemon behind the socket
	exitPaused       = 4 // status: protection paused
	exitNotProtected = 5 // status: not protected

	// exitHelp stops a command after its help text; run turns it into
	// exitOK.
	exitHelp = -1
)

// requestTimeout bounds one call to the daemon (diagnose takes < 10 s).
const requestTimeout = 30 * time.Second

const cliUsage = `admin commands (talk to the running daemon over its unix socket):
  status                         protected, paused or not protected, with reasons
  bypass list                    list the bypass entries (SOURCE config: from the config file)
  bypass add VALUE [--comment C] [--force]
                                 add a domain ("bank.example", "*.example.com"), IP or CIDR
                                 (--force: accept CIDRs covering more than a /8 or v6 /16)
  bypass rm VALUE                remove an entry (not system ones; config file ones: edit the file)
  bypass comment VALUE TEXT      replace an entry's comment ("" clears it; not system or config file ones)
  bypass enable VALUE [--force]  enable an entry
  bypass disable VALUE           disable an entry (system entries cannot be disabled; a config
                                 file entry stays disabled across restarts while the file lists it)
  pause --for 15m|1h|1d|forever [--code CODE]
                                 pause protection (CODE when the setting requires it)
  resume                         resume protection now
  events [--client IP] [--name N] [--since 1h|RFC3339] [--until RFC3339] [--limit N]
                                 blocked requests, newest first
  activate CODE                  set the entitlement code ("-" reads it from stdin); it stands
                                 until the config file's cloud_proxy.entitlement_code changes
  diagnose                       run the quick test
  token                          print the network API token (root only) [--state-dir DIR]
  console [info]                 the web console's URL, certificate fingerprint and admin state
  console fingerprint            only the SHA-256 fingerprint of the console's HTTPS certificate
  console setup-link             a new one-time link to create the console's admin (first run)
  console reset-admin [--yes]    delete the console's admin (asks first unless --yes), sign every
                                 session out and print a new setup link; the last resort when
                                 the password and the two-factor device are lost
  health [--wait D]              exit 0 once cloudsteer answers and its dataplane is up (steering,
                                 or failing open for a reason status names); 1 after D, with why
                                 (the image's boot runs it before marking a new slot good)

image commands (on the cloudsteer appliance image, as root):
  upgrade FILE|URL|- [--no-reboot] [--tries N] [--pub KEY]
                                 verify a signed upgrade bundle, write it to the inactive slot
                                 (read back and compared), add its boot entry with N tries
                                 (default 3) and reboot into it; a slot that does not come up
                                 healthy N times is left and the gateway boots the old one
                                 (KEY: default ` + DefaultUpgradeKey + `)

global flags (before or after the command):
  --socket PATH   the daemon's socket (default ` + config.DefaultAdminSocket + `)
  --json          print the API's JSON instead of tables

exit status:
  0  ok
  1  the daemon answered an error (one line on stderr); diagnose: a check failed
  2  usage error
  3  cloudsteer is not running (no socket, or nothing listening on it)
  4  status: protection is paused
  5  status: not protected
`

// cli runs one admin command against the daemon's socket.
type cli struct {
	stdout, stderr io.Writer
	stdin          io.Reader
	socket         string
	json           bool
	now            func() time.Time
	loc            *time.Location
	geteuid        func() int
	// upgradeSys is the slots' System for upgrade (nil: the image's);
	// inspect reads the image state for status (nil: not read).
	upgradeSys *upgrade.System
	inspect    func() (*model.ImageStatus, error)
}

// cliCommands are the admin commands by name.
var cliCommands = map[string]func(ctx context.Context, c *cli, args []string) int{
	"status":   cmdStatus,
	"bypass":   cmdBypass,
	"pause":    cmdPause,
	"resume":   cmdResume,
	"events":   cmdEvents,
	"activate": cmdActivate,
	"diagnose": cmdDiagnose,
	"token":    cmdToken,
	"console":  cmdConsole,
	"upgrade":  cmdUpgrade,
	"health":   cmdHealth,
}

// isCLI reports whether args start with an admin command or a global flag.
func isCLI(args []string) bool {
	if len(args) == 0 {
		return false
	}
	_, ok := cliCommands[args[0]]
	return ok || args[0] == "--json" || args[0] == "-json" ||
		strings.HasPrefix(args[0], "--socket") || strings.HasPrefix(args[0], "-socket")
}

// runCLI runs an admin command with the process's standard streams.
func runCLI(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	c := &cli{stdout: stdout, stderr: stderr, stdin: os.Stdin, now: time.Now, loc: time.Local, geteuid: os.Geteuid,
		inspect: upgrade.Default().Inspect}
	return c.run(ctx, args)
}

// run parses the global flags, then runs the command.
func (c *cli) run(ctx context.Context, args []string) int {
	if c.socket == "" {
		c.socket = config.DefaultAdminSocket
	}
	fs := c.flags("cloudsteer")
	if err := fs.Parse(args); err != nil {
		if code := c.flagErr(err); code != exitHelp {
			return code
		}
		return exitOK
	}
	if fs.NArg() == 0 {
		fmt.Fprintf(c.stderr, "cloudsteer: missing command\n%s%s", usage, cliUsage)
		return exitConfig
	}
	name := fs.Arg(0)
	cmd, ok := cliCommands[name]
	if !ok {
		fmt.Fprintf(c.stderr, "cloudsteer: unknown command %q\n%s%s", name, usage, cliUsage)
		return exitConfig
	}
	if code := cmd(ctx, c, fs.Args()[1:]); code != exitHelp {
		return code
	}
	return exitOK
}

// flags returns a FlagSet with the global flags bound to c.
func (c *cli) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.StringVar(&c.socket, "socket", c.socket, "the daemon's unix socket")
	fs.BoolVar(&c.json, "json", c.json, "print the API's JSON")
	fs.Usage = func() { fmt.Fprint(c.stderr, cliUsage) }
	return fs
}

// flagErr turns a flag parsing error into an exit status: help is not an
// error; anything else is a usage error (the flag package said why).
func (c *cli) flagErr(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitHelp
	}
	return exitConfig
}

// parse parses flags and positional arguments in any order ("--" ends
// the flags) and checks the number of positional arguments.
func (c *cli) parse(fs *flag.FlagSet, args []string, want int, use string) ([]string, int) {
	fs.Usage = func() { fmt.Fprintf(c.stderr, "usage: cloudsteer %s\n\n%s", use, cliUsage) }
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, c.flagErr(err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if len(pos) != want {
		fmt.Fprintf(c.stderr, "usage: cloudsteer %s\n", use)
		return nil, exitConfig
	}
	return pos, exitOK
}

// usageErr reports a bad argument value.
func (c *cli) usageErr(format string, a ...any) int {
	fmt.Fprintf(c.stderr, "cloudsteer: "+format+"\n", a...)
	return exitConfig
}

// fail reports an error from talking to the daemon and returns its exit
// status.
func (c *cli) fail(err error) int {
	var nr *notRunningError
	if errors.As(err, &nr) {
		fmt.Fprintln(c.stderr, nr.msg)
		return exitNotRunning
	}
	fmt.Fprintln(c.stderr, "cloudsteer: "+oneLine(err.Error()))
	return exitFail
}

// secretArg returns arg, or a line read from stdin when arg is "-".
func (c *cli) secretArg(arg string) (string, error) {
	if arg != "-" {
		return arg, nil
	}
	line, err := bufio.NewReader(io.LimitReader(c.stdin, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read code from stdin: %w", err)
	}
	line = strings.TrimSpace(line)
	if line == "" {
		return "", errors.New("read code from stdin: empty")
	}
	return line, nil
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

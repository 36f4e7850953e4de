package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
)

const consoleUse = "console [info] | console fingerprint | console setup-link | console reset-admin [--yes]"

// cmdConsole drives the web console's root-only side: its address and
// certificate fingerprint, the first-run setup link and the admin reset.
func cmdConsole(ctx context.Context, c *cli, args []string) int {
	sub := "info"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	}
	switch sub {
	case "info":
		if _, code := c.parse(c.flags("console info"), args, 0, "console info [--json]"); code != exitOK {
			return code
		}
		info, raw, err := get[api.ConsoleInfo](ctx, c, "GET", "/console", nil)
		if err != nil {
			return c.fail(err)
		}
		if c.json {
			c.printJSON(raw)
			return exitOK
		}
		c.printConsole(info)
		return exitOK
	case "fingerprint":
		if _, code := c.parse(c.flags("console fingerprint"), args, 0, "console fingerprint"); code != exitOK {
			return code
		}
		info, _, err := get[api.ConsoleInfo](ctx, c, "GET", "/console", nil)
		if err != nil {
			return c.fail(err)
		}
		if !info.Enabled {
			fmt.Fprintln(c.stderr, "cloudsteer: the web console is off (console.enabled: false)")
			return exitFail
		}
		fmt.Fprintln(c.stdout, info.Fingerprint)
		return exitOK
	case "setup-link":
		if _, code := c.parse(c.flags("console setup-link"), args, 0, "console setup-link [--json]"); code != exitOK {
			return code
		}
		l, raw, err := get[api.SetupLink](ctx, c, "POST", "/console/setup-link", nil)
		if err != nil {
			if ae, ok := err.(*apiError); ok && ae.code == api.CodeConflict {
				fmt.Fprintln(c.stderr, "cloudsteer: the console admin is already set up; sign in, or run `cloudsteer console reset-admin` if the password and two-factor device are lost")
				return exitFail
			}
			return c.fail(err)
		}
		c.printLink(l, raw)
		return exitOK
	case "reset-admin":
		fs := c.flags("console reset-admin")
		yes := fs.Bool("yes", false, "do not ask for confirmation")
		if _, code := c.parse(fs, args, 0, "console reset-admin [--yes] [--json]"); code != exitOK {
			return code
		}
		if !*yes && !c.confirm("This deletes the console's administrator (password, two-factor, recovery codes) and signs every console session out.\nType yes to go on: ") {
			fmt.Fprintln(c.stderr, "cloudsteer: not confirmed; nothing changed")
			return exitFail
		}
		l, raw, err := get[api.SetupLink](ctx, c, "POST", "/console/reset-admin", nil)
		if err != nil {
			return c.fail(err)
		}
		if !c.json {
			fmt.Fprintln(c.stdout, "Console admin deleted; every console session ended.")
		}
		c.printLink(l, raw)
		return exitOK
	case "-h", "--help", "-help", "help":
		fmt.Fprintf(c.stdout, "usage: cloudsteer %s\n", consoleUse)
		return exitHelp
	}
	fmt.Fprintf(c.stderr, "cloudsteer: unknown console command %q\nusage: cloudsteer %s\n", sub, consoleUse)
	return exitConfig
}

// confirm asks question on stderr and reads one line from stdin.
func (c *cli) confirm(question string) bool {
	fmt.Fprint(c.stderr, question)
	line, err := bufio.NewReader(io.LimitReader(c.stdin, 256)).ReadString('\n')
	if err != nil && line == "" {
		return false
	}
	a := strings.ToLower(strings.TrimSpace(line))
	return a == "yes" || a == "y"
}

func (c *cli) printLink(l api.SetupLink, raw []byte) {
	if c.json {
		c.printJSON(raw)
		return
	}
	fmt.Fprintln(c.stdout, "Open this link in a browser on the LAN to create the console's administrator.")
	fmt.Fprintf(c.stdout, "It works once, until %s; keep it secret until then:\n", c.when(l.Expires))
	fmt.Fprintln(c.stdout, l.URL)
}

func (c *cli) printConsole(i api.ConsoleInfo) {
	w := c.table()
	if !i.Enabled {
		fmt.Fprintln(w, "Console:\toff (console.enabled: false)")
		w.Flush()
		return
	}
	fmt.Fprintf(w, "URL:\t%s\n", orDash(strings.Join(i.URLs, " ")))
	fmt.Fprintf(w, "Certificate SHA-256:\t%s\n", orDash(i.Fingerprint))
	fmt.Fprintf(w, "Certificate expires:\t%s\n", c.when(i.CertificateExpires))
	admin := "not set up (run `cloudsteer console setup-link`)"
	if i.AdminSetUp {
		admin = "set up, user " + i.User
	} else if i.SetupLinkPending {
		admin = "not set up; a setup link is waiting (a new one: `cloudsteer console setup-link`)"
	}
	fmt.Fprintf(w, "Admin:\t%s\n", admin)
	w.Flush()
}

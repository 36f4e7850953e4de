package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/controlplane/config"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// printJSON writes the API's JSON as it came, one document per line.
func (c *cli) printJSON(data []byte) {
	data = []byte(strings.TrimRight(string(data), "\n"))
	c.stdout.Write(append(data, '\n'))
}

func (c *cli) table() *tabwriter.Writer {
	return tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
}

// when formats a time for people; the zero time is "-".
func (c *cli) when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.In(c.loc).Format("2006-01-02 15:04:05 MST")
}

// human formats a duration to the minute: "1d2h", "1h", "15m", "<1m".
func human(d time.Duration) string {
	d = d.Round(time.Minute)
	if d < time.Minute {
		return "<1m"
	}
	var b strings.Builder
	if days := d / (24 * time.Hour); days > 0 {
		fmt.Fprintf(&b, "%dd", days)
		d -= days * 24 * time.Hour
	}
	if h := d / time.Hour; h > 0 {
		fmt.Fprintf(&b, "%dh", h)
		d -= h * time.Hour
	}
	if m := d / time.Minute; m > 0 {
		fmt.Fprintf(&b, "%dm", m)
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func cmdStatus(ctx context.Context, c *cli, args []string) int {
	if _, code := c.parse(c.flags("status"), args, 0, "status [--json]"); code != exitOK {
		return code
	}
	st, raw, err := get[model.Status](ctx, c, "GET", "/status", nil)
	if err != nil {
		return c.fail(err)
	}
	merged := c.mergeImage(&st)
	if c.json {
		if merged {
			raw = marshalLine(st)
		}
		c.printJSON(raw)
	} else {
		c.printStatus(st)
		// The console's address, when this daemon has one.
		if ci, _, err := get[api.ConsoleInfo](ctx, c, "GET", "/console", nil); err == nil && ci.Enabled && len(ci.URLs) > 0 {
			fmt.Fprintf(c.stdout, "Console: %s\n", ci.URLs[0])
		}
	}
	switch st.State {
	case model.Protected:
		return exitOK
	case model.Paused:
		return exitPaused
	}
	return exitNotProtected
}

func (c *cli) printStatus(st model.Status) {
	w := c.table()
	state := "Not protected"
	switch st.State {
	case model.Protected:
		state = "Protected"
	case model.Paused:
		if st.PauseUntil.IsZero() {
			state = "Paused until resumed"
		} else {
			state = fmt.Sprintf("Paused until %s (%s left)", c.when(st.PauseUntil), human(st.PauseUntil.Sub(c.now())))
		}
	}
	fmt.Fprintf(w, "State:\t%s\n", state)
	code := orDash(st.Code)
	switch st.CodeSource {
	case "config":
		code += " (from the config file)"
	case "activate":
		code += " (from cloudsteer activate)"
	}
	fmt.Fprintf(w, "Entitlement code:\t%s\n", code)
	fmt.Fprintf(w, "Cloud proxy:\t%s\n", orDash(st.CloudProxy))
	if len(st.CloudProxies) > 0 {
		var ps []string
		for _, p := range st.CloudProxies {
			switch {
			case p.Active:
				ps = append(ps, p.URL+" (in use)")
			case p.Healthy:
				ps = append(ps, p.URL+" (standby)")
			default:
				ps = append(ps, p.URL+" (DOWN)")
			}
		}
		fmt.Fprintf(w, "Cloud proxies:\t%s\n", strings.Join(ps, ", "))
		fmt.Fprintf(w, "Failure mode:\t%s\n", orDash(st.FailureMode))
	}
	var lan []string
	for _, i := range st.Interfaces {
		if contains(st.Attached, i) {
			lan = append(lan, i+" (attached)")
		} else {
			lan = append(lan, i+" (NOT attached)")
		}
	}
	fmt.Fprintf(w, "LAN interfaces:\t%s\n", orDash(strings.Join(lan, ", ")))
	switch st.AttachMode {
	case "":
	case "legacy":
		fmt.Fprintf(w, "eBPF attach:\tlegacy (clsact/cls_bpf)\n")
	default:
		fmt.Fprintf(w, "eBPF attach:\t%s\n", st.AttachMode)
	}
	if len(st.WANInterfaces) > 0 {
		fmt.Fprintf(w, "Fast path WAN:\t%s\n", strings.Join(st.WANInterfaces, ", "))
	}
	fmt.Fprintf(w, "Version:\t%s\n", orDash(st.Version))
	imageLines(w, st.Image)
	fmt.Fprintf(w, "Running since:\t%s\n", c.when(st.Started))
	fmt.Fprintf(w, "Last check:\t%s\n", c.when(st.CheckedAt))
	if len(st.Reasons) == 0 {
		fmt.Fprintf(w, "Reasons:\tnone\n")
		w.Flush()
		return
	}
	w.Flush()
	fmt.Fprintln(c.stdout, "Reasons:")
	w = c.table()
	for _, r := range st.Reasons {
		fmt.Fprintf(w, "  %s\t%s\n", r.Code, oneLine(r.Message))
	}
	w.Flush()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

const bypassUse = "bypass list | add VALUE [--comment C] [--force] | rm VALUE | comment VALUE TEXT | enable VALUE [--force] | disable VALUE"

func cmdBypass(ctx context.Context, c *cli, args []string) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") && args[0] != "-h" && args[0] != "--help" && args[0] != "-help" {
		if len(args) > 0 {
			// Global flags before the subcommand: parse them, then go on.
			fs := c.flags("bypass")
			if err := fs.Parse(args); err != nil {
				return c.flagErr(err)
			}
			if fs.NArg() > 0 {
				return cmdBypass(ctx, c, fs.Args())
			}
		}
		fmt.Fprintf(c.stderr, "usage: cloudsteer %s\n", bypassUse)
		return exitConfig
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "list", "ls":
		if _, code := c.parse(c.flags("bypass list"), args, 0, "bypass list [--json]"); code != exitOK {
			return code
		}
		l, raw, err := get[api.BypassList](ctx, c, "GET", "/bypass", nil)
		if err != nil {
			return c.fail(err)
		}
		if c.json {
			c.printJSON(raw)
			return exitOK
		}
		w := c.table()
		fmt.Fprintln(w, "VALUE\tKIND\tENABLED\tSOURCE\tADDED\tCOMMENT")
		for _, e := range l.Entries {
			src := e.Source
			if e.Override != "" {
				src += " (" + e.Override + " at run time)"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Value, e.Kind, yesNo(e.Enabled), src, c.when(e.Added), oneLine(e.Comment))
		}
		w.Flush()
		return exitOK
	case "add":
		fs := c.flags("bypass add")
		comment := fs.String("comment", "", "a note kept with the entry")
		force := fs.Bool("force", false, "accept a CIDR that makes the bypass CIDRs cover more than a /8 (IPv4) or /16 (IPv6)")
		pos, code := c.parse(fs, args, 1, "bypass add VALUE [--comment C] [--force]")
		if code != exitOK {
			return code
		}
		e, raw, err := get[model.BypassEntry](ctx, c, "POST", "/bypass", api.AddBypassRequest{Value: pos[0], Comment: *comment, Force: *force})
		if err != nil {
			return c.fail(err)
		}
		if c.json {
			c.printJSON(raw)
		} else {
			fmt.Fprintf(c.stdout, "added %s (%s, enabled)\n", e.Value, e.Kind)
		}
		return exitOK
	case "rm", "remove", "del", "delete":
		pos, code := c.parse(c.flags("bypass rm"), args, 1, "bypass rm VALUE")
		if code != exitOK {
			return code
		}
		r, raw, err := get[api.Removed](ctx, c, "DELETE", "/bypass/"+url.PathEscape(pos[0]), nil)
		if err != nil {
			return c.fail(err)
		}
		if c.json {
			c.printJSON(raw)
		} else {
			fmt.Fprintf(c.stdout, "removed %s\n", r.Value)
		}
		return exitOK
	case "enable", "disable":
		fs := c.flags("bypass " + sub)
		use := "bypass " + sub + " VALUE"
		var force *bool
		if sub == "enable" {
			force = fs.Bool("force", false, "accept a CIDR that makes the bypass CIDRs cover more than a /8 (IPv4) or /16 (IPv6)")
			use += " [--force]"
		}
		pos, code := c.parse(fs, args, 1, use)
		if code != exitOK {
			return code
		}
		var body any
		if force != nil && *force {
			body = api.ForceRequest{Force: true}
		}
		e, raw, err := get[model.BypassEntry](ctx, c, "POST", "/bypass/"+url.PathEscape(pos[0])+"/"+sub, body)
		if err != nil {
			return c.fail(err)
		}
		if c.json {
			c.printJSON(raw)
		} else {
			fmt.Fprintf(c.stdout, "%sd %s\n", sub, e.Value)
		}
		return exitOK
	case "comment":
		pos, code := c.parse(c.flags("bypass comment"), args, 2, "bypass comment VALUE TEXT")
		if code != exitOK {
			return code
		}
		e, raw, err := get[model.BypassEntry](ctx, c, "PATCH", "/bypass/"+url.PathEscape(pos[0]), api.SetEnabledRequest{Comment: &pos[1]})
		if err != nil {
			return c.fail(err)
		}
		if c.json {
			c.printJSON(raw)
		} else {
			fmt.Fprintf(c.stdout, "comment of %s set\n", e.Value)
		}
		return exitOK
	case "-h", "--help", "-help", "help":
		fmt.Fprintf(c.stdout, "usage: cloudsteer %s\n", bypassUse)
		return exitHelp
	}
	fmt.Fprintf(c.stderr, "cloudsteer: unknown bypass command %q\nusage: cloudsteer %s\n", sub, bypassUse)
	return exitConfig
}

func cmdPause(ctx context.Context, c *cli, args []string) int {
	fs := c.flags("pause")
	dur := fs.String("for", "", `how long: 15m, 1h, 1d, any duration up to 7d, or "forever"`)
	codeArg := fs.String("code", "", `the entitlement code, when pausing requires it ("-" reads stdin)`)
	if _, code := c.parse(fs, args, 0, "pause --for 15m|1h|1d|forever [--code CODE]"); code != exitOK {
		return code
	}
	if *dur == "" {
		return c.usageErr("pause: --for is required (15m, 1h, 1d or forever)")
	}
	d, err := api.ParsePauseDuration(*dur)
	if err != nil {
		return c.usageErr("pause: --for: %v", err)
	}
	secret := *codeArg
	if secret != "" {
		if secret, err = c.secretArg(secret); err != nil {
			return c.usageErr("pause: %v", err)
		}
	}
	wire := d.String()
	if d == 0 {
		wire = "0"
	}
	ps, raw, err := get[model.PauseState](ctx, c, "POST", "/pause", api.PauseRequest{Duration: wire, Code: secret})
	if err != nil {
		return c.fail(err)
	}
	if c.json {
		c.printJSON(raw)
	} else if ps.Until.IsZero() {
		fmt.Fprintln(c.stdout, "protection paused until resumed (cloudsteer resume)")
	} else {
		fmt.Fprintf(c.stdout, "protection paused until %s (%s)\n", c.when(ps.Until), human(ps.Until.Sub(c.now())))
	}
	return exitOK
}

func cmdResume(ctx context.Context, c *cli, args []string) int {
	if _, code := c.parse(c.flags("resume"), args, 0, "resume"); code != exitOK {
		return code
	}
	_, raw, err := get[model.PauseState](ctx, c, "POST", "/resume", nil)
	if err != nil {
		return c.fail(err)
	}
	if c.json {
		c.printJSON(raw)
	} else {
		fmt.Fprintln(c.stdout, "protection resumed")
	}
	return exitOK
}

func cmdEvents(ctx context.Context, c *cli, args []string) int {
	fs := c.flags("events")
	client := fs.String("client", "", "only this LAN client IP")
	name := fs.String("name", "", "only names containing this")
	since := fs.String("since", "", "only newer: a duration back (1h, 2d) or an RFC 3339 time")
	until := fs.String("until", "", "only older: a duration back or an RFC 3339 time")
	limit := fs.Int("limit", 0, fmt.Sprintf("at most this many (1..%d; default 100)", api.MaxEventLimit))
	if _, code := c.parse(fs, args, 0, "events [--client IP] [--name N] [--since 1h|RFC3339] [--until T] [--limit N]"); code != exitOK {
		return code
	}
	q := url.Values{}
	if *client != "" {
		q.Set("client", *client)
	}
	if *name != "" {
		q.Set("name", *name)
	}
	for _, p := range []struct{ key, val string }{{"since", *since}, {"until", *until}} {
		if p.val == "" {
			continue
		}
		t, err := c.timeArg(p.val)
		if err != nil {
			return c.usageErr("events: --%s: %v", p.key, err)
		}
		q.Set(p.key, t.UTC().Format(time.RFC3339))
	}
	if *limit != 0 {
		if *limit < 0 || *limit > api.MaxEventLimit {
			return c.usageErr("events: --limit must be from 1 to %d", api.MaxEventLimit)
		}
		q.Set("limit", strconv.Itoa(*limit))
	}
	path := "/events"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	l, raw, err := get[api.EventList](ctx, c, "GET", path, nil)
	if err != nil {
		return c.fail(err)
	}
	if c.json {
		c.printJSON(raw)
		return exitOK
	}
	if len(l.Events) == 0 {
		fmt.Fprintln(c.stdout, "no events")
		return exitOK
	}
	w := c.table()
	fmt.Fprintln(w, "TIME\tCLIENT\tMAC\tNAME\tDESTINATION\tPROTO\tREASON\tCATEGORY\tSTATUS")
	for _, e := range l.Events {
		st := "-"
		if e.Status != 0 {
			st = strconv.Itoa(e.Status)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.when(e.Time), e.Client, orDash(e.MAC), e.Name, orDash(e.Target), e.Proto, e.Reason, orDash(e.Category), st)
	}
	w.Flush()
	return exitOK
}

// timeArg reads "1h"/"2d" (that long ago) or an RFC 3339 time.
func (c *cli) timeArg(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > 3650 {
			return time.Time{}, fmt.Errorf("%q is not a duration (1h, 2d) or RFC 3339 time", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d < 0 {
			return time.Time{}, fmt.Errorf("%q is not a duration (1h, 2d) or RFC 3339 time", s)
		}
	}
	return c.now().Add(-d), nil
}

func cmdActivate(ctx context.Context, c *cli, args []string) int {
	pos, code := c.parse(c.flags("activate"), args, 1, `activate CODE   ("-" reads the code from stdin)`)
	if code != exitOK {
		return code
	}
	secret, err := c.secretArg(pos[0])
	if err != nil {
		return c.usageErr("activate: %v", err)
	}
	a, raw, err := get[api.Activated](ctx, c, "POST", "/activate", api.ActivateRequest{Code: secret})
	if err != nil {
		return c.fail(err)
	}
	if c.json {
		c.printJSON(raw)
	} else {
		msg := a.Message
		if msg == "" {
			msg = "stored"
		}
		fmt.Fprintf(c.stdout, "entitlement code %s %s\n", a.Code, msg)
	}
	return exitOK
}

func cmdDiagnose(ctx context.Context, c *cli, args []string) int {
	if _, code := c.parse(c.flags("diagnose"), args, 0, "diagnose"); code != exitOK {
		return code
	}
	rep, raw, err := get[model.Report](ctx, c, "POST", "/diagnose", nil)
	if err != nil {
		return c.fail(err)
	}
	failed := 0
	for _, ch := range rep.Checks {
		if !ch.OK {
			failed++
		}
	}
	if c.json {
		c.printJSON(raw)
	} else {
		verdict := "all checks passed"
		if failed > 0 || !rep.OK {
			verdict = fmt.Sprintf("%d of %d checks FAILED", failed, len(rep.Checks))
		}
		fmt.Fprintf(c.stdout, "Quick test at %s: %s\n\n", c.when(rep.Time), verdict)
		w := c.table()
		fmt.Fprintln(w, "CHECK\tRESULT\tTOOK\tDETAIL")
		for _, ch := range rep.Checks {
			res := "ok"
			if !ch.OK {
				res = "FAIL"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", ch.Name, res, ch.Took.Round(time.Millisecond), oneLine(ch.Detail))
		}
		w.Flush()
	}
	if failed > 0 || !rep.OK {
		return exitFail
	}
	return exitOK
}

func cmdToken(_ context.Context, c *cli, args []string) int {
	flags := c.flags("token")
	dir := flags.String("state-dir", config.DefaultStateDir, "the daemon's state directory")
	if _, code := c.parse(flags, args, 0, "token [--state-dir DIR]"); code != exitOK {
		return code
	}
	if c.geteuid() != 0 {
		fmt.Fprintln(c.stderr, "cloudsteer: token: must be run as root (the token file is readable by root only)")
		return exitFail
	}
	path := filepath.Join(*dir, api.TokenFileName)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		fmt.Fprintf(c.stderr, "cloudsteer: no token at %s (cloudsteer creates it when it first starts)\n", path)
		return exitFail
	case err != nil:
		return c.fail(fmt.Errorf("read token: %w", err))
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		fmt.Fprintf(c.stderr, "cloudsteer: token file %s is empty (delete it and restart cloudsteer)\n", path)
		return exitFail
	}
	if c.json {
		b, _ := json.Marshal(struct {
			Token string `json:"token"`
		}{tok})
		c.printJSON(b)
	} else {
		fmt.Fprintln(c.stdout, tok)
	}
	return exitOK
}

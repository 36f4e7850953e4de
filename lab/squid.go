package lab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// SquidCodePassword is the password Squid wants with the entitlement code
// as user name. Squid refuses Basic credentials with an empty password
// before any auth helper sees them, so cloudsteer must be configured with
// a password (any fixed one; this one) when it chains to the lab's Squid
// with the code as user.
const SquidCodePassword = "cloudsteer"

// Squid's binaries and its unprivileged user on Debian.
const (
	squidBinary    = "squid"
	squidNCSAAuth  = "/usr/lib/squid/basic_ncsa_auth"
	squidUser      = "proxy"
	squidStateRoot = "/run/cloudsteer-lab"
)

// squidStateDir is where Squid's own files live while it runs: a place the
// unprivileged Squid user can reach whatever Dir is (Dir may sit below a
// 0700 directory). Cleanup removes it; Close first copies the logs to Dir.
func squidStateDir(prefix string) string { return filepath.Join(squidStateRoot, prefix) }

// squidService is the Squid service name (-n) of a lab: Squid names its
// shared memory segments (/dev/shm/NAME-*.shm, shared by all network
// namespaces) after it, so labs must not share one.
func squidService(prefix string) string {
	var b strings.Builder
	b.WriteString("cslab")
	for _, c := range prefix {
		if c < 128 && (c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			b.WriteRune(c)
		}
	}
	return b.String()
}

// removeSquidShm removes the shared memory segments a killed Squid of the
// lab left behind.
func removeSquidShm(prefix string) error {
	segs, err := filepath.Glob(filepath.Join("/dev/shm", squidService(prefix)+"-*.shm"))
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range segs {
		if err := os.Remove(s); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove squid shm: %w", err))
		}
	}
	return errors.Join(errs...)
}

// SquidRecord is one line of Squid's access log in the lab's format.
// Squid writes it when the transaction ends.
type SquidRecord struct {
	Time   time.Time  // when Squid logged it: the end of the transaction
	Client netip.Addr // the client address Squid saw (the gateway's WAN address, normally)
	Method string     // CONNECT, GET, ...
	URL    string     // host:port for CONNECT, the absolute URL otherwise
	User   string     // the authenticated user, "" without one
	Status int        // the HTTP status Squid answered with
	// Bytes is what Squid sent its client (%<st: head and body; for a
	// CONNECT, the tunnel's bytes towards the client).
	Bytes int64
	// UpstreamBytes counts the body bytes Squid read from the next hop
	// (%<bs; 0 when Squid logs none, as for a CONNECT).
	UpstreamBytes int64
	// Duration is the transaction's time (%tr, milliseconds), from the
	// complete request head to the log line.
	Duration time.Duration
	XFF      string // the X-Forwarded-For request header, "" without one
}

// Start returns when the transaction began (Time less Duration).
func (r SquidRecord) Start() time.Time { return r.Time.Add(-r.Duration) }

// squidLogFormat is the access log format SquidRecord parses: time,
// client, method, URL, user (URL-encoded), status, bytes sent to the
// client, body bytes read from the next hop, duration in milliseconds, and
// the X-Forwarded-For header as a quoted string, last because it may hold
// spaces.
const squidLogFormat = `%ts.%03tu %>a %rm %ru %#un %>Hs %<st %<bs %tr "%"{X-Forwarded-For}>h"`

// squidFields is the number of space-separated fields before the quoted
// X-Forwarded-For in squidLogFormat.
const squidFields = 9

var squidConfTmpl = template.Must(template.New("squid.conf").Parse(`# Squid as the lab's cloud proxy (written by the cloudsteer lab).
http_port {{.V4}}:{{.Port}}
http_port [{{.V6}}]:{{.Port}}
visible_hostname squid.cloud.example
httpd_suppress_version_string on

cache_effective_user {{.User}}
cache_effective_group {{.Group}}
pid_filename {{.State}}/squid.pid
cache_log {{.State}}/cache.log
coredump_dir {{.State}}
logformat cs {{.LogFormat}}
access_log stdio:{{.State}}/access.log cs
logfile_rotate 0
strip_query_terms off
shutdown_lifetime 1 seconds

# A client that leaves ends the fetch from the origin at once. Squid's
# defaults (quick_abort_min 16 KB, quick_abort_max 16 KB, quick_abort_pct
# 95) let it finish a fetch that is nearly done, or 95% done, after its
# client aborted; with both limits 0 it never does, so the lab's abort
# tests see from the origin's side when the client's side went away.
quick_abort_min 0 KB
quick_abort_max 0 KB

cache deny all
cache_mem 8 MB
memory_pools off
pinger_enable off
netdb_filename none
icp_port 0
htcp_port 0

hosts_file {{.State}}/hosts
dns_nameservers {{.DNS4}} {{.DNS6}}

auth_param basic program {{.AuthHelper}} {{.State}}/passwd
auth_param basic children 2 startup=1 idle=1
auth_param basic realm cloudsteer lab cloud proxy
auth_param basic credentialsttl 1 minute
auth_param basic casesensitive on

acl sports dstdomain .sports.example
acl tunnel_ports port 443 80
acl web_ports port 80 443
acl CONNECT method CONNECT
acl tenant proxy_auth REQUIRED

http_access deny sports
http_access deny CONNECT !tunnel_ports
http_access deny !web_ports
http_access allow tenant
http_access deny all
`))

type squidConf struct {
	V4, V6, DNS4, DNS6 netip.Addr
	Port               int
	User, Group        string
	State              string
	LogFormat          string
	AuthHelper         string
}

// startSquid writes Squid's files, starts `squid -N` in the internet
// namespace and waits until it accepts connections on SquidV4:3128.
func (l *Lab) startSquid(ctx context.Context, wait time.Duration) error {
	if _, err := exec.LookPath(squidBinary); err != nil {
		return fmt.Errorf("start squid: %w (install squid-openssl)", err)
	}
	u, err := user.Lookup(squidUser)
	if err != nil {
		return fmt.Errorf("start squid: look up user %s: %w", squidUser, err)
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		return fmt.Errorf("start squid: look up group of %s: %w", squidUser, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)

	state := squidStateDir(l.prefix)
	if err := os.MkdirAll(squidStateRoot, 0o755); err != nil {
		return fmt.Errorf("create squid state: %w", err)
	}
	if err := os.RemoveAll(state); err != nil {
		return fmt.Errorf("remove stale squid state: %w", err)
	}
	if err := os.Mkdir(state, 0o750); err != nil {
		return fmt.Errorf("create squid state: %w", err)
	}
	if err := os.Chown(state, uid, gid); err != nil {
		return fmt.Errorf("chown squid state: %w", err)
	}

	passwd, err := squidPasswd()
	if err != nil {
		return err
	}
	var conf bytes.Buffer
	if err := squidConfTmpl.Execute(&conf, squidConf{
		V4: SquidV4, V6: SquidV6, DNS4: CloudDNSV4, DNS6: CloudDNSV6,
		Port: SquidPort, User: u.Username, Group: g.Name, State: state,
		LogFormat: squidLogFormat, AuthHelper: squidNCSAAuth,
	}); err != nil {
		return fmt.Errorf("render squid.conf: %w", err)
	}
	confPath := filepath.Join(state, "squid.conf")
	files := []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{confPath, conf.Bytes(), 0o644},
		{l.Path(SquidConfFile), conf.Bytes(), 0o644}, // a copy to read
		{filepath.Join(state, "hosts"), squidHosts(l.squidHosts), 0o644},
		{filepath.Join(state, "passwd"), passwd, 0o640},
	}
	for _, f := range files {
		if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
			return fmt.Errorf("write squid file: %w", err)
		}
	}
	if err := os.Chown(filepath.Join(state, "passwd"), 0, gid); err != nil {
		return fmt.Errorf("chown squid passwd: %w", err)
	}
	// Dir's log names point into the state directory while Squid runs;
	// Close replaces them with copies.
	for name, target := range map[string]string{SquidAccessLog: "access.log", SquidCacheLog: "cache.log"} {
		link := l.Path(name)
		if err := os.Remove(link); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove old squid log: %w", err)
		}
		if err := os.Symlink(filepath.Join(state, target), link); err != nil {
			return fmt.Errorf("link squid log: %w", err)
		}
	}

	if out, err := exec.CommandContext(ctx, squidBinary, "-k", "parse", "-n", squidService(l.prefix), "-f", confPath).CombinedOutput(); err != nil {
		return fmt.Errorf("squid -k parse %s: %w:\n%s", confPath, err, squidProblems(out))
	}
	stderrPath := filepath.Join(state, "stderr.log")
	p, err := l.start("squid", stderrPath, "ip", "netns", "exec", l.NS(RoleInet), squidBinary, "-N", "-n", squidService(l.prefix), "-f", confPath)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	addr := net.JoinHostPort(SquidV4.String(), strconv.Itoa(SquidPort))
	for {
		// Look for the listening socket rather than connect to it: a probe
		// connection would be a line in the access log.
		if listening, err := tcpListening(l.NS(RoleInet), SquidPort); err != nil {
			return err
		} else if listening {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("squid exited before listening (%v): %s\n%s", p.err, tail(stderrPath, 2048), tail(filepath.Join(state, "cache.log"), 4096))
		case <-ctx.Done():
			return fmt.Errorf("squid not listening on %s after %s: %s", addr, wait, tail(filepath.Join(state, "cache.log"), 4096))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// squidProblems picks the lines that say what is wrong from Squid's
// output (it echoes every config line it processes).
func squidProblems(out []byte) string {
	var keep []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "FATAL") || strings.Contains(line, "ERROR") || strings.Contains(line, "WARNING") {
			keep = append(keep, strings.TrimSpace(line))
		}
	}
	if len(keep) == 0 {
		return strings.TrimSpace(string(out))
	}
	return strings.Join(keep, "\n")
}

// tcpListening reports whether a TCP (v4) socket listens on port in
// namespace ns, from the namespace's /proc/net/tcp.
func tcpListening(ns string, port int) (bool, error) {
	var b []byte
	err := doInNS(ns, func() error {
		var err error
		// thread-self: this thread's namespace, not the process's.
		b, err = os.ReadFile("/proc/thread-self/net/tcp")
		return err
	})
	if err != nil {
		return false, fmt.Errorf("read sockets of %s: %w", ns, err)
	}
	return listensOn(b, port), nil
}

// listensOn reports whether a /proc/net/tcp table has a socket in state
// LISTEN on port.
func listensOn(table []byte, port int) bool {
	want := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(string(table), "\n") {
		f := strings.Fields(line)
		// sl local_address rem_address st ...
		if len(f) > 3 && strings.HasSuffix(f[1], want) && f[3] == "0A" {
			return true
		}
	}
	return false
}

// squidPasswd returns the password file for basic_ncsa_auth: the
// entitlement code with SquidCodePassword, and the chaining user.
func squidPasswd() ([]byte, error) {
	var out bytes.Buffer
	for _, c := range [][2]string{{EntitlementCode, SquidCodePassword}, {ChainUser, ChainPassword}} {
		line, err := exec.Command("htpasswd", "-nbm", c[0], c[1]).Output()
		if err != nil {
			return nil, fmt.Errorf("hash squid password with htpasswd (apache2-utils): %w", err)
		}
		out.Write(bytes.TrimSpace(line))
		out.WriteByte('\n')
	}
	return out.Bytes(), nil
}

// squidHosts returns a hosts file with every lab site and the extra
// names, so Squid resolves CONNECT targets without depending on the lab
// DNS.
func squidHosts(extra map[string]netip.Addr) []byte {
	var b bytes.Buffer
	for _, s := range Sites {
		fmt.Fprintf(&b, "%s %s\n%s %s\n", s.V4, s.Name, s.V6, s.Name)
	}
	names := make([]string, 0, len(extra))
	for n := range extra {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "%s %s\n", extra[n], n)
	}
	return b.Bytes()
}

// keepSquidLogs replaces Dir's links to Squid's logs with copies, before
// the state directory goes away.
func (l *Lab) keepSquidLogs() error {
	var errs []error
	for name, src := range map[string]string{SquidAccessLog: "access.log", SquidCacheLog: "cache.log"} {
		link := l.Path(name)
		if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			continue
		}
		b, err := os.ReadFile(filepath.Join(squidStateDir(l.prefix), src))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("keep squid log: %w", err))
		}
		if err := os.Remove(link); err != nil {
			errs = append(errs, fmt.Errorf("keep squid log: %w", err))
			continue
		}
		if err := os.WriteFile(link, b, 0o644); err != nil {
			errs = append(errs, fmt.Errorf("keep squid log: %w", err))
		}
	}
	return errors.Join(errs...)
}

// SquidLog parses Squid's access log (Dir/squid-access.log). A last line
// still being written is left out.
func (l *Lab) SquidLog() ([]SquidRecord, error) {
	f, err := os.Open(l.Path(SquidAccessLog))
	if err != nil {
		return nil, fmt.Errorf("read squid log: %w", err)
	}
	defer f.Close()
	return ParseSquidLog(f)
}

// ParseSquidLog parses an access log written in the lab's Squid log
// format, one record per complete line; a last line without its newline
// is left out. It stops at the first malformed line with an error naming
// it, returning the records before it.
func ParseSquidLog(r io.Reader) ([]SquidRecord, error) {
	br := bufio.NewReader(r)
	var out []SquidRecord
	for n := 1; ; n++ {
		line, err := br.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, fmt.Errorf("read squid log: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if strings.TrimSpace(line) == "" {
			continue
		}
		rec, err := ParseSquidLine(line)
		if err != nil {
			return out, fmt.Errorf("squid log line %d: %w", n, err)
		}
		out = append(out, rec)
	}
}

// ParseSquidLine parses one access log line in the lab's Squid format.
func ParseSquidLine(line string) (SquidRecord, error) {
	var rec SquidRecord
	fields := make([]string, 0, squidFields)
	rest := line
	for len(fields) < squidFields {
		rest = strings.TrimLeft(rest, " ")
		i := strings.IndexByte(rest, ' ')
		if i < 0 {
			return rec, fmt.Errorf("parse %q: want %d fields", line, squidFields+1)
		}
		fields = append(fields, rest[:i])
		rest = rest[i+1:]
	}
	t, err := parseSquidTime(fields[0])
	if err != nil {
		return rec, fmt.Errorf("parse time %q: %w", fields[0], err)
	}
	rec.Time = t
	client, err := netip.ParseAddr(fields[1])
	if err != nil {
		return rec, fmt.Errorf("parse client: %w", err)
	}
	rec.Client = client.Unmap()
	rec.Method = fields[2]
	rec.URL = fields[3]
	if fields[4] != "-" {
		u, err := url.PathUnescape(fields[4])
		if err != nil {
			return rec, fmt.Errorf("parse user: %w", err)
		}
		rec.User = u
	}
	status, err := strconv.Atoi(fields[5])
	if err != nil || status < 0 || status > 999 {
		return rec, fmt.Errorf("parse status %q: not an HTTP status", fields[5])
	}
	rec.Status = status
	for _, f := range []struct {
		name string
		s    string
		dst  *int64
	}{{"bytes sent", fields[6], &rec.Bytes}, {"upstream bytes", fields[7], &rec.UpstreamBytes}} {
		n, err := parseSquidCount(f.s)
		if err != nil {
			return rec, fmt.Errorf("parse %s %q: %w", f.name, f.s, err)
		}
		*f.dst = n
	}
	ms, err := parseSquidCount(fields[8])
	if err != nil || ms > int64(365*24*time.Hour/time.Millisecond) {
		return rec, fmt.Errorf("parse duration %q: not a count of milliseconds", fields[8])
	}
	rec.Duration = time.Duration(ms) * time.Millisecond
	xff, err := unquoteSquid(strings.TrimLeft(rest, " "))
	if err != nil {
		return rec, fmt.Errorf("parse x-forwarded-for: %w", err)
	}
	if xff != "-" {
		rec.XFF = xff
	}
	return rec, nil
}

// parseSquidCount parses a byte or millisecond count Squid logs; "-"
// (none) is 0.
func parseSquidCount(s string) (int64, error) {
	if s == "-" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, errors.New("want a count")
	}
	return n, nil
}

// parseSquidTime parses Squid's "%ts.%03tu": Unix seconds and milliseconds.
func parseSquidTime(s string) (time.Time, error) {
	sec, frac, ok := strings.Cut(s, ".")
	if !ok || len(frac) != 3 {
		return time.Time{}, errors.New("want seconds.milliseconds")
	}
	secs, err := strconv.ParseInt(sec, 10, 64)
	if err != nil || secs < 0 {
		return time.Time{}, errors.New("bad seconds")
	}
	ms, err := strconv.Atoi(frac)
	if err != nil || ms < 0 {
		return time.Time{}, errors.New("bad milliseconds")
	}
	return time.Unix(secs, int64(ms)*int64(time.Millisecond)), nil
}

// unquoteSquid undoes Squid's quoted-string log encoding ("...", with
// backslash escapes).
func unquoteSquid(s string) (string, error) {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return "", fmt.Errorf("want a quoted string, have %q", s)
	}
	body := s[1 : len(s)-1]
	var b strings.Builder
	for i := 0; i < len(body); i++ {
		c := body[i]
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		i++
		if i == len(body) {
			return "", fmt.Errorf("dangling escape in %q", s)
		}
		switch e := body[i]; e {
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		default:
			b.WriteByte(e)
		}
	}
	return b.String(), nil
}

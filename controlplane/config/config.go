// Package config loads and validates cloudsteer's configuration file: YAML,
// unknown keys rejected, defaults filled in, and every problem reported as
// one line that names the key.
package config

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cloudsteer/cloudsteer/controlplane/bypass"
	"github.com/cloudsteer/cloudsteer/dataplane/resolver/transport"
)

// Config is cloudsteer's whole configuration.
type Config struct {
	// LANInterfaces are the interfaces whose clients are steered.
	LANInterfaces []string   `yaml:"lan_interfaces"`
	CloudProxy    CloudProxy `yaml:"cloud_proxy"`
	DNS           DNS        `yaml:"dns"`
	Bypass        Bypass     `yaml:"bypass"`
	Listen        Listen     `yaml:"listen"`
	Proxy         Proxy      `yaml:"proxy"`
	Log           Log        `yaml:"log"`
	// StateDir holds the state store (bypass entries, pause, the activated
	// code, events) and the admin token.
	StateDir string   `yaml:"state_dir"`
	Admin    Admin    `yaml:"admin"`
	Health   Health   `yaml:"health"`
	Debug    Debug    `yaml:"debug"`
	Firewall Firewall `yaml:"firewall"`
	Limits   Limits   `yaml:"limits"`
	Console  Console  `yaml:"console"`
	// Dataplane says how the eBPF programs are attached.
	Dataplane Dataplane `yaml:"dataplane"`
}

// Dataplane tunes how the eBPF programs are attached.
type Dataplane struct {
	// Attach is "auto" (the default: TCX when the kernel has it, Linux
	// >= 6.6, else legacy), "tcx" (fail without it) or "legacy" (a clsact
	// qdisc and direct-action cls_bpf filters, which stay after a SIGKILL
	// until the next start or `cloudsteer cleanup`).
	Attach string `yaml:"attach"`
}

// Firewall tunes cloudsteer's nftables table.
type Firewall struct {
	// UntrackUnsteered keeps TCP that cloudsteer does not steer (bypassed,
	// paused, other ports) out of connection tracking while cloudsteer's
	// table is the only netfilter ruleset in the namespace; left out, it
	// is on. Any other nft or legacy iptables table (a NAT, a stateful
	// firewall) turns it off within a second.
	UntrackUnsteered *bool `yaml:"untrack_unsteered"`
	// FastPath forwards the TCP cloudsteer does not steer in eBPF, around
	// the IP stack, whenever untracking is on (the stack would then only
	// route it); left out, it is on.
	FastPath *bool `yaml:"fast_path"`
	// WANInterfaces get the fast path's forwarder for traffic towards the
	// LAN; empty means the interfaces of the default routes at start.
	WANInterfaces []string `yaml:"wan_interfaces"`
	// QUICByName lets new LAN QUIC flows through when their Initial names
	// a bypass name whose address the resolver holds, instead of rejecting
	// all QUIC that is not to a bypassed address (dataplane/quicgate);
	// left out, it is on. It needs NFQUEUE (nft_queue, or the xtables
	// NFQUEUE target through nft_compat) and the queue number free; without
	// them QUIC stays rejected unless its address is in the bypass map,
	// a warning is logged and the status lists quic_by_name_unavailable.
	QUICByName *bool `yaml:"quic_by_name"`
	// QUICQueue is the NFQUEUE number the QUIC gate binds (DefaultQUICQueue
	// when 0).
	QUICQueue uint16 `yaml:"quic_queue"`
}

// DefaultQUICQueue is firewall.quic_queue's default.
const DefaultQUICQueue = 15443

// Debug holds developer switches, off by default.
type Debug struct {
	// PprofListen serves net/http/pprof on a loopback address
	// ("127.0.0.1:6060"); empty is off.
	PprofListen string `yaml:"pprof_listen"`
}

// Admin configures the admin API.
type Admin struct {
	// Socket is the root-only unix socket the CLI talks to.
	Socket string `yaml:"socket"`
	// Port is the TCP port of the API (token required) and /metrics on the
	// gateway's addresses; only LAN interfaces reach it. 0 disables it.
	Port uint16 `yaml:"port"`
	// Disabled turns the network API off (the unix socket stays).
	Disabled bool `yaml:"disabled"`
	// Hostnames are names, besides the gateway's LAN addresses, that the
	// network API answers to in the Host header ("gw.office.lan"); a
	// request naming anything else (a DNS-rebinding page) is refused.
	Hostnames []string `yaml:"hostnames"`
}

// Health configures the background probes behind status and diagnose.
type Health struct {
	// ProbeTarget is the host:port CONNECTed through the cloud proxy to
	// prove it is reachable and accepts the tenant's credentials.
	ProbeTarget string   `yaml:"probe_target"`
	Interval    Duration `yaml:"interval"`
}

// CloudProxy says where the cloud proxy is and how the gateway proves it
// belongs to the tenant.
type CloudProxy struct {
	// URL is http://host:port or https://host:port.
	URL string `yaml:"url"`
	// CAFile is a PEM bundle that verifies an https:// cloud proxy instead
	// of the system roots.
	CAFile string `yaml:"ca_file"`
	// EntitlementCode is the tenant's activation code (UUID-shaped). By
	// default it is sent as the Basic user name with an empty password.
	EntitlementCode string `yaml:"entitlement_code"`
	// Username and Password replace the code in Proxy-Authorization when the
	// provider gives proxy-chaining credentials.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// ConnectTimeout bounds connecting to the cloud proxy.
	ConnectTimeout Duration `yaml:"connect_timeout"`
	// WarmConnections is the most established, unused connections kept
	// to the cloud proxy so a new flow only has to send its CONNECT; the
	// pool follows recent demand and is empty when there is none. Zero
	// turns it off; left out, it is DefaultWarmConnections.
	WarmConnections *int `yaml:"warm_connections"`
	// WarmMaxAge is how long a warm connection may wait unused.
	WarmMaxAge Duration `yaml:"warm_max_age"`
	// CloudFailover: urls, failure_mode and the health checks (failover.go).
	CloudFailover `yaml:",inline"`
}

// DNS configures the LAN resolver.
type DNS struct {
	// Upstreams are the cloud resolvers, in order: plain DNS "IP" or
	// "IP:port", or encrypted "tls://host[:853]", "https://host[:443]/path"
	// or "quic://host[:853]" (dns.go).
	Upstreams []string `yaml:"upstreams"`
	// Bootstrap gives the addresses of the encrypted upstreams named by a
	// host name: name → IP addresses, dialled in order. A name is never
	// looked up over DNS.
	Bootstrap map[string][]string `yaml:"bootstrap"`
	// CAFile is a PEM bundle that verifies the encrypted upstreams instead
	// of the system roots.
	CAFile    string   `yaml:"ca_file"`
	Timeout   Duration `yaml:"timeout"`
	CacheSize int      `yaml:"cache_size"`
	// KernelCache answers cached queries in the eBPF program on the LAN
	// interfaces (dataplane/dnscache) before they reach the resolver;
	// left out, it is on.
	KernelCache *bool `yaml:"kernel_cache"`
	// Resolving around the gateway (leaks.go): each left out is on.
	ApplicationDNSCanary *bool    `yaml:"application_dns_canary"`
	BlockDoH             *bool    `yaml:"block_doh"`
	DoHHostnames         []string `yaml:"doh_hostnames"`
	RejectDoT            *bool    `yaml:"reject_dot"`
	// Split DNS (split.go): internal zones and their resolvers.
	Split             []SplitZone `yaml:"split"`
	LocalPrivateZones *bool       `yaml:"local_private_zones"`
	// The LAN's DHCP host names (lannames.go): answered under LocalDomain
	// from the lease files in DHCPLeasesDir (systemd-networkd's).
	DHCPHostNames *bool  `yaml:"dhcp_host_names"`
	DHCPLeasesDir string `yaml:"dhcp_leases_dir"`
	LocalDomain   string `yaml:"local_domain"`

	servers  []transport.Spec
	roots    *x509.CertPool
	dohNames []string
}

// Bypass lists what passes untouched, on top of the system domains.
type Bypass struct {
	// Domains are names: "example.com" (that name only), "*.example.com"
	// (names under it) or ".example.com" (the name and names under it).
	Domains []string `yaml:"domains"`
	// CIDRs are destination addresses or prefixes, v4 or v6.
	CIDRs []string `yaml:"cidrs"`
	// AllowBroadCIDRs accepts CIDRs that together cover more than a /8 of
	// IPv4 or a /16 of IPv6 (see BroadBypass); without it such a config
	// is refused.
	AllowBroadCIDRs bool `yaml:"allow_broad_cidrs"`

	domains []string
	cidrs   []netip.Prefix
}

// Listen holds the local ports that steered flows are redirected to.
type Listen struct {
	HTTPPort uint16 `yaml:"http_port"`
	TLSPort  uint16 `yaml:"tls_port"`
	DNSPort  uint16 `yaml:"dns_port"`
}

// Proxy tunes the transparent proxy.
type Proxy struct {
	PeekTimeout    Duration `yaml:"peek_timeout"`
	IdleTimeout    Duration `yaml:"idle_timeout"`
	MaxHeaderBytes int      `yaml:"max_header_bytes"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

// Duration is a time.Duration written as "5s" or "1m30s".
type Duration time.Duration

// UnmarshalYAML reads a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("not a duration (want e.g. 5s, 2m): %q", n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes a duration string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Defaults for keys the file leaves out.
const (
	DefaultHTTPPort       = 15080
	DefaultTLSPort        = 15443
	DefaultDNSPort        = 15053
	DefaultConnectTimeout = 5 * time.Second
	// DefaultWarmConnections and DefaultWarmMaxAge size the pool of warm
	// connections to the cloud proxy.
	DefaultWarmConnections = 16
	DefaultWarmMaxAge      = 5 * time.Second
	// MaxWarmConnections bounds cloud_proxy.warm_connections.
	MaxWarmConnections    = 256
	DefaultDNSTimeout     = 2 * time.Second
	DefaultCacheSize      = 10000
	DefaultPeekTimeout    = 10 * time.Second
	DefaultIdleTimeout    = 5 * time.Minute
	DefaultMaxHeaderBytes = 64 << 10
	DefaultStateDir       = "/var/lib/cloudsteer"
	DefaultAdminSocket    = "/run/cloudsteer/admin.sock"
	DefaultAdminPort      = 9080
	DefaultProbeTarget    = "www.akamai.com:443"
	DefaultHealthInterval = 30 * time.Second
	DefaultAttach         = "auto"
)

// Error is a configuration problem: the key it concerns and what is wrong.
type Error struct {
	Key     string
	Problem string
}

func (e *Error) Error() string { return "config: " + e.Key + ": " + e.Problem }

func bad(key, format string, args ...any) error {
	return &Error{Key: key, Problem: fmt.Sprintf(format, args...)}
}

// Load reads, defaults and validates the file at path. A secret in a file
// that group or others may read is refused.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: open %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("config: stat %s: %w", path, err)
	}
	data, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("config: read %s: %w", path, err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, err
	}
	if c.HasSecrets() && st.Mode().Perm()&0o077 != 0 {
		return nil, bad("cloud_proxy", "%s holds credentials but has mode %04o; run chmod 600 %s", path, st.Mode().Perm(), path)
	}
	return c, nil
}

// Parse decodes, defaults and validates a configuration document.
func Parse(data []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, bad("(file)", "empty; lan_interfaces, cloud_proxy and dns are required")
		}
		return nil, &Error{Key: "(file)", Problem: yamlProblem(err)}
	}
	c.setDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

var yamlFieldRE = regexp.MustCompile(`line (\d+): field (\S+) not found in type config\.(\w+)`)

// yamlProblem turns yaml.v3's messages into one readable line.
func yamlProblem(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := yamlFieldRE.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("line %s: unknown key %q", m[1], m[2])
	}
	msg = strings.ReplaceAll(msg, "\n", "; ")
	return msg
}

func (c *Config) setDefaults() {
	if c.CloudProxy.ConnectTimeout == 0 {
		c.CloudProxy.ConnectTimeout = Duration(DefaultConnectTimeout)
	}
	if c.CloudProxy.WarmConnections == nil {
		n := DefaultWarmConnections
		c.CloudProxy.WarmConnections = &n
	}
	if c.CloudProxy.WarmMaxAge == 0 {
		c.CloudProxy.WarmMaxAge = Duration(DefaultWarmMaxAge)
	}
	c.CloudProxy.CloudFailover.setDefaults()
	if c.DNS.Timeout == 0 {
		c.DNS.Timeout = Duration(DefaultDNSTimeout)
	}
	if c.DNS.CacheSize == 0 {
		c.DNS.CacheSize = DefaultCacheSize
	}
	if c.DNS.KernelCache == nil {
		on := true
		c.DNS.KernelCache = &on
	}
	c.DNS.setLeakDefaults()
	c.DNS.setLANNameDefaults()
	if c.Firewall.UntrackUnsteered == nil {
		on := true
		c.Firewall.UntrackUnsteered = &on
	}
	if c.Firewall.FastPath == nil {
		on := true
		c.Firewall.FastPath = &on
	}
	if c.Firewall.QUICByName == nil {
		on := true
		c.Firewall.QUICByName = &on
	}
	if c.Firewall.QUICQueue == 0 {
		c.Firewall.QUICQueue = DefaultQUICQueue
	}
	if c.Listen.HTTPPort == 0 {
		c.Listen.HTTPPort = DefaultHTTPPort
	}
	if c.Listen.TLSPort == 0 {
		c.Listen.TLSPort = DefaultTLSPort
	}
	if c.Listen.DNSPort == 0 {
		c.Listen.DNSPort = DefaultDNSPort
	}
	if c.Proxy.PeekTimeout == 0 {
		c.Proxy.PeekTimeout = Duration(DefaultPeekTimeout)
	}
	if c.Proxy.IdleTimeout == 0 {
		c.Proxy.IdleTimeout = Duration(DefaultIdleTimeout)
	}
	if c.Proxy.MaxHeaderBytes == 0 {
		c.Proxy.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.Admin.Socket == "" {
		c.Admin.Socket = DefaultAdminSocket
	}
	if c.Admin.Port == 0 && !c.Admin.Disabled {
		c.Admin.Port = DefaultAdminPort
	}
	if c.Health.ProbeTarget == "" {
		c.Health.ProbeTarget = DefaultProbeTarget
	}
	if c.Health.Interval == 0 {
		c.Health.Interval = Duration(DefaultHealthInterval)
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	c.Limits.setDefaults()
	c.Console.setDefaults()
	if c.Dataplane.Attach == "" {
		c.Dataplane.Attach = DefaultAttach
	}
}

var (
	ifNameRE = regexp.MustCompile(`^[A-Za-z0-9_.:@-]{1,15}$`)
	// hostnameRE is a DNS name of letters, digits and hyphens.
	hostnameRE = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)
	// EntitlementCodeRE is the shape of a tenant entitlement code.
	EntitlementCodeRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
)

// Validate checks every key and returns the first problem found.
func (c *Config) Validate() error {
	if len(c.LANInterfaces) == 0 {
		return bad("lan_interfaces", "required: list the LAN interfaces to steer, e.g. [lan0]")
	}
	seen := map[string]bool{}
	for i, n := range c.LANInterfaces {
		if !ifNameRE.MatchString(n) {
			return bad(fmt.Sprintf("lan_interfaces[%d]", i), "%q is not an interface name", n)
		}
		if seen[n] {
			return bad(fmt.Sprintf("lan_interfaces[%d]", i), "%q listed twice", n)
		}
		seen[n] = true
	}
	wan := map[string]bool{}
	for i, n := range c.Firewall.WANInterfaces {
		key := fmt.Sprintf("firewall.wan_interfaces[%d]", i)
		switch {
		case !ifNameRE.MatchString(n) || n == "lo":
			return bad(key, "%q is not a WAN interface name", n)
		case seen[n]:
			return bad(key, "%q is also a LAN interface", n)
		case wan[n]:
			return bad(key, "%q listed twice", n)
		}
		wan[n] = true
	}
	if err := c.CloudProxy.validate(); err != nil {
		return err
	}
	if err := c.DNS.validate(); err != nil {
		return err
	}
	if err := c.Bypass.validate(); err != nil {
		return err
	}
	ports := map[uint16]string{}
	type portKey struct {
		key  string
		port uint16
	}
	keys := []portKey{{"listen.http_port", c.Listen.HTTPPort}, {"listen.tls_port", c.Listen.TLSPort}, {"listen.dns_port", c.Listen.DNSPort}, {"admin.port", c.Admin.Port}}
	if c.Console.On() {
		keys = append(keys, portKey{"console.port", c.Console.Port}, portKey{"console.http_port", c.Console.PlainHTTPPort()})
	}
	for _, p := range keys {
		if p.port == 0 {
			continue
		}
		if other, dup := ports[p.port]; dup {
			return bad(p.key, "port %d is already used by %s", p.port, other)
		}
		ports[p.port] = p.key
	}
	switch {
	case c.Proxy.PeekTimeout < 0:
		return bad("proxy.peek_timeout", "must be positive")
	case c.Proxy.IdleTimeout < 0:
		return bad("proxy.idle_timeout", "must be positive")
	case c.Proxy.MaxHeaderBytes < 1024 || c.Proxy.MaxHeaderBytes > 1<<20:
		return bad("proxy.max_header_bytes", "%d is outside 1024..1048576", c.Proxy.MaxHeaderBytes)
	}
	if err := c.Limits.validate(); err != nil {
		return err
	}
	if c.Console.On() {
		if err := c.Console.validate(); err != nil {
			return err
		}
	}
	if !filepath.IsAbs(c.StateDir) {
		return bad("state_dir", "%q is not an absolute path", c.StateDir)
	}
	for i, h := range c.Admin.Hostnames {
		if n := strings.TrimSuffix(strings.ToLower(h), "."); n == "" || !hostnameRE.MatchString(n) {
			return bad(fmt.Sprintf("admin.hostnames[%d]", i), "%q is not a host name", h)
		}
	}
	if !filepath.IsAbs(c.Admin.Socket) {
		return bad("admin.socket", "%q is not an absolute path", c.Admin.Socket)
	}
	if host, port, err := net.SplitHostPort(c.Health.ProbeTarget); err != nil || host == "" || port == "" {
		return bad("health.probe_target", "%q is not host:port", c.Health.ProbeTarget)
	}
	if c.Health.Interval < Duration(time.Second) {
		return bad("health.interval", "must be at least 1s")
	}
	if c.Debug.PprofListen != "" {
		ap, err := netip.ParseAddrPort(c.Debug.PprofListen)
		if err != nil || !ap.Addr().IsLoopback() || ap.Port() == 0 {
			return bad("debug.pprof_listen", "%q must be a loopback address:port, e.g. 127.0.0.1:6060", c.Debug.PprofListen)
		}
	}
	switch c.Dataplane.Attach {
	case "auto", "tcx", "legacy":
	default:
		return bad("dataplane.attach", "%q is not one of auto, tcx, legacy", c.Dataplane.Attach)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return bad("log.format", "%q is not one of text, json", c.Log.Format)
	}
	return nil
}

func (p *CloudProxy) validate() error {
	anyHTTPS, err := p.validateURLs()
	if err != nil {
		return err
	}
	if p.CAFile != "" {
		if !anyHTTPS {
			return bad("cloud_proxy.ca_file", "only used with an https:// url")
		}
		if _, err := os.Stat(p.CAFile); err != nil {
			return bad("cloud_proxy.ca_file", "%v", err)
		}
	}
	if p.EntitlementCode != "" && !EntitlementCodeRE.MatchString(p.EntitlementCode) {
		return bad("cloud_proxy.entitlement_code", "not UUID-shaped (want 8-4-4-4-12 hex digits)")
	}
	if p.Username != "" && p.Password == "" {
		return bad("cloud_proxy.password", "required when username is set")
	}
	if p.Password != "" && p.Username == "" {
		return bad("cloud_proxy.username", "required when password is set")
	}
	if strings.Contains(p.Username, ":") {
		return bad("cloud_proxy.username", "must not contain ':'")
	}
	if p.ConnectTimeout < 0 {
		return bad("cloud_proxy.connect_timeout", "must be positive")
	}
	if n := p.WarmConnections; n != nil && (*n < 0 || *n > MaxWarmConnections) {
		return bad("cloud_proxy.warm_connections", "must be 0 (off) to %d", MaxWarmConnections)
	}
	if p.WarmMaxAge < 0 {
		return bad("cloud_proxy.warm_max_age", "must be positive")
	}
	return nil
}

// ProxyURL returns the parsed primary cloud proxy URL.
func (p *CloudProxy) ProxyURL() *url.URL {
	if us := p.ProxyURLs(); len(us) > 0 {
		return us[0]
	}
	return &url.URL{}
}

// Credentials returns the Basic user name and password sent to the cloud
// proxy: username/password when set, otherwise the entitlement code with an
// empty password.
func (p *CloudProxy) Credentials() (user, password string) {
	if p.Username != "" {
		return p.Username, p.Password
	}
	return strings.ToLower(p.EntitlementCode), ""
}

// HasSecrets reports whether the configuration carries credentials.
func (c *Config) HasSecrets() bool {
	return c.CloudProxy.EntitlementCode != "" || c.CloudProxy.Password != ""
}

func (d *DNS) validate() error {
	if len(d.Upstreams) == 0 {
		return bad("dns.upstreams", "required: the cloud resolvers, e.g. [\"192.0.2.53\"] or [\"tls://dns.example\"]")
	}
	if err := d.validateUpstreams(); err != nil {
		return err
	}
	if d.Timeout <= 0 {
		return bad("dns.timeout", "must be positive")
	}
	if d.CacheSize < 0 || d.CacheSize > 10_000_000 {
		return bad("dns.cache_size", "%d is outside 0..10000000", d.CacheSize)
	}
	if err := d.validateLeaks(); err != nil {
		return err
	}
	if err := d.validateLANNames(); err != nil {
		return err
	}
	return d.validateSplit()
}

// Servers returns the validated cloud resolvers, in order, with their
// addresses (for a name, the bootstrap ones).
func (d *DNS) Servers() []transport.Spec { return d.servers }

// UpstreamNames returns the cloud resolvers as normalised strings.
func (d *DNS) UpstreamNames() []string {
	out := make([]string, len(d.servers))
	for i, s := range d.servers {
		out[i] = s.String()
	}
	return out
}

// RootCAs returns the pool of dns.ca_file, or nil for the system roots.
func (d *DNS) RootCAs() *x509.CertPool { return d.roots }

func (b *Bypass) validate() error {
	b.domains = nil
	for i, d := range b.Domains {
		n, err := bypass.NormalizePattern(d)
		if err != nil {
			return bad(fmt.Sprintf("bypass.domains[%d]", i), "%v", err)
		}
		b.domains = append(b.domains, n)
	}
	b.cidrs = nil
	for i, s := range b.CIDRs {
		p, err := bypass.ParsePrefix(s)
		if err != nil {
			return bad(fmt.Sprintf("bypass.cidrs[%d]", i), "%v", err)
		}
		b.cidrs = append(b.cidrs, p)
	}
	if why := BroadBypass(b.cidrs); why != "" && !b.AllowBroadCIDRs {
		return bad("bypass.cidrs", "%s; set bypass.allow_broad_cidrs: true if that is meant", why)
	}
	return nil
}

// DomainPatterns returns the normalized bypass domain patterns.
func (b *Bypass) DomainPatterns() []string { return b.domains }

// Prefixes returns the validated bypass prefixes.
func (b *Bypass) Prefixes() []netip.Prefix { return b.cidrs }

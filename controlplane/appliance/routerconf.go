// Package appliance turns the image's router.conf (a small key = value
// file on the boot partition, editable from any PC) into the router's
// configuration at every boot: systemd-networkd files for the WAN and LAN
// NICs, a pppd peer file for PPPoE, the interface names the firewall
// needs, and cloudsteer's own config. A file with mistakes never leaves
// the office without a LAN: the network part falls back to the defaults
// and the status says which line was wrong.
package appliance

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/cloudsteer/cloudsteer/controlplane/config"
)

// WAN modes.
const (
	ModeDHCP   = "dhcp"
	ModeStatic = "static"
	ModePPPoE  = "pppoe"
)

// DefaultLANAddress is the LAN address when router.conf names none.
var DefaultLANAddress = netip.MustParsePrefix("192.168.77.1/24")

// NICSelector picks a NIC: by name, by MAC address, or (both empty) the
// default of its role.
type NICSelector struct {
	Name string
	MAC  net.HardwareAddr
}

// Auto reports whether the selector is the default.
func (s NICSelector) Auto() bool { return s.Name == "" && s.MAC == nil }

func (s NICSelector) String() string {
	switch {
	case s.Name != "":
		return s.Name
	case s.MAC != nil:
		return s.MAC.String()
	}
	return "auto"
}

// Conf is router.conf, parsed.
type Conf struct {
	WAN, LAN NICSelector

	WANMode    string
	WANAddress netip.Prefix // static
	WANGateway netip.Addr   // static
	WANDNS     []netip.Addr // static: the router's own resolvers

	PPPoEUser     string
	PPPoEPassword string

	LANAddress netip.Prefix
	// PoolStart and PoolEnd bound the DHCP pool (both zero: the default).
	PoolStart, PoolEnd netip.Addr

	IPv6 bool

	CloudProxies []string
	// CloudProxyUser and CloudProxyPassword are the provider's
	// proxy-chaining credentials (cloud_proxy.username/password); the
	// user defaults to the entitlement code.
	CloudProxyUser, CloudProxyPassword string
	DNS                                []string // cloudsteer's dns.upstreams
	NTP                                []string
	EntitlementCode                    string
	// CodeLine is the 1-based line of entitlement_code (0: none).
	CodeLine int

	// Warnings are lines that are valid but unused (a static address with
	// wan_mode = dhcp, say).
	Warnings []LineError
}

// Default is the configuration of an image without router.conf: the
// first physical Ethernet NIC is the WAN (DHCP client), the second the
// LAN at 192.168.77.1/24 with a DHCP server, IPv6 on.
func Default() *Conf {
	return &Conf{WANMode: ModeDHCP, LANAddress: DefaultLANAddress, IPv6: true}
}

// LineError is one problem of router.conf, naming its line and key.
// Its text never holds the value of a secret.
type LineError struct {
	Line int
	Key  string
	Msg  string
}

func (e LineError) Error() string {
	if e.Key == "" {
		return fmt.Sprintf("router.conf line %d: %s", e.Line, e.Msg)
	}
	if e.Line == 0 {
		return fmt.Sprintf("router.conf: %s: %s", e.Key, e.Msg)
	}
	return fmt.Sprintf("router.conf line %d: %s: %s", e.Line, e.Key, e.Msg)
}

// keys are router.conf's keys, in the order the example file documents.
var keys = []string{
	"wan", "lan", "wan_mode", "wan_address", "wan_gateway", "wan_dns",
	"pppoe_user", "pppoe_password", "lan_address", "dhcp_pool", "ipv6",
	"cloud_proxy", "cloud_proxy_user", "cloud_proxy_password", "dns", "ntp", "entitlement_code",
}

// secretKeys are never echoed.
var secretKeys = map[string]bool{"pppoe_password": true, "entitlement_code": true, "cloud_proxy_password": true}

// Line is one key = value line.
type line struct {
	n          int
	key, value string
}

// splitLines reads the file's lines: a UTF-8 BOM and CRLF endings (the
// file is edited on Windows) are accepted, lines starting with # or ; are
// comments.
func splitLines(data []byte) ([]line, []LineError) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	var out []line
	var errs []LineError
	for i, raw := range strings.Split(string(data), "\n") {
		n := i + 1
		s := strings.TrimSpace(strings.TrimSuffix(raw, "\r"))
		if s == "" || s[0] == '#' || s[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			errs = append(errs, LineError{Line: n, Msg: "not a key = value line (comments start with #)"})
			continue
		}
		k = strings.ToLower(strings.TrimSpace(k))
		v = strings.TrimSpace(v)
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		out = append(out, line{n: n, key: k, value: v})
	}
	return out, errs
}

// Parse reads router.conf. It returns the settings of every valid line
// (unset keys at their defaults) and the problems; the caller decides
// what a file with problems still sets (Configure: only the cloud part).
func Parse(data []byte) (*Conf, []LineError) {
	c := Default()
	lines, errs := splitLines(data)
	seen := map[string]int{}
	at := map[string]int{}
	for _, l := range lines {
		fail := func(format string, args ...any) {
			errs = append(errs, LineError{Line: l.n, Key: l.key, Msg: fmt.Sprintf(format, args...)})
		}
		if !slices.Contains(keys, l.key) {
			fail("unknown key (known: %s)", strings.Join(keys, ", "))
			continue
		}
		if prev, dup := seen[l.key]; dup {
			fail("set twice (first on line %d)", prev)
			continue
		}
		seen[l.key] = l.n
		if strings.ContainsAny(l.value, "\x00\"\\") && !secretKeys[l.key] && l.key != "pppoe_user" {
			fail("must not contain quotes, backslashes or NUL")
			continue
		}
		at[l.key] = l.n
		v := l.value
		switch l.key {
		case "wan", "lan":
			s, err := parseNIC(v)
			if err != nil {
				fail("%v", err)
				continue
			}
			if l.key == "wan" {
				c.WAN = s
			} else {
				c.LAN = s
			}
		case "wan_mode":
			m := strings.ToLower(v)
			if m != ModeDHCP && m != ModeStatic && m != ModePPPoE {
				fail("%q is not dhcp, static or pppoe", v)
				continue
			}
			c.WANMode = m
		case "wan_address":
			p, err := netip.ParsePrefix(v)
			if err != nil || !p.Addr().Is4() || p.Bits() == 0 || p.Bits() > 31 {
				fail("%q is not an IPv4 address with prefix length (e.g. 203.0.113.2/24)", v)
				continue
			}
			c.WANAddress = p
		case "wan_gateway":
			a, err := netip.ParseAddr(v)
			if err != nil || !a.Is4() {
				fail("%q is not an IPv4 address (e.g. 203.0.113.1)", v)
				continue
			}
			c.WANGateway = a
		case "wan_dns":
			for _, f := range splitList(v) {
				a, err := netip.ParseAddr(f)
				if err != nil || a.Zone() != "" {
					fail("%q is not an IP address", f)
					c.WANDNS = nil
					break
				}
				c.WANDNS = append(c.WANDNS, a)
			}
		case "pppoe_user":
			if v == "" || len(v) > 255 || strings.ContainsAny(v, "\x00\n") {
				fail("must be 1 to 255 characters")
				continue
			}
			c.PPPoEUser = v
		case "pppoe_password":
			if v == "" || len(v) > 255 || strings.ContainsRune(v, 0) {
				fail("must be 1 to 255 characters")
				continue
			}
			c.PPPoEPassword = v
		case "lan_address":
			p, err := netip.ParsePrefix(v)
			if err != nil || !p.Addr().Is4() || p.Bits() < 8 || p.Bits() > 30 ||
				p.Addr() == p.Masked().Addr() || p.Addr() == broadcast(p) {
				fail("%q is not a host address of an IPv4 subnet of /8 to /30 (e.g. 192.168.77.1/24)", v)
				continue
			}
			c.LANAddress = p
		case "dhcp_pool":
			a, b, ok := strings.Cut(v, "-")
			s, err1 := netip.ParseAddr(strings.TrimSpace(a))
			e, err2 := netip.ParseAddr(strings.TrimSpace(b))
			if !ok || err1 != nil || err2 != nil || !s.Is4() || !e.Is4() || e.Less(s) {
				fail("%q is not a range FIRST-LAST of IPv4 addresses (e.g. 192.168.77.100-192.168.77.249)", v)
				continue
			}
			c.PoolStart, c.PoolEnd = s, e
		case "ipv6":
			b, ok := parseBool(v)
			if !ok {
				fail("%q is not on or off", v)
				continue
			}
			c.IPv6 = b
		case "cloud_proxy":
			ps, err := checkList(v, checkProxyURL)
			if err != nil {
				fail("%v", err)
			}
			if len(ps) > config.MaxCloudProxies {
				fail("at most %d proxies", config.MaxCloudProxies)
				continue
			}
			c.CloudProxies = ps
		case "cloud_proxy_user":
			if v == "" || len(v) > 255 || strings.ContainsAny(v, ":\x00\n") {
				fail("must be 1 to 255 characters, without ':'")
				continue
			}
			c.CloudProxyUser = v
		case "cloud_proxy_password":
			if v == "" || len(v) > 255 || strings.ContainsAny(v, "\x00\n") {
				fail("must be 1 to 255 characters")
				continue
			}
			c.CloudProxyPassword = v
		case "dns":
			ds, err := checkList(v, func(f string) error {
				if !validUpstream(f) {
					return fmt.Errorf("%q is not an IP address or IP:port ([v6]:port)", f)
				}
				return nil
			})
			if err != nil {
				fail("%v", err)
			}
			c.DNS = ds
		case "ntp":
			ns, err := checkList(v, func(f string) error {
				if !validHost(f) {
					return fmt.Errorf("%q is not a host name or IP address", f)
				}
				return nil
			})
			if err != nil {
				fail("%v", err)
			}
			c.NTP = ns
		case "entitlement_code":
			if !config.EntitlementCodeRE.MatchString(v) {
				fail("not an entitlement code (8-4-4-4-12 hex digits, as on the contract)")
				continue
			}
			c.EntitlementCode = strings.ToLower(v)
			c.CodeLine = l.n
		}
	}
	errs = append(errs, c.check(at)...)
	slices.SortStableFunc(errs, func(a, b LineError) int { return a.Line - b.Line })
	return c, errs
}

// check validates what depends on several keys.
func (c *Conf) check(at map[string]int) []LineError {
	var errs []LineError
	bad := func(key, format string, args ...any) {
		errs = append(errs, LineError{Line: at[key], Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	unused := func(key, why string) {
		if n, ok := at[key]; ok {
			c.Warnings = append(c.Warnings, LineError{Line: n, Key: key, Msg: "ignored: " + why})
		}
	}
	switch c.WANMode {
	case ModeStatic:
		if !c.WANAddress.IsValid() {
			bad("wan_mode", "static needs wan_address (e.g. wan_address = 203.0.113.2/24)")
		}
		if !c.WANGateway.IsValid() {
			bad("wan_mode", "static needs wan_gateway (e.g. wan_gateway = 203.0.113.1)")
		}
		if c.WANAddress.IsValid() && c.WANGateway.IsValid() {
			if !c.WANAddress.Masked().Contains(c.WANGateway) || c.WANGateway == c.WANAddress.Addr() {
				bad("wan_gateway", "%s is not another address in wan_address's subnet %s", c.WANGateway, c.WANAddress.Masked())
			}
		}
		unused("pppoe_user", "wan_mode is static")
		unused("pppoe_password", "wan_mode is static")
	case ModePPPoE:
		if c.PPPoEUser == "" {
			bad("wan_mode", "pppoe needs pppoe_user")
		}
		if c.PPPoEPassword == "" {
			bad("wan_mode", "pppoe needs pppoe_password")
		}
		fallthrough
	default:
		for _, k := range []string{"wan_address", "wan_gateway", "wan_dns"} {
			unused(k, "wan_mode is not static")
		}
		if c.WANMode == ModeDHCP {
			unused("pppoe_user", "wan_mode is not pppoe")
			unused("pppoe_password", "wan_mode is not pppoe")
		}
	}
	if !c.WAN.Auto() && !c.LAN.Auto() && c.WAN.String() == c.LAN.String() {
		bad("lan", "names the same NIC as wan (%s)", c.WAN)
	}
	if c.WANAddress.IsValid() && c.WANMode == ModeStatic && c.WANAddress.Overlaps(c.LANAddress.Masked()) {
		bad("lan_address", "%s overlaps the WAN's subnet %s", c.LANAddress.Masked(), c.WANAddress.Masked())
	}
	if c.PoolStart.IsValid() {
		net := c.LANAddress.Masked()
		switch {
		case !net.Contains(c.PoolStart) || !net.Contains(c.PoolEnd):
			bad("dhcp_pool", "%s-%s is not inside the LAN subnet %s", c.PoolStart, c.PoolEnd, net)
		case c.PoolStart == net.Addr() || c.PoolEnd == broadcast(c.LANAddress):
			bad("dhcp_pool", "must not hold the subnet's network or broadcast address")
		case !c.LANAddress.Addr().Less(c.PoolStart) && !c.PoolEnd.Less(c.LANAddress.Addr()):
			bad("dhcp_pool", "holds the LAN address %s", c.LANAddress.Addr())
		}
	}
	return errs
}

// Pool returns the DHCP pool as networkd's PoolOffset= and PoolSize=
// (0, 0: networkd's default, the whole subnet).
func (c *Conf) Pool() (offset, size uint32) {
	net := c.LANAddress.Masked()
	base := u32(net.Addr())
	if c.PoolStart.IsValid() {
		return u32(c.PoolStart) - base, u32(c.PoolEnd) - u32(c.PoolStart) + 1
	}
	if c.LANAddress.Bits() > 24 {
		return 0, 0
	}
	// .100 to .249 of the LAN's first /24 (the default pool of home
	// routers), unless the LAN address is in it.
	off, sz := uint32(100), uint32(150)
	if a := u32(c.LANAddress.Addr()) - base; a >= off && a < off+sz {
		off, sz = 10, 90
		if a >= off && a < off+sz {
			return 0, 0
		}
	}
	return off, sz
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func broadcast(p netip.Prefix) netip.Addr {
	v := u32(p.Masked().Addr()) | (1<<(32-p.Bits()) - 1)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func parseNIC(v string) (NICSelector, error) {
	if strings.EqualFold(v, "auto") || v == "" {
		return NICSelector{}, nil
	}
	if strings.Count(v, ":") == 5 || strings.Count(v, "-") == 5 {
		mac, err := net.ParseMAC(v)
		if err != nil || len(mac) != 6 {
			return NICSelector{}, fmt.Errorf("%q is not a MAC address (e.g. 00:11:22:33:44:55)", v)
		}
		return NICSelector{MAC: mac}, nil
	}
	if !validIfname(v) {
		return NICSelector{}, fmt.Errorf("%q is not auto, an interface name (e.g. enp1s0) or a MAC address", v)
	}
	return NICSelector{Name: v}, nil
}

// validIfname is Linux's rule for interface names (and a little stricter:
// no characters a shell or nft would need quoted).
func validIfname(s string) bool {
	if s == "" || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' || r == '@') {
			return false
		}
	}
	return true
}

func parseBool(v string) (bool, bool) {
	switch strings.ToLower(v) {
	case "on", "yes", "true", "1":
		return true, true
	case "off", "no", "false", "0":
		return false, true
	}
	return false, false
}

// splitList splits a comma- or space-separated list.
func splitList(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
}

func checkProxyURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Port() == "" ||
		u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q is not http://host:port or https://host:port", s)
	}
	if p, err := strconv.Atoi(u.Port()); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q: port out of range", s)
	}
	if !validHost(u.Hostname()) {
		return fmt.Errorf("%q: bad host name", s)
	}
	return nil
}

func validUpstream(s string) bool {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Zone() == ""
	}
	ap, err := netip.ParseAddrPort(s)
	return err == nil && ap.Port() != 0 && ap.Addr().Zone() == ""
}

func validHost(s string) bool {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Zone() == ""
	}
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// checkList splits a list-valued key's value and checks each entry: all
// of them, or nil and the first entry's error.
func checkList(v string, check func(string) error) ([]string, error) {
	var out []string
	for _, f := range splitList(v) {
		if err := check(f); err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

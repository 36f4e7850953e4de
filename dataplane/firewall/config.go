package firewall

import (
	"errors"
	"fmt"
	"strings"
)

// ifNameSize is IFNAMSIZ: interface names are at most 15 bytes plus NUL.
const ifNameSize = 16

// maxTableName is NFT_TABLE_MAXNAMELEN less the terminating NUL.
const maxTableName = 255

// validate checks c (with TableName already defaulted) and returns one
// error line per problem.
func (c Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if len(c.LANInterfaces) == 0 {
		bad("no LAN interface: need at least one")
	}
	seenIf := map[string]bool{}
	for _, name := range c.LANInterfaces {
		switch {
		case name == "":
			bad("LAN interface: empty name")
		case len(name) >= ifNameSize:
			bad("LAN interface %q: name longer than %d bytes", name, ifNameSize-1)
		case strings.ContainsAny(name, "/ \t\n\x00:"):
			bad("LAN interface %q: not a valid interface name", name)
		case name == "lo":
			bad("LAN interface lo: lo is always allowed, do not list it")
		case seenIf[name]:
			bad("LAN interface %q listed twice", name)
		}
		seenIf[name] = true
	}

	marks := []struct {
		name string
		v    uint32
	}{{"HTTP", c.Marks.HTTP}, {"TLS", c.Marks.TLS}, {"DNS", c.Marks.DNS}, {"QUIC", c.Marks.QUIC}}
	if c.UntrackUnsteered {
		marks = append(marks, struct {
			name string
			v    uint32
		}{"Untrack", c.Marks.Untrack})
	}
	if c.Marks.DoT != 0 {
		marks = append(marks, struct {
			name string
			v    uint32
		}{"DoT", c.Marks.DoT})
	}
	if g := c.QUICGate; g != nil {
		marks = append(marks, struct {
			name string
			v    uint32
		}{"QUIC gate OK", g.MarkOK}, struct {
			name string
			v    uint32
		}{"QUIC gate NO", g.MarkNo})
		if g.CtMask == 0 || g.CtOK == 0 || g.CtOK&^g.CtMask != 0 {
			bad("QUIC gate conntrack mark %#08x is not a non-zero value under the mask %#08x", g.CtOK, g.CtMask)
		}
	}
	seenMark := map[uint32]string{}
	for _, m := range marks {
		if m.v == 0 {
			bad("mark %s is 0 (it would match every unmarked packet)", m.name)
			continue
		}
		if other, ok := seenMark[m.v]; ok {
			bad("marks %s and %s are both %#08x", other, m.name, m.v)
			continue
		}
		seenMark[m.v] = m.name
	}

	// TCP ports: HTTP, TLS, DNS and the guarded ones must all differ;
	// UDP only has DNSPort.
	tcp := []struct {
		name string
		v    uint16
	}{{"HTTPPort", c.HTTPPort}, {"TLSPort", c.TLSPort}, {"DNSPort", c.DNSPort}}
	for i, p := range c.GuardTCPPorts {
		tcp = append(tcp, struct {
			name string
			v    uint16
		}{fmt.Sprintf("GuardTCPPorts[%d]", i), p})
	}
	seenPort := map[uint16]string{}
	for _, p := range tcp {
		if p.v == 0 {
			bad("%s is 0", p.name)
			continue
		}
		if other, ok := seenPort[p.v]; ok {
			bad("TCP port %d used twice (%s and %s)", p.v, other, p.name)
			continue
		}
		seenPort[p.v] = p.name
	}

	c.Limits.validate(bad)

	if len(c.TableName) > maxTableName {
		bad("table name longer than %d bytes", maxTableName)
	}
	if strings.ContainsRune(c.TableName, 0) {
		bad("table name %q contains a NUL byte", c.TableName)
	}
	return errors.Join(errs...)
}

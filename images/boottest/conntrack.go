package boottest

import (
	"net/netip"
	"strconv"
	"strings"
)

// ConntrackEntry is one line of /proc/net/nf_conntrack (the kernel's
// CONFIG_NF_CONNTRACK_PROCFS view of connection tracking):
//
//	ipv4 2 tcp 6 431999 ESTABLISHED src=A dst=B sport=P dport=Q src=B dst=N sport=Q dport=P [OFFLOAD] mark=0 zone=0 use=3
type ConntrackEntry struct {
	Line        string
	Proto       string // tcp, udp, icmp...
	Orig, Reply ConntrackTuple
	Flags       []string // the bracketed flags: OFFLOAD, HW_OFFLOAD, ASSURED, UNREPLIED
}

// ConntrackTuple is one direction of a tracked flow.
type ConntrackTuple struct {
	Src, Dst     netip.Addr
	Sport, Dport int
}

// ParseConntrack reads /proc/net/nf_conntrack; lines it cannot read are
// left out.
func ParseConntrack(text string) []ConntrackEntry {
	var out []ConntrackEntry
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		e := ConntrackEntry{Line: line, Proto: f[2]}
		tuples := []*ConntrackTuple{&e.Orig, &e.Reply}
		n := 0 // the tuple a src= starts
		for _, tok := range f[3:] {
			if strings.HasPrefix(tok, "[") && strings.HasSuffix(tok, "]") {
				e.Flags = append(e.Flags, strings.Trim(tok, "[]"))
				continue
			}
			k, v, ok := strings.Cut(tok, "=")
			if !ok {
				continue
			}
			if k == "src" {
				n++
			}
			if n < 1 || n > 2 {
				continue
			}
			t := tuples[n-1]
			switch k {
			case "src":
				t.Src, _ = netip.ParseAddr(v)
			case "dst":
				t.Dst, _ = netip.ParseAddr(v)
			case "sport":
				t.Sport, _ = strconv.Atoi(v)
			case "dport":
				t.Dport, _ = strconv.Atoi(v)
			}
		}
		if !e.Orig.Src.IsValid() || !e.Reply.Src.IsValid() {
			continue
		}
		out = append(out, e)
	}
	return out
}

// Offloaded reports whether the flow is in a flowtable (software or
// hardware offload).
func (e ConntrackEntry) Offloaded() bool { return e.HasFlag("OFFLOAD") || e.HasFlag("HW_OFFLOAD") }

// HasFlag reports whether the entry carries the bracketed flag.
func (e ConntrackEntry) HasFlag(flag string) bool {
	for _, f := range e.Flags {
		if f == flag {
			return true
		}
	}
	return false
}

// FindConntrack returns the entry whose original direction is that TCP or
// UDP flow.
func FindConntrack(entries []ConntrackEntry, proto string, orig ConntrackTuple) (ConntrackEntry, bool) {
	for _, e := range entries {
		if e.Proto == proto && e.Orig == orig {
			return e, true
		}
	}
	return ConntrackEntry{}, false
}

package resolver

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// reverseAddr is the address a reverse-lookup name stands for: four
// decimal labels under in-addr.arpa, or 32 hex nibbles under ip6.arpa
// (canonical name, no trailing dot). Partial names (a zone's apex or a
// subnet) are not addresses.
func reverseAddr(name string) (netip.Addr, bool) {
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa"); ok {
		labels := strings.Split(rest, ".")
		if len(labels) != 4 {
			return netip.Addr{}, false
		}
		var b [4]byte
		for i, l := range labels {
			if l == "" || len(l) > 3 || (len(l) > 1 && l[0] == '0') {
				return netip.Addr{}, false
			}
			v, err := strconv.ParseUint(l, 10, 8)
			if err != nil {
				return netip.Addr{}, false
			}
			b[3-i] = byte(v)
		}
		return netip.AddrFrom4(b), true
	}
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa"); ok {
		labels := strings.Split(rest, ".")
		if len(labels) != 32 {
			return netip.Addr{}, false
		}
		var b [16]byte
		for i, l := range labels {
			if len(l) != 1 {
				return netip.Addr{}, false
			}
			v, err := strconv.ParseUint(l, 16, 8)
			if err != nil {
				return netip.Addr{}, false
			}
			n := 31 - i // nibble index, most significant first
			if n%2 == 0 {
				b[n/2] |= byte(v) << 4
			} else {
				b[n/2] |= byte(v)
			}
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}

// localPTR answers a PTR question with one name.
func localPTR(q *dns.Msg, target string) *dns.Msg {
	out := errorReply(q, dns.RcodeSuccess)
	out.Authoritative = true
	qq := q.Question[0]
	out.Answer = append(out.Answer, &dns.PTR{
		Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: localTTL},
		Ptr: dns.Fqdn(target),
	})
	return out
}

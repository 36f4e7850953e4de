package resolver

import (
	"context"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

const (
	// headerLen is the size of a DNS message header.
	headerLen = 12
	// maxChain is the longest CNAME chain snoop follows.
	maxChain = 16
)

// handle answers one raw client request and returns the packed answer, or
// nil when the request gets no answer (shorter than a header, or itself a
// response). UDP answers are truncated to the client's advertised size.
func (r *Resolver) handle(ctx context.Context, raw []byte, client netip.AddrPort, transport string) []byte {
	if out, ok := r.fastAnswer(raw, client, transport, nil); ok {
		return out
	}
	return r.handleGeneral(ctx, raw, client, transport)
}

// handleGeneral is handle without the cache-hit fast path: it unpacks the
// whole request and packs the answer.
func (r *Resolver) handleGeneral(ctx context.Context, raw []byte, client netip.AddrPort, transport string) []byte {
	start := time.Now()
	if len(raw) < headerLen {
		r.malformed.Add(1)
		r.dropped.Add(1)
		return nil
	}
	if raw[2]&0x80 != 0 { // QR set: a response, never answer it (no loops)
		r.dropped.Add(1)
		return nil
	}
	r.queries.Add(1)
	q := new(dns.Msg)
	if err := q.Unpack(raw); err != nil {
		r.malformed.Add(1)
		r.log.Debug("malformed query", "client", client, "transport", transport, "err", err)
		r.countRcode(dns.RcodeFormatError)
		return formErr(raw)
	}
	info := QueryInfo{Client: client, Transport: transport}
	if len(q.Question) > 0 {
		info.Name = canonName(q.Question[0].Name)
		info.Type = q.Question[0].Qtype
	}
	finish := func(out *dns.Msg) []byte {
		b := r.pack(q, out, transport)
		info.Rcode = out.Rcode
		if b == nil {
			r.countRcode(dns.RcodeServerFailure)
			info.Rcode = dns.RcodeServerFailure
			b = r.pack(q, errorReply(q, dns.RcodeServerFailure), transport)
			if b == nil {
				b = formErr(raw)
			}
		} else {
			r.countRcode(out.Rcode)
		}
		info.Duration = time.Since(start)
		if r.cfg.OnQuery != nil {
			r.cfg.OnQuery(info)
		}
		return b
	}

	opt := q.IsEdns0()
	switch {
	case q.Opcode != dns.OpcodeQuery:
		return finish(errorReply(q, dns.RcodeNotImplemented))
	case len(q.Question) != 1:
		r.malformed.Add(1)
		return finish(errorReply(q, dns.RcodeFormatError))
	case opt != nil && opt.Version() != 0:
		return finish(errorReply(q, dns.RcodeBadVers))
	}
	qq := q.Question[0]
	switch qq.Qtype {
	case dns.TypeAXFR, dns.TypeIXFR, dns.TypeMAILA, dns.TypeMAILB, dns.TypeOPT:
		return finish(errorReply(q, dns.RcodeRefused))
	}
	if r.cfg.LocalAddrs != nil {
		if addrs, ok := r.cfg.LocalAddrs(info.Name); ok {
			r.localAnswers.Add(1)
			return finish(localAnswer(q, addrs))
		}
	}
	if r.cfg.LocalPTR != nil && qq.Qtype == dns.TypePTR && qq.Qclass == dns.ClassINET {
		if a, ok := reverseAddr(info.Name); ok {
			if name, ok := r.cfg.LocalPTR(a); ok {
				r.localAnswers.Add(1)
				return finish(localPTR(q, name))
			}
		}
	}
	// Names the resolver answers itself (Config.NXDomain): Firefox's
	// canary domain (NXDOMAIN tells Firefox the network filters DNS, and
	// it turns its automatic DNS over HTTPS off) and the DoH services'
	// host names (a browser that cannot resolve its DoH server falls back
	// to the system resolver, the gateway). Never forwarded, cached,
	// offered to the kernel cache or snooped: never bypass evidence.
	if r.nxdomain.Match(info.Name) && r.split.zone(info.Name) == nil {
		r.localNX.Add(1)
		return finish(errorReply(q, dns.RcodeNameError))
	}
	k := cacheKey{name: strings.ToLower(qq.Name), qtype: qq.Qtype, qclass: qq.Qclass, do: opt != nil && opt.Do(), cd: q.CheckingDisabled}
	ans, elapsed, ok := r.cache.get(k, r.now())
	if ok {
		r.hits.Add(1)
		info.Cached = true
	} else {
		r.misses.Add(1)
		var err error
		if ans, err = r.lookup(ctx, k); err != nil {
			r.log.Debug("forward query", "name", info.Name, "type", dns.TypeToString[qq.Qtype], "err", err)
			return finish(errorReply(q, dns.RcodeServerFailure))
		}
	}
	out := reply(q, ans, elapsed)
	r.snoop(out)
	info.Blocked = sinkholed(out)
	return finish(out)
}

// reply builds the client's answer from a stored upstream answer: the
// client's ID, question (with its case) and RD/CD bits, TTLs decremented by
// elapsed.
func reply(q, ans *dns.Msg, elapsed time.Duration) *dns.Msg {
	out := ans.Copy()
	out.Id = q.Id
	out.Response = true
	out.Opcode = dns.OpcodeQuery
	out.Authoritative = false
	out.RecursionAvailable = true
	out.RecursionDesired = q.RecursionDesired
	out.CheckingDisabled = q.CheckingDisabled
	out.Question = []dns.Question{q.Question[0]}
	if dec := durSeconds(elapsed); dec > 0 {
		for _, sec := range [][]dns.RR{out.Answer, out.Ns, out.Extra} {
			for _, rr := range sec {
				h := rr.Header()
				h.Ttl -= min(h.Ttl, dec)
			}
		}
	}
	return out
}

// errorReply is an answer with rcode and the client's question.
func errorReply(q *dns.Msg, rcode int) *dns.Msg {
	out := new(dns.Msg).SetRcode(q, rcode)
	out.RecursionAvailable = true
	return out
}

// pack adds the OPT record an EDNS0 client expects, truncates a UDP answer
// to the client's advertised size (setting TC) and packs it; nil when the
// answer cannot be packed.
func (r *Resolver) pack(q, out *dns.Msg, transport string) []byte {
	size := dns.MaxMsgSize
	if transport == "udp" {
		size = dns.MinMsgSize
	}
	if opt := q.IsEdns0(); opt != nil {
		out.SetEdns0(upstreamUDPSize, opt.Do())
		if transport == "udp" {
			size = max(int(opt.UDPSize()), dns.MinMsgSize)
		}
	}
	out.Compress = true
	out.Truncate(size)
	b, err := out.Pack()
	if err != nil || len(b) > size {
		r.log.Debug("pack answer", "err", err, "len", len(b))
		return nil
	}
	return b
}

// formErr is a header-only FORMERR answer to a request too broken to parse.
func formErr(raw []byte) []byte {
	b := make([]byte, headerLen)
	b[0], b[1] = raw[0], raw[1]
	b[2] = 0x80 | raw[2]&0x79 // QR, opcode and RD from the request
	b[3] = 0x80 | dns.RcodeFormatError
	return b
}

// snoop reports the addresses of an A/AAAA answer for the query name and
// each owner name along its CNAME chain.
func (r *Resolver) snoop(out *dns.Msg) {
	if r.cfg.Snoop == nil {
		return
	}
	for _, s := range snoopReports(out) {
		r.cfg.Snoop(s.name, s.addrs, time.Duration(s.ttl)*time.Second)
	}
}

// snoopReports are the Snoop calls an answer makes: the addresses of an
// A/AAAA answer for the query name and each owner name along its CNAME
// chain, with the TTL each name holds them for.
func snoopReports(out *dns.Msg) []snoopReport {
	if out.Rcode != dns.RcodeSuccess || len(out.Question) != 1 {
		return nil
	}
	qq := out.Question[0]
	if (qq.Qtype != dns.TypeA && qq.Qtype != dns.TypeAAAA) || qq.Qclass != dns.ClassINET {
		return nil
	}
	name := qq.Name
	chain := []string{canonName(name)}
	var addrs []netip.Addr
	var addrTTL uint32
	// Each step follows one CNAME; bounded so that a CNAME loop or a long
	// chain from a broken upstream ends quickly.
	for range maxChain {
		var next string
		for _, rr := range out.Answer {
			h := rr.Header()
			if !strings.EqualFold(h.Name, name) {
				continue
			}
			switch v := rr.(type) {
			case *dns.A:
				if a, ok := netip.AddrFromSlice(v.A.To4()); ok && qq.Qtype == dns.TypeA {
					addrs = append(addrs, a)
					addrTTL = minOrFirst(addrTTL, h.Ttl, len(addrs) == 1)
				}
			case *dns.AAAA:
				if a, ok := netip.AddrFromSlice(v.AAAA.To16()); ok && qq.Qtype == dns.TypeAAAA && v.AAAA.To4() == nil {
					addrs = append(addrs, a)
					addrTTL = minOrFirst(addrTTL, h.Ttl, len(addrs) == 1)
				}
			case *dns.CNAME:
				if next == "" {
					next = v.Target
				}
			}
		}
		if len(addrs) > 0 || next == "" {
			break
		}
		name = next
		chain = append(chain, canonName(name))
	}
	if len(addrs) == 0 {
		return nil
	}
	addrs = clipAddrs(addrs)
	// The last name holds the addresses for addrTTL; an earlier name holds
	// them only while every CNAME after it is valid too.
	suffixMin := addrTTL
	ttls := make([]uint32, len(chain))
	for i := len(chain) - 1; i >= 0; i-- {
		ttls[i] = suffixMin
		if i > 0 {
			suffixMin = min(suffixMin, cnameTTL(out.Answer, chain[i-1]))
		}
	}
	seen := make(map[string]bool, len(chain))
	var reports []snoopReport
	for i, n := range chain {
		if seen[n] {
			continue
		}
		seen[n] = true
		reports = append(reports, snoopReport{name: n, addrs: addrs, ttl: ttls[i]})
	}
	return reports
}

func minOrFirst(cur, v uint32, first bool) uint32 {
	if first {
		return v
	}
	return min(cur, v)
}

// cnameTTL is the TTL of the CNAME owned by name (canonical form) in rrs.
func cnameTTL(rrs []dns.RR, name string) uint32 {
	for _, rr := range rrs {
		if c, ok := rr.(*dns.CNAME); ok && canonName(c.Hdr.Name) == name {
			return c.Hdr.Ttl
		}
	}
	return ^uint32(0)
}

// canonName is name in lowercase without the trailing dot ("." for the root).
func canonName(name string) string {
	if name == "." || name == "" {
		return "."
	}
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// sinkholed reports whether an answer is a cloud resolver's block: an A
// record 0.0.0.0 or an AAAA record ::.
func sinkholed(m *dns.Msg) bool {
	for _, rr := range m.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			if rr.A.IsUnspecified() {
				return true
			}
		case *dns.AAAA:
			if rr.AAAA.IsUnspecified() {
				return true
			}
		}
	}
	return false
}

// localTTL is the TTL of the gateway's own names' answers: short, as its
// LAN addresses may change.
const localTTL = 60

// localAnswer answers q for one of the gateway's own names with the
// addresses of the question's family (NODATA for other types).
func localAnswer(q *dns.Msg, addrs []netip.Addr) *dns.Msg {
	out := errorReply(q, dns.RcodeSuccess)
	out.Authoritative = true
	qq := q.Question[0]
	if qq.Qclass != dns.ClassINET {
		return out
	}
	for _, a := range addrs {
		hdr := dns.RR_Header{Name: qq.Name, Class: dns.ClassINET, Ttl: localTTL}
		switch {
		case qq.Qtype == dns.TypeA && a.Is4():
			hdr.Rrtype = dns.TypeA
			out.Answer = append(out.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
		case qq.Qtype == dns.TypeAAAA && a.Is6() && !a.Is4In6():
			hdr.Rrtype = dns.TypeAAAA
			out.Answer = append(out.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
		}
	}
	return out
}

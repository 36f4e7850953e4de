package resolver

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"slices"
	"time"
	"unsafe"

	"github.com/miekg/dns"
)

// optLen is the size of the OPT record the resolver adds for EDNS0 clients:
// root name, type, class (UDP size), TTL (ext. rcode, version, flags), RDLENGTH.
const optLen = 11

// fastQuery is what the cache-hit fast path needs from a client query.
type fastQuery struct {
	nameEnd       int // offset just past the question name
	qtype, qclass uint16
	cd            bool
	edns, do      bool
	udpSize       uint16
}

// parseFastQuery parses raw when it is a plain query the fast path can
// answer: QR clear, opcode QUERY, exactly one question whose name has
// uncompressed labels of letters, digits, '-' and '_' only, no answer or
// authority records, and at most an EDNS0 version 0 OPT record, nothing
// after. It appends the question name, lowercase and fully qualified, to
// name. ok is false for anything else, which is not necessarily malformed:
// the general path decides what to answer then.
func parseFastQuery(raw, name []byte) (q fastQuery, out []byte, ok bool) {
	if len(raw) < headerLen || raw[2]&0xf8 != 0 { // QR and opcode
		return q, name, false
	}
	qd, an := binary.BigEndian.Uint16(raw[4:]), binary.BigEndian.Uint16(raw[6:])
	ns, ar := binary.BigEndian.Uint16(raw[8:]), binary.BigEndian.Uint16(raw[10:])
	if qd != 1 || an != 0 || ns != 0 || ar > 1 {
		return q, name, false
	}
	q.cd = raw[3]&0x10 != 0
	off := headerLen
	budget := 254 // wire octets of the labels with their length bytes, as miekg/dns allows
	for {
		if off >= len(raw) {
			return q, name, false
		}
		l := int(raw[off])
		off++
		if l == 0 {
			break
		}
		budget -= l + 1
		if l > 63 || budget < 0 || off+l > len(raw) {
			return q, name, false
		}
		for _, c := range raw[off : off+l] {
			switch {
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			case c >= 'A' && c <= 'Z':
				c += 'a' - 'A'
			default:
				return q, name, false
			}
			name = append(name, c)
		}
		name = append(name, '.')
		off += l
	}
	if off == headerLen+1 {
		name = append(name, '.')
	}
	q.nameEnd = off
	if off+4 > len(raw) {
		return q, name, false
	}
	q.qtype, q.qclass = binary.BigEndian.Uint16(raw[off:]), binary.BigEndian.Uint16(raw[off+2:])
	off += 4
	if ar == 0 {
		return q, name, off == len(raw)
	}
	if off+optLen > len(raw) || raw[off] != 0 || binary.BigEndian.Uint16(raw[off+1:]) != dns.TypeOPT || raw[off+6] != 0 {
		return q, name, false // not an OPT record at the root, or an EDNS version other than 0
	}
	q.edns = true
	q.udpSize = binary.BigEndian.Uint16(raw[off+3:])
	q.do = raw[off+7]&0x80 != 0
	rdlen := int(binary.BigEndian.Uint16(raw[off+9:]))
	if off+optLen+rdlen != len(raw) {
		return q, name, false
	}
	if rdlen > 0 {
		// Options (a cookie, a client subnet) are not used, but a query
		// whose options do not parse is answered FORMERR by the general
		// path: let miekg/dns judge them the same way here.
		if _, end, err := dns.UnpackRR(raw, off); err != nil || end != len(raw) {
			return q, name, false
		}
	}
	return q, name, true
}

// snoopReport is one Snoop call an answer makes, with the TTL the answer
// had when it was stored.
type snoopReport struct {
	name  string
	addrs []netip.Addr
	ttl   uint32
}

// packedAnswer is a cached answer pre-packed for the fast path: the reply
// to the lowercase question with ID 0, RD clear and no OPT record, and the
// offsets of its TTL fields.
type packedAnswer struct {
	wire    []byte
	nameEnd int      // offset just past the question name in wire
	ttls    []uint16 // offsets of the TTL fields of every record
	rcode   int
	canon   string // the QueryInfo name
	blocked bool
	snoops  []snoopReport
}

// packAnswer pre-packs ans, a cached answer for k; nil when it cannot be
// served by the fast path.
func packAnswer(k cacheKey, ans *dns.Msg) *packedAnswer {
	q := new(dns.Msg)
	q.CheckingDisabled = k.cd
	q.Question = []dns.Question{{Name: k.name, Qtype: k.qtype, Qclass: k.qclass}}
	out := reply(q, ans, 0)
	if out.Rcode > 0xf || out.Truncated || out.IsTsig() != nil || out.IsEdns0() != nil {
		return nil
	}
	out.Compress = true
	wire, err := out.Pack()
	if err != nil || len(wire)+optLen > dns.MaxMsgSize {
		return nil
	}
	pa := &packedAnswer{wire: wire, rcode: out.Rcode, canon: canonName(k.name), blocked: sinkholed(out), snoops: snoopReports(out)}
	// Walk the records of our own packing to find the TTL fields.
	off := headerLen
	for off < len(wire) && wire[off] != 0 {
		off += 1 + int(wire[off])
	}
	off++
	pa.nameEnd = off
	off += 4
	n := int(binary.BigEndian.Uint16(wire[6:])) + int(binary.BigEndian.Uint16(wire[8:])) + int(binary.BigEndian.Uint16(wire[10:]))
	for range n {
		for off < len(wire) {
			c := wire[off]
			if c == 0 {
				off++
				break
			}
			if c&0xc0 == 0xc0 {
				off += 2
				break
			}
			if c > 63 {
				return nil
			}
			off += 1 + int(c)
		}
		if off+10 > len(wire) {
			return nil
		}
		pa.ttls = append(pa.ttls, uint16(off+4))
		off += 10 + int(binary.BigEndian.Uint16(wire[off+8:]))
	}
	if off != len(wire) || pa.nameEnd > len(wire) {
		return nil
	}
	return pa
}

// fastAnswer answers raw from a pre-packed cached answer, appending it to
// dst, when raw is a plain query (see parseFastQuery) whose answer is
// cached and fits the client's size. ok is false otherwise, with nothing
// counted: handle then answers raw.
func (r *Resolver) fastAnswer(raw []byte, client netip.AddrPort, transport string, dst []byte) (out []byte, ok bool) {
	var start time.Time
	if r.cfg.OnQuery != nil {
		start = time.Now()
	}
	var nameBuf [256]byte
	q, name, ok := parseFastQuery(raw, nameBuf[:0])
	if !ok {
		return dst, false
	}
	switch q.qtype {
	case dns.TypeAXFR, dns.TypeIXFR, dns.TypeMAILA, dns.TypeMAILB, dns.TypeOPT:
		return dst, false
	}
	// The name only keys the lookup; the cache keeps its own strings.
	k := cacheKey{name: unsafe.String(unsafe.SliceData(name), len(name)), qtype: q.qtype, qclass: q.qclass, do: q.edns && q.do, cd: q.cd}
	pa, elapsed, ok := r.cache.getPacked(k, r.now())
	if !ok || pa.nameEnd != q.nameEnd || !bytes.EqualFold(pa.wire[headerLen:q.nameEnd], raw[headerLen:q.nameEnd]) {
		return dst, false
	}
	size := dns.MaxMsgSize
	if transport == "udp" {
		size = dns.MinMsgSize
		if q.edns {
			size = max(int(q.udpSize), dns.MinMsgSize)
		}
	}
	n := len(pa.wire)
	if q.edns {
		n += optLen
	}
	if n > size {
		return dst, false // the general path truncates
	}

	out = append(dst[:0], pa.wire...)
	out[0], out[1] = raw[0], raw[1]
	out[2] |= raw[2] & 0x01 // RD
	copy(out[headerLen:q.nameEnd], raw[headerLen:q.nameEnd])
	dec := durSeconds(elapsed)
	if dec > 0 {
		for _, o := range pa.ttls {
			ttl := binary.BigEndian.Uint32(pa.wire[o:])
			binary.BigEndian.PutUint32(out[o:], ttl-min(ttl, dec))
		}
	}
	if q.edns {
		binary.BigEndian.PutUint16(out[10:], binary.BigEndian.Uint16(out[10:])+1)
		var flags byte
		if q.do {
			flags = 0x80
		}
		out = append(out, 0, byte(dns.TypeOPT>>8), byte(dns.TypeOPT), upstreamUDPSize>>8, upstreamUDPSize&0xff, 0, 0, flags, 0, 0, 0)
	}

	r.queries.Add(1)
	r.hits.Add(1)
	r.countRcode(pa.rcode)
	if r.cfg.Snoop != nil {
		for _, s := range pa.snoops {
			r.cfg.Snoop(s.name, s.addrs, time.Duration(s.ttl-min(s.ttl, dec))*time.Second)
		}
	}
	if r.cfg.OnQuery != nil {
		r.cfg.OnQuery(QueryInfo{
			Client: client, Name: pa.canon, Type: q.qtype, Rcode: pa.rcode, Cached: true,
			Duration: time.Since(start), Transport: transport, Blocked: pa.blocked,
		})
	}
	return out, true
}

// clipAddrs is addrs with its capacity cut to its length, so that a Snoop
// hook appending to a shared slice gets a copy.
func clipAddrs(addrs []netip.Addr) []netip.Addr { return slices.Clip(addrs) }

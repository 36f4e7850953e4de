package dnscache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/miekg/dns"
)

// Sizes shared with bpf/dnscache.c.
const (
	// NameMaxWire bounds a cached question name in wire form, root label
	// included.
	NameMaxWire = 128
	// DataMax bounds the records appended after the question, the OPT
	// record of the EDNS0 variant included.
	DataMax = 512
	// optLen is an OPT record without options.
	optLen    = 11
	headerLen = 12
	// ednsUDPSize is the buffer size the OPT record of an answer
	// advertises, the value the Go resolver uses.
	ednsUDPSize = 1232
)

// optRR is the OPT record appended for EDNS0 queries: root owner, type
// OPT, class = UDP size 1232, extended rcode 0, version 0, no flags, no
// options. It matches what the Go resolver's fast path appends.
var optRR = [optLen]byte{0, 0, byte(dns.TypeOPT), ednsUDPSize >> 8, ednsUDPSize & 0xff, 0, 0, 0, 0, 0, 0}

// answer is a cached response taken apart for the kernel map: the key,
// the header bytes from offset 2, and the records after the question with
// the offsets and original values of their TTL fields.
type answer struct {
	name    [NameMaxWire]byte // wire form, lowercase, zero-padded
	nameLen int
	qtype   uint16
	hdr     [10]byte // header bytes 2..11, RD clear
	records []byte   // everything after the question
	ttlOffs []int    // offsets of TTL fields in records
	ttls    []uint32 // original TTLs, same order
}

// parseAnswer checks that wire is a response the eBPF program can serve
// (one IN question with an uncompressed name of at most NameMaxWire bytes,
// opcode QUERY, not truncated, no OPT record, records that fit DataMax
// with an OPT record added) and takes it apart. wire is what the Go
// resolver caches: the answer to the lowercase question with ID 0.
func parseAnswer(wire []byte) (*answer, error) {
	if len(wire) < headerLen {
		return nil, errors.New("parse answer: shorter than a header")
	}
	if wire[2]&0x80 == 0 || wire[2]&0x78 != 0 {
		return nil, errors.New("parse answer: not a response to a standard query")
	}
	if wire[2]&0x02 != 0 {
		return nil, errors.New("parse answer: truncated")
	}
	if wire[3]&0x10 != 0 {
		return nil, errors.New("parse answer: answer to a CD query")
	}
	qd := binary.BigEndian.Uint16(wire[4:])
	an := int(binary.BigEndian.Uint16(wire[6:]))
	ns := int(binary.BigEndian.Uint16(wire[8:]))
	ar := int(binary.BigEndian.Uint16(wire[10:]))
	if qd != 1 {
		return nil, fmt.Errorf("parse answer: %d questions", qd)
	}
	if ar == 0xffff {
		return nil, errors.New("parse answer: no room for an OPT record")
	}
	a := &answer{}
	off := headerLen
	for {
		if off >= len(wire) {
			return nil, errors.New("parse answer: question name runs past the message")
		}
		l := int(wire[off])
		if l > 63 {
			return nil, errors.New("parse answer: compressed or invalid question name")
		}
		if off-headerLen+1+l > NameMaxWire {
			return nil, fmt.Errorf("parse answer: question name longer than %d bytes", NameMaxWire)
		}
		if off+1+l > len(wire) {
			return nil, errors.New("parse answer: question name runs past the message")
		}
		a.name[off-headerLen] = byte(l)
		for i, c := range wire[off+1 : off+1+l] {
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			a.name[off-headerLen+1+i] = c
		}
		off += 1 + l
		if l == 0 {
			break
		}
	}
	a.nameLen = off - headerLen
	if off+4 > len(wire) {
		return nil, errors.New("parse answer: question cut short")
	}
	a.qtype = binary.BigEndian.Uint16(wire[off:])
	if c := binary.BigEndian.Uint16(wire[off+2:]); c != dns.ClassINET {
		return nil, fmt.Errorf("parse answer: question class %d, not IN", c)
	}
	if a.qtype == dns.TypeOPT {
		return nil, errors.New("parse answer: question type OPT")
	}
	off += 4
	qEnd := off
	for i := range an + ns + ar {
		// Owner name: labels ending in the root label or a pointer.
		for {
			if off >= len(wire) {
				return nil, errors.New("parse answer: record name runs past the message")
			}
			c := wire[off]
			if c&0xc0 == 0xc0 {
				if off+2 > len(wire) {
					return nil, errors.New("parse answer: record name runs past the message")
				}
				if int(binary.BigEndian.Uint16(wire[off:])&0x3fff) >= off {
					return nil, errors.New("parse answer: forward compression pointer")
				}
				off += 2
				break
			}
			if c > 63 {
				return nil, errors.New("parse answer: invalid label type")
			}
			off += 1 + int(c)
			if c == 0 {
				break
			}
		}
		if off+10 > len(wire) {
			return nil, errors.New("parse answer: record header cut short")
		}
		if binary.BigEndian.Uint16(wire[off:]) == dns.TypeOPT {
			return nil, errors.New("parse answer: has an OPT record")
		}
		if i >= an+ns && binary.BigEndian.Uint16(wire[off:]) == dns.TypeTSIG {
			return nil, errors.New("parse answer: has a TSIG record")
		}
		a.ttlOffs = append(a.ttlOffs, off+4-qEnd)
		a.ttls = append(a.ttls, binary.BigEndian.Uint32(wire[off+4:]))
		off += 10 + int(binary.BigEndian.Uint16(wire[off+8:]))
		if off > len(wire) {
			return nil, errors.New("parse answer: record data runs past the message")
		}
	}
	if off != len(wire) {
		return nil, errors.New("parse answer: bytes after the last record")
	}
	if len(wire)-qEnd == 0 {
		return nil, errors.New("parse answer: no records")
	}
	if len(wire)-qEnd+optLen > DataMax {
		return nil, fmt.Errorf("parse answer: records of %d bytes, more than %d", len(wire)-qEnd, DataMax-optLen)
	}
	copy(a.hdr[:], wire[2:headerLen])
	a.hdr[0] &^= 0x01 // RD comes from the query
	a.records = append([]byte(nil), wire[qEnd:]...)
	return a, nil
}

// variant is one kernel variant of an answer: header bytes 2..11, the
// bytes appended after the question, and their one's complement sum as a
// big-endian 16-bit value for even alignment.
type variant struct {
	hdr  [10]byte
	data []byte
	sum  uint16
}

// variants returns the answer with every TTL lowered by dec (not below 0)
// for a query without EDNS0 ([0]) and with it ([1]).
func (a *answer) variants(dec uint32) [2]variant {
	recs := make([]byte, len(a.records), len(a.records)+optLen)
	copy(recs, a.records)
	for i, o := range a.ttlOffs {
		binary.BigEndian.PutUint32(recs[o:], a.ttls[i]-min(a.ttls[i], dec))
	}
	var v [2]variant
	v[0] = variant{hdr: a.hdr, data: recs, sum: onesSum(recs)}
	edns := append(recs[:len(recs):len(recs)], optRR[:]...)
	v[1] = variant{hdr: a.hdr, data: edns, sum: onesSum(edns)}
	ar := binary.BigEndian.Uint16(a.hdr[8:])
	binary.BigEndian.PutUint16(v[1].hdr[8:], ar+1)
	return v
}

// minTTL is the smallest original TTL of the answer's records.
func (a *answer) minTTL() uint32 {
	m := ^uint32(0)
	for _, t := range a.ttls {
		m = min(m, t)
	}
	return m
}

// onesSum is the RFC 1071 sum of b as big-endian 16-bit words (an odd
// last byte padded with zero), folded to 16 bits.
func onesSum(b []byte) uint16 {
	var s uint32
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// wireName returns name (text form, e.g. "www.example.com." or "." ) in
// lowercase wire form, zero-padded, as the kernel map keys it.
func wireName(name string) ([NameMaxWire]byte, error) {
	var out [NameMaxWire]byte
	buf := make([]byte, 256)
	n, err := dns.PackDomainName(dns.Fqdn(strings.ToLower(name)), buf, 0, nil, false)
	if err != nil {
		return out, fmt.Errorf("pack name %q: %w", name, err)
	}
	if n > NameMaxWire {
		return out, fmt.Errorf("name %q longer than %d bytes in wire form", name, NameMaxWire)
	}
	copy(out[:], buf[:n])
	// PackDomainName keeps escaped bytes as they are; lowercase ASCII the
	// way the eBPF program does.
	for i := 0; i < n; {
		l := int(out[i])
		for j := i + 1; j <= i+l && j < n; j++ {
			if c := out[j]; c >= 'A' && c <= 'Z' {
				out[j] = c + 'a' - 'A'
			}
		}
		i += 1 + l
		if l == 0 {
			break
		}
	}
	return out, nil
}

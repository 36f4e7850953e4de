package steer

import (
	"encoding/binary"
	"net/netip"
)

// Protocol numbers and EtherTypes used by the packet builder and the model.
const (
	protoHopOpts  = 0
	protoICMP     = 1
	protoTCP      = 6
	protoUDP      = 17
	protoRouting  = 43
	protoFragment = 44
	protoDstOpts  = 60

	etherIPv4 = 0x0800
	etherIPv6 = 0x86dd
	etherARP  = 0x0806
	etherVLAN = 0x8100
)

// pkt describes an Ethernet frame for the classifier tests.
type pkt struct {
	dst     string  // destination address, IPv4 or IPv6
	proto   uint8   // L4 protocol
	dport   uint16  // L4 destination port
	vlan    bool    // add one 802.1Q tag
	ihl     int     // IPv4 header length in 32-bit words; 0 means 5
	fragOff uint16  // fragment offset in 8-byte units
	moreFr  bool    // more-fragments flag (IPv4), or add a fragment header (IPv6)
	ext     []uint8 // IPv6 extension headers in order (hop-by-hop, routing, dest-opts, fragment)
	cut     int     // bytes cut off the end of the frame
	flags   uint8   // TCP flags; 0 means SYN
}

// bytes returns the frame.
func (p pkt) bytes() []byte {
	dst := netip.MustParseAddr(p.dst)
	var l4 []byte
	switch p.proto {
	case protoTCP:
		l4 = make([]byte, 20)
		binary.BigEndian.PutUint16(l4[0:], 40000)
		binary.BigEndian.PutUint16(l4[2:], p.dport)
		binary.BigEndian.PutUint32(l4[4:], 1)
		l4[12] = 5 << 4
		l4[13] = 0x02 // SYN
		if p.flags != 0 {
			l4[13] = p.flags
		}
		binary.BigEndian.PutUint16(l4[14:], 64240)
	case protoUDP:
		l4 = make([]byte, 8+4)
		binary.BigEndian.PutUint16(l4[0:], 40000)
		binary.BigEndian.PutUint16(l4[2:], p.dport)
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		copy(l4[8:], "ping")
	default:
		l4 = []byte{8, 0, 0, 0, 0, 1, 0, 1} // ICMP echo request
	}

	var l3 []byte
	ether := uint16(etherIPv6)
	if dst.Is4() {
		ether = etherIPv4
		ihl := p.ihl
		if ihl == 0 {
			ihl = 5
		}
		h := make([]byte, ihl*4)
		h[0] = 4<<4 | byte(ihl&0x0f)
		for i := 20; i < len(h); i++ {
			h[i] = 1 // IP option NOP
		}
		binary.BigEndian.PutUint16(h[2:], uint16(len(h)+len(l4)))
		binary.BigEndian.PutUint16(h[4:], 0x1234)
		frag := p.fragOff & 0x1fff
		if p.moreFr {
			frag |= 0x2000
		}
		binary.BigEndian.PutUint16(h[6:], frag)
		h[8] = 64
		h[9] = p.proto
		copy(h[12:], []byte{10, 10, 0, 10})
		a := dst.As4()
		copy(h[16:], a[:])
		l3 = h
	} else {
		exts := p.ext
		if p.moreFr || p.fragOff != 0 {
			exts = append(append([]uint8{}, exts...), protoFragment)
		}
		var chain []byte
		for i, e := range exts {
			next := p.proto
			if i+1 < len(exts) {
				next = exts[i+1]
			}
			h := make([]byte, 8)
			h[0] = next
			if e == protoFragment {
				off := p.fragOff << 3
				if p.moreFr {
					off |= 1
				}
				binary.BigEndian.PutUint16(h[2:], off)
				binary.BigEndian.PutUint32(h[4:], 0xcafe)
			} else {
				h[2] = 1 // PadN option filling the rest
				h[3] = 4
			}
			chain = append(chain, h...)
		}
		first := p.proto
		if len(exts) > 0 {
			first = exts[0]
		}
		h := make([]byte, 40)
		h[0] = 6 << 4
		binary.BigEndian.PutUint16(h[4:], uint16(len(chain)+len(l4)))
		h[6] = first
		h[7] = 64
		src := netip.MustParseAddr("fd00:10::10").As16()
		copy(h[8:], src[:])
		a := dst.As16()
		copy(h[24:], a[:])
		l3 = append(h, chain...)
	}

	frame := ethernet(ether, p.vlan)
	frame = append(frame, l3...)
	frame = append(frame, l4...)
	return frame[:len(frame)-p.cut]
}

// ethernet returns an Ethernet header (with one 802.1Q tag if vlan) for
// ethertype.
func ethernet(ethertype uint16, vlan bool) []byte {
	h := []byte{
		0x02, 0, 0, 0, 0, 0x01, // destination MAC
		0x02, 0, 0, 0, 0, 0x10, // source MAC
	}
	if vlan {
		h = binary.BigEndian.AppendUint16(h, etherVLAN)
		h = binary.BigEndian.AppendUint16(h, 42)
	}
	return binary.BigEndian.AppendUint16(h, ethertype)
}

// arpRequest returns an ARP who-has frame.
func arpRequest() []byte {
	f := ethernet(etherARP, false)
	f[0], f[1], f[2], f[3], f[4], f[5] = 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
	body := []byte{0, 1, 8, 0, 6, 4, 0, 1}
	body = append(body, 0x02, 0, 0, 0, 0, 0x10, 10, 10, 0, 10)
	body = append(body, 0, 0, 0, 0, 0, 0, 10, 10, 0, 1)
	return append(f, body...)
}

// model is a Go statement of what bpf/steer.c should decide, used to check
// the classifier against arbitrary frames in FuzzClassifier.
type model struct {
	bypass []netip.Prefix
	paused bool
}

// verdict returns the verdict the classifier should give frame.
func (m model) verdict(frame []byte) Verdict {
	class, dst, _, ok := modelParse(frame)
	if !ok || class == VerdictOther {
		return VerdictOther
	}
	for _, p := range m.bypass {
		if p, err := normalize(p); err == nil && p.Contains(dst) {
			return VerdictBypass
		}
	}
	if m.paused && class != VerdictDNS && class != VerdictDoTReject {
		return VerdictPaused
	}
	return class
}

// mark returns the skb mark the classifier should leave on frame, which
// came in with skbMarkSentinel, given that no flow is remembered yet: a
// web TCP SYN (no ACK) with verdict bypass or paused starts an untracked
// flow and gets MarkUntrack; other frames get their verdict's mark.
func (m model) mark(frame []byte) uint32 {
	v := m.verdict(frame)
	class, _, l4, ok := modelParse(frame)
	if ok && (class == VerdictHTTP || class == VerdictTLS) && (v == VerdictBypass || v == VerdictPaused) &&
		len(frame) > l4+13 && frame[l4+13]&0x12 == 0x02 {
		return MarkUntrack
	}
	if mk, ok := v.Mark(); ok {
		return mk
	}
	return skbMarkSentinel
}

// modelParse returns the steering class, destination and L4 offset of
// frame, or false when the frame has no readable TCP/UDP ports.
func modelParse(b []byte) (Verdict, netip.Addr, int, bool) {
	if len(b) < 14 {
		return 0, netip.Addr{}, 0, false
	}
	off := 14
	ether := binary.BigEndian.Uint16(b[12:])
	if ether == etherVLAN || ether == 0x88a8 {
		if len(b) < 18 {
			return 0, netip.Addr{}, 0, false
		}
		ether = binary.BigEndian.Uint16(b[16:])
		off = 18
	}
	var proto uint8
	var dst netip.Addr
	switch ether {
	case etherIPv4:
		if len(b) < off+20 {
			return 0, netip.Addr{}, 0, false
		}
		h := b[off:]
		ihl := int(h[0] & 0x0f)
		if h[0]>>4 != 4 || ihl < 5 || binary.BigEndian.Uint16(h[6:])&0x1fff != 0 {
			return 0, netip.Addr{}, 0, false
		}
		proto = h[9]
		dst = netip.AddrFrom4([4]byte(h[16:20]))
		off += ihl * 4
	case etherIPv6:
		if len(b) < off+40 {
			return 0, netip.Addr{}, 0, false
		}
		h := b[off:]
		if h[0]>>4 != 6 {
			return 0, netip.Addr{}, 0, false
		}
		dst = netip.AddrFrom16([16]byte(h[24:40]))
		proto = h[6]
		off += 40
		isExt := func(p uint8) bool {
			return p == protoHopOpts || p == protoRouting || p == protoDstOpts || p == protoFragment
		}
		for range 6 {
			if !isExt(proto) {
				break
			}
			if proto == protoFragment {
				if len(b) < off+4 || binary.BigEndian.Uint16(b[off+2:])&0xfff8 != 0 {
					return 0, netip.Addr{}, 0, false
				}
				proto = b[off]
				off += 8
				continue
			}
			if len(b) < off+2 {
				return 0, netip.Addr{}, 0, false
			}
			proto, off = b[off], off+(int(b[off+1])+1)*8
		}
		if isExt(proto) {
			return 0, netip.Addr{}, 0, false
		}
	default:
		return 0, netip.Addr{}, 0, false
	}
	if proto != protoTCP && proto != protoUDP {
		return VerdictOther, dst, off, true
	}
	if len(b) < off+4 {
		return 0, netip.Addr{}, 0, false
	}
	dport := binary.BigEndian.Uint16(b[off+2:])
	switch {
	case proto == protoTCP && dport == 80:
		return VerdictHTTP, dst, off, true
	case proto == protoTCP && dport == 443:
		return VerdictTLS, dst, off, true
	case dport == 53:
		return VerdictDNS, dst, off, true
	case proto == protoUDP && dport == 443:
		return VerdictQUICReject, dst, off, true
	case dport == 853:
		return VerdictDoTReject, dst, off, true
	}
	return VerdictOther, dst, off, true
}

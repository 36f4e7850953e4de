package quicgate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// errPacket means a queued packet is not a UDP datagram the gate can read.
var errPacket = errors.New("not a readable udp packet")

// parseUDP returns the addresses and payload of the UDP datagram in the
// L3 packet b (IPv4, or IPv6 with the extension headers the classifier
// walks: hop-by-hop, routing, destination options). Fragments and other
// protocols are errors. The payload aliases b.
func parseUDP(b []byte) (src, dst netip.AddrPort, payload []byte, err error) {
	if len(b) < 1 {
		return src, dst, nil, fmt.Errorf("%w: empty", errPacket)
	}
	var off int
	var sa, da netip.Addr
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return src, dst, nil, fmt.Errorf("%w: short ipv4 header", errPacket)
		}
		ihl := int(b[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(b[2:4]))
		if ihl < 20 || total < ihl || total > len(b) {
			return src, dst, nil, fmt.Errorf("%w: ipv4 lengths", errPacket)
		}
		if frag := binary.BigEndian.Uint16(b[6:8]); frag&0x3fff != 0 {
			return src, dst, nil, fmt.Errorf("%w: ipv4 fragment", errPacket)
		}
		if b[9] != 17 {
			return src, dst, nil, fmt.Errorf("%w: ipv4 protocol %d", errPacket, b[9])
		}
		sa, da = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
		b, off = b[:total], ihl
	case 6:
		if len(b) < 40 {
			return src, dst, nil, fmt.Errorf("%w: short ipv6 header", errPacket)
		}
		end := 40 + int(binary.BigEndian.Uint16(b[4:6]))
		if end > len(b) {
			return src, dst, nil, fmt.Errorf("%w: ipv6 payload length", errPacket)
		}
		sa, da = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
		b, off = b[:end], 40
		next := b[6]
		for hops := 0; next != 17; hops++ {
			switch next {
			case 0, 43, 60: // hop-by-hop, routing, destination options
			default:
				return src, dst, nil, fmt.Errorf("%w: ipv6 next header %d", errPacket, next)
			}
			if hops == 8 || off+8 > len(b) {
				return src, dst, nil, fmt.Errorf("%w: ipv6 extension headers", errPacket)
			}
			next = b[off]
			off += (int(b[off+1]) + 1) * 8
		}
	default:
		return src, dst, nil, fmt.Errorf("%w: ip version %d", errPacket, b[0]>>4)
	}
	if off+8 > len(b) {
		return src, dst, nil, fmt.Errorf("%w: short udp header", errPacket)
	}
	u := b[off:]
	ulen := int(binary.BigEndian.Uint16(u[4:6]))
	if ulen < 8 || ulen > len(u) {
		return src, dst, nil, fmt.Errorf("%w: udp length %d", errPacket, ulen)
	}
	src = netip.AddrPortFrom(sa, binary.BigEndian.Uint16(u[0:2]))
	dst = netip.AddrPortFrom(da, binary.BigEndian.Uint16(u[2:4]))
	return src, dst, u[8:ulen], nil
}

package dnscache

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/miekg/dns"
)

var (
	clientMAC = []byte{0x02, 0, 0, 0, 0, 0x10}
	// gwMAC is the address of lo, the device BPF_PROG_TEST_RUN gives
	// the skb, so that the frame is PACKET_HOST as the program requires.
	gwMAC    = []byte{0, 0, 0, 0, 0, 0}
	otherMAC = []byte{0x02, 0, 0, 0, 0, 0x99}
)

// frame wraps a DNS message in Ethernet, IP and UDP from client:40000 to
// server:53 with correct checksums (IPv4 UDP checksum 0 when noCsum).
func frame(client, server netip.Addr, msg []byte, noCsum bool) []byte {
	udp := make([]byte, 8+len(msg))
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], 53)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], msg)
	if !(noCsum && client.Is4()) {
		binary.BigEndian.PutUint16(udp[6:], udpChecksum(client, server, udp))
	}
	var b []byte
	b = append(b, gwMAC...)
	b = append(b, clientMAC...)
	if client.Is4() {
		b = append(b, 0x08, 0x00)
		ip := make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
		binary.BigEndian.PutUint16(ip[4:], 0x1234)
		ip[6] = 0x40 // DF
		ip[8] = 63
		ip[9] = 17
		s, d := client.As4(), server.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		binary.BigEndian.PutUint16(ip[10:], ^onesSum(ip))
		b = append(b, ip...)
	} else {
		b = append(b, 0x86, 0xdd)
		ip := make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(udp)))
		ip[6] = 17
		ip[7] = 63
		s, d := client.As16(), server.As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
		b = append(b, ip...)
	}
	return append(b, udp...)
}

// udpChecksum is the UDP checksum of segment (checksum field zero or
// included: pass it zeroed to compute, as is to verify, where a valid one
// gives 0) over the pseudo-header of src and dst.
func udpChecksum(src, dst netip.Addr, segment []byte) uint16 {
	var pseudo []byte
	if src.Is4() {
		s, d := src.As4(), dst.As4()
		pseudo = append(append(pseudo, s[:]...), d[:]...)
		pseudo = append(pseudo, 0, 17, byte(len(segment)>>8), byte(len(segment)))
	} else {
		s, d := src.As16(), dst.As16()
		pseudo = append(append(pseudo, s[:]...), d[:]...)
		pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(segment)))
		pseudo = append(pseudo, 0, 0, 0, 17)
	}
	sum := uint32(onesSum(pseudo)) + uint32(onesSum(segment))
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	c := ^uint16(sum)
	if c == 0 {
		c = 0xffff
	}
	return c
}

// response is a frame the program sent back, taken apart.
type response struct {
	client, server netip.Addr
	sport, dport   uint16
	dnsBytes       []byte
	msg            *dns.Msg
}

// checkResponse decodes out, which the program made from the query frame
// in, and checks everything a client's stack and resolver library would:
// MACs, addresses and ports swapped, lengths, IPv4 header checksum, UDP
// checksum (IPv6: required; IPv4: valid or 0 when the query had 0), a DNS
// message that unpacks and echoes the query's ID, RD bit and question
// bytes.
func checkResponse(in, out []byte) (*response, error) {
	if len(out) < 14 || !bytes.Equal(out[0:6], in[6:12]) || !bytes.Equal(out[6:12], in[0:6]) {
		return nil, errors.New("MACs not swapped")
	}
	if !bytes.Equal(out[12:14], in[12:14]) {
		return nil, errors.New("EtherType changed")
	}
	r := &response{}
	var l3, udp []byte
	var inUDP []byte
	switch binary.BigEndian.Uint16(out[12:]) {
	case 0x0800:
		l3 = out[14:]
		if len(l3) < 28 || l3[0] != 0x45 {
			return nil, errors.New("bad IPv4 header")
		}
		if onesSum(l3[:20]) != 0xffff {
			return nil, fmt.Errorf("IPv4 header checksum wrong")
		}
		if int(binary.BigEndian.Uint16(l3[2:])) != len(l3) {
			return nil, fmt.Errorf("IPv4 total length %d, frame holds %d", binary.BigEndian.Uint16(l3[2:]), len(l3))
		}
		r.server, _ = netip.AddrFromSlice(l3[12:16])
		r.client, _ = netip.AddrFromSlice(l3[16:20])
		if !bytes.Equal(l3[12:16], in[14+16:14+20]) || !bytes.Equal(l3[16:20], in[14+12:14+16]) {
			return nil, errors.New("IPv4 addresses not swapped")
		}
		udp = l3[20:]
		inUDP = in[14+20:]
	case 0x86dd:
		l3 = out[14:]
		if len(l3) < 48 || l3[0]>>4 != 6 || l3[6] != 17 {
			return nil, errors.New("bad IPv6 header")
		}
		if int(binary.BigEndian.Uint16(l3[4:])) != len(l3)-40 {
			return nil, fmt.Errorf("IPv6 payload length %d, frame holds %d", binary.BigEndian.Uint16(l3[4:]), len(l3)-40)
		}
		r.server, _ = netip.AddrFromSlice(l3[8:24])
		r.client, _ = netip.AddrFromSlice(l3[24:40])
		if !bytes.Equal(l3[8:24], in[14+24:14+40]) || !bytes.Equal(l3[24:40], in[14+8:14+24]) {
			return nil, errors.New("IPv6 addresses not swapped")
		}
		udp = l3[40:]
		inUDP = in[14+40:]
	default:
		return nil, errors.New("not IP")
	}
	if int(binary.BigEndian.Uint16(udp[4:])) != len(udp) {
		return nil, fmt.Errorf("UDP length %d, segment is %d", binary.BigEndian.Uint16(udp[4:]), len(udp))
	}
	r.sport, r.dport = binary.BigEndian.Uint16(udp[0:]), binary.BigEndian.Uint16(udp[2:])
	if r.sport != binary.BigEndian.Uint16(inUDP[2:]) || r.dport != binary.BigEndian.Uint16(inUDP[0:]) {
		return nil, errors.New("ports not swapped")
	}
	csum := binary.BigEndian.Uint16(udp[6:])
	switch {
	case csum == 0 && r.client.Is6():
		return nil, errors.New("IPv6 UDP checksum is 0")
	case csum == 0 && binary.BigEndian.Uint16(inUDP[6:]) != 0:
		return nil, errors.New("IPv4 UDP checksum dropped")
	case csum != 0 && udpChecksum(r.server, r.client, udp) != 0xffff:
		// Summing a segment with a valid checksum in place gives 0, which
		// udpChecksum reports as 0xffff.
		return nil, fmt.Errorf("UDP checksum %#04x wrong", csum)
	}
	r.dnsBytes = udp[8:]
	q := inUDP[8:binary.BigEndian.Uint16(inUDP[4:])]
	m := new(dns.Msg)
	if err := m.Unpack(r.dnsBytes); err != nil {
		return nil, fmt.Errorf("unpack DNS answer: %w", err)
	}
	r.msg = m
	if !m.Response || m.Id != binary.BigEndian.Uint16(q) || m.RecursionDesired != (q[2]&1 != 0) {
		return nil, errors.New("header does not echo the query")
	}
	qEnd := headerLen
	for q[qEnd] != 0 {
		qEnd += 1 + int(q[qEnd])
	}
	qEnd += 5
	if !bytes.Equal(r.dnsBytes[headerLen:qEnd], q[headerLen:qEnd]) {
		return nil, errors.New("question bytes not echoed")
	}
	return r, nil
}

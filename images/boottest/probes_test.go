//go:build boottest

package boottest

import (
	"encoding/binary"

	"github.com/miekg/dns"
)

// wanUDPProbes are the UDP services a router might expose by mistake,
// each with a request that gets an answer from a real server.
func wanUDPProbes() []UDPProbe {
	q := new(dns.Msg)
	q.SetQuestion("www.example.com.", dns.TypeA)
	dnsq, _ := q.Pack()
	mq := new(dns.Msg)
	mq.SetQuestion("_services._dns-sd._udp.local.", dns.TypePTR)
	mdnsq, _ := mq.Pack()
	ntp := make([]byte, 48)
	ntp[0] = 0x1b // client, version 3
	// A DHCPDISCOVER-shaped BOOTP request (op 1, htype 1, hlen 6, magic cookie).
	bootp := make([]byte, 240)
	bootp[0], bootp[1], bootp[2] = 1, 1, 6
	binary.BigEndian.PutUint32(bootp[236:], 0x63825363)
	ssdp := []byte("M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: ssdp:all\r\n\r\n")
	return []UDPProbe{
		{Port: 53, Payload: dnsq},
		{Port: 67, Payload: bootp},
		{Port: 123, Payload: ntp},
		{Port: 161}, {Port: 443}, {Port: 500}, {Port: 546}, {Port: 547},
		{Port: 1900, Payload: ssdp},
		{Port: 4500},
		{Port: 5353, Payload: mdnsq},
		{Port: 5355, Payload: dnsq},
		{Port: 15053, Payload: dnsq}, // cloudsteer's own DNS answerer port in the lab
		{Port: 51820},
	}
}

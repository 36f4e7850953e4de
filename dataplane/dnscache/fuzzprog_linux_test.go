package dnscache

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// FuzzProgram runs DNS messages, wrapped in valid IPv4 or IPv6 frames,
// through the program with a few answers cached. A packet that falls
// through must be unchanged; one that is answered must be a well-formed
// response (see checkResponse) to a query the program is meant to answer,
// carrying exactly the cached records.
func FuzzProgram(f *testing.F) {
	c := loadTestCache(f, Options{})
	cached := map[string]*answer{}
	for _, w := range [][]byte{
		cachedWire(f, "www.example.com", dns.TypeA, 0, []string{"www.example.com. 300 IN CNAME edge.example.net.", "edge.example.net. 60 IN A 203.0.113.10"}, nil),
		cachedWire(f, "www.example.com", dns.TypeAAAA, 0, []string{"www.example.com. 300 IN AAAA 2001:db8::10"}, nil),
		cachedWire(f, "nope.example.com", dns.TypeA, dns.RcodeNameError, nil, []string{"example.com. 30 IN SOA ns.example.com. admin.example.com. 1 2 3 4 30"}),
		cachedWire(f, "a", dns.TypeTXT, 0, []string{`a. 30 IN TXT "odd length name"`}, nil),
		cachedWire(f, ".", dns.TypeNS, 0, []string{". 30 IN NS a.root-servers.net."}, nil),
	} {
		mustPut(f, c, w, time.Hour)
		a, err := parseAnswer(w)
		if err != nil {
			f.Fatal(err)
		}
		cached[string(a.name[:a.nameLen])+string(w[headerLen+a.nameLen:headerLen+a.nameLen+2])] = a
	}
	for _, q := range []struct {
		name    string
		qtype   uint16
		udpSize uint16
		do      bool
	}{
		{"www.example.com", dns.TypeA, 0, false},
		{"WwW.eXample.COM", dns.TypeA, 1232, false},
		{"www.example.com", dns.TypeAAAA, 512, false},
		{"NOPE.example.com", dns.TypeA, 4096, false},
		{"a", dns.TypeTXT, 0, false},
		{".", dns.TypeNS, 1400, false},
		{"www.example.com", dns.TypeA, 1232, true},
		{"www.example.com", dns.TypeMX, 0, false},
	} {
		msg := query(f, 0x1234, q.name, q.qtype, q.udpSize, q.do)
		f.Add(msg, false, false)
		f.Add(msg, true, false)
		f.Add(msg, false, true)
	}
	f.Fuzz(func(t *testing.T, msg []byte, v6, noCsum bool) {
		if len(msg) > 1400 {
			return
		}
		client, server := client4, server4
		if v6 {
			client, server = client6, server6
		}
		in := frame(client, server, msg, noCsum)
		ret, out, err := tryFrame(c, in)
		if err != nil {
			t.Fatal(err)
		}
		switch ret {
		case tcxNext:
			if !bytes.Equal(out[:len(in)], in) {
				t.Fatal("packet changed although it fell through")
			}
			return
		case tcxRedirect:
		default:
			t.Fatalf("verdict %d", int32(ret))
		}
		r, err := checkResponse(in, trimmed(out))
		if err != nil {
			t.Fatalf("%v\nquery %x", err, msg)
		}
		// The query must be one the program serves: plain header, an
		// IN question, nothing but an empty, DO-less OPT record.
		if msg[2]&0xfa != 0 || msg[3]&0x10 != 0 || binary.BigEndian.Uint16(msg[4:]) != 1 ||
			binary.BigEndian.Uint16(msg[6:]) != 0 || binary.BigEndian.Uint16(msg[8:]) != 0 {
			t.Fatalf("answered a query with header %x", msg[:headerLen])
		}
		q := new(dns.Msg)
		if err := q.Unpack(msg); err != nil {
			t.Fatalf("answered a query miekg/dns cannot unpack: %v", err)
		}
		if opt := q.IsEdns0(); opt != nil && (opt.Do() || len(opt.Option) > 0 || opt.Version() != 0) {
			t.Fatalf("answered a query with OPT %s", opt)
		}
		if (q.IsEdns0() != nil) != (r.msg.IsEdns0() != nil) {
			t.Fatal("OPT in answer does not follow the query")
		}
		qEnd := headerLen
		for msg[qEnd] != 0 {
			qEnd += 1 + int(msg[qEnd])
		}
		qEnd++
		key := string(bytes.ToLower(msg[headerLen:qEnd])) + string(msg[qEnd:qEnd+2])
		want, ok := cached[key]
		if !ok {
			t.Fatalf("answered %q, which is not cached", key)
		}
		got := r.dnsBytes[qEnd+4:]
		if q.IsEdns0() != nil {
			got = got[:len(got)-optLen]
		}
		if !sameButTTL(got, want) {
			t.Fatalf("records %x, want %x", got, want.records)
		}
	})
}

// sameButTTL compares the records an answer carries with the cached ones,
// ignoring TTL values (the refresher may have lowered them).
func sameButTTL(got []byte, want *answer) bool {
	if len(got) != len(want.records) {
		return false
	}
	g, w := bytes.Clone(got), bytes.Clone(want.records)
	for _, o := range want.ttlOffs {
		copy(g[o:o+4], []byte{0, 0, 0, 0})
		copy(w[o:o+4], []byte{0, 0, 0, 0})
	}
	return bytes.Equal(g, w)
}

// FuzzFrame runs whole mutated frames (IP header fields, lengths,
// EtherType) through the program. Frames whose lengths agree get their UDP
// checksum fixed first, so that answers can be checked for a valid one.
// A frame that falls through must be unchanged; an answered one must pass
// checkResponse.
func FuzzFrame(f *testing.F) {
	c := loadTestCache(f, Options{})
	mustPut(f, c, cachedWire(f, "www.example.com", dns.TypeA, 0, []string{"www.example.com. 300 IN A 203.0.113.10"}, nil), time.Hour)
	mustPut(f, c, cachedWire(f, "a", dns.TypeAAAA, 0, []string{"a. 300 IN AAAA 2001:db8::1"}, nil), time.Hour)
	for _, q := range [][]byte{
		query(f, 1, "www.example.com", dns.TypeA, 0, false),
		query(f, 2, "WWW.example.com", dns.TypeA, 1232, false),
		query(f, 3, "a", dns.TypeAAAA, 0, false),
	} {
		f.Add(frame(client4, server4, q, false))
		f.Add(frame(client6, server6, q, false))
		f.Add(frame(client4, server4, q, true))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 14 || len(in) > 1500 {
			return
		}
		fixUDPChecksum(in)
		ret, out, err := tryFrame(c, in)
		if err != nil {
			return // BPF_PROG_TEST_RUN refuses some frames (too short for their EtherType)
		}
		switch ret {
		case tcxNext:
			if !bytes.Equal(out[:len(in)], in) {
				t.Fatal("packet changed although it fell through")
			}
		case tcxRedirect:
			if _, err := checkResponse(in, trimmed(out)); err != nil {
				t.Fatalf("%v\nframe %x", err, in)
			}
		default:
			t.Fatalf("verdict %d", int32(ret))
		}
	})
}

// fixUDPChecksum recomputes the UDP checksum of an IPv4 (no options) or
// IPv6 frame whose IP and UDP lengths agree (bytes after the IP packet are
// Ethernet padding), leaving an IPv4 zero checksum at zero.
func fixUDPChecksum(b []byte) {
	var src, dst netip.Addr
	var udp []byte
	switch binary.BigEndian.Uint16(b[12:]) {
	case 0x0800:
		ip := b[14:]
		if len(ip) < 28 || ip[0] != 0x45 || ip[9] != 17 || int(binary.BigEndian.Uint16(ip[2:])) > len(ip) {
			return
		}
		ip = ip[:binary.BigEndian.Uint16(ip[2:])]
		if len(ip) < 28 {
			return
		}
		src, dst = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		udp = ip[20:]
		if binary.BigEndian.Uint16(udp[6:]) == 0 {
			return
		}
	case 0x86dd:
		ip := b[14:]
		if len(ip) < 48 || ip[6] != 17 || int(binary.BigEndian.Uint16(ip[4:])) > len(ip)-40 {
			return
		}
		ip = ip[:40+int(binary.BigEndian.Uint16(ip[4:]))]
		if len(ip) < 48 {
			return
		}
		src, dst = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
		udp = ip[40:]
	default:
		return
	}
	if int(binary.BigEndian.Uint16(udp[4:])) != len(udp) {
		return
	}
	udp[6], udp[7] = 0, 0
	binary.BigEndian.PutUint16(udp[6:], udpChecksum(src, dst, udp))
}

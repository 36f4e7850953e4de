package dnscache

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/miekg/dns"
)

// FuzzParseAnswer checks that parseAnswer never panics and that what it
// accepts is the message taken apart: header, a lowercase question of at
// most NameMaxWire bytes, records whose TTL offsets are in range and that
// fit DataMax with the OPT record.
func FuzzParseAnswer(f *testing.F) {
	for _, s := range []struct {
		name  string
		qtype uint16
		rrs   []string
	}{
		{"www.example.com.", dns.TypeA, []string{"www.example.com. 300 IN CNAME edge.example.net.", "edge.example.net. 60 IN A 203.0.113.10"}},
		{"Mixed.Example.", dns.TypeAAAA, []string{"mixed.example. 60 IN AAAA 2001:db8::1"}},
		{".", dns.TypeNS, []string{". 60 IN NS a.root-servers.net."}},
	} {
		m := new(dns.Msg)
		m.Response, m.RecursionAvailable, m.Compress = true, true, true
		m.Question = []dns.Question{{Name: s.name, Qtype: s.qtype, Qclass: dns.ClassINET}}
		for _, r := range s.rrs {
			rr, err := dns.NewRR(r)
			if err != nil {
				f.Fatal(err)
			}
			m.Answer = append(m.Answer, rr)
		}
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add(make([]byte, headerLen))
	f.Fuzz(func(t *testing.T, wire []byte) {
		a, err := parseAnswer(wire)
		if err != nil {
			return
		}
		qEnd := headerLen + a.nameLen + 4
		if a.nameLen < 1 || a.nameLen > NameMaxWire || qEnd > len(wire) {
			t.Fatalf("name length %d", a.nameLen)
		}
		if !bytes.Equal(a.records, wire[qEnd:]) || len(a.records)+optLen > DataMax || len(a.records) == 0 {
			t.Fatalf("records %x of %x", a.records, wire)
		}
		if !bytes.EqualFold(a.name[:a.nameLen], wire[headerLen:headerLen+a.nameLen]) || bytes.ContainsAny(a.name[:a.nameLen], "ABCDEFGHIJKLMNOPQRSTUVWXYZ") {
			t.Fatalf("name %q from %q", a.name[:a.nameLen], wire[headerLen:headerLen+a.nameLen])
		}
		for _, o := range a.ttlOffs {
			if o < 0 || o+4 > len(a.records) {
				t.Fatalf("TTL offset %d outside %d bytes", o, len(a.records))
			}
		}
		for _, dec := range []uint32{0, 1, a.minTTL(), ^uint32(0)} {
			v := a.variants(dec)
			if !bytes.Equal(v[1].data[:len(v[0].data)], v[0].data) || !bytes.Equal(v[1].data[len(v[0].data):], optRR[:]) {
				t.Fatal("EDNS variant is not the plain one plus OPT")
			}
			if binary.BigEndian.Uint16(v[1].hdr[8:]) != binary.BigEndian.Uint16(v[0].hdr[8:])+1 {
				t.Fatal("EDNS variant's ARCOUNT not one more")
			}
			for i, o := range a.ttlOffs {
				if got := binary.BigEndian.Uint32(v[0].data[o:]); got > a.ttls[i] || (dec <= a.ttls[i] && got != a.ttls[i]-dec) {
					t.Fatalf("TTL %d from %d lowered by %d", got, a.ttls[i], dec)
				}
			}
		}
	})
}

func TestOnesSum(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want uint16
	}{
		{name: "empty", in: nil, want: 0},
		{name: "odd", in: []byte{0x01}, want: 0x0100},
		{name: "carry", in: []byte{0xff, 0xff, 0x00, 0x02}, want: 0x0002},
		{name: "RFC 1071 example", in: []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, want: 0xddf2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := onesSum(tc.in); got != tc.want {
				t.Fatalf("onesSum(%x) = %#04x, want %#04x", tc.in, got, tc.want)
			}
		})
	}
}

func TestWireName(t *testing.T) {
	tests := []struct {
		name    string
		want    []byte
		wantErr bool
	}{
		{name: "WWW.Example.com", want: []byte("\x03www\x07example\x03com\x00")},
		{name: ".", want: []byte{0}},
		{name: `a\.b.example.`, want: []byte("\x03a.b\x07example\x00")},
		{name: "x." + string(bytes.Repeat([]byte("a."), 64)), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := wireName(tc.name)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v", err)
			}
			if err == nil && !bytes.Equal(got[:len(tc.want)], tc.want) || bytes.ContainsFunc(got[len(tc.want):], func(r rune) bool { return r != 0 }) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

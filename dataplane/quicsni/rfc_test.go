package quicsni

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

var rfcVectors = []struct {
	name    string
	version Version
	file    string
}{
	{"RFC 9001 A.2 (v1)", Version1, "rfc9001_client_initial"},
	{"RFC 9369 A.2 (v2)", Version2, "rfc9369_client_initial"},
}

// TestRFCClientInitial opens the RFCs' sample client Initials: the keys
// from the DCID 8394c8f03e515708, header protection, the packet number
// (2, in 4 bytes), the payload, and the ClientHello's SNI.
func TestRFCClientInitial(t *testing.T) {
	for _, tc := range rfcVectors {
		t.Run(tc.name, func(t *testing.T) {
			pkt := readHex(t, tc.file+".hex")
			frames := readHex(t, tc.file+"_frames.hex")
			orig := slices.Clone(pkt)
			p, rest, err := OpenInitial(pkt, -1)
			if err != nil {
				t.Fatalf("OpenInitial: %v", err)
			}
			if !bytes.Equal(pkt, orig) {
				t.Fatal("OpenInitial modified its input")
			}
			if p.Version != tc.version || !bytes.Equal(p.DCID, testDCID) || len(p.SCID) != 0 || len(p.Token) != 0 || p.PacketNumber != 2 || len(rest) != 0 || p.Size != 1200 {
				t.Fatalf("got version %v dcid %x scid %x token %x pn %d size %d rest %d", p.Version, p.DCID, p.SCID, p.Token, p.PacketNumber, p.Size, len(rest))
			}
			if len(p.Payload) != 1162 || !bytes.Equal(p.Payload[:len(frames)], frames) || slices.ContainsFunc(p.Payload[len(frames):], func(c byte) bool { return c != 0 }) {
				t.Fatalf("payload (%d bytes) is not the sample's CRYPTO frame and padding", len(p.Payload))
			}
			r := NewReassembler(Limits{})
			h, err := r.Feed(pkt)
			if err != nil {
				t.Fatalf("Feed: %v", err)
			}
			if h.ServerName != "example.com" || !slices.Equal(h.ALPN, []string{"alpn"}) || h.Version != tc.version || h.Packets != 1 || h.Datagrams != 1 {
				t.Fatalf("hello: %+v %+v", h, h.ClientHello)
			}
		})
	}
}

// TestSealMatchesRFC checks the tests' own sealer against the RFC
// samples, so packets it builds are real Initials.
func TestSealMatchesRFC(t *testing.T) {
	for _, tc := range rfcVectors {
		t.Run(tc.name, func(t *testing.T) {
			want := readHex(t, tc.file+".hex")
			got := sealInitial(tc.version, testDCID, nil, nil, 2, 4, readHex(t, tc.file+"_frames.hex"), 1162)
			if !bytes.Equal(got, want) {
				t.Fatalf("sealed packet differs from the RFC's:\n got %x\nwant %x", got[:64], want[:64])
			}
		})
	}
}

// TestRFCPacketDamaged: every way of breaking the sample is an error of
// the right kind, never a panic or a hello.
func TestRFCPacketDamaged(t *testing.T) {
	pkt := readHex(t, "rfc9001_client_initial.hex")
	v2 := readHex(t, "rfc9369_client_initial.hex")
	set := func(b []byte, i int, c byte) []byte { b = slices.Clone(b); b[i] = c; return b }
	xor := func(b []byte, i int, c byte) []byte { b = slices.Clone(b); b[i] ^= c; return b }
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"short header", xor(pkt, 0, 0x80), ErrShortHeader},
		{"version negotiation", append([]byte{0xc0, 0, 0, 0, 0}, pkt[5:]...), ErrVersionNegotiation},
		{"unknown version", set(pkt, 4, 2), ErrUnknownVersion},
		{"draft-29", append([]byte{0xc0, 0xff, 0, 0, 29}, pkt[5:]...), ErrUnknownVersion},
		{"v1 handshake type", xor(pkt, 0, 0x20), ErrNotInitial},
		{"v1 0-rtt type", xor(pkt, 0, 0x10), ErrNotInitial},
		{"v1 retry type", xor(pkt, 0, 0x30), ErrNotInitial},
		{"v2 retry type (v1 initial bits)", xor(v2, 0, 0x10), ErrNotInitial},
		{"v2 sample under v1 number", append(append([]byte{v2[0]&^0x30 | 0x00}, 0, 0, 0, 1), v2[5:]...), ErrDecrypt},
		{"v1 sample under v2 number", append(append([]byte{pkt[0] | 0x10}, 0x6b, 0x33, 0x43, 0xcf), pkt[5:]...), ErrDecrypt},
		{"dcid changed", xor(pkt, 6, 1), ErrDecrypt},
		{"dcid length 21", set(pkt, 5, 21), ErrMalformed},
		{"ciphertext bit", xor(pkt, 100, 1), ErrDecrypt},
		{"tag bit", xor(pkt, len(pkt)-1, 0x80), ErrDecrypt},
		{"packet number bit", xor(pkt, 20, 1), ErrDecrypt},
		{"length past datagram", pkt[:1199], ErrMalformed},
		{"token length past datagram", set(pkt, 15, 0x7f), ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := NewReassembler(Limits{}).Feed(tc.in)
			if !errors.Is(err, tc.want) || h != nil {
				t.Fatalf("Feed: %v, %v; want %v", h, err, tc.want)
			}
		})
	}
	// Every truncation is an error, and so is every single-bit flip past
	// the first byte of a field that is not ignored: no flip yields a hello
	// for another name.
	for n := range len(pkt) {
		if h, err := NewReassembler(Limits{}).Feed(pkt[:n]); err == nil || errors.Is(err, ErrIncomplete) {
			t.Fatalf("truncated to %d bytes: %v, %v", n, h, err)
		}
	}
	for i := range len(pkt) {
		for bit := range 8 {
			h, err := NewReassembler(Limits{}).Feed(xor(pkt, i, 1<<bit))
			if err == nil && h.ServerName != "example.com" {
				t.Fatalf("flip of byte %d bit %d: hello for %q", i, bit, h.ServerName)
			}
		}
	}
}

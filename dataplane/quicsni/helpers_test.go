package quicsni

import (
	"encoding/binary"
	"encoding/hex"
	"os"
	"strings"
	"testing"
)

// readHex reads a hex file from testdata.
func readHex(t testing.TB, name string) []byte {
	t.Helper()
	s, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	b, err := hex.DecodeString(strings.TrimSpace(string(s)))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return b
}

// sealInitial builds a protected client Initial the way a client does
// (RFC 9001 §5), the inverse of openInitial: frames are encrypted with the
// keys of v and dcid under packet number pn, encoded in pnLen bytes, and
// padded with PADDING frames to padTo payload bytes (at least as many as
// header protection needs to sample).
func sealInitial(v Version, dcid, scid, token []byte, pn uint64, pnLen int, frames []byte, padTo int) []byte {
	return sealWith(newKeys(v, dcid), v, dcid, scid, token, pn, pnLen, frames, padTo)
}

// sealWith is sealInitial with the keys given, not those of dcid.
func sealWith(k *keys, v Version, dcid, scid, token []byte, pn uint64, pnLen int, frames []byte, padTo int) []byte {
	payload := append([]byte(nil), frames...)
	minPayload := 4 + sampleLen - pnLen - tagLen
	for len(payload) < max(padTo, minPayload) {
		payload = append(payload, framePadding)
	}
	typeBits := byte(0)
	if v == Version2 {
		typeBits = 1
	}
	hdr := []byte{0xc0 | typeBits<<4 | byte(pnLen-1)}
	hdr = binary.BigEndian.AppendUint32(hdr, uint32(v))
	hdr = append(hdr, byte(len(dcid)))
	hdr = append(hdr, dcid...)
	hdr = append(hdr, byte(len(scid)))
	hdr = append(hdr, scid...)
	hdr = appendVarint(hdr, uint64(len(token)))
	hdr = append(hdr, token...)
	length := pnLen + len(payload) + tagLen
	hdr = binary.BigEndian.AppendUint16(hdr, 0x4000|uint16(length))
	pnOff := len(hdr)
	for i := pnLen - 1; i >= 0; i-- {
		hdr = append(hdr, byte(pn>>(8*i)))
	}
	nonce := k.iv
	for i := range 8 {
		nonce[4+i] ^= byte(pn >> (8 * (7 - i)))
	}
	pkt := k.aead.Seal(hdr, nonce[:], payload, hdr)
	var mask [16]byte
	k.hp.Encrypt(mask[:], pkt[pnOff+4:pnOff+4+sampleLen])
	pkt[0] ^= mask[0] & 0x0f
	for i := range pnLen {
		pkt[pnOff+i] ^= mask[1+i]
	}
	return pkt
}

func appendVarint(b []byte, v uint64) []byte {
	switch {
	case v < 1<<6:
		return append(b, byte(v))
	case v < 1<<14:
		return binary.BigEndian.AppendUint16(b, 0x4000|uint16(v))
	case v < 1<<30:
		return binary.BigEndian.AppendUint32(b, 0x80000000|uint32(v))
	}
	return binary.BigEndian.AppendUint64(b, 0xc000000000000000|v)
}

// cryptoFrame encodes a CRYPTO frame.
func cryptoFrame(off uint64, data []byte) []byte {
	b := appendVarint([]byte{frameCrypto}, off)
	b = appendVarint(b, uint64(len(data)))
	return append(b, data...)
}

// handshake wraps a ClientHello body in its handshake header.
func handshake(body []byte) []byte {
	return append([]byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
}

// helloBody builds a minimal ClientHello body with the given extensions.
func helloBody(exts ...[]byte) []byte {
	body := []byte{3, 3}
	body = append(body, make([]byte, 32)...)
	body = append(body, 0)             // session id
	body = append(body, 0, 2, 0x13, 1) // one suite
	body = append(body, 1, 0)          // null compression
	var e []byte
	for _, x := range exts {
		e = append(e, x...)
	}
	body = binary.BigEndian.AppendUint16(body, uint16(len(e)))
	return append(body, e...)
}

func extension(typ uint16, data []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...)
}

func sniExtension(name string) []byte {
	entry := append([]byte{0}, binary.BigEndian.AppendUint16(nil, uint16(len(name)))...)
	entry = append(entry, name...)
	return extension(0, append(binary.BigEndian.AppendUint16(nil, uint16(len(entry))), entry...))
}

var testDCID = []byte{0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08}

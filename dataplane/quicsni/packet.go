package quicsni

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Version is a QUIC version number.
type Version uint32

// The versions whose Initial packets this package opens.
const (
	Version1 Version = 0x00000001 // RFC 9000
	Version2 Version = 0x6b3343cf // RFC 9369
)

func (v Version) String() string {
	switch v {
	case Version1:
		return "v1"
	case Version2:
		return "v2"
	}
	return fmt.Sprintf("%#08x", uint32(v))
}

var (
	// ErrIncomplete means the ClientHello is not whole yet: feed the flow's
	// next datagram.
	ErrIncomplete = errors.New("quic client hello incomplete")
	// ErrShortHeader means the datagram starts with a short-header (1-RTT)
	// packet, or with anything whose first bit is 0: not the start of a
	// QUIC connection.
	ErrShortHeader = errors.New("quic short header packet")
	// ErrVersionNegotiation means the datagram is a Version Negotiation
	// packet (version 0), which only servers send.
	ErrVersionNegotiation = errors.New("quic version negotiation packet")
	// ErrUnknownVersion means a long header with a version other than 1 and 2.
	ErrUnknownVersion = errors.New("unknown quic version")
	// ErrNotInitial means a long-header packet of another type (0-RTT,
	// Handshake, Retry) where a client Initial is needed.
	ErrNotInitial = errors.New("not a quic initial packet")
	// ErrMalformed means the packet or its frames break the QUIC encoding.
	ErrMalformed = errors.New("malformed quic initial")
	// ErrDecrypt means the Initial does not authenticate under the keys of
	// its Destination Connection ID (a bad tag, or not a client Initial).
	ErrDecrypt = errors.New("quic initial does not decrypt")
	// ErrFrame means a frame type a client Initial may not carry here
	// (anything but PADDING, PING, ACK and CRYPTO).
	ErrFrame = errors.New("frame not allowed in a quic initial")
	// ErrTooLarge means the CRYPTO data or the ClientHello reach past the
	// reassembler's byte cap.
	ErrTooLarge = errors.New("quic client hello too large")
	// ErrTooManyDatagrams means the reassembler's datagram cap was reached
	// before the ClientHello was whole.
	ErrTooManyDatagrams = errors.New("too many quic datagrams before the client hello")
	// ErrNotHello means the CRYPTO stream does not hold a valid ClientHello
	// (the wrapped sniff error says why).
	ErrNotHello = errors.New("quic crypto stream is not a client hello")
)

// Long header packet types, by version (RFC 9000 §17.2, RFC 9369 §3.2).
type packetType int

const (
	typeInitial packetType = iota
	type0RTT
	typeHandshake
	typeRetry
)

func (t packetType) String() string {
	return [...]string{"initial", "0-rtt", "handshake", "retry"}[t]
}

func longType(v Version, bits byte) packetType {
	if v == Version2 {
		return [...]packetType{typeRetry, typeInitial, type0RTT, typeHandshake}[bits&3]
	}
	return packetType(bits & 3)
}

const (
	maxCIDLen = 20 // RFC 9000 §17.2, for versions 1 and 2
	sampleLen = 16
	tagLen    = 16
)

var (
	saltV1 = []byte{0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad, 0xcc, 0xbb, 0x7f, 0x0a}
	saltV2 = []byte{0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb, 0xf9, 0xbd, 0x2e, 0xd9}
)

// keys are a client's Initial packet protection keys for one version and
// Destination Connection ID (RFC 9001 §5.2, RFC 9369 §3.3).
type keys struct {
	version Version
	dcid    []byte
	aead    cipher.AEAD
	iv      [12]byte
	hp      cipher.Block
}

func expandLabel(secret []byte, label string, n int) []byte {
	info := make([]byte, 0, 4+6+len(label))
	info = binary.BigEndian.AppendUint16(info, uint16(n))
	info = append(info, byte(len("tls13 ")+len(label)))
	info = append(info, "tls13 "...)
	info = append(info, label...)
	info = append(info, 0) // empty context
	out, err := hkdf.Expand(sha256.New, secret, string(info), n)
	if err != nil {
		panic("quicsni: hkdf expand: " + err.Error()) // n is a constant well below the limit
	}
	return out
}

func newKeys(v Version, dcid []byte) *keys {
	salt, kl, il, hl := saltV1, "quic key", "quic iv", "quic hp"
	if v == Version2 {
		salt, kl, il, hl = saltV2, "quicv2 key", "quicv2 iv", "quicv2 hp"
	}
	initial, err := hkdf.Extract(sha256.New, dcid, salt)
	if err != nil {
		panic("quicsni: hkdf extract: " + err.Error()) // cannot fail for sha256
	}
	client := expandLabel(initial, "client in", 32)
	k := &keys{version: v, dcid: append([]byte(nil), dcid...)}
	block, err := aes.NewCipher(expandLabel(client, kl, 16))
	if err != nil {
		panic("quicsni: aes: " + err.Error()) // 16-byte key
	}
	if k.aead, err = cipher.NewGCM(block); err != nil {
		panic("quicsni: gcm: " + err.Error())
	}
	copy(k.iv[:], expandLabel(client, il, 12))
	if k.hp, err = aes.NewCipher(expandLabel(client, hl, 16)); err != nil {
		panic("quicsni: aes: " + err.Error())
	}
	return k
}

// Initial is a client Initial packet with its protection removed.
type Initial struct {
	Version      Version
	DCID, SCID   []byte
	Token        []byte
	PacketNumber uint64
	// Payload is the decrypted frames.
	Payload []byte
	// Size is the packet's length in the datagram, header and tag included.
	Size int
}

// header is the cleartext part of a long header up to the Packet Number.
type header struct {
	version    Version
	typ        packetType
	dcid, scid []byte
	token      []byte
	pnOff      int // offset of the Packet Number field
	end        int // offset just past the packet (pnOff + Length)
}

// parseLongHeader reads the unprotected fields of the long-header packet at
// the start of b (RFC 8999 §5.1, RFC 9000 §17.2).
func parseLongHeader(b []byte) (*header, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty datagram", ErrMalformed)
	}
	if b[0]&0x80 == 0 {
		return nil, ErrShortHeader
	}
	if len(b) < 7 {
		return nil, fmt.Errorf("%w: long header of %d bytes", ErrMalformed, len(b))
	}
	h := &header{version: Version(binary.BigEndian.Uint32(b[1:5]))}
	switch h.version {
	case 0:
		return nil, ErrVersionNegotiation
	case Version1, Version2:
	default:
		return nil, fmt.Errorf("%w: %v", ErrUnknownVersion, h.version)
	}
	// The fixed bit (0x40) is not checked: RFC 9287 lets a client that
	// remembers the server's grease_quic_bit clear it in Initials too.
	h.typ = longType(h.version, b[0]>>4)
	off := 5
	cid := func(what string) ([]byte, error) {
		if off >= len(b) {
			return nil, fmt.Errorf("%w: truncated before %s length", ErrMalformed, what)
		}
		n := int(b[off])
		off++
		if n > maxCIDLen {
			return nil, fmt.Errorf("%w: %s of %d bytes", ErrMalformed, what, n)
		}
		if n > len(b)-off {
			return nil, fmt.Errorf("%w: truncated %s", ErrMalformed, what)
		}
		v := b[off : off+n]
		off += n
		return v, nil
	}
	var err error
	if h.dcid, err = cid("destination connection id"); err != nil {
		return nil, err
	}
	if h.scid, err = cid("source connection id"); err != nil {
		return nil, err
	}
	if h.typ == typeRetry {
		return h, nil // no Length field: callers stop here
	}
	if h.typ == typeInitial {
		n, k := varint(b[off:])
		if k == 0 {
			return nil, fmt.Errorf("%w: truncated token length", ErrMalformed)
		}
		off += k
		if n > uint64(len(b)-off) {
			return nil, fmt.Errorf("%w: token of %d bytes past the datagram", ErrMalformed, n)
		}
		h.token = b[off : off+int(n)]
		off += int(n)
	}
	n, k := varint(b[off:])
	if k == 0 {
		return nil, fmt.Errorf("%w: truncated length", ErrMalformed)
	}
	off += k
	if n > uint64(len(b)-off) {
		return nil, fmt.Errorf("%w: length %d past the datagram (%d bytes left)", ErrMalformed, n, len(b)-off)
	}
	h.pnOff, h.end = off, off+int(n)
	return h, nil
}

// varint decodes a QUIC variable-length integer (RFC 9000 §16) at the
// start of b; k is 0 when b is too short.
func varint(b []byte) (v uint64, k int) {
	if len(b) == 0 {
		return 0, 0
	}
	k = 1 << (b[0] >> 6)
	if len(b) < k {
		return 0, 0
	}
	v = uint64(b[0] & 0x3f)
	for _, c := range b[1:k] {
		v = v<<8 | uint64(c)
	}
	return v, k
}

// decodePN expands a truncated packet number of n bytes given the largest
// number seen so far (-1: none), RFC 9000 Appendix A.3.
func decodePN(largest int64, truncated uint64, n int) uint64 {
	expected := uint64(largest + 1)
	win := uint64(1) << (8 * n)
	half := win / 2
	candidate := (expected &^ (win - 1)) | truncated
	switch {
	case candidate+half <= expected && candidate < 1<<62-win:
		return candidate + win
	case candidate > expected+half && candidate >= win:
		return candidate - win
	}
	return candidate
}

// openInitial removes the protection of the client Initial at the start of
// b with k (which must match its version and DCID, see keysFor), given the
// largest packet number seen so far. b is not modified: the packet is
// decrypted in a copy.
func openInitial(b []byte, h *header, k *keys, largest int64) (*Initial, error) {
	if h.end-h.pnOff < 4+sampleLen {
		return nil, fmt.Errorf("%w: packet too short to sample (%d bytes after the header)", ErrMalformed, h.end-h.pnOff)
	}
	pkt := append([]byte(nil), b[:h.end]...)
	var mask [16]byte
	k.hp.Encrypt(mask[:], pkt[h.pnOff+4:h.pnOff+4+sampleLen])
	pkt[0] ^= mask[0] & 0x0f
	pnLen := int(pkt[0]&3) + 1
	var truncated uint64
	for i := range pnLen {
		pkt[h.pnOff+i] ^= mask[1+i]
		truncated = truncated<<8 | uint64(pkt[h.pnOff+i])
	}
	pn := decodePN(largest, truncated, pnLen)
	nonce := k.iv
	var pnb [8]byte
	binary.BigEndian.PutUint64(pnb[:], pn)
	for i := range 8 {
		nonce[4+i] ^= pnb[i]
	}
	hdrEnd := h.pnOff + pnLen
	ct := pkt[hdrEnd:]
	if len(ct) < tagLen {
		return nil, fmt.Errorf("%w: no room for the tag", ErrMalformed)
	}
	payload, err := k.aead.Open(ct[:0], nonce[:], ct, pkt[:hdrEnd])
	if err != nil {
		return nil, fmt.Errorf("%w: packet number %d, dcid %x", ErrDecrypt, pn, h.dcid)
	}
	// Reserved bits are checked only now that the header is authentic
	// (RFC 9000 §17.2).
	if pkt[0]&0x0c != 0 {
		return nil, fmt.Errorf("%w: reserved header bits set", ErrMalformed)
	}
	if len(payload) == 0 {
		return nil, fmt.Errorf("%w: no frames", ErrMalformed)
	}
	return &Initial{
		Version: h.version, DCID: h.dcid, SCID: h.scid, Token: h.token,
		PacketNumber: pn, Payload: payload, Size: h.end,
	}, nil
}

// OpenInitial parses the packet at the start of datagram b as a client
// Initial, removes its header protection with the keys of its version and
// Destination Connection ID and decrypts it. It returns the packet and the
// rest of the datagram (packets coalesced after it). b is not modified;
// Initial's DCID, SCID and Token alias b. largest is the largest packet
// number seen earlier in the flow, -1 if none.
func OpenInitial(b []byte, largest int64) (*Initial, []byte, error) {
	h, err := parseLongHeader(b)
	if err != nil {
		return nil, nil, err
	}
	if h.typ != typeInitial {
		return nil, nil, fmt.Errorf("%w: %v %v packet", ErrNotInitial, h.version, h.typ)
	}
	p, err := openInitial(b, h, newKeys(h.version, h.dcid), largest)
	if err != nil {
		return nil, nil, err
	}
	return p, b[h.end:], nil
}

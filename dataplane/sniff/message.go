package sniff

import "fmt"

// ParseHelloMessage parses a ClientHello handshake message that is not in
// TLS records: msg starts with the 4-byte handshake header (type 1, 24-bit
// length), as QUIC carries it in CRYPTO frames (RFC 9001 §4). Bytes after
// the message are ignored. It returns ErrIncomplete when msg ends before the
// message does, or an error wrapping ErrContentType, ErrTooLarge or
// ErrMalformed. Length is the message's length with its header.
func ParseHelloMessage(msg []byte) (*ClientHello, error) {
	if len(msg) >= 1 && msg[0] != handshakeHello {
		return nil, fmt.Errorf("%w: handshake type %d", ErrContentType, msg[0])
	}
	if len(msg) < 4 {
		return nil, ErrIncomplete
	}
	need := 4 + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
	if need > MaxHelloBytes {
		return nil, ErrTooLarge
	}
	if len(msg) < need {
		return nil, ErrIncomplete
	}
	h, err := parseHelloBody(msg[4:need])
	if err != nil {
		return nil, err
	}
	h.Length = need
	return h, nil
}

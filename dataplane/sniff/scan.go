package sniff

import "encoding/binary"

// helloScanner follows the record framing of a ClientHello as its bytes
// arrive, looking at each byte once, and says when ParseClientHello can
// decide (the whole handshake message is there, or the framing is already
// wrong). So a client that dribbles its hello a byte at a time costs work
// linear in its length, not a full parse per read.
//
// Invariant (FuzzHelloScanner): feed reports true for a prefix of a stream
// exactly when ParseClientHello of that prefix does not return
// ErrIncomplete.
type helloScanner struct {
	pos      int     // stream bytes scanned
	recStart int     // stream offset of the current record header
	hdr      [5]byte // the current record header, hdrN bytes of it
	hdrN     int
	left     int // payload bytes of the current record not scanned yet (when hdrN == 5)
	msg      int // handshake message bytes seen
	hs       [4]byte
	need     int  // handshake message length with its header; 0 until known
	ready    bool // ParseClientHello can decide now
	examined int  // bytes looked at, for tests
}

// feed scans the bytes of b (the stream so far) it has not seen and
// reports whether ParseClientHello(b) can decide.
func (s *helloScanner) feed(b []byte) bool {
	for s.pos < len(b) && !s.ready {
		if s.hdrN < recordHeaderLen {
			c := b[s.pos]
			s.pos++
			s.examined++
			s.hdr[s.hdrN] = c
			s.hdrN++
			switch s.hdrN {
			case 1:
				s.ready = c != contentHandshake
			case 2:
				s.ready = c != 3
			case recordHeaderLen:
				n := int(binary.BigEndian.Uint16(s.hdr[3:5]))
				s.ready = n == 0 || n > maxRecordPayload || s.recStart+recordHeaderLen+n > MaxHelloBytes
				s.left = n
			}
			continue
		}
		// Payload: the handshake header byte by byte, the rest in bulk.
		if s.msg < 4 {
			c := b[s.pos]
			s.pos++
			s.examined++
			s.left--
			s.hs[s.msg] = c
			s.msg++
			switch s.msg {
			case 1:
				s.ready = c != handshakeHello
			case 4:
				s.need = 4 + (int(s.hs[1])<<16 | int(s.hs[2])<<8 | int(s.hs[3]))
				s.ready = s.need > MaxHelloBytes || s.msg >= s.need
			}
		} else {
			k := min(s.left, len(b)-s.pos, s.need-s.msg)
			s.pos += k
			s.examined += k
			s.left -= k
			s.msg += k
			s.ready = s.msg >= s.need
		}
		if s.left == 0 && !s.ready {
			s.recStart, s.hdrN = s.pos, 0
		}
	}
	return s.ready
}

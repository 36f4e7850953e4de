package quicsni

import "fmt"

// Frame types a client Initial may carry that this package accepts
// (RFC 9000 §12.4, §19). CONNECTION_CLOSE is also allowed in an Initial,
// but a client that closes its first flight is not let through.
const (
	framePadding = 0x00
	framePing    = 0x01
	frameACK     = 0x02
	frameACKECN  = 0x03
	frameCrypto  = 0x06
)

const maxVarint = 1<<62 - 1

// parseFrames walks the decrypted payload of an Initial and calls crypto
// for each CRYPTO frame's offset and data (which alias p). Any frame other
// than PADDING, PING, ACK and CRYPTO is an error wrapping ErrFrame, a
// truncated or overflowing one ErrMalformed. Work is linear in len(p).
func parseFrames(p []byte, crypto func(off uint64, data []byte) error) error {
	for len(p) > 0 {
		t := p[0]
		switch t {
		case framePadding:
			i := 1
			for i < len(p) && p[i] == framePadding {
				i++
			}
			p = p[i:]
		case framePing:
			p = p[1:]
		case frameACK, frameACKECN:
			r := &vreader{b: p[1:]}
			r.next() // largest acknowledged
			r.next() // ack delay
			count := r.next()
			r.next() // first ack range
			// Each range is at least 2 bytes, so a count beyond the
			// payload ends in a truncation error without looping long.
			for i := uint64(0); i < count && !r.bad; i++ {
				r.next() // gap
				r.next() // ack range length
			}
			if t == frameACKECN {
				r.next()
				r.next()
				r.next()
			}
			if r.bad {
				return fmt.Errorf("%w: truncated ack frame", ErrMalformed)
			}
			p = r.b
		case frameCrypto:
			r := &vreader{b: p[1:]}
			off := r.next()
			n := r.next()
			if r.bad {
				return fmt.Errorf("%w: truncated crypto frame header", ErrMalformed)
			}
			if n > uint64(len(r.b)) {
				return fmt.Errorf("%w: crypto frame of %d bytes, %d left", ErrMalformed, n, len(r.b))
			}
			if off+n > maxVarint {
				return fmt.Errorf("%w: crypto frame past 2^62", ErrMalformed)
			}
			if err := crypto(off, r.b[:n]); err != nil {
				return err
			}
			p = r.b[n:]
		default:
			// Frame types are varints; one that needs more than a byte
			// is no type an Initial may carry either.
			return fmt.Errorf("%w: frame type %#x", ErrFrame, t)
		}
	}
	return nil
}

// vreader reads varints off b; a truncated read sets bad.
type vreader struct {
	b   []byte
	bad bool
}

func (r *vreader) next() uint64 {
	if r.bad {
		return 0
	}
	v, k := varint(r.b)
	if k == 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[k:]
	return v
}

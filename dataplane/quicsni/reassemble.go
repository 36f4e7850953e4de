package quicsni

import (
	"bytes"
	"errors"
	"fmt"
	"math/bits"

	"github.com/cloudsteer/cloudsteer/dataplane/sniff"
)

// Default caps of a Reassembler (Limits' zero values).
const (
	// DefaultMaxBytes bounds the CRYPTO stream a flow may send before its
	// ClientHello is whole. Real QUIC hellos are 0.3 to 2.5 KiB (Chrome's
	// post-quantum key share is most of that); 16 KiB leaves room for
	// large session tickets and ALPN lists.
	DefaultMaxBytes = 16 << 10
	// DefaultMaxDatagrams bounds the datagrams fed before the hello is
	// whole: a 16 KiB hello fits in about 15 Initials of 1200 bytes.
	DefaultMaxDatagrams = 24
)

// Limits bound what a Reassembler holds for one flow.
type Limits struct {
	MaxBytes     int // CRYPTO stream bytes (offset + length); DefaultMaxBytes when <= 0
	MaxDatagrams int // datagrams fed; DefaultMaxDatagrams when <= 0
}

// Hello is a ClientHello read from a flow's Initial packets.
type Hello struct {
	*sniff.ClientHello
	// Version is the QUIC version of the Initials.
	Version Version
	// DCID is the client's Destination Connection ID (the Initial keys').
	DCID []byte
	// Datagrams and Packets count what was fed until the hello was whole.
	Datagrams, Packets int
}

// Reassembler reads the ClientHello of one QUIC flow from the client's
// datagrams, in the order they arrive. Its memory is bounded by
// Limits.MaxBytes (plus an eighth of it for the coverage bitmap) and its
// work is linear in the bytes fed. Not safe for concurrent use.
type Reassembler struct {
	lim       Limits
	keys      *keys  // the flow's version and DCID, from its first Initial
	retry     *keys  // keys of a later DCID (after a Retry), last one tried
	largest   int64  // largest packet number opened, -1 none
	buf       []byte // CRYPTO stream bytes, grown to the highest end seen
	have      []uint64
	contig    int // bytes [0, contig) of the stream are all there
	datagrams int
	packets   int
	hello     *Hello
	err       error
}

// NewReassembler returns a Reassembler with the given limits.
func NewReassembler(lim Limits) *Reassembler {
	if lim.MaxBytes <= 0 {
		lim.MaxBytes = DefaultMaxBytes
	}
	if lim.MaxDatagrams <= 0 {
		lim.MaxDatagrams = DefaultMaxDatagrams
	}
	return &Reassembler{lim: lim, largest: -1}
}

// Feed takes the payload of the flow's next UDP datagram from the client.
// It returns the Hello once the ClientHello is whole, ErrIncomplete while
// more datagrams are needed, or another error, which is final (the flow
// should be rejected). After a result or a final error every further Feed
// returns the same.
//
// The first packet of each datagram must be an Initial (a 0-RTT packet is
// allowed at the start of a later datagram, and skipped). Packets coalesced
// after it with the same DCID and version are opened when they are
// Initials and skipped when they are 0-RTT or Handshake packets; the rest
// of the datagram is ignored from the first packet of another DCID or
// version, a short header, or bytes that do not parse (RFC 9000 §12.2:
// receivers SHOULD ignore such packets; some clients pad datagrams after
// their last packet). All Initials of a flow must have the version of its
// first one; their DCID may change (see open).
func (r *Reassembler) Feed(datagram []byte) (*Hello, error) {
	if r.hello != nil || r.err != nil {
		return r.hello, r.err
	}
	r.datagrams++
	h, err := r.feed(datagram)
	switch {
	case err == nil:
		r.hello = h
	case errors.Is(err, ErrIncomplete):
		if r.datagrams >= r.lim.MaxDatagrams {
			r.err = fmt.Errorf("%w: %d datagrams, %d crypto bytes in order", ErrTooManyDatagrams, r.datagrams, r.contig)
			return nil, r.err
		}
	default:
		r.err = err
	}
	return h, err
}

func (r *Reassembler) feed(b []byte) (*Hello, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty datagram", ErrMalformed)
	}
	var dcid []byte // of the datagram's first packet
	for first := true; len(b) > 0; first = false {
		h, err := parseLongHeader(b)
		if err != nil {
			if first {
				return nil, err
			}
			break // trailing bytes or a short header: ignored
		}
		if first {
			dcid = h.dcid
		} else if h.version != r.keys.version || !bytes.Equal(h.dcid, dcid) {
			break // another connection's packet: ignored
		}
		switch {
		case h.typ == typeInitial:
			if err := r.open(b, h); err != nil {
				return nil, err
			}
		case h.typ == type0RTT && r.keys != nil, h.typ == typeHandshake && !first:
			// Skipped: 0-RTT data cannot be read here, and it does not
			// change what the ClientHello says.
		default:
			return nil, fmt.Errorf("%w: %v %v packet", ErrNotInitial, h.version, h.typ)
		}
		b = b[h.end:]
	}
	return r.check()
}

// open decrypts one Initial and takes its CRYPTO frames. The keys are those
// of the flow's first Initial: a client that has seen the server's first
// Initial sends its next ones to the server's connection ID, still under
// the original keys (RFC 9001 §5.2). Only after a Retry do the keys follow
// the new DCID, so a packet that fails under the flow's keys and carries
// another DCID is tried under that DCID's keys too.
func (r *Reassembler) open(b []byte, h *header) error {
	if r.keys == nil {
		r.keys = newKeys(h.version, h.dcid)
	}
	if h.version != r.keys.version {
		return fmt.Errorf("%w: %v initial in a %v flow", ErrMalformed, h.version, r.keys.version)
	}
	p, err := openInitial(b, h, r.keys, r.largest)
	if errors.Is(err, ErrDecrypt) && !bytes.Equal(h.dcid, r.keys.dcid) {
		if r.retry == nil || !bytes.Equal(h.dcid, r.retry.dcid) {
			r.retry = newKeys(h.version, h.dcid)
		}
		p, err = openInitial(b, h, r.retry, r.largest)
	}
	if err != nil {
		return err
	}
	r.packets++
	r.largest = max(r.largest, int64(p.PacketNumber))
	return parseFrames(p.Payload, r.crypto)
}

// crypto stores one CRYPTO frame's data at off.
func (r *Reassembler) crypto(off uint64, data []byte) error {
	if off+uint64(len(data)) > uint64(r.lim.MaxBytes) {
		return fmt.Errorf("%w: crypto data up to byte %d, cap %d", ErrTooLarge, off+uint64(len(data)), r.lim.MaxBytes)
	}
	start, end := int(off), int(off)+len(data)
	if end > len(r.buf) {
		r.buf = append(r.buf, make([]byte, end-len(r.buf))...)
		if words := (end + 63) / 64; words > len(r.have) {
			r.have = append(r.have, make([]uint64, words-len(r.have))...)
		}
	}
	for i, c := range data {
		at := start + i
		w, m := at/64, uint64(1)<<(at%64)
		if r.have[w]&m != 0 {
			if r.buf[at] != c {
				return fmt.Errorf("%w: crypto byte %d sent twice with different values", ErrMalformed, at)
			}
			continue
		}
		r.have[w] |= m
		r.buf[at] = c
	}
	// Advance the in-order prefix; each byte is passed once per flow.
	for r.contig < len(r.buf) {
		w := r.have[r.contig/64] >> (r.contig % 64)
		if w&1 == 0 {
			break
		}
		run := bits.TrailingZeros64(^w) // set bits from contig on, in this word
		if run == 64 {
			run = 64 - r.contig%64
		}
		r.contig = min(r.contig+run, len(r.buf))
	}
	return nil
}

// check reports whether the in-order CRYPTO bytes hold the whole hello.
func (r *Reassembler) check() (*Hello, error) {
	if r.contig >= 1 && r.buf[0] != 1 {
		return nil, fmt.Errorf("%w: handshake type %d", ErrNotHello, r.buf[0])
	}
	if r.contig < 4 {
		return nil, ErrIncomplete
	}
	need := 4 + (int(r.buf[1])<<16 | int(r.buf[2])<<8 | int(r.buf[3]))
	if need > r.lim.MaxBytes {
		return nil, fmt.Errorf("%w: client hello of %d bytes, cap %d", ErrTooLarge, need, r.lim.MaxBytes)
	}
	if r.contig < need {
		return nil, ErrIncomplete
	}
	ch, err := sniff.ParseHelloMessage(r.buf[:need])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotHello, err)
	}
	return &Hello{ClientHello: ch, Version: r.keys.version, DCID: r.keys.dcid, Datagrams: r.datagrams, Packets: r.packets}, nil
}

// Buffered is the CRYPTO stream bytes the reassembler holds (for tests
// and metrics): at most Limits.MaxBytes.
func (r *Reassembler) Buffered() int { return len(r.buf) }

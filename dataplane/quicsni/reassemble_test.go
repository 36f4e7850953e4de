package quicsni

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
)

// bigHello is a ClientHello of about n bytes whose SNI comes last, after a
// padding-like extension (as Chrome's randomized extension order may put it).
func bigHello(name string, n int) []byte {
	return handshake(helloBody(extension(0xfe02, make([]byte, n)), sniExtension(name)))
}

// chunks cuts b into pieces of 1 to max bytes as CRYPTO frames at their offsets.
func chunks(rng *rand.Rand, b []byte, maxLen int) [][]byte {
	var out [][]byte
	for off := 0; off < len(b); {
		n := min(1+rng.IntN(maxLen), len(b)-off)
		out = append(out, cryptoFrame(uint64(off), b[off:off+n]))
		off += n
	}
	return out
}

// TestShuffledCrypto spreads a hello over several Initials the way Chrome's
// "chaos protection" does: the CRYPTO stream cut into small frames, shuffled
// across packets, with PING and PADDING between them and the packets sent
// out of order. The hello is read once the last piece arrives, not before.
func TestShuffledCrypto(t *testing.T) {
	hello := bigHello("late.example", 3000)
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 1))
		frames := chunks(rng, hello, 300)
		rng.Shuffle(len(frames), func(i, j int) { frames[i], frames[j] = frames[j], frames[i] })
		// Pack into packets of at most ~1100 payload bytes.
		var pkts [][]byte
		var cur []byte
		pn := uint64(0)
		flush := func() {
			pkts = append(pkts, sealInitial(Version1, testDCID, nil, nil, pn, 1+rng.IntN(4), cur, 1162))
			pn++
			cur = nil
		}
		for _, f := range frames {
			if len(cur)+len(f) > 1100 {
				flush()
			}
			if rng.IntN(3) == 0 {
				cur = append(cur, framePing, framePadding, framePadding)
			}
			cur = append(cur, f...)
		}
		flush()
		rng.Shuffle(len(pkts), func(i, j int) { pkts[i], pkts[j] = pkts[j], pkts[i] })
		r := NewReassembler(Limits{})
		for i, p := range pkts {
			h, err := r.Feed(p)
			if i < len(pkts)-1 {
				if !errors.Is(err, ErrIncomplete) {
					t.Fatalf("seed %d: datagram %d of %d: %v", seed, i+1, len(pkts), err)
				}
				continue
			}
			if err != nil || h.ServerName != "late.example" || h.Packets != len(pkts) {
				t.Fatalf("seed %d: last datagram: %+v, %v", seed, h, err)
			}
		}
	}
}

func TestFrames(t *testing.T) {
	hello := handshake(helloBody(sniExtension("frames.example")))
	ack := []byte{frameACK, 0x05, 0x00, 0x01, 0x01, 0x02, 0x00} // largest 5, delay 0, 1 range: first 1, gap 2, len 0
	ackECN := []byte{frameACKECN, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03}
	tests := []struct {
		name   string
		frames []byte
		want   error // nil: hello for frames.example
	}{
		{"crypto", cryptoFrame(0, hello), nil},
		{"ping, ack, ack-ecn first", append(append(append([]byte{framePing}, ack...), ackECN...), cryptoFrame(0, hello)...), nil},
		{"duplicate crypto, same bytes", append(cryptoFrame(0, hello), cryptoFrame(3, hello[3:10])...), nil},
		{"crypto with a 2-byte offset encoding", append([]byte{frameCrypto, 0x40, 0x00, 0x40 | byte(len(hello)>>8), byte(len(hello))}, hello...), nil},
		{"conflicting duplicate", append(cryptoFrame(0, hello), cryptoFrame(5, []byte{^hello[5]})...), ErrMalformed},
		{"stream frame", append(cryptoFrame(0, hello), 0x08, 0x00, 0x00), ErrFrame},
		{"connection close", []byte{0x1c, 0x00, 0x00, 0x00}, ErrFrame},
		{"new token", []byte{0x07, 0x00}, ErrFrame},
		{"2-byte frame type", []byte{0x40, 0x06}, ErrFrame},
		{"truncated ack", []byte{frameACK, 0x05, 0x00}, ErrMalformed},
		{"ack with 2^62 ranges", []byte{frameACK, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0}, ErrMalformed},
		{"truncated crypto header", []byte{frameCrypto, 0x40}, ErrMalformed},
		{"crypto longer than packet", []byte{frameCrypto, 0, 0x44, 0x00, 1}, ErrMalformed},
		{"crypto past the cap", cryptoFrame(DefaultMaxBytes, []byte{1}), ErrTooLarge},
		{"crypto offset near 2^62", append([]byte{frameCrypto, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1}, 1), ErrMalformed},
		{"server hello", cryptoFrame(0, []byte{2, 0, 0, 0}), ErrNotHello},
		{"hello longer than the cap", cryptoFrame(0, []byte{1, 0, 0x40, 0x00}), ErrTooLarge},
		{"broken hello", cryptoFrame(0, handshake([]byte{3, 3, 1})), ErrNotHello},
		{"only padding", nil, ErrIncomplete},
		{"half a hello", cryptoFrame(0, hello[:len(hello)/2]), ErrIncomplete},
		{"second half only", cryptoFrame(uint64(len(hello)/2), hello[len(hello)/2:]), ErrIncomplete},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Not padded: PADDING after a truncated frame would complete it.
			h, err := NewReassembler(Limits{}).Feed(sealInitial(Version1, testDCID, nil, nil, 0, 1, tc.frames, 0))
			if tc.want == nil {
				if err != nil || h.ServerName != "frames.example" {
					t.Fatalf("Feed: %+v, %v", h, err)
				}
				return
			}
			if !errors.Is(err, tc.want) || h != nil {
				t.Fatalf("Feed: %+v, %v; want %v", h, err, tc.want)
			}
		})
	}
}

func flip(b []byte, i int) []byte {
	b = bytes.Clone(b)
	b[i] ^= 1
	return b
}

// TestCoalesced: what may follow an Initial in a datagram.
func TestCoalesced(t *testing.T) {
	hello := handshake(helloBody(sniExtension("coalesced.example")))
	half := len(hello) / 2
	p1 := sealInitial(Version1, testDCID, nil, nil, 0, 1, cryptoFrame(0, hello[:half]), 0)
	p2 := sealInitial(Version1, testDCID, nil, nil, 1, 2, cryptoFrame(uint64(half), hello[half:]), 0)
	// A 0-RTT packet of the same connection: long header type 1, its
	// Length covering 30 opaque bytes.
	zeroRTT := append([]byte{0xd0, 0, 0, 0, 1, byte(len(testDCID))}, testDCID...)
	zeroRTT = append(zeroRTT, 0, 30)
	zeroRTT = append(zeroRTT, bytes.Repeat([]byte{0xaa}, 30)...)
	otherDCID := sealInitial(Version1, []byte{1, 2, 3, 4, 5, 6, 7, 8}, nil, nil, 1, 1, cryptoFrame(0, []byte("bogus")), 0)
	newDCID := []byte{0xbb, 0x9c, 0x66, 0x3c}
	serverDCID := sealWith(newKeys(Version1, testDCID), Version1, newDCID, nil, nil, 1, 1, cryptoFrame(uint64(half), hello[half:]), 0)
	afterRetry := sealInitial(Version1, newDCID, nil, nil, 1, 1, cryptoFrame(uint64(half), hello[half:]), 0)
	wrongKeys := sealWith(newKeys(Version1, []byte("other")), Version1, newDCID, nil, nil, 1, 1, cryptoFrame(uint64(half), hello[half:]), 0)
	v2 := sealInitial(Version2, testDCID, nil, nil, 1, 1, cryptoFrame(uint64(half), hello[half:]), 0)
	cat := func(ps ...[]byte) []byte { return bytes.Join(ps, nil) }
	tests := []struct {
		name  string
		dgram [][]byte
		want  error
	}{
		{"two initials", [][]byte{cat(p1, p2)}, nil},
		{"initial, 0-rtt, initial", [][]byte{cat(p1, zeroRTT, p2)}, nil},
		{"initials then zero padding", [][]byte{cat(p1, p2, make([]byte, 200))}, nil},
		{"0-rtt datagram between", [][]byte{p1, zeroRTT, p2}, nil},
		{"short header after", [][]byte{cat(p1, []byte{0x40, 1, 2, 3}), p2}, nil},
		{"other dcid after: ignored", [][]byte{cat(p1, otherDCID), p2}, nil},
		{"other version after: ignored", [][]byte{cat(p1, v2), p2}, nil},
		{"garbage long header after: ignored", [][]byte{cat(p1, []byte{0xc0, 0, 0, 0, 1, 50}), p2}, nil},
		{"0-rtt first", [][]byte{zeroRTT, p1}, ErrNotInitial},
		{"server's dcid in a later datagram, original keys", [][]byte{p1, serverDCID}, nil},
		{"new dcid after a retry, its own keys", [][]byte{p1, afterRetry}, nil},
		{"other dcid, conflicting data", [][]byte{p1, otherDCID}, ErrMalformed},
		{"other dcid, keys of neither", [][]byte{p1, wrongKeys}, ErrDecrypt},
		{"other version in a later datagram", [][]byte{p1, v2}, ErrMalformed},
		{"truncated initial after: ignored", [][]byte{cat(p1, p2[:len(p2)-1])}, ErrIncomplete},
		{"bad tag on the initial after", [][]byte{cat(p1, flip(p2, len(p2)-1))}, ErrDecrypt},
		{"retry after", [][]byte{cat(p1, append(append([]byte{0xf0, 0, 0, 0, 1, 8}, testDCID...), 0, 1, 2, 3))}, ErrNotInitial},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := NewReassembler(Limits{})
			var h *Hello
			var err error
			for i, d := range tc.dgram {
				h, err = r.Feed(d)
				if i < len(tc.dgram)-1 && !errors.Is(err, ErrIncomplete) && tc.want == nil {
					t.Fatalf("datagram %d: %v", i+1, err)
				}
			}
			if tc.want == nil {
				if err != nil || h.ServerName != "coalesced.example" || h.Packets != 2 {
					t.Fatalf("Feed: %+v, %v", h, err)
				}
				return
			}
			if !errors.Is(err, tc.want) || h != nil {
				t.Fatalf("Feed: %+v, %v; want %v", h, err, tc.want)
			}
		})
	}
}

func TestLimits(t *testing.T) {
	t.Run("datagram cap", func(t *testing.T) {
		hello := handshake(helloBody(sniExtension("slow.example")))
		r := NewReassembler(Limits{MaxDatagrams: 3})
		for i := range 3 {
			_, err := r.Feed(sealInitial(Version1, testDCID, nil, nil, uint64(i), 1, cryptoFrame(uint64(i), hello[i:i+1]), 0))
			if want := error(ErrIncomplete); i == 2 {
				want = ErrTooManyDatagrams
				if !errors.Is(err, want) {
					t.Fatalf("datagram %d: %v, want %v", i+1, err, want)
				}
			} else if !errors.Is(err, want) {
				t.Fatalf("datagram %d: %v, want %v", i+1, err, want)
			}
		}
		// Final: the rest of the hello changes nothing.
		if h, err := r.Feed(sealInitial(Version1, testDCID, nil, nil, 3, 1, cryptoFrame(0, hello), 0)); h != nil || !errors.Is(err, ErrTooManyDatagrams) {
			t.Fatalf("after the cap: %+v, %v", h, err)
		}
	})
	t.Run("byte cap", func(t *testing.T) {
		hello := bigHello("big.example", 2000)
		r := NewReassembler(Limits{MaxBytes: 1024})
		_, err := r.Feed(sealInitial(Version1, testDCID, nil, nil, 0, 1, cryptoFrame(0, hello[:1000]), 0))
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("hello of %d bytes under a 1024-byte cap: %v", len(hello), err)
		}
		if r.Buffered() > 1024 {
			t.Fatalf("buffered %d bytes", r.Buffered())
		}
		r = NewReassembler(Limits{MaxBytes: 1024})
		_, err = r.Feed(sealInitial(Version1, testDCID, nil, nil, 0, 1, cryptoFrame(1020, []byte("12345")), 0))
		if !errors.Is(err, ErrTooLarge) || r.Buffered() != 0 {
			t.Fatalf("frame past the cap: %v, buffered %d", err, r.Buffered())
		}
	})
	t.Run("result is sticky", func(t *testing.T) {
		r := NewReassembler(Limits{})
		p := sealInitial(Version1, testDCID, nil, nil, 0, 1, cryptoFrame(0, handshake(helloBody(sniExtension("once.example")))), 0)
		h1, err1 := r.Feed(p)
		h2, err2 := r.Feed([]byte("garbage"))
		if err1 != nil || err2 != nil || h1 != h2 || h2.ServerName != "once.example" {
			t.Fatalf("%+v %v, then %+v %v", h1, err1, h2, err2)
		}
	})
}

// TestPacketNumbers: packet numbers of 1 to 4 bytes and the expansion of
// truncated ones against the largest seen (RFC 9000 Appendix A.3).
func TestPacketNumbers(t *testing.T) {
	if got := decodePN(0xa82f30ea, 0x9b32, 2); got != 0xa82f9b32 {
		t.Fatalf("RFC 9000 A.3 example: %#x", got)
	}
	hello := handshake(helloBody(sniExtension("pn.example")))
	r := NewReassembler(Limits{})
	pns := []uint64{0, 1, 300, 70000}
	for i, pn := range pns {
		n := 1 + i
		var frames []byte
		if i == len(pns)-1 {
			frames = cryptoFrame(0, hello)
		} else {
			frames = []byte{framePing}
		}
		h, err := r.Feed(sealInitial(Version1, testDCID, nil, nil, pn, n, frames, 0))
		if i < len(pns)-1 && !errors.Is(err, ErrIncomplete) || i == len(pns)-1 && (err != nil || h.ServerName != "pn.example") {
			t.Fatalf("pn %d in %d bytes: %+v, %v", pn, n, h, err)
		}
	}
	if r.largest != 70000 {
		t.Fatalf("largest %d", r.largest)
	}
}

func TestTokenAndSCID(t *testing.T) {
	hello := handshake(helloBody(sniExtension("token.example")))
	token := []byte(strings.Repeat("t", 200))
	scid := []byte{9, 8, 7, 6}
	p, rest, err := OpenInitial(sealInitial(Version2, testDCID[:5], scid, token, 7, 2, cryptoFrame(0, hello), 0), -1)
	if err != nil || !bytes.Equal(p.Token, token) || !bytes.Equal(p.SCID, scid) || !bytes.Equal(p.DCID, testDCID[:5]) || p.PacketNumber != 7 || len(rest) != 0 {
		t.Fatalf("%+v %v", p, err)
	}
	if !bytes.HasPrefix(p.Payload, cryptoFrame(0, hello)) {
		t.Fatal("payload")
	}
	// A zero-length DCID (legal after a Retry) still has keys.
	if _, _, err := OpenInitial(sealInitial(Version1, nil, nil, nil, 0, 1, cryptoFrame(0, hello), 0), -1); err != nil {
		t.Fatalf("empty dcid: %v", err)
	}
	_ = binary.BigEndian
}

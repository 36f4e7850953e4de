package quicsni

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cloudsteer/cloudsteer/dataplane/sniff"
)

var sentinels = []error{ErrIncomplete, ErrShortHeader, ErrVersionNegotiation, ErrUnknownVersion, ErrNotInitial,
	ErrMalformed, ErrDecrypt, ErrFrame, ErrTooLarge, ErrTooManyDatagrams, ErrNotHello}

func checkResult(t *testing.T, r *Reassembler, h *Hello, err error) {
	t.Helper()
	if r.Buffered() > DefaultMaxBytes || len(r.have)*64 > DefaultMaxBytes+63 {
		t.Fatalf("buffered %d bytes, bitmap %d words", r.Buffered(), len(r.have))
	}
	if err != nil {
		if h != nil {
			t.Fatalf("hello %+v with error %v", h, err)
		}
		known := false
		for _, s := range sentinels {
			known = known || errors.Is(err, s)
		}
		if !known {
			t.Fatalf("error %v wraps no sentinel", err)
		}
		return
	}
	if h == nil || h.ClientHello == nil {
		t.Fatal("no error and no hello")
	}
	if h.ServerName != "" {
		if n, ok := sniff.NormalizeHostname(h.ServerName); !ok || n != h.ServerName {
			t.Fatalf("server name %q is not a normalized host name", h.ServerName)
		}
	}
}

// FuzzFeed feeds two raw datagrams: header parsing, truncations and
// coalescing on arbitrary bytes (which rarely decrypt).
func FuzzFeed(f *testing.F) {
	v1 := readHex(f, "rfc9001_client_initial.hex")
	v2 := readHex(f, "rfc9369_client_initial.hex")
	hello := handshake(helloBody(sniExtension("fuzz.example")))
	p1 := sealInitial(Version1, testDCID, nil, nil, 0, 1, cryptoFrame(0, hello[:40]), 0)
	p2 := sealInitial(Version1, testDCID, nil, nil, 1, 1, cryptoFrame(40, hello[40:]), 0)
	f.Add(v1, []byte(nil))
	f.Add(v2, v1)
	f.Add(p1, p2)
	f.Add(append(bytes.Clone(p1), p2...), []byte(nil))
	f.Add(v1[:60], v1[60:])
	f.Add([]byte{0xc0, 0, 0, 0, 0, 8}, []byte{0x40})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		r := NewReassembler(Limits{})
		h, err := r.Feed(a)
		checkResult(t, r, h, err)
		if errors.Is(err, ErrIncomplete) {
			h, err = r.Feed(b)
			checkResult(t, r, h, err)
		}
		// OpenInitial alone agrees with a single Feed's first packet.
		p, rest, oerr := OpenInitial(a, -1)
		if oerr == nil && (p.Size+len(rest) != len(a) || !bytes.Equal(a[p.Size:], rest)) {
			t.Fatalf("size %d + rest %d != %d", p.Size, len(rest), len(a))
		}
	})
}

// FuzzReassembler seals the fuzzer's bytes as the frames of two real
// Initials, so the frame parser and the CRYPTO reassembly get past the
// AEAD. Fed as two datagrams and as one datagram of two coalesced
// packets, they must agree.
func FuzzReassembler(f *testing.F) {
	hello := bigHello("reassembly.example", 1500)
	half := len(hello) / 2
	f.Add(cryptoFrame(0, hello[:half]), cryptoFrame(uint64(half), hello[half:]), byte(0))
	f.Add(cryptoFrame(uint64(half), hello[half:]), cryptoFrame(0, hello[:half]), byte(0x13))
	f.Add(append([]byte{framePing, frameACK, 1, 0, 0, 0}, cryptoFrame(0, hello)...), []byte{framePing}, byte(0x80))
	f.Add(cryptoFrame(0, hello[:10]), append(cryptoFrame(5, hello[5:20]), cryptoFrame(20, hello[20:])...), byte(0x42))
	f.Add([]byte{frameCrypto, 0, 0x44}, []byte{0x1c, 0, 0, 0}, byte(0))
	f.Fuzz(func(t *testing.T, f1, f2 []byte, ctl byte) {
		if len(f1) > 4000 || len(f2) > 4000 {
			return
		}
		v := Version1
		if ctl&0x80 != 0 {
			v = Version2
		}
		p1 := sealInitial(v, testDCID, nil, nil, 0, 1+int(ctl&3), f1, 0)
		p2 := sealInitial(v, testDCID, nil, nil, 1, 1+int(ctl>>2&3), f2, 0)

		sep := NewReassembler(Limits{})
		h1, err1 := sep.Feed(p1)
		checkResult(t, sep, h1, err1)
		h2, err2 := sep.Feed(p2)
		checkResult(t, sep, h2, err2)

		one := NewReassembler(Limits{})
		hc, errc := one.Feed(append(bytes.Clone(p1), p2...))
		checkResult(t, one, hc, errc)

		switch {
		case errors.Is(err1, ErrIncomplete):
			// Both packets were read, in the same order: same outcome.
			if (err2 == nil) != (errc == nil) || err2 != nil && err2.Error() != errc.Error() {
				t.Fatalf("separate: %v; coalesced: %v", err2, errc)
			}
			if err2 == nil && (h2.ServerName != hc.ServerName || h2.Packets != hc.Packets) {
				t.Fatalf("separate %q (%d packets), coalesced %q (%d)", h2.ServerName, h2.Packets, hc.ServerName, hc.Packets)
			}
		case err1 == nil:
			// The first packet sufficed; coalesced, the second may still fail.
			if errc == nil && hc.ServerName != h1.ServerName {
				t.Fatalf("separate %q, coalesced %q", h1.ServerName, hc.ServerName)
			}
		default:
			// Rejected either way; the error may differ, as coalesced the
			// second packet's frames are read before the hello is checked.
			if errc == nil {
				t.Fatalf("first packet failed (%v); coalesced: a hello for %q", err1, hc.ServerName)
			}
			if !errors.Is(err1, ErrNotHello) && !errors.Is(err1, ErrTooLarge) && errc.Error() != err1.Error() {
				t.Fatalf("first packet failed reading it (%v); coalesced: %v", err1, errc)
			}
		}
	})
}

package sniff

import (
	"errors"
	"testing"
)

// TestParseHelloMessage checks that the record-less parse of a hello agrees
// with ParseClientHello on the same message in a record, and its errors.
func TestParseHelloMessage(t *testing.T) {
	rec := handHello(sniExt("Quic.Example."), ext(16, []byte{0, 3, 2, 'h', '3'}))
	msg := rec[recordHeaderLen:]
	h, err := ParseHelloMessage(msg)
	if err != nil {
		t.Fatalf("ParseHelloMessage: %v", err)
	}
	if h.ServerName != "quic.example" || h.RawServerName != "Quic.Example." || len(h.ALPN) != 1 || h.ALPN[0] != "h3" || h.Length != len(msg) {
		t.Fatalf("got %+v", h)
	}
	want, err := ParseClientHello(rec)
	if err != nil || want.ServerName != h.ServerName {
		t.Fatalf("ParseClientHello disagrees: %+v, %v", want, err)
	}
	// Trailing bytes are not part of the message.
	if h, err := ParseHelloMessage(append(append([]byte{}, msg...), 0xff, 0xff)); err != nil || h.Length != len(msg) {
		t.Fatalf("with trailing bytes: %+v, %v", h, err)
	}
	for i := 0; i < len(msg); i++ {
		if _, err := ParseHelloMessage(msg[:i]); !errors.Is(err, ErrIncomplete) {
			t.Fatalf("prefix of %d bytes: %v, want ErrIncomplete", i, err)
		}
	}
	if _, err := ParseHelloMessage([]byte{2, 0, 0, 0}); !errors.Is(err, ErrContentType) {
		t.Fatalf("server hello type: %v", err)
	}
	if _, err := ParseHelloMessage([]byte{1, 0xff, 0xff, 0xff}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("16 MiB length: %v", err)
	}
	bad := append([]byte{}, msg...)
	bad[4+2+32] = 33 // session id length past 32
	if _, err := ParseHelloMessage(bad); !errors.Is(err, ErrMalformed) {
		t.Fatalf("bad session id: %v", err)
	}
}

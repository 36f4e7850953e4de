// Package sniff reads the TLS ClientHello at the start of a TCP stream
// without decrypting anything, so the proxy can learn the server name (SNI)
// a client asks for.
package sniff

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// MaxHelloBytes caps the bytes ParseClientHello accepts for one ClientHello
// (record headers included). Real hellos are below 2 KiB; post-quantum key
// shares bring them near 2.5 KiB.
const MaxHelloBytes = 64 << 10

const (
	recordHeaderLen    = 5
	maxRecordPayload   = 1<<14 + 2048 // plaintext limit plus the slack TLS allows for compression
	contentHandshake   = 22
	handshakeHello     = 1
	extServerName      = 0
	extALPN            = 16
	extSupportedVers   = 43
	serverNameHostName = 0
)

var (
	// ErrIncomplete means the bytes end before the ClientHello does: read more.
	ErrIncomplete = errors.New("tls client hello incomplete")
	// ErrNotTLS means the stream does not start with a TLS record.
	ErrNotTLS = errors.New("not a tls stream")
	// ErrContentType means the stream starts with a TLS record that is not a
	// handshake record, or the first handshake message is not a ClientHello.
	ErrContentType = errors.New("tls stream does not start with a client hello")
	// ErrTooLarge means the ClientHello is larger than the caller allows.
	ErrTooLarge = errors.New("tls client hello too large")
	// ErrMalformed means the ClientHello breaks the TLS encoding rules.
	ErrMalformed = errors.New("malformed tls client hello")
)

// ClientHello is what the proxy needs from a TLS ClientHello.
type ClientHello struct {
	// ServerName is the SNI host name, lowercased and without a trailing
	// dot. It is empty when the hello has no SNI, and also when the SNI is
	// an IP literal or not a valid DNS host name: such a name cannot be
	// routed by name, so the caller falls back to the destination address.
	ServerName string
	// RawServerName is the SNI as sent (empty without SNI), for logs only.
	RawServerName string
	// ALPN lists the application protocols the client offers, in order.
	ALPN []string
	// LegacyVersion is the client_version field (0x0303 for TLS 1.2 and 1.3).
	LegacyVersion uint16
	// SupportedVersions lists the supported_versions extension (TLS 1.3+).
	SupportedVersions []uint16
	// Length is the number of stream bytes up to the end of the last
	// record holding part of the hello (or the end of the input, if that
	// record is cut short), record headers included.
	Length int
}

// ParseClientHello parses the ClientHello at the start of b, the first bytes
// of a TLS stream. The handshake message may span several records. It
// returns ErrIncomplete when b ends too early, or an error wrapping ErrNotTLS,
// ErrContentType, ErrTooLarge or ErrMalformed.
func ParseClientHello(b []byte) (*ClientHello, error) {
	// Collect handshake bytes from consecutive records until the whole
	// ClientHello message is there.
	var msg []byte
	off := 0
	need := -1 // total handshake message length once its header is known
	for {
		if need >= 0 && len(msg) >= need {
			break
		}
		rest := b[off:]
		if len(rest) == 0 {
			return nil, ErrIncomplete
		}
		if rest[0] != contentHandshake {
			if off == 0 && !looksLikeRecordType(rest[0]) {
				return nil, ErrNotTLS
			}
			return nil, fmt.Errorf("%w: record type %d", ErrContentType, rest[0])
		}
		if len(rest) >= 2 && rest[1] != 3 {
			return nil, fmt.Errorf("%w: record version %d.%d", ErrNotTLS, rest[1], at(rest, 2))
		}
		if len(rest) < recordHeaderLen {
			return nil, ErrIncomplete
		}
		n := int(binary.BigEndian.Uint16(rest[3:5]))
		if n == 0 {
			return nil, fmt.Errorf("%w: empty handshake record", ErrMalformed)
		}
		if n > maxRecordPayload {
			return nil, fmt.Errorf("%w: record length %d", ErrMalformed, n)
		}
		if off+recordHeaderLen+n > MaxHelloBytes {
			return nil, ErrTooLarge
		}
		have := min(n, len(rest)-recordHeaderLen)
		msg = append(msg, rest[recordHeaderLen:recordHeaderLen+have]...)
		if need < 0 && len(msg) >= 4 {
			if msg[0] != handshakeHello {
				return nil, fmt.Errorf("%w: handshake type %d", ErrContentType, msg[0])
			}
			need = 4 + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
			if need > MaxHelloBytes {
				return nil, ErrTooLarge
			}
		} else if need < 0 && len(msg) >= 1 && msg[0] != handshakeHello {
			return nil, fmt.Errorf("%w: handshake type %d", ErrContentType, msg[0])
		}
		if have < n {
			if need >= 0 && len(msg) >= need {
				// The hello is complete; the record's tail (another
				// handshake message) is not needed.
				off += recordHeaderLen + have
				break
			}
			return nil, ErrIncomplete
		}
		off += recordHeaderLen + n
	}
	h, err := parseHelloBody(msg[4:need])
	if err != nil {
		return nil, err
	}
	h.Length = off
	return h, nil
}

func at(b []byte, i int) byte {
	if i < len(b) {
		return b[i]
	}
	return 0
}

// looksLikeRecordType reports whether c is a TLS record content type other
// than handshake: change_cipher_spec, alert, application_data, heartbeat.
func looksLikeRecordType(c byte) bool { return c >= 20 && c <= 24 }

// reader walks a byte slice; any read past the end marks it bad.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) take(n int) []byte {
	if r.bad || n < 0 || n > len(r.b) {
		r.bad = true
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() int {
	v := r.take(1)
	if v == nil {
		return 0
	}
	return int(v[0])
}

func (r *reader) u16() int {
	v := r.take(2)
	if v == nil {
		return 0
	}
	return int(binary.BigEndian.Uint16(v))
}

// vec8 and vec16 read a vector with a 1- or 2-byte length prefix.
func (r *reader) vec8() []byte  { return r.take(r.u8()) }
func (r *reader) vec16() []byte { return r.take(r.u16()) }

func malformed(what string) error { return fmt.Errorf("%w: %s", ErrMalformed, what) }

func parseHelloBody(body []byte) (*ClientHello, error) {
	r := &reader{b: body}
	h := &ClientHello{LegacyVersion: uint16(r.u16())}
	r.take(32) // random
	if sid := r.vec8(); len(sid) > 32 {
		return nil, malformed("session id longer than 32 bytes")
	}
	suites := r.vec16()
	if !r.bad && (len(suites) < 2 || len(suites)%2 != 0) {
		return nil, malformed("cipher suites length")
	}
	if comp := r.vec8(); !r.bad && len(comp) < 1 {
		return nil, malformed("no compression methods")
	}
	if r.bad {
		return nil, malformed("truncated hello")
	}
	if len(r.b) == 0 {
		return h, nil // no extensions (SSL 3.0 style hello)
	}
	exts := &reader{b: r.vec16()}
	if r.bad || len(r.b) != 0 {
		return nil, malformed("extensions length")
	}
	seen := make(map[int]bool)
	for len(exts.b) > 0 {
		typ := exts.u16()
		data := exts.vec16()
		if exts.bad {
			return nil, malformed("extension length")
		}
		if seen[typ] {
			return nil, malformed(fmt.Sprintf("duplicate extension %d", typ))
		}
		seen[typ] = true
		var err error
		switch typ {
		case extServerName:
			err = h.parseServerName(data)
		case extALPN:
			err = h.parseALPN(data)
		case extSupportedVers:
			err = h.parseVersions(data)
		}
		if err != nil {
			return nil, err
		}
	}
	return h, nil
}

func (h *ClientHello) parseServerName(data []byte) error {
	r := &reader{b: data}
	list := &reader{b: r.vec16()}
	if r.bad || len(r.b) != 0 || len(list.b) == 0 {
		return malformed("server_name list length")
	}
	found := false
	for len(list.b) > 0 {
		typ := list.u8()
		name := list.vec16()
		if list.bad {
			return malformed("server_name entry length")
		}
		if typ != serverNameHostName {
			continue
		}
		if found {
			return malformed("more than one host_name in server_name")
		}
		if len(name) == 0 {
			return malformed("empty host_name")
		}
		found = true
		h.RawServerName = string(name)
		h.ServerName, _ = NormalizeHostname(string(name))
	}
	return nil
}

func (h *ClientHello) parseALPN(data []byte) error {
	r := &reader{b: data}
	list := &reader{b: r.vec16()}
	if r.bad || len(r.b) != 0 || len(list.b) == 0 {
		return malformed("alpn list length")
	}
	for len(list.b) > 0 {
		p := list.vec8()
		if list.bad || len(p) == 0 {
			return malformed("alpn protocol length")
		}
		h.ALPN = append(h.ALPN, string(p))
	}
	return nil
}

func (h *ClientHello) parseVersions(data []byte) error {
	r := &reader{b: data}
	list := r.vec8()
	if r.bad || len(r.b) != 0 || len(list) == 0 || len(list)%2 != 0 {
		return malformed("supported_versions length")
	}
	for i := 0; i < len(list); i += 2 {
		h.SupportedVersions = append(h.SupportedVersions, binary.BigEndian.Uint16(list[i:]))
	}
	return nil
}

// NormalizeHostname returns s lowercased and without one trailing dot, and
// whether it is a DNS host name the proxy can route by: 1 to 253 bytes,
// labels of 1 to 63 letters, digits, '-' or '_' that neither start nor end
// with '-', and a last label that is not all digits. IP literals are not
// host names.
func NormalizeHostname(s string) (string, bool) {
	s = strings.TrimSuffix(s, ".")
	if len(s) == 0 || len(s) > 253 {
		return "", false
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return "", false
	}
	var b strings.Builder
	b.Grow(len(s))
	labelLen, allDigits := 0, true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if labelLen == 0 || s[i-1] == '-' {
				return "", false
			}
			labelLen, allDigits = 0, true
			b.WriteByte(c)
			continue
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
			allDigits = false
		case 'a' <= c && c <= 'z', c == '_':
			allDigits = false
		case '0' <= c && c <= '9':
		case c == '-':
			if labelLen == 0 {
				return "", false
			}
			allDigits = false
		default:
			return "", false
		}
		labelLen++
		if labelLen > 63 {
			return "", false
		}
		b.WriteByte(c)
	}
	if labelLen == 0 || s[len(s)-1] == '-' || allDigits {
		return "", false
	}
	return b.String(), true
}

// parseHello is ParseClientHello; tests count its calls.
var parseHello = ParseClientHello

// Peek reads from conn until the bytes read hold a whole ClientHello, at
// most max bytes (MaxHelloBytes when max <= 0) and for at most timeout (no
// limit when <= 0) or until ctx ends. raw holds every byte read, also on
// error, so the caller can replay them upstream. Peek clears conn's read
// deadline before it returns.
func Peek(ctx context.Context, conn net.Conn, max int, timeout time.Duration) (hello *ClientHello, raw []byte, err error) {
	if max <= 0 || max > MaxHelloBytes {
		max = MaxHelloBytes
	}
	if timeout > 0 {
		if err := conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			return nil, nil, fmt.Errorf("set read deadline: %w", err)
		}
	}
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	defer func() {
		stop()
		conn.SetReadDeadline(time.Time{})
	}()

	buf := make([]byte, 0, min(2048, max))
	var scan helloScanner
	for {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(2*cap(buf), max))
			copy(grown, buf)
			buf = grown
		}
		n, rerr := conn.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		// Parse once the framing says the hello is complete (or broken),
		// not on every read: a dribbling client costs linear work.
		if n > 0 && scan.feed(buf) {
			h, perr := parseHello(buf)
			switch {
			case perr == nil:
				return h, buf, nil
			case !errors.Is(perr, ErrIncomplete):
				return nil, buf, perr
			}
			// Cannot happen (FuzzHelloScanner): the scanner said complete.
			return nil, buf, fmt.Errorf("%w: framing and parse disagree", ErrMalformed)
		}
		if n > 0 && len(buf) >= max {
			return nil, buf, ErrTooLarge
		}
		if rerr != nil {
			if ctx.Err() != nil {
				return nil, buf, fmt.Errorf("read client hello: %w", ctx.Err())
			}
			return nil, buf, fmt.Errorf("read client hello after %d bytes: %w", len(buf), rerr)
		}
	}
}

package sniff

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// recordConn is a net.Conn that keeps what is written and fails every read,
// so a tls.Client writes its ClientHello and then gives up.
type recordConn struct {
	net.Conn
	buf bytes.Buffer
}

func (c *recordConn) Write(b []byte) (int, error)      { return c.buf.Write(b) }
func (c *recordConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (c *recordConn) Close() error                     { return nil }
func (c *recordConn) SetDeadline(time.Time) error      { return nil }
func (c *recordConn) SetReadDeadline(time.Time) error  { return nil }
func (c *recordConn) SetWriteDeadline(time.Time) error { return nil }

// realHello returns the bytes a crypto/tls client writes first.
func realHello(tb testing.TB, cfg *tls.Config) []byte {
	tb.Helper()
	rc := &recordConn{}
	_ = tls.Client(rc, cfg).Handshake()
	if rc.buf.Len() == 0 {
		tb.Fatal("tls client wrote nothing")
	}
	return rc.buf.Bytes()
}

// refragment splits the handshake payload of the single record in b into
// records of at most size bytes.
func refragment(tb testing.TB, b []byte, size int) []byte {
	tb.Helper()
	n := int(binary.BigEndian.Uint16(b[3:5]))
	if len(b) != 5+n {
		tb.Fatalf("expected one record, got %d bytes for length %d", len(b), n)
	}
	payload := b[5:]
	var out []byte
	for len(payload) > 0 {
		k := min(size, len(payload))
		out = append(out, 22, 3, 1, byte(k>>8), byte(k))
		out = append(out, payload[:k]...)
		payload = payload[k:]
	}
	return out
}

// handHello builds a ClientHello record with the given extensions
// (type, data pairs already encoded).
func handHello(exts ...[]byte) []byte {
	body := []byte{3, 3}
	body = append(body, make([]byte, 32)...)
	body = append(body, 0)             // session id
	body = append(body, 0, 2, 0x13, 1) // one suite
	body = append(body, 1, 0)          // null compression
	if exts != nil {
		var e []byte
		for _, x := range exts {
			e = append(e, x...)
		}
		body = binary.BigEndian.AppendUint16(body, uint16(len(e)))
		body = append(body, e...)
	}
	msg := []byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}
	msg = append(msg, body...)
	rec := []byte{22, 3, 1, byte(len(msg) >> 8), byte(len(msg))}
	return append(rec, msg...)
}

func ext(typ uint16, data []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...)
}

func sniExt(name string) []byte {
	entry := append([]byte{0}, binary.BigEndian.AppendUint16(nil, uint16(len(name)))...)
	entry = append(entry, name...)
	return ext(0, append(binary.BigEndian.AppendUint16(nil, uint16(len(entry))), entry...))
}

func TestParseRealHellos(t *testing.T) {
	tests := []struct {
		name     string
		cfg      *tls.Config
		wantSNI  string
		wantALPN []string
		wantVers []uint16
	}{
		{
			name:     "sni and alpn, tls 1.2-1.3",
			cfg:      &tls.Config{ServerName: "WWW.Example.COM.", NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12},
			wantSNI:  "www.example.com",
			wantALPN: []string{"h2", "http/1.1"},
			wantVers: []uint16{tls.VersionTLS13, tls.VersionTLS12},
		},
		{
			name:     "no sni (insecure client without name)",
			cfg:      &tls.Config{InsecureSkipVerify: true},
			wantSNI:  "",
			wantVers: []uint16{tls.VersionTLS13, tls.VersionTLS12},
		},
		{
			name:    "ip server name is not sent",
			cfg:     &tls.Config{ServerName: "203.0.113.10", MaxVersion: tls.VersionTLS12},
			wantSNI: "",
		},
		{
			name:     "tls 1.3 only",
			cfg:      &tls.Config{ServerName: "scores.sports.example", MinVersion: tls.VersionTLS13},
			wantSNI:  "scores.sports.example",
			wantVers: []uint16{tls.VersionTLS13},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw := realHello(t, tc.cfg)
			check := func(t *testing.T, b []byte) {
				t.Helper()
				h, err := ParseClientHello(b)
				if err != nil {
					t.Fatalf("ParseClientHello: %v", err)
				}
				if h.ServerName != tc.wantSNI {
					t.Errorf("ServerName = %q, want %q", h.ServerName, tc.wantSNI)
				}
				if !slices.Equal(h.ALPN, tc.wantALPN) {
					t.Errorf("ALPN = %q, want %q", h.ALPN, tc.wantALPN)
				}
				if tc.wantVers != nil && !slices.Equal(h.SupportedVersions, tc.wantVers) {
					t.Errorf("SupportedVersions = %x, want %x", h.SupportedVersions, tc.wantVers)
				}
				if h.Length != len(b) {
					t.Errorf("Length = %d, want %d", h.Length, len(b))
				}
			}
			check(t, raw)
			// Every strict prefix is incomplete.
			for i := range len(raw) {
				if _, err := ParseClientHello(raw[:i]); !errors.Is(err, ErrIncomplete) {
					t.Fatalf("prefix of %d/%d bytes: err = %v, want ErrIncomplete", i, len(raw), err)
				}
			}
			// Bytes after the hello (the next records) do not matter.
			if h, err := ParseClientHello(append(slices.Clone(raw), 23, 3, 3, 0, 1, 0)); err != nil || h.Length != len(raw) {
				t.Fatalf("with trailing record: hello %+v, err %v", h, err)
			}
			// The same hello split over records of many sizes.
			for _, size := range []int{1, 2, 3, 4, 5, 7, 100, 511} {
				frag := refragment(t, raw, size)
				check(t, frag)
				for i := range len(frag) {
					if _, err := ParseClientHello(frag[:i]); !errors.Is(err, ErrIncomplete) {
						t.Fatalf("record size %d, prefix %d: err = %v, want ErrIncomplete", size, i, err)
					}
				}
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	good := handHello(sniExt("a.example"))
	tooBig := []byte{22, 3, 1, 0x40, 0, 1, 0x01, 0, 0} // claims a 64 KiB hello
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrIncomplete},
		{"http request", []byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), ErrNotTLS},
		{"first byte only, not tls", []byte("G"), ErrNotTLS},
		{"sslv2 hello", []byte{0x80, 0x2e, 0x01, 0x03, 0x01}, ErrNotTLS},
		{"bad record version", []byte{22, 9, 1, 0, 4}, ErrNotTLS},
		{"application data record", []byte{23, 3, 3, 0, 2, 1, 2}, ErrContentType},
		{"alert record", []byte{21, 3, 1, 0, 2, 2, 40}, ErrContentType},
		{"server hello message", []byte{22, 3, 3, 0, 4, 2, 0, 0, 0}, ErrContentType},
		{"empty record", []byte{22, 3, 1, 0, 0}, ErrMalformed},
		{"record too long", []byte{22, 3, 1, 0xff, 0xff}, ErrMalformed},
		{"hello too large", tooBig, ErrTooLarge},
		{"second record not handshake", append(refragment(t, good, 10)[:15], 23, 3, 3, 0, 1, 0), ErrContentType},
		{"bad extension length", handHello([]byte{0, 0, 0, 9, 0}), ErrMalformed},
		{"bad sni list length", handHello(ext(0, []byte{0, 9, 0, 0, 1, 'a'})), ErrMalformed},
		{"empty sni name", handHello(ext(0, []byte{0, 3, 0, 0, 0})), ErrMalformed},
		{"two host names", handHello(ext(0, []byte{0, 8, 0, 0, 1, 'a', 0, 0, 1, 'b'})), ErrMalformed},
		{"duplicate extension", handHello(sniExt("a.example"), sniExt("b.example")), ErrMalformed},
		{"empty alpn protocol", handHello(ext(16, []byte{0, 1, 0})), ErrMalformed},
		{"odd supported versions", handHello(ext(43, []byte{3, 3, 4, 3})), ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseClientHello(tc.in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v (hello %+v), want %v", err, h, tc.want)
			}
		})
	}
}

func TestServerNameValidation(t *testing.T) {
	tests := []struct {
		name, sni, want string
	}{
		{"plain", "bank.example", "bank.example"},
		{"upper and trailing dot", "Bank.Example.", "bank.example"},
		{"underscore", "_srv.example.com", "_srv.example.com"},
		{"ipv4 literal", "203.0.113.10", ""},
		{"ipv6 literal", "2001:db8::1", ""},
		{"numeric tld", "1.2.3", ""},
		{"space", "a b.example", ""},
		{"nul byte", "a\x00.example", ""},
		{"empty label", "a..example", ""},
		{"leading hyphen", "-a.example", ""},
		{"trailing hyphen", "a-.example", ""},
		{"label too long", string(bytes.Repeat([]byte("a"), 64)) + ".example", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseClientHello(handHello(sniExt(tc.sni)))
			if err != nil {
				t.Fatalf("ParseClientHello: %v", err)
			}
			if h.ServerName != tc.want {
				t.Errorf("ServerName = %q, want %q", h.ServerName, tc.want)
			}
			if h.RawServerName != tc.sni {
				t.Errorf("RawServerName = %q, want %q", h.RawServerName, tc.sni)
			}
		})
	}
	if h, err := ParseClientHello(handHello()); err != nil || h.ServerName != "" {
		t.Errorf("hello without extensions: %+v, %v", h, err)
	}
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(tb testing.TB) (client, server net.Conn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestPeek(t *testing.T) {
	hello := refragment(t, realHello(t, &tls.Config{ServerName: "news.example.com"}), 300)
	t.Run("segments", func(t *testing.T) {
		client, server := tcpPair(t)
		go func() {
			// One TCP write per few bytes, with pauses, so Peek sees
			// many short reads.
			for i := 0; i < len(hello); i += 97 {
				client.Write(hello[i:min(i+97, len(hello))])
				time.Sleep(time.Millisecond)
			}
			client.Write([]byte("after"))
		}()
		h, raw, err := Peek(context.Background(), server, 0, 10*time.Second)
		if err != nil {
			t.Fatalf("Peek: %v", err)
		}
		if h.ServerName != "news.example.com" {
			t.Errorf("ServerName = %q", h.ServerName)
		}
		if !bytes.HasPrefix(raw, hello) || h.Length != len(hello) {
			t.Errorf("raw has %d bytes, hello %d, Length %d", len(raw), len(hello), h.Length)
		}
	})
	t.Run("timeout on half hello", func(t *testing.T) {
		client, server := tcpPair(t)
		client.Write(hello[:len(hello)/2])
		_, raw, err := Peek(context.Background(), server, 0, 50*time.Millisecond)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("err = %v, want a timeout", err)
		}
		if len(raw) != len(hello)/2 {
			t.Errorf("raw = %d bytes, want %d", len(raw), len(hello)/2)
		}
	})
	t.Run("context cancel", func(t *testing.T) {
		_, server := tcpPair(t)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { time.Sleep(20 * time.Millisecond); cancel() })
		_, _, err := Peek(ctx, server, 0, 0)
		wg.Wait()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	})
	t.Run("max bytes", func(t *testing.T) {
		client, server := tcpPair(t)
		go client.Write(hello)
		_, _, err := Peek(context.Background(), server, 100, 5*time.Second)
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("err = %v, want ErrTooLarge", err)
		}
	})
	t.Run("garbage fails at once", func(t *testing.T) {
		client, server := tcpPair(t)
		client.Write([]byte("GET / HTTP/1.1\r\n"))
		_, raw, err := Peek(context.Background(), server, 0, 0)
		if !errors.Is(err, ErrNotTLS) || len(raw) == 0 {
			t.Fatalf("err = %v raw %q, want ErrNotTLS", err, raw)
		}
	})
	t.Run("eof", func(t *testing.T) {
		client, server := tcpPair(t)
		client.Write(hello[:10])
		client.Close()
		_, _, err := Peek(context.Background(), server, 0, 5*time.Second)
		if !errors.Is(err, io.EOF) {
			t.Fatalf("err = %v, want EOF", err)
		}
	})
}

func FuzzParseClientHello(f *testing.F) {
	for _, cfg := range []*tls.Config{
		{ServerName: "www.example.com", NextProtos: []string{"h2", "http/1.1"}},
		{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12},
	} {
		raw := realHello(f, cfg)
		f.Add(raw)
		f.Add(refragment(f, raw, 50))
	}
	f.Add(handHello(sniExt("a.example"), ext(16, []byte{0, 3, 2, 'h', '2'}), ext(43, []byte{2, 3, 4})))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{22, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseClientHello(b)
		if err != nil {
			if h != nil {
				t.Fatal("hello with error")
			}
			return
		}
		if h.Length <= 0 || h.Length > len(b) {
			t.Fatalf("Length %d of %d bytes", h.Length, len(b))
		}
		// The hello is complete in its own bytes.
		h2, err := ParseClientHello(b[:h.Length])
		if err != nil || h2.ServerName != h.ServerName {
			t.Fatalf("reparse of the hello bytes: %+v, %v", h2, err)
		}
		if h.ServerName != "" {
			if n, ok := NormalizeHostname(h.ServerName); !ok || n != h.ServerName {
				t.Fatalf("ServerName %q is not normalized", h.ServerName)
			}
		}
	})
}

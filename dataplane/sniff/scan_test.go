package sniff

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"
)

// dribbleConn yields its bytes one per Read.
type dribbleConn struct {
	net.Conn
	b []byte
}

func (c *dribbleConn) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, errors.New("dribble: no more bytes")
	}
	p[0] = c.b[0]
	c.b = c.b[1:]
	return 1, nil
}
func (c *dribbleConn) SetReadDeadline(time.Time) error { return nil }

// bigHello returns a ClientHello of about n bytes (padding extension),
// split into records of at most 16 KiB.
func bigHello(tb testing.TB, n int) []byte {
	tb.Helper()
	pad := max(n-200, 0)
	var body []byte
	msg := handHello(sniExt("news.example.com"), ext(21, make([]byte, pad)))[5:]
	for len(msg) > 0 {
		k := min(16<<10, len(msg))
		body = append(body, 22, 3, 1, byte(k>>8), byte(k))
		body = append(body, msg[:k]...)
		msg = msg[k:]
	}
	return body
}

// TestPeekDribbleIsLinear feeds hellos one byte per read: every byte is
// examined once by the framing scan and the hello is parsed once.
func TestPeekDribbleIsLinear(t *testing.T) {
	for _, size := range []int{300, 4 << 10, 30 << 10, 60 << 10} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			hello := bigHello(t, size)
			if _, err := ParseClientHello(hello); err != nil {
				t.Fatalf("test hello: %v", err)
			}
			calls := 0
			parseHello = func(b []byte) (*ClientHello, error) { calls++; return ParseClientHello(b) }
			t.Cleanup(func() { parseHello = ParseClientHello })
			h, raw, err := Peek(t.Context(), &dribbleConn{b: hello}, 0, 0)
			if err != nil || h.ServerName != "news.example.com" || len(raw) != len(hello) {
				t.Fatalf("Peek: %v, %d of %d bytes", err, len(raw), len(hello))
			}
			if calls != 1 {
				t.Errorf("parsed %d times for %d reads, want once", calls, len(hello))
			}
			var s helloScanner
			for i := 1; i <= len(hello); i++ {
				s.feed(hello[:i])
			}
			if s.examined != len(hello) {
				t.Errorf("the scan examined %d bytes for a %d-byte hello", s.examined, len(hello))
			}
		})
	}
}

// TestPeekDeadlineIsFixed: a client sending a byte every few milliseconds
// is cut at the timeout counted from the start, not from its last byte.
func TestPeekDeadlineIsFixed(t *testing.T) {
	hello := realHello(t, &tls.Config{ServerName: "news.example.com"})
	client, server := tcpPair(t)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for _, c := range hello {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			client.Write([]byte{c})
		}
	}()
	const timeout = 300 * time.Millisecond
	start := time.Now()
	_, raw, err := Peek(t.Context(), server, 0, timeout)
	took := time.Since(start)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("err = %v after %d bytes, want a timeout", err, len(raw))
	}
	if took > timeout+time.Second {
		t.Errorf("cut after %v, want about %v", took, timeout)
	}
	t.Logf("cut after %v and %d of %d bytes", took, len(raw), len(hello))
}

func BenchmarkDribble(b *testing.B) {
	for _, size := range []int{1 << 10, 8 << 10, 60 << 10} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			hello := bigHello(b, size)
			b.SetBytes(int64(len(hello)))
			for b.Loop() {
				if _, _, err := Peek(b.Context(), &dribbleConn{b: hello}, 0, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// FuzzHelloScanner checks the scanner's invariant: fed byte by byte, it
// becomes ready at the first prefix for which ParseClientHello does not
// say ErrIncomplete (ParseClientHello's verdict does not go back to
// ErrIncomplete on a longer prefix, so checking that prefix and the one
// before suffices); fed in chunks of the size the input's first byte
// picks, it becomes ready at the first chunk end at or past that prefix.
func FuzzHelloScanner(f *testing.F) {
	raw := realHello(f, &tls.Config{ServerName: "www.example.com"})
	f.Add(raw)
	f.Add(refragment(f, raw, 7))
	f.Add(handHello(sniExt("a.example")))
	f.Add([]byte{22, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Add([]byte{22, 3, 1, 0, 1, 1, 22, 3, 1, 0, 3, 0, 0, 9})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		incomplete := func(n int) bool {
			_, err := ParseClientHello(b[:n])
			return errors.Is(err, ErrIncomplete)
		}
		var s helloScanner
		ready := -1 // the prefix the scanner became ready at
		for i := 1; i <= len(b); i++ {
			if s.feed(b[:i]) {
				ready = i
				break
			}
		}
		switch {
		case ready < 0 && !incomplete(len(b)):
			t.Fatalf("scanner not ready after all %d bytes, ParseClientHello decides", len(b))
		case ready > 0 && (incomplete(ready) || !incomplete(ready-1)):
			t.Fatalf("scanner ready at %d bytes; ParseClientHello incomplete there: %v, one byte before: %v", ready, incomplete(ready), incomplete(ready-1))
		}
		if s.examined > len(b) {
			t.Fatalf("examined %d of %d bytes", s.examined, len(b))
		}
		step := 1
		if len(b) > 0 {
			step = 1 + int(b[0]%16)
		}
		var c helloScanner
		for end := min(step, len(b)); end > 0; end = min(end+step, len(b)) {
			got, want := c.feed(b[:end]), ready > 0 && end >= ready
			if got != want {
				t.Fatalf("fed in chunks of %d: ready %v at %d bytes, want %v", step, got, end, want)
			}
			if got || end == len(b) {
				break
			}
		}
	})
}

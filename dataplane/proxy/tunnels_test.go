package proxy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/dataplane/proxy"
)

// tcpPair returns the two ends of a loopback TCP connection, closed when
// the test ends.
func tcpPair(tb testing.TB) (*net.TCPConn, *net.TCPConn) {
	tb.Helper()
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// tunnelEnds is a tunnel under test: the outer ends a test talks on and
// the result of done.
type tunnelEnds struct {
	left, right net.Conn // the peers of the tunnel's a and b
	done        chan [2]int64
}

// startTunnel starts a tunnel in ts between two fresh connections: TCP
// pairs, or in-memory pipes (no splice, a goroutine per direction).
func startTunnel(tb testing.TB, ts *proxy.Tunnels, tcp bool) (tunnelEnds, bool) {
	tb.Helper()
	var a, b net.Conn
	e := tunnelEnds{done: make(chan [2]int64, 1)}
	if tcp {
		e.left, a = tcpPair(tb)
		b, e.right = tcpPair(tb)
	} else {
		e.left, a = net.Pipe()
		b, e.right = net.Pipe()
		tb.Cleanup(func() { e.left.Close(); e.right.Close() })
	}
	ok := ts.Start(a, b, func(ab, ba int64) { e.done <- [2]int64{ab, ba} })
	return e, ok
}

func (e tunnelEnds) wait(tb testing.TB) [2]int64 {
	tb.Helper()
	select {
	case n := <-e.done:
		return n
	case <-time.After(30 * time.Second):
		tb.Fatal("tunnel did not end")
		return [2]int64{}
	}
}

// closedByPeer reports whether c reads EOF or a reset: its peer closed.
func closedByPeer(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err := c.Read(make([]byte, 1))
	return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}

func TestTunnels(t *testing.T) {
	for _, tcp := range []bool{true, false} {
		name := "pipe"
		if tcp {
			name = "tcp"
		}
		t.Run(name+"/copies both ways and half-closes", func(t *testing.T) {
			ts := proxy.NewTunnels(proxy.TunnelConfig{})
			t.Cleanup(ts.Close)
			e, ok := startTunnel(t, ts, tcp)
			if !ok {
				t.Fatal("Start refused")
			}
			// Long enough for running directions to park again.
			time.Sleep(300 * time.Millisecond)
			go e.left.Write([]byte("hello"))
			got := make([]byte, 5)
			if _, err := io.ReadFull(e.right, got); err != nil || string(got) != "hello" {
				t.Fatalf("right read %q, %v", got, err)
			}
			go func() {
				e.right.Write([]byte("world!"))
				if tcp {
					e.right.(*net.TCPConn).CloseWrite()
				} else {
					e.right.Close()
				}
			}()
			got = make([]byte, 6)
			if _, err := io.ReadFull(e.left, got); err != nil || string(got) != "world!" {
				t.Fatalf("left read %q, %v", got, err)
			}
			if !closedByPeer(e.left) {
				t.Fatal("left end did not see the right end's close")
			}
			e.left.Close()
			if n := e.wait(t); n != [2]int64{5, 6} {
				t.Errorf("done got %v bytes, want [5 6]", n)
			}
			if n := ts.Len(); n != 0 {
				t.Errorf("Len = %d after the tunnel ended", n)
			}
		})
		t.Run(name+"/idle timeout closes it", func(t *testing.T) {
			ts := proxy.NewTunnels(proxy.TunnelConfig{IdleTimeout: 300 * time.Millisecond})
			t.Cleanup(ts.Close)
			e, _ := startTunnel(t, ts, tcp)
			if !closedByPeer(e.left) || !closedByPeer(e.right) {
				t.Fatal("idle tunnel was not closed")
			}
			if n := e.wait(t); n != [2]int64{0, 0} {
				t.Errorf("done got %v bytes, want none", n)
			}
		})
		t.Run(name+"/close ends every tunnel and refuses new ones", func(t *testing.T) {
			ts := proxy.NewTunnels(proxy.TunnelConfig{})
			var all []tunnelEnds
			for range 3 {
				e, _ := startTunnel(t, ts, tcp)
				all = append(all, e)
			}
			if n := ts.Len(); n != 3 {
				t.Errorf("Len = %d, want 3", n)
			}
			ts.Close()
			for _, e := range all {
				e.wait(t)
				if !closedByPeer(e.left) || !closedByPeer(e.right) {
					t.Error("tunnel not closed by Close")
				}
			}
			e, ok := startTunnel(t, ts, tcp)
			if ok {
				t.Fatal("Start after Close accepted a tunnel")
			}
			if !closedByPeer(e.left) || !closedByPeer(e.right) {
				t.Error("refused tunnel's connections not closed")
			}
			select {
			case <-e.done:
				t.Error("done called for a refused tunnel")
			default:
			}
		})
	}
}

// BenchmarkFirstExchange measures a one-byte request and answer through a
// tunnel started just before it (what a TLS handshake's first flights
// pay), against the same exchange with no tunnel in between.
func BenchmarkFirstExchange(b *testing.B) {
	ts := proxy.NewTunnels(proxy.TunnelConfig{IdleTimeout: time.Minute})
	defer ts.Close()
	exchange := func(c, s net.Conn) {
		buf := make([]byte, 1)
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(s, buf); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("direct", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			c, s := tcpPair(b)
			b.StartTimer()
			exchange(c, s)
			b.StopTimer()
			c.Close()
			s.Close()
			b.StartTimer()
		}
	})
	b.Run("new tunnel", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			c, a := tcpPair(b)
			u, s := tcpPair(b)
			b.StartTimer()
			ts.Start(a, u, nil)
			exchange(c, s)
			b.StopTimer()
			c.Close()
			s.Close()
			b.StartTimer()
		}
	})
}

// splicedEnds is a TCP tunnel whose done reports, per direction, the
// bytes copied and those of them moved by splice(2).
type splicedEnds struct {
	left, right *net.TCPConn
	done        chan [4]int64
}

func startSpliced(t *testing.T, ts *proxy.Tunnels) splicedEnds {
	t.Helper()
	e := splicedEnds{done: make(chan [4]int64, 1)}
	var a, b *net.TCPConn
	e.left, a = tcpPair(t)
	b, e.right = tcpPair(t)
	if !proxy.StartSpliced(ts, a, b, func(ab, ba, sab, sba int64) { e.done <- [4]int64{ab, ba, sab, sba} }) {
		t.Fatal("Start refused")
	}
	return e
}

func (e splicedEnds) wait(t *testing.T) [4]int64 {
	t.Helper()
	select {
	case n := <-e.done:
		return n
	case <-time.After(30 * time.Second):
		t.Fatal("tunnel did not end")
		return [4]int64{}
	}
}

// sendChunks writes data to c in chunks of growing size with short pauses
// (so the tunnel's reads end mid-way through the data, and the switch to
// splice falls inside a chunk's worth of bytes), then half-closes c.
func sendChunks(c *net.TCPConn, data []byte) error {
	for off, size := 0, 1; off < len(data); size = min(size*3, 256<<10) {
		n := min(size, len(data)-off)
		if _, err := c.Write(data[off : off+n]); err != nil {
			return err
		}
		off += n
		time.Sleep(time.Millisecond)
	}
	return c.CloseWrite()
}

// TestTunnelSwitchesToSplice sends more than SmallFlowBytes each way at
// once, in uneven chunks, through a TCP tunnel: every byte arrives in
// order, each side's half-close reaches the other, and past the first
// SmallFlowBytes the bytes were spliced.
func TestTunnelSwitchesToSplice(t *testing.T) {
	ts := proxy.NewTunnels(proxy.TunnelConfig{})
	t.Cleanup(ts.Close)
	e := startSpliced(t, ts)
	up := make([]byte, 3<<20+17)
	down := make([]byte, proxy.SmallFlowBytes+4099)
	rand.Read(up)
	rand.Read(down)
	errs := make(chan error, 2)
	go func() { errs <- sendChunks(e.left, up) }()
	go func() { errs <- sendChunks(e.right, down) }()
	gotUp, gotDown := make(chan []byte, 1), make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(e.right); gotUp <- b }()
	go func() { b, _ := io.ReadAll(e.left); gotDown <- b }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// ReadAll ends at each side's EOF: the half-close went through.
	if b := <-gotUp; !bytes.Equal(b, up) {
		t.Errorf("right got %d bytes, not the %d sent (first difference at %d)", len(b), len(up), firstDiff(b, up))
	}
	if b := <-gotDown; !bytes.Equal(b, down) {
		t.Errorf("left got %d bytes, not the %d sent (first difference at %d)", len(b), len(down), firstDiff(b, down))
	}
	n := e.wait(t)
	if n[0] != int64(len(up)) || n[1] != int64(len(down)) {
		t.Errorf("done got %v bytes, want %d and %d", n[:2], len(up), len(down))
	}
	// Up to SmallFlowBytes plus one buffer's worth goes through the buffer.
	for i, total := range n[:2] {
		if lo := total - proxy.SmallFlowBytes - 16<<10; n[2+i] < lo || n[2+i] > total-proxy.SmallFlowBytes {
			t.Errorf("direction %d: %d of %d bytes spliced, want %d to %d", i, n[2+i], total, lo, total-proxy.SmallFlowBytes)
		}
	}
}

// TestTunnelSmallFlowNoSplice checks a handshake-sized exchange is copied
// without splice(2), and a half-close right after it still goes through.
func TestTunnelSmallFlowNoSplice(t *testing.T) {
	ts := proxy.NewTunnels(proxy.TunnelConfig{})
	t.Cleanup(ts.Close)
	e := startSpliced(t, ts)
	hello := bytes.Repeat([]byte("h"), 517)
	if _, err := e.left.Write(hello); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(hello))
	if _, err := io.ReadFull(e.right, got); err != nil || !bytes.Equal(got, hello) {
		t.Fatalf("right read %d bytes, %v", len(got), err)
	}
	answer := bytes.Repeat([]byte("s"), 4000)
	e.right.Write(answer)
	e.right.CloseWrite()
	b, err := io.ReadAll(e.left)
	if err != nil || !bytes.Equal(b, answer) {
		t.Fatalf("left read %d bytes (%v), want the %d-byte answer and EOF", len(b), err, len(answer))
	}
	e.left.CloseWrite()
	if n := e.wait(t); n != [4]int64{517, 4000, 0, 0} {
		t.Errorf("done got %v (copied, spliced), want [517 4000 0 0]", n)
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

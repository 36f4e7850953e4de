package proxy_test

import (
	"context"
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

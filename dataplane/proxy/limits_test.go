package proxy_test

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/dataplane/proxy"
)

// isReset reports whether a read on c ends with a reset within a second.
func isReset(t *testing.T, c net.Conn) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(time.Second))
	_, err := c.Read(make([]byte, 1))
	return errors.Is(err, syscall.ECONNRESET)
}

// stillOpen reports whether c is still open (a read waits) after a while.
func stillOpen(t *testing.T, c net.Conn) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestFlowLimits(t *testing.T) {
	tests := []struct {
		name      string
		max, per  int
		perClient bool // the per-client counter counts the refusal
	}{
		{"overall", 2, 0, false},
		{"per client", 0, 2, true},
		{"both, per client first", 5, 2, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cloud := startStreamer(t, "connect-stream", nil)
			e := startProxy(t, pxOpts{tls: true, cloud: cloudURL(cloud, false), dst: netip.MustParseAddrPort("192.0.2.1:443"), poolMax: -1,
				cfg: func(c *proxy.Config) { c.MaxFlows, c.MaxFlowsPerClient = tc.max, tc.per }})
			// One flow waits for its ClientHello, one is a tunnel.
			waiting := dialAbort(t, e.addr)
			tunnel := dialAbort(t, e.addr)
			tunnel.Write(clientHello(t, "www.example.com"))
			u, _ := cloud.next(t)
			tunnel.readSome(t, 1<<10)
			waitFor(t, "two active flows", func() bool { return e.proxy.Stats().Active == 2 })

			// The reset may come before the dial has returned.
			if over, err := net.Dial("tcp", e.addr); err == nil {
				defer over.Close()
				if !isReset(t, over) {
					t.Fatal("a flow over the limit was not reset")
				}
			} else if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatal(err)
			}
			st := e.proxy.Stats()
			if got := map[bool]uint64{true: st.RefusedFlowsPerClient, false: st.RefusedFlows}[tc.perClient]; got != 1 {
				t.Errorf("stats %+v: want the refusal counted once", st)
			}
			if st.RefusedFlows+st.RefusedFlowsPerClient != 1 || st.Active != 2 {
				t.Errorf("stats %+v", st)
			}
			// The tunnel ends: its slot is free again.
			tunnel.abort(true)
			<-u.closed
			waitFor(t, "the tunnel to end", func() bool { return e.proxy.Stats().Active == 1 })
			next := dialAbort(t, e.addr)
			if !stillOpen(t, next) {
				t.Fatal("a flow within the limit was refused")
			}
			// And the waiting flow's.
			waiting.Close()
			waitFor(t, "the waiting flow to end", func() bool { return e.proxy.Stats().Active == 1 })
			if last := dialAbort(t, e.addr); !stillOpen(t, last) {
				t.Fatal("a flow within the limit was refused")
			}
		})
	}
}

func TestClientKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7":                 "192.0.2.7",
		"::ffff:192.0.2.7":          "192.0.2.7",
		"2001:db8:1:2:aaaa:bbbb::1": "2001:db8:1:2::",
		"2001:db8:1:2:cccc::9":      "2001:db8:1:2::",
		"2001:db8:1:3::1":           "2001:db8:1:3::",
	} {
		if got := proxy.ClientKey(netip.MustParseAddr(in)); got != netip.MustParseAddr(want) {
			t.Errorf("ClientKey(%s) = %s, want %s", in, got, want)
		}
	}
}

// emfileListener fails its first fails Accepts with EMFILE and records
// when each Accept was called.
type emfileListener struct {
	net.Listener
	mu    sync.Mutex
	fails int
	calls []time.Time
}

func (l *emfileListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	l.calls = append(l.calls, time.Now())
	fail := l.fails > 0
	if fail {
		l.fails--
	}
	l.mu.Unlock()
	if fail {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

func (l *emfileListener) Calls() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Time(nil), l.calls...)
}

// syncBuffer is a bytes.Buffer safe for a logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestAcceptBackoff: out of descriptors, accept waits 5 ms doubling
// instead of spinning, logs once, and serves again afterwards.
func TestAcceptBackoff(t *testing.T) {
	const fails = 6
	var logs syncBuffer
	var ln *emfileListener
	up := startStreamer(t, "http-small", nil)
	e := startProxy(t, pxOpts{cloud: cloudURL(up, false), dst: up.addr, poolMax: -1,
		cfg:    func(c *proxy.Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) },
		wrapLn: func(l net.Listener) net.Listener { ln = &emfileListener{Listener: l, fails: fails}; return ln }})
	c := dialHTTP(t, &env{addr: e.addr})
	resp, body := c.do(t, "GET / HTTP/1.1\r\nHost: news.example.com\r\n\r\n", "GET")
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("after the backoff: %d %q", resp.StatusCode, body)
	}
	calls := ln.Calls()
	if len(calls) != fails+2 { // the failures, the accept of c, the next wait
		t.Errorf("%d Accept calls, want %d: accept spun", len(calls), fails+2)
	}
	want := 5 * time.Millisecond
	for i := 1; i <= fails && i < len(calls); i++ {
		if gap := calls[i].Sub(calls[i-1]); gap < want {
			t.Errorf("retry %d after %v, want at least %v", i, gap, want)
		}
		want *= 2
	}
	if n := strings.Count(logs.String(), "accept failed"); n != 1 {
		t.Errorf("%d log lines of the failure, want 1:\n%s", n, logs.String())
	}
}

// TestHTTPDribble: a client that waits, then sends its request head a
// byte at a time, is cut at the peek timeout counted from the accept.
func TestHTTPDribble(t *testing.T) {
	const peek = time.Second
	up := startStreamer(t, "http-small", nil)
	e := startProxy(t, pxOpts{cloud: cloudURL(up, false), dst: up.addr, poolMax: -1,
		cfg: func(c *proxy.Config) { c.PeekTimeout = peek }})
	c := dialAbort(t, e.addr)
	start := time.Now()
	head := "GET / HTTP/1.1\r\nHost: news.example.com\r\nX-Pad: " + strings.Repeat("a", 400) + "\r\n\r\n"
	cut := make(chan time.Duration, 1)
	go func() {
		c.Read(make([]byte, 1))
		cut <- time.Since(start)
	}()
	time.Sleep(peek * 8 / 10)
	for i := 0; i < len(head); i++ {
		if _, err := c.Write([]byte{head[i]}); err != nil {
			break
		}
		select {
		case d := <-cut:
			t.Logf("cut after %v and %d bytes", d, i+1)
			if d > peek+peek/2 {
				t.Errorf("cut after %v, want about the peek timeout %v", d, peek)
			}
			if n := len(e.Events()); n != 1 || e.Events()[0].Kind != proxy.KindBadClient {
				t.Errorf("events %+v", e.Events())
			}
			select {
			case r := <-up.reqs:
				t.Errorf("upstream got %q", r.head)
			default:
			}
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatal("the whole head went through")
}

package cloudproxy

import (
	"context"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// countDials makes c count the sockets its dialer connects.
func countDials(c *Client) *atomic.Int64 {
	var n atomic.Int64
	c.dialer.ControlContext = func(context.Context, string, string, syscall.RawConn) error {
		n.Add(1)
		return nil
	}
	return &n
}

func TestPoolProxyDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := &url.URL{Scheme: "http", Host: ln.Addr().String()}
	ln.Close() // nobody listens: every dial is refused

	newClient := func(poolMax int) (*Client, *atomic.Int64) {
		c, err := New(Config{URL: down, DialTimeout: 5 * time.Second, PoolMax: poolMax})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, countDials(c)
	}
	pooled, pooledDials := newClient(0)
	plain, plainDials := newClient(-1)

	// Steady demand for 600 ms while the proxy is down.
	const window = 600 * time.Millisecond
	calls := 0
	for start := time.Now(); time.Since(start) < window; calls++ {
		_, perr := pooled.Connect(context.Background(), "www.example.com:443", netip.Addr{})
		_, cerr := plain.Connect(context.Background(), "www.example.com:443", netip.Addr{})
		if perr == nil || cerr == nil {
			t.Fatal("Connect to a proxy that is down succeeded")
		}
		if perr.Error() != cerr.Error() {
			t.Fatalf("with the pool Connect says %q, without it %q", perr, cerr)
		}
		if !strings.HasPrefix(perr.Error(), "dial cloud proxy ") {
			t.Fatalf("err = %v, want the dial error", perr)
		}
		if conn, err := pooled.DialProxy(context.Background()); err == nil {
			conn.Close()
			t.Fatal("DialProxy to a proxy that is down succeeded")
		}
		time.Sleep(time.Millisecond)
	}
	if got := plainDials.Load(); got != int64(calls) {
		t.Fatalf("without the pool %d Connects dialed %d times", calls, got)
	}
	// The pooled client dials once per call (2 calls per round) plus its
	// refills, which back off from 100 ms and double: at most 1 + log2(6)
	// + 1 in 600 ms, never one per call.
	refills := pooledDials.Load() - int64(2*calls)
	if refills < 1 || refills > 4 {
		t.Errorf("%d refill dials in %v of %d calls, want 1 to 4 (backing off)", refills, window, 2*calls)
	}
	st := pooled.Stats()
	if st.RefillErrors != uint64(refills) || st.RefillDials != 0 || st.Idle != 0 || st.TakenWarm != 0 {
		t.Errorf("stats %+v after %d failed refills", st, refills)
	}
	// No demand, no dials.
	before := pooledDials.Load()
	time.Sleep(300 * time.Millisecond)
	if after := pooledDials.Load(); after != before {
		t.Errorf("%d dials without demand", after-before)
	}
}

func TestPoolTarget(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name   string
		demand []time.Duration // offsets from t0 of calls
		at     time.Duration   // when the target is asked
		want   int
	}{
		{name: "no demand ever", at: time.Second, want: 0},
		{name: "one call", demand: []time.Duration{0}, at: time.Millisecond, want: 1},
		{name: "one call long ago", demand: []time.Duration{0}, at: 6 * time.Second, want: 0},
		{name: "one call a while ago keeps one", demand: []time.Duration{0}, at: 2 * time.Second, want: 1},
		{name: "burst of 5", demand: repeat(5, 0), at: 10 * time.Millisecond, want: 5},
		{name: "two windows count", demand: append(repeat(3, 0), repeat(4, 120*time.Millisecond)...), at: 150 * time.Millisecond, want: 7},
		{name: "old window forgotten", demand: append(repeat(3, 0), repeat(4, 250*time.Millisecond)...), at: 260 * time.Millisecond, want: 4},
		{name: "capped", demand: repeat(100, 0), at: time.Millisecond, want: 16},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newPool(nil, DefaultPoolMax, DefaultPoolMaxAge, &counters{})
			for _, d := range tc.demand {
				p.noteDemandLocked(t0.Add(d))
			}
			if got := p.targetLocked(t0.Add(tc.at)); got != tc.want {
				t.Errorf("target = %d, want %d", got, tc.want)
			}
		})
	}
}

func repeat(n int, d time.Duration) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = d
	}
	return out
}

// A proxy that drops SYNs leaves refill dials hanging: until one refill
// has succeeded only one may be in flight, however high the demand.
func TestPoolOneProbeUntilProven(t *testing.T) {
	var inFlight, peak atomic.Int64
	release := make(chan error)
	dial := func(ctx context.Context) (net.Conn, error) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			if p := peak.Load(); n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		select {
		case err := <-release:
			if err != nil {
				return nil, err
			}
			a, b := net.Pipe()
			t.Cleanup(func() { b.Close() })
			return a, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	p := newPool(dial, 8, time.Minute, &counters{})
	defer p.close()
	for range 50 {
		if c := p.get(); c != nil {
			t.Fatal("got a connection from a pool whose dials hang")
		}
	}
	waitFor(t, func() bool { return inFlight.Load() == 1 })
	if got := peak.Load(); got != 1 {
		t.Fatalf("%d refill dials in flight before any succeeded, want 1", got)
	}
	release <- nil // the probe succeeds: the pool may now dial up to its target
	waitFor(t, func() bool { return p.len() == 1 })
	for range 20 {
		if c := p.get(); c != nil {
			c.Close()
		}
	}
	waitFor(t, func() bool { return inFlight.Load() > 1 })
	if got := inFlight.Load(); got > 8 {
		t.Fatalf("%d refill dials in flight, above the max 8", got)
	}
}

func waitFor(tb testing.TB, cond func() bool) {
	tb.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			tb.Fatal("gave up waiting")
		}
	}
}

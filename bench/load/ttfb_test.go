package load

import (
	"context"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// tlsOrigin is a loopback HTTPS origin that records when each connection
// arrived; it returns a spec for it.
func tlsOrigin(t testing.TB) (Spec, func() []time.Time) {
	t.Helper()
	var mu sync.Mutex
	var arrivals []time.Time
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			arrivals = append(arrivals, time.Now())
			mu.Unlock()
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(srv.Listener.Addr().String())
	return Spec{Mode: ModeTTFB, Dst: ap, Name: "example.com", CAFile: ca}, func() []time.Time {
		mu.Lock()
		defer mu.Unlock()
		return append([]time.Time(nil), arrivals...)
	}
}

func TestTTFBEvery(t *testing.T) {
	spec, arrivals := tlsOrigin(t)
	spec.Samples, spec.Every = 6, 50*time.Millisecond
	res, err := Run(context.Background(), spec, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.TTFBus) != 6 || res.Errors != 0 {
		t.Fatalf("answered %d, failed %d (%s); want 6 answered", len(res.TTFBus), res.Errors, res.FirstErr)
	}
	at := arrivals()
	if len(at) != 6 {
		t.Fatalf("origin saw %d connections, want 6", len(at))
	}
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < 40*time.Millisecond {
			t.Fatalf("origin saw connections %d and %d %v apart, want about 50ms", i-1, i, gap)
		}
	}
}

func TestTTFBWithin(t *testing.T) {
	// An origin that accepts and never answers: each exchange would wait
	// out its 5 s read deadline.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	spec := Spec{Mode: ModeTTFB, Dst: netip.MustParseAddrPort(ln.Addr().String()), Name: "example.com", Samples: 100, Within: 300 * time.Millisecond}
	start := time.Now()
	res, err := Run(context.Background(), spec, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("run took %v, want it cut at about 300ms", took)
	}
	if len(res.TTFBus) != 0 || res.Errors < 1 {
		t.Fatalf("answered %d, failed %d; want 0 answered and the cut sample failed", len(res.TTFBus), res.Errors)
	}
}

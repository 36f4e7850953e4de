package cloudproxy_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy"
	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy/cloudproxytest"
)

// attempt is one OnConnect call.
type attempt struct {
	d   time.Duration
	err error
}

// recorder collects OnConnect calls.
type recorder struct {
	mu    sync.Mutex
	calls []attempt
}

func (r *recorder) observe(d time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, attempt{d, err})
}

func (r *recorder) get() []attempt {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]attempt(nil), r.calls...)
}

// closedAddr returns a loopback address nobody listens on.
func closedAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestOnConnect(t *testing.T) {
	echo := startEcho(t)
	px := cloudproxytest.Start(t, cloudproxytest.Options{
		Auth:  goodAuth,
		Block: map[string]string{"scores.sports.example": "Sports"},
		Dial:  func(string) string { return echo },
	})
	dead := &url.URL{Scheme: "http", Host: closedAddr(t)}
	tests := []struct {
		name     string
		url      *url.URL
		password string
		dial     bool // DialProxy instead of Connect
		target   string
		check    func(error) bool
	}{
		{"tunnel", px.URL, entitlement, false, "www.example.com:443", func(err error) bool { return err == nil }},
		{"blocked 403", px.URL, entitlement, false, "scores.sports.example:443", refusedWith(403)},
		{"credentials 407", px.URL, "wrong", false, "www.example.com:443", refusedWith(407)},
		{"proxy down", dead, entitlement, false, "www.example.com:443", isDialError},
		{"dial proxy", px.URL, entitlement, true, "", func(err error) bool { return err == nil }},
		{"dial proxy down", dead, entitlement, true, "", isDialError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var rec recorder
			c, err := cloudproxy.New(cloudproxy.Config{URL: tc.url, Username: "tenant", Password: tc.password, DialTimeout: 5 * time.Second, OnConnect: rec.observe})
			if err != nil {
				t.Fatal(err)
			}
			var conn net.Conn
			before := time.Now()
			if tc.dial {
				conn, err = c.DialProxy(context.Background())
			} else {
				conn, err = c.Connect(context.Background(), tc.target, netip.Addr{})
			}
			took := time.Since(before)
			if conn != nil {
				conn.Close()
			}
			calls := rec.get()
			if len(calls) != 1 {
				t.Fatalf("OnConnect called %d times, want 1", len(calls))
			}
			got := calls[0]
			if got.err != err && !errors.Is(got.err, err) {
				t.Errorf("OnConnect err = %v, the call returned %v", got.err, err)
			}
			if !tc.check(got.err) {
				t.Errorf("OnConnect err = %v: not the expected outcome", got.err)
			}
			if got.d <= 0 || got.d > took {
				t.Errorf("OnConnect duration %v, want in (0, %v]", got.d, took)
			}
		})
	}
}

func TestOnConnectBadTargetNotObserved(t *testing.T) {
	var rec recorder
	c, err := cloudproxy.New(cloudproxy.Config{URL: &url.URL{Scheme: "http", Host: closedAddr(t)}, OnConnect: rec.observe})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Connect(context.Background(), "no-port", netip.Addr{}); err == nil {
		t.Fatal("Connect accepted a target without a port")
	}
	if n := len(rec.get()); n != 0 {
		t.Errorf("OnConnect called %d times for a target refused before dialing, want 0", n)
	}
}

func refusedWith(code int) func(error) bool {
	return func(err error) bool {
		var re *cloudproxy.RefusedError
		return errors.As(err, &re) && re.StatusCode == code
	}
}

func isDialError(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

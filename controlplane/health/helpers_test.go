package health_test

import (
	"context"
	"encoding/base64"
	"io"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/health"
	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy"
	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy/cloudproxytest"
)

const (
	code        = "3315471d-b831-48ed-a621-17042a74a8e3"
	probeTarget = "www.example.com:443"
)

var goodAuth = "Basic " + base64.StdEncoding.EncodeToString([]byte("tenant:"+code))

// fakeDNS is a resolver whose Healthy returns err.
type fakeDNS struct{ err error }

func (f fakeDNS) Healthy(ctx context.Context) error { return f.err }

// listen returns a loopback TCP listener closed when the test ends.
func listen(tb testing.TB) net.Listener {
	tb.Helper()
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	return ln
}

// startTarget runs the probe target's stand-in: it accepts connections
// and sends on the returned channel when a peer closes its side.
func startTarget(tb testing.TB) (addr string, closed <-chan struct{}) {
	tb.Helper()
	ln := listen(tb)
	ch := make(chan struct{}, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(io.Discard, c)
				ch <- struct{}{}
			}()
		}
	}()
	return ln.Addr().String(), ch
}

// startProxy runs a loopback cloud proxy that wants goodAuth, tunnels
// everything to target and blocks the names in block by policy.
func startProxy(tb testing.TB, target string, block map[string]string) *url.URL {
	tb.Helper()
	px := cloudproxytest.Start(tb, cloudproxytest.Options{
		Auth:  goodAuth,
		Block: block,
		Dial:  func(string) string { return target },
	})
	return px.URL
}

// startCloser runs a "proxy" that accepts and closes every connection at once.
func startCloser(tb testing.TB) *url.URL {
	tb.Helper()
	ln := listen(tb)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return &url.URL{Scheme: "http", Host: ln.Addr().String()}
}

// deadURL returns a proxy URL on a loopback port nobody listens on.
func deadURL(tb testing.TB) *url.URL {
	tb.Helper()
	ln := listen(tb)
	addr := ln.Addr().String()
	ln.Close()
	return &url.URL{Scheme: "http", Host: addr}
}

// client returns a cloud proxy client for u with the tenant password.
func client(tb testing.TB, u *url.URL, password string) *cloudproxy.Client {
	tb.Helper()
	c, err := cloudproxy.New(cloudproxy.Config{URL: u, Username: "tenant", Password: password, DialTimeout: 5 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// prober returns a Prober for c (nil for none) and dns.
func prober(c *cloudproxy.Client, dns health.DNSChecker) *health.Prober {
	return health.NewProber(health.ProberConfig{
		Cloud:       func() *cloudproxy.Client { return c },
		ProbeTarget: probeTarget,
		Resolver:    dns,
		Timeout:     3 * time.Second,
	})
}

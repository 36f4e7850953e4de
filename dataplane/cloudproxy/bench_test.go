package cloudproxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy"
)

// startFastProxy runs a loopback CONNECT proxy that answers 200 to every
// request at once and holds the tunnel until the client closes it: it
// costs the client only the dial, the handshake and one round trip.
func startFastProxy(tb testing.TB, tlsConfig *tls.Config) *url.URL {
	tb.Helper()
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	tb.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				if tlsConfig != nil {
					c = tls.Server(c, tlsConfig)
				}
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadSlice('\n')
					if err != nil {
						return
					}
					if len(line) <= 2 {
						break
					}
				}
				io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
				io.Copy(io.Discard, br)
			}()
		}
	}()
	scheme := "http"
	if tlsConfig != nil {
		scheme = "https"
	}
	return &url.URL{Scheme: scheme, Host: ln.Addr().String()}
}

// BenchmarkConnect measures Connect through a loopback CONNECT proxy with
// the warm pool off and on, for an http and an https proxy, with calls
// back to back (serial), 1 ms apart (paced: flows arriving at a steady
// rate, the case the pool is for) and from GOMAXPROCS goroutines
// (parallel: throughput). It reports the p50 and p99 of a Connect call
// and Connects per second.
func BenchmarkConnect(b *testing.B) {
	tlsConf, ca := tlsProxyConfig(b)
	for _, proxy := range []struct {
		name string
		tls  *tls.Config
	}{{"http", nil}, {"https", tlsConf}} {
		u := startFastProxy(b, proxy.tls)
		for _, pool := range []struct {
			name string
			max  int
		}{{"nopool", -1}, {"pool", 0}} {
			for _, mode := range []string{"serial", "paced", "parallel"} {
				b.Run(proxy.name+"/"+pool.name+"/"+mode, func(b *testing.B) {
					c, err := cloudproxy.New(cloudproxy.Config{URL: u, RootCAs: ca.Pool, Username: "tenant", Password: entitlement, PoolMax: pool.max})
					if err != nil {
						b.Fatal(err)
					}
					defer c.Close()
					var mu sync.Mutex
					var lat []time.Duration
					connect := func(samples *[]time.Duration) {
						start := time.Now()
						conn, err := c.Connect(context.Background(), "www.example.com:443", netip.Addr{})
						*samples = append(*samples, time.Since(start))
						if err != nil {
							b.Error(err)
							return
						}
						conn.Close()
					}
					b.ResetTimer()
					began := time.Now()
					switch mode {
					case "serial":
						for b.Loop() {
							connect(&lat)
						}
					case "paced":
						for b.Loop() {
							connect(&lat)
							time.Sleep(time.Millisecond)
						}
					case "parallel":
						b.RunParallel(func(pb *testing.PB) {
							var mine []time.Duration
							for pb.Next() {
								connect(&mine)
							}
							mu.Lock()
							lat = append(lat, mine...)
							mu.Unlock()
						})
					}
					elapsed := time.Since(began)
					b.StopTimer()
					slices.Sort(lat)
					pct := func(p float64) float64 {
						return float64(lat[int(p*float64(len(lat)-1))].Microseconds())
					}
					b.ReportMetric(pct(0.50), "p50-µs")
					b.ReportMetric(pct(0.99), "p99-µs")
					b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "connects/s")
					st := c.Stats()
					if n := st.TakenWarm + st.DialedCold; n > 0 {
						b.ReportMetric(100*float64(st.TakenWarm)/float64(n), "%warm")
						b.ReportMetric(float64(st.RefillDials+st.DialedCold)/float64(len(lat)), "dials/op")
					}
				})
			}
		}
	}
}

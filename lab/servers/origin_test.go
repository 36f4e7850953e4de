package servers

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
	"github.com/cloudsteer/cloudsteer/lab"
)

func TestOrigins(t *testing.T) {
	tl := startTestLab(t)
	for _, site := range lab.Sites {
		for _, a := range []netip.Addr{site.V4, site.V6} {
			for _, proto := range []string{"http", "https"} {
				t.Run(site.Name+"/"+a.String()+"/"+proto, func(t *testing.T) {
					port := uint16(80)
					var c net.Conn = tl.conn(t, a, 80)
					if proto == "https" {
						port = 443
						tc := tls.Client(tl.conn(t, a, port), &tls.Config{ServerName: site.Name, RootCAs: tl.lab.CAPool(), NextProtos: []string{"http/1.1"}})
						if err := tc.Handshake(); err != nil {
							t.Fatalf("tls: %v", err)
						}
						c = tc
					}
					br := bufio.NewReader(c)
					cases := []struct {
						name, req, want string
						status          int
					}{
						{"hello", "GET / HTTP/1.1\r\nHost: " + site.Name + "\r\n\r\n", "hello from " + site.Name + " via " + proto + "\n", 200},
						{"bytes", "GET /bytes?n=100000 HTTP/1.1\r\nHost: x\r\n\r\n", strings.Repeat("x", 100000), 200},
						{"bytes zero", "GET /bytes?n=0 HTTP/1.1\r\nHost: x\r\n\r\n", "", 200},
						{"bytes too many", "GET /bytes?n=" + strconv.FormatInt(MaxBytes+1, 10) + " HTTP/1.1\r\nHost: x\r\n\r\n", "", 400},
						{"echo", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world", "hello world", 200},
						{"not found", "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", "", 404},
					}
					for _, tc := range cases {
						resp, body := roundTrip(t, c, br, tc.req)
						if resp.StatusCode != tc.status || (tc.want != "" && body != tc.want) {
							t.Errorf("%s: %d %.60q", tc.name, resp.StatusCode, body)
						}
					}
					recs, err := ReadOriginLog(tl.path(OriginLogFile))
					if err != nil {
						t.Fatal(err)
					}
					var got []string
					for _, r := range recs {
						if r.Remote == c.LocalAddr().String() {
							got = append(got, r.Method+" "+r.Path+" "+strconv.Itoa(r.Status))
							if r.Proto != proto || r.Site != site.Name || r.Local != netip.AddrPortFrom(a, port).String() {
								t.Errorf("record %+v", r)
							}
							if proto == "https" && r.SNI != site.Name {
								t.Errorf("SNI %q", r.SNI)
							}
						}
					}
					want := "GET / 200|GET /bytes?n=100000 200|GET /bytes?n=0 200|GET /bytes?n=10737418241 400|POST /echo 200|GET /nope 404"
					if strings.Join(got, "|") != want {
						t.Errorf("origin log %q, want %q", strings.Join(got, "|"), want)
					}
				})
			}
		}
	}
}

func TestQUICProbe(t *testing.T) {
	tl := startTestLab(t)
	cases := []struct {
		name    string
		addr    netip.Addr
		sni     string
		verify  bool
		alpn    string
		want    string
		wantErr string
	}{
		{"v4 verified", lab.Sites[0].V4, lab.Sites[0].Name, true, "", "hello from www.example.com via quic", ""},
		{"v6 verified", lab.Sites[3].V6, lab.Sites[3].Name, true, "", "hello from gw1.akaetp.net via quic", ""},
		{"other alpn", lab.Sites[1].V4, lab.Sites[1].Name, true, "h3", "hello from news.example.com via quic", ""},
		{"unverified", lab.Sites[4].V4, "whatever", false, "", "hello from bank.example via quic", ""},
		{"wrong name verified", lab.Sites[4].V4, "nope.example.org", true, "", "", "certificate"},
		{"no route", netip.MustParseAddr("203.0.113.99"), "x", false, "", "", "quic handshake"},
		{"closed port (icmp)", lab.CloudProxyV4, "x", false, "", "", "connection refused"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var pc net.PacketConn
			privtest.InNetNS(t, tl.ns, func() {
				var err error
				if pc, err = net.ListenUDP("udp", nil); err != nil {
					t.Error(err)
				}
			})
			if pc == nil {
				t.FailNow()
			}
			defer pc.Close()
			o := ProbeOptions{Addr: netip.AddrPortFrom(tc.addr, 443).String(), Name: tc.sni, ALPN: tc.alpn, Conn: pc, Line: "probe " + tc.name}
			if tc.verify {
				o.RootCAs = tl.lab.CAPool()
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			got, err := ProbeQUIC(ctx, o)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
			recs, err := ReadOriginLog(tl.path(OriginLogFile))
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, r := range recs {
				found = found || (r.Proto == "quic" && r.Path == o.Line && r.SNI == tc.sni && r.Status == 200 && r.Local == o.Addr)
			}
			if !found {
				t.Errorf("no quic record for %q in %+v", o.Line, recs)
			}
		})
	}
}

// TestOriginEnds checks the origin's end records: bytes written, whether
// the transfer completed, and when it ended, for complete answers, a
// download whose client resets mid-body, and /slow with a client that
// leaves before the head.
func TestOriginEnds(t *testing.T) {
	tl := startTestLab(t)
	site := lab.Sites[1]
	find := func(t *testing.T, local string, path string) OriginRecord {
		t.Helper()
		var rec OriginRecord
		deadline := time.Now().Add(3 * time.Second)
		for {
			recs, err := ReadOriginLog(tl.path(OriginLogFile))
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				if r.Remote == local && r.Path == path {
					rec = r
				}
			}
			if rec.Ended() || time.Now().After(deadline) {
				return rec
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	t.Run("complete", func(t *testing.T) {
		c := tl.conn(t, site.V4, 80)
		br := bufio.NewReader(c)
		for _, tc := range []struct {
			path, want string
			bytes      int64
			minTook    time.Duration
		}{
			{"/bytes?n=100000", strings.Repeat("x", 100000), 100000, 0},
			{"/slow?delay=300ms", "slow hello from news.example.com via http after 300ms\n", 54, 300 * time.Millisecond},
			{"/slow?delay=10ms&n=7", "xxxxxxx", 7, 10 * time.Millisecond},
		} {
			resp, body := roundTrip(t, c, br, "GET "+tc.path+" HTTP/1.1\r\nHost: x\r\n\r\n")
			if resp.StatusCode != 200 || body != tc.want {
				t.Fatalf("%s: %d %.60q", tc.path, resp.StatusCode, body)
			}
			r := find(t, c.LocalAddr().String(), tc.path)
			if !r.Ended() || !r.Complete || r.Err != "" || r.Bytes != tc.bytes || r.Status != 200 || r.End.Sub(r.Time) < tc.minTook {
				t.Errorf("%s: record %+v", tc.path, r)
			}
		}
	})

	t.Run("bad slow", func(t *testing.T) {
		c := tl.conn(t, site.V4, 80)
		for _, q := range []string{"delay=x", "delay=2m", "delay=-1s", "delay=1s&n=-1"} {
			resp, _ := roundTrip(t, c, bufio.NewReader(c), "GET /slow?"+q+" HTTP/1.1\r\nHost: x\r\n\r\n")
			if resp.StatusCode != 400 {
				t.Errorf("/slow?%s: status %d, want 400", q, resp.StatusCode)
			}
		}
	})

	t.Run("client resets mid-body", func(t *testing.T) {
		c := tl.conn(t, site.V4, 80)
		const path = "/bytes?n=10000000000"
		if _, err := c.Write([]byte("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 1<<20)); err != nil {
			t.Fatal(err)
		}
		if r := find(t, c.LocalAddr().String(), path); r.Ended() {
			t.Fatalf("record ended while the client reads: %+v", r)
		}
		c.(*net.TCPConn).SetLinger(0)
		local := c.LocalAddr().String()
		c.Close()
		gone := time.Now()
		r := find(t, local, path)
		if !r.Ended() || r.Complete || r.Err == "" || r.Status != 200 || r.Bytes < 1<<20 || r.Bytes >= 10000000000 {
			t.Fatalf("record %+v: want an early end after at least 1 MiB", r)
		}
		if d := r.End.Sub(gone); d > time.Second {
			t.Errorf("end recorded %s after the reset, want within 1s", d)
		}
	})

	t.Run("client leaves before the head", func(t *testing.T) {
		c := tl.conn(t, site.V6, 80)
		const path = "/slow?delay=20s"
		if _, err := c.Write([]byte("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		local := c.LocalAddr().String()
		c.Close()
		gone := time.Now()
		r := find(t, local, path)
		if !r.Ended() || r.Complete || !strings.Contains(r.Err, "client gone while waiting") || r.Status != 0 || r.Bytes != 0 {
			t.Fatalf("record %+v: want an end without a head", r)
		}
		if d := r.End.Sub(gone); d > time.Second {
			t.Errorf("end recorded %s after the client left, want within 1s", d)
		}
	})
}

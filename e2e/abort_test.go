package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/gateway"
	"github.com/cloudsteer/cloudsteer/lab/servers"
)

// Issue 9, section 1: a client that goes away leaves nothing running. Each
// subtest makes one kind of flow through cloudsteer (Squid as the cloud
// proxy, the gateway a NAT office router or a plain router), ends the
// client's side mid-way and checks from the origin's side (its transfer ended early, soon after
// the client left), from the cloud proxy's side (Squid logged the
// transaction with far fewer bytes than the file, and no connection from
// the gateway that carried it is left) and on the gateway's WAN interface
// (nothing more is received).

const (
	// abortSize is the size of the downloads the clients abort: far more
	// than the lab can move while a subtest runs.
	abortSize = 10_000_000_000
	// abortBound is how soon after the client left the upstream side must
	// be seen closed. The requirement is 100 ms; the assertion allows 1 s
	// for the hops in between (Squid, the origin's logging) on a loaded
	// machine, and each subtest logs what it measured.
	abortBound = time.Second
	// wanQuiet is the most the gateway's WAN interface may receive in the
	// second after abortBound (health probes and warm connections to the
	// cloud proxy are a few kB; a download left running moves ~100 MB/s).
	wanQuiet = 2 << 20
)

// abortEnv is the lab of the abort tests: Squid as the cloud proxy behind a
// NAT gateway, or a routing one.
type abortEnv struct {
	*env
	n int // gateways started, for their names
}

// gateway starts a fresh cloudsteer for one subtest (its own name and
// state: a download a defect leaves running dies with it, and nothing one
// subtest learned steers the next) and stops it when the subtest ends.
func (a *abortEnv) gateway(t *testing.T) *gateway.Gateway {
	t.Helper()
	a.n++
	return a.gatewayFor(t, gateway.Options{
		Name:     fmt.Sprintf("abort%d", a.n),
		ProxyURL: fmt.Sprintf("http://%s:%d", lab.SquidV4, lab.SquidPort),
		Username: lab.EntitlementCode, Password: lab.SquidCodePassword,
		BypassDomains: []string{"bank.example"},
	})
}

// squidConn is one TCP connection of Squid's port as `ss` shows it in the
// internet namespace.
type squidConn struct {
	state, peer    string
	sent, received int64
}

// squidConns lists Squid's connections from the gateway that are still
// open on Squid's side (established, or closed by the gateway but not yet
// by Squid).
func (e *env) squidConns(t *testing.T) []squidConn {
	t.Helper()
	out, err := e.run(lab.RoleInet, 5*time.Second, "ss", "-tinH", "state", "established", "state", "close-wait",
		fmt.Sprintf("( sport = :%d )", lab.SquidPort))
	if err != nil {
		t.Fatal(err)
	}
	return parseSS(out, fmt.Sprintf(":%d", lab.SquidPort))
}

// parseSS parses `ss -tinH` output: a line per socket (state, queues,
// local and peer address) followed by indented TCP info lines.
func parseSS(out, localSuffix string) []squidConn {
	var conns []squidConn
	for _, line := range strings.Split(out, "\n") {
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		if line[0] != ' ' && line[0] != '\t' {
			c := squidConn{}
			if len(f) > 0 {
				c.state = f[0]
			}
			for i, x := range f {
				if strings.HasSuffix(x, localSuffix) && i+1 < len(f) {
					c.peer = f[i+1]
					break
				}
			}
			conns = append(conns, c)
			continue
		}
		if len(conns) == 0 {
			continue
		}
		c := &conns[len(conns)-1]
		for _, x := range f {
			if v, ok := strings.CutPrefix(x, "bytes_sent:"); ok {
				c.sent, _ = strconv.ParseInt(v, 10, 64)
			} else if v, ok := strings.CutPrefix(x, "bytes_received:"); ok {
				c.received, _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	return conns
}

// bigSquidConns returns Squid's open connections that sent more than min
// bytes: the ones that carried a download.
func (e *env) bigSquidConns(t *testing.T, min int64) []squidConn {
	var big []squidConn
	for _, c := range e.squidConns(t) {
		if c.sent > min {
			big = append(big, c)
		}
	}
	return big
}

// wanRx returns the bytes the gateway's WAN interface has received.
func (e *env) wanRx(t *testing.T) int64 {
	t.Helper()
	out, err := e.run(lab.RoleGW, 5*time.Second, "cat", "/sys/class/net/"+lab.GWWANIf+"/statistics/rx_bytes")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if err != nil {
		t.Fatalf("rx_bytes %q: %v", out, err)
	}
	return n
}

// abortCheck says what to verify after a client left at time left.
type abortCheck struct {
	tag  string // the case=TAG in the origin's request path
	left time.Time
	// squid: how to find Squid's record of the flow; nil when the flow
	// does not go through the cloud proxy (a bypass splice).
	squid func(lab.SquidRecord) bool
	// big: Squid's connection to the gateway that carried the flow had
	// sent more than this many bytes (0: do not look for it, as for a
	// request still waiting for its head).
	big int64
	// headless: the origin had not answered yet when the client left.
	headless bool
	// got is what the client had received when it left (0: unknown). The
	// origin and Squid may then have sent at most abortSlack more.
	got int64
}

// abortSlack bounds what the hops may have sent beyond what the client
// received before it left: the socket buffers and the proxies' copy
// buffers between origin and client (a few MB each).
const abortSlack = 64 << 20

// tooMany says whether sent bytes are more than an aborted download of c
// explains: beyond what the client got plus abortSlack when that is known
// (a fast lab moves more than a GB before curl's 2 s are up), else a
// tenth of the file.
func (c abortCheck) tooMany(sent int64) bool {
	if c.got > 0 {
		return sent > c.got+abortSlack
	}
	return sent >= abortSize/10
}

// checkStopped asserts that everything upstream of the client stopped
// within abortBound of c.left.
func (a *abortEnv) checkStopped(t *testing.T, start time.Time, c abortCheck) {
	t.Helper()
	// The origin's side: its transfer (or its wait for the head) ended
	// early, soon after the client left.
	var rec servers.OriginRecord
	eventually(c.left.Add(abortBound+2*time.Second).Sub(time.Now()), func() bool {
		for _, r := range a.originLog(start.Add(-time.Second)) {
			if strings.HasSuffix(r.Path, "case="+c.tag) {
				rec = r
			}
		}
		return rec.Ended()
	})
	switch {
	case rec.Path == "" && c.headless:
		// A request waiting for its head is logged when it ends.
		t.Errorf("origin: the request with case=%s is still waiting for its head %s after the client left", c.tag, time.Since(c.left).Round(time.Millisecond))
	case rec.Path == "":
		t.Errorf("origin: no request with case=%s arrived", c.tag)
	case !rec.Ended():
		t.Errorf("origin: still sending %s after the client left (request %s)", time.Since(c.left).Round(time.Millisecond), rec.Path)
	case rec.Complete:
		t.Errorf("origin: the transfer completed (%d bytes), want an early end: %+v", rec.Bytes, rec)
	case rec.End.Sub(c.left) > abortBound:
		t.Errorf("origin: transfer ended %s after the client left, want within %s (requirement: 100ms)", rec.End.Sub(c.left), abortBound)
	default:
		t.Logf("origin: transfer ended %s after the client left, %d bytes written, the client got %d (%s)", rec.End.Sub(c.left).Round(time.Millisecond), rec.Bytes, c.got, rec.Err)
	}
	if rec.Ended() && c.headless && (rec.Status != 0 || !strings.Contains(rec.Err, "waiting for the head")) {
		t.Errorf("origin: %+v: want the wait for the head ended", rec)
	}
	// What the origin wrote is cloudsteer's doing only where cloudsteer is
	// the origin's peer (a bypass splice). Through Squid, the origin keeps
	// writing into Squid until Squid notices its client (cloudsteer) left:
	// measured up to 80 MB in Squid's own 58 ms there. cloudsteer's share
	// is what Squid sent, checked below, and the end time above.
	if !c.headless && c.squid == nil && c.tooMany(rec.Bytes) {
		t.Errorf("origin: wrote %d bytes of %d, the client got %d: far too many for an aborted download", rec.Bytes, int64(abortSize), c.got)
	}

	// The cloud proxy's side: Squid logs a transaction when it ends.
	if c.squid != nil {
		var sr *lab.SquidRecord
		eventually(c.left.Add(abortBound+2*time.Second).Sub(time.Now()), func() bool {
			recs, err := a.lab.SquidLog()
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				if !r.Start().Before(start.Add(-time.Second)) && c.squid(r) {
					sr = &r
					return true
				}
			}
			return false
		})
		switch {
		case sr == nil:
			t.Errorf("squid: the transaction has not ended %s after the client left", time.Since(c.left).Round(time.Millisecond))
		case c.tooMany(sr.Bytes):
			t.Errorf("squid: sent %d bytes of %d, the client got %d", sr.Bytes, int64(abortSize), c.got)
		case sr.Time.Sub(c.left) > abortBound+time.Millisecond: // Squid logs milliseconds
			t.Errorf("squid: transaction ended %s after the client left, want within %s", sr.Time.Sub(c.left), abortBound)
		default:
			t.Logf("squid: %s %s ended %s after the client left, %d bytes sent", sr.Method, sr.URL, sr.Time.Sub(c.left).Round(time.Millisecond), sr.Bytes)
		}
		if c.big > 0 {
			time.Sleep(time.Until(c.left.Add(abortBound)))
			if big := a.bigSquidConns(t, c.big); len(big) > 0 {
				t.Errorf("squid: %s after the client left, its connection from the gateway is still open: %+v", abortBound, big)
			}
		}
	}

	// The gateway's WAN side: nothing more arrives for the flow.
	time.Sleep(time.Until(c.left.Add(abortBound)))
	r0 := a.wanRx(t)
	time.Sleep(time.Second)
	if grown := a.wanRx(t) - r0; grown > wanQuiet {
		t.Errorf("gateway WAN received %d bytes in the second after %s past the abort: the download goes on", grown, abortBound)
	} else {
		t.Logf("gateway WAN received %d bytes in the second after %s past the abort", grown, abortBound)
	}
}

// curlAbort runs curl on the LAN client with --max-time 2 against a large
// download and returns when it gave up and how many bytes it had.
func (a *abortEnv) curlAbort(t *testing.T, url, name, addr string) (time.Time, int64) {
	t.Helper()
	out, err := a.curl(url, name, addr, "-o", "/dev/null", "-w", "%{size_download}", "--max-time", "2")
	if err == nil || !strings.Contains(err.Error(), "exit status 28") {
		t.Fatalf("curl: %q, %v: want it to give up after 2s (exit 28)", out, err)
	}
	left := time.Now()
	n, _ := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if n < 1<<20 {
		t.Fatalf("curl got %s bytes before giving up: the download did not run", out)
	}
	return left, n
}

// rawGet opens a connection from the LAN client to addr:80 and sends GET
// path with Host name.
func (a *abortEnv) rawGet(t *testing.T, c net.Conn, name, path string) {
	t.Helper()
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: abort-test\r\n\r\n", path, name); err != nil {
		t.Fatal(err)
	}
}

func (a *abortEnv) dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := a.lab.DialContext(ctx, lab.RoleLAN, "tcp", net.JoinHostPort(addr, "80"))
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// readHeadAnd reads a response head and then n body bytes from br.
func readHeadAnd(t *testing.T, br *bufio.Reader, n int64) *http.Response {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if _, err := io.CopyN(io.Discard, resp.Body, n); err != nil {
		t.Fatalf("read %d body bytes: %v", n, err)
	}
	return resp
}

// TestAbort runs behind the NAT gateway the issue was found with and,
// as cheaply, behind one that routes the LAN's addresses; each case but
// the warm pool's over IPv4 and IPv6.
func TestAbort(t *testing.T) {
	eachNAT(t, testAbort)
}

func testAbort(t *testing.T, nat bool) {
	a := &abortEnv{env: newLabEnv(t, lab.Options{Squid: true, Firewall: firewallFor(nat)})}
	news := site(t, "news.example.com")
	big := fmt.Sprintf("/bytes?n=%d", int64(abortSize))
	httpURL := func(tag string) string { return "http://news.example.com" + big + "&case=" + tag }
	squidGET := func(tag string) func(lab.SquidRecord) bool {
		return func(r lab.SquidRecord) bool { return r.Method == "GET" && strings.HasSuffix(r.URL, "case="+tag) }
	}
	squidCONNECT := func(target string) func(lab.SquidRecord) bool {
		return func(r lab.SquidRecord) bool { return r.Method == "CONNECT" && r.URL == target && r.Bytes > 1<<20 }
	}

	// Each case over IPv4 and IPv6: the LAN client's flow (Squid, the
	// cloud proxy, is reached over IPv4 either way). The warm pool's cases
	// below are IPv4 only: the pool is the gateway's connections to the
	// cloud proxy, the same whatever the client's family.
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			t.Run("http download/curl max-time", func(t *testing.T) {
				a.gateway(t)
				start := time.Now()
				left, got := a.curlAbort(t, httpURL("http-curl-"+fam.name), "news.example.com", fam.dst(news))
				a.checkStopped(t, start, abortCheck{tag: "http-curl-" + fam.name, left: left, got: got, squid: squidGET("http-curl-" + fam.name), big: 8 << 20})
			})

			t.Run("http download/client resets", func(t *testing.T) {
				a.gateway(t)
				start := time.Now()
				c := a.dial(t, fam.dst(news))
				a.rawGet(t, c, "news.example.com", big+"&case=http-reset-"+fam.name)
				readHeadAnd(t, bufio.NewReader(c), 16<<20)
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
				left := time.Now()
				a.checkStopped(t, start, abortCheck{tag: "http-reset-" + fam.name, left: left, squid: squidGET("http-reset-" + fam.name), big: 8 << 20})
			})

			t.Run("http request waiting for its head", func(t *testing.T) {
				a.gateway(t)
				start := time.Now()
				c := a.dial(t, fam.dst(news))
				a.rawGet(t, c, "news.example.com", "/slow?delay=8s&case=http-slow-"+fam.name)
				time.Sleep(1500 * time.Millisecond) // the request waits at the origin
				c.Close()
				left := time.Now()
				a.checkStopped(t, start, abortCheck{tag: "http-slow-" + fam.name, left: left, squid: squidGET("http-slow-" + fam.name), headless: true})
			})

			t.Run("keep-alive/idle client leaves", func(t *testing.T) {
				a.gateway(t)
				c := a.dial(t, fam.dst(news))
				br := bufio.NewReader(c)
				const size = 5_000_000
				a.rawGet(t, c, "news.example.com", fmt.Sprintf("/bytes?n=%d&case=ka-idle-"+fam.name, size))
				resp := readHeadAnd(t, br, size)
				resp.Body.Close()
				var open []squidConn
				if !eventually(2*time.Second, func() bool { open = a.bigSquidConns(t, size-1); return len(open) == 1 }) {
					t.Fatalf("squid connections that sent the %d bytes: %+v, want one (kept alive)", size, open)
				}
				time.Sleep(500 * time.Millisecond) // idle between requests
				c.Close()
				left := time.Now()
				var still []squidConn
				if eventually(abortBound, func() bool { still = a.bigSquidConns(t, size-1); return len(still) == 0 }) {
					t.Logf("squid: the kept-alive connection from the gateway closed within %s", time.Since(left).Round(10*time.Millisecond))
				} else {
					t.Errorf("squid: %s after the idle client left, its kept-alive connection from the gateway is still open: %+v", abortBound, still)
				}
			})

			t.Run("keep-alive/client leaves mid-body of its second request", func(t *testing.T) {
				a.gateway(t)
				start := time.Now()
				c := a.dial(t, fam.dst(news))
				br := bufio.NewReader(c)
				a.rawGet(t, c, "news.example.com", "/bytes?n=1000&case=ka-first-"+fam.name)
				resp := readHeadAnd(t, br, 1000)
				resp.Body.Close()
				a.rawGet(t, c, "news.example.com", big+"&case=ka-second-"+fam.name)
				readHeadAnd(t, br, 16<<20)
				c.Close() // unread data: the kernel resets the connection
				left := time.Now()
				a.checkStopped(t, start, abortCheck{tag: "ka-second-" + fam.name, left: left, squid: squidGET("ka-second-" + fam.name), big: 8 << 20})
			})

			t.Run("https tunnel download", func(t *testing.T) {
				a.gateway(t)
				start := time.Now()
				left, got := a.curlAbort(t, "https://news.example.com"+big+"&case=https-tunnel-"+fam.name, "news.example.com", fam.dst(news))
				a.checkStopped(t, start, abortCheck{tag: "https-tunnel-" + fam.name, left: left, got: got, squid: squidCONNECT("news.example.com:443"), big: 8 << 20})
			})

			// Bypass splices: the gateway dials the origin itself, the cloud proxy
			// is not involved. A fresh gateway has learned no address yet, so the
			// flow reaches the proxy, which splices it to the name's address
			// of the client's family: the origin sees the gateway's WAN
			// address of that family.
			spliced := func(t *testing.T, start time.Time, bypassed0 float64, name, tag string) {
				t.Helper()
				var remote string
				for _, r := range a.originLog(start.Add(-time.Second)) {
					if strings.HasSuffix(r.Path, "case="+tag) {
						remote = hostOf(r.Remote)
					}
				}
				if remote != fam.gwWAN() {
					t.Errorf("origin saw the spliced %s flow from %q, want the gateway's %s WAN address %s", fam.name, remote, fam.name, fam.gwWAN())
				}
				if got := a.metric(t, `cloudsteer_proxy_requests_total{outcome="bypassed"}`) - bypassed0; got != 1 {
					t.Errorf("proxy bypassed %v flows, want 1 (the splice)", got)
				}
				recs, err := a.lab.SquidLog()
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range recs {
					if !r.Start().Before(start.Truncate(time.Second)) && strings.Contains(r.URL, name) {
						t.Errorf("squid saw the bypassed flow: %+v", r)
					}
				}
			}
			t.Run("bypass splice/tls", func(t *testing.T) {
				a.gateway(t)
				gw1 := site(t, "gw1.akaetp.net")
				bypassed0 := a.metric(t, `cloudsteer_proxy_requests_total{outcome="bypassed"}`)
				start := time.Now()
				left, got := a.curlAbort(t, "https://gw1.akaetp.net"+big+"&case=splice-tls-"+fam.name, "gw1.akaetp.net", fam.dst(gw1))
				a.checkStopped(t, start, abortCheck{tag: "splice-tls-" + fam.name, left: left, got: got})
				spliced(t, start, bypassed0, "gw1.akaetp.net", "splice-tls-"+fam.name)
			})
			t.Run("bypass splice/http", func(t *testing.T) {
				a.gateway(t)
				bank := site(t, "bank.example")
				bypassed0 := a.metric(t, `cloudsteer_proxy_requests_total{outcome="bypassed"}`)
				start := time.Now()
				left, got := a.curlAbort(t, "http://bank.example"+big+"&case=splice-http-"+fam.name, "bank.example", fam.dst(bank))
				a.checkStopped(t, start, abortCheck{tag: "splice-http-" + fam.name, left: left, got: got})
				spliced(t, start, bypassed0, "bank.example", "splice-http-"+fam.name)
			})
		})
	}

	// A flow that took a warm connection from the pool: a burst of
	// requests makes the pool fill, the download takes one of them.
	warm := func(t *testing.T, url, tag string, squid func(lab.SquidRecord) bool) {
		a.gateway(t)
		for i := range 4 {
			if _, err := a.curl(fmt.Sprintf("http://news.example.com/?case=warm-prime-%d", i), "news.example.com", news.V4.String()); err != nil {
				t.Fatal(err)
			}
		}
		if !eventually(2*time.Second, func() bool { return a.metric(t, "cloudsteer_cloud_proxy_warm_idle") > 0 }) {
			t.Fatal("the warm pool did not fill")
		}
		warm0 := a.metric(t, `cloudsteer_cloud_proxy_connections_total{how="warm"}`)
		start := time.Now()
		left, got := a.curlAbort(t, url+"&case="+tag, "news.example.com", news.V4.String())
		if got := a.metric(t, `cloudsteer_cloud_proxy_connections_total{how="warm"}`) - warm0; got < 1 {
			t.Fatalf("the download took no warm connection (%v)", got)
		}
		a.checkStopped(t, start, abortCheck{tag: tag, left: left, got: got, squid: squid, big: 8 << 20})
	}
	t.Run("warm pool connection/http", func(t *testing.T) {
		warm(t, "http://news.example.com"+big, "warm-http", squidGET("warm-http"))
	})
	t.Run("warm pool connection/https", func(t *testing.T) {
		warm(t, "https://news.example.com"+big, "warm-https", squidCONNECT("news.example.com:443"))
	})
}

package servers

import (
	"bufio"
	"context"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
	"github.com/cloudsteer/cloudsteer/lab"
)

// testLab is a running set of lab servers inside a namespace of its own,
// where every lab service address is on lo.
type testLab struct {
	ns   string
	dir  string
	lab  *Lab
	dial DialFunc
}

// nsDialer dials from inside namespace ns.
func nsDialer(ns string) DialFunc {
	return func(ctx context.Context, network string, local netip.Addr, addr string) (net.Conn, error) {
		var c net.Conn
		err := privtest.Do(ns, func() error {
			var err error
			c, err = Dial(ctx, network, local, addr)
			return err
		})
		return c, err
	}
}

func startTestLab(tb testing.TB) *testLab {
	tb.Helper()
	privtest.RequireRoot(tb)
	ns := privtest.NewNetNS(tb)
	cfg := Config{Dir: tb.TempDir(), Dial: nsDialer(ns)}
	for _, a := range cfg.Addrs() {
		if a.Is4() {
			privtest.Run(tb, ns, "ip", "addr", "add", netip.PrefixFrom(a, 32).String(), "dev", "lo")
		} else {
			privtest.Run(tb, ns, "ip", "addr", "add", netip.PrefixFrom(a, 128).String(), "dev", "lo", "nodad")
		}
	}
	var l *Lab
	err := privtest.Do(ns, func() error {
		var err error
		l, err = Start(context.Background(), cfg)
		return err
	})
	if err != nil {
		tb.Fatalf("start lab servers: %v", err)
	}
	tb.Cleanup(func() {
		if err := l.Close(); err != nil {
			tb.Errorf("close lab servers: %v", err)
		}
	})
	return &testLab{ns: ns, dir: cfg.Dir, lab: l, dial: cfg.Dial}
}

func (tl *testLab) path(name string) string { return filepath.Join(tl.dir, name) }

// conn opens a TCP connection from inside the lab namespace.
func (tl *testLab) conn(tb testing.TB, addr netip.Addr, port uint16) net.Conn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := tl.dial(ctx, "tcp", netip.Addr{}, netip.AddrPortFrom(addr, port).String())
	if err != nil {
		tb.Fatalf("dial %s: %v", addr, err)
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	tb.Cleanup(func() { c.Close() })
	return c
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

var codeAuth = basic(lab.EntitlementCode, "")

// roundTrip writes one raw request head (plus body) and reads the response.
func roundTrip(tb testing.TB, c net.Conn, br *bufio.Reader, head string) (*http.Response, string) {
	tb.Helper()
	if _, err := c.Write([]byte(head)); err != nil {
		tb.Fatalf("write request: %v", err)
	}
	req := &http.Request{Method: strings.Fields(head)[0]}
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		tb.Fatalf("read response to %q: %v", strings.SplitN(head, "\r\n", 2)[0], err)
	}
	if req.Method == http.MethodConnect && resp.StatusCode == http.StatusOK {
		return resp, ""
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("read body: %v", err)
	}
	return resp, string(body)
}

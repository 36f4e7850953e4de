package cloudproxy_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy"
	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy/cloudproxytest"
	"github.com/cloudsteer/cloudsteer/dataplane/upstream"
)

const recover = 400 * time.Millisecond

// failoverEnv is a primary and a backup proxy in front of an echo origin
// and a Client over both.
type failoverEnv struct {
	echo            string
	primary, backup *cloudproxytest.Proxy
	c               *cloudproxy.Client

	mu       sync.Mutex
	switches []cloudproxy.Switch
}

func newFailover(t *testing.T, primaryAuth string) *failoverEnv {
	t.Helper()
	e := &failoverEnv{echo: startEcho(t)}
	dial := func(string) string { return e.echo }
	e.primary = cloudproxytest.Start(t, cloudproxytest.Options{Auth: primaryAuth, Dial: dial})
	e.backup = cloudproxytest.Start(t, cloudproxytest.Options{Auth: goodAuth, Dial: dial})
	c, err := cloudproxy.New(cloudproxy.Config{
		URL: e.primary.URL, Backups: []*url.URL{e.backup.URL}, Username: "tenant", Password: entitlement,
		DialTimeout: 3 * time.Second,
		Health: &cloudproxy.HealthConfig{
			ProbeTarget: "origin.test:443", ProbeInterval: 50 * time.Millisecond, ProbeTimeout: 200 * time.Millisecond,
			Params: upstream.Params{RecoverAfter: recover},
			OnSwitch: func(sw cloudproxy.Switch) {
				e.mu.Lock()
				e.switches = append(e.switches, sw)
				e.mu.Unlock()
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	e.c = c
	return e
}

func (e *failoverEnv) switched() []cloudproxy.Switch {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]cloudproxy.Switch(nil), e.switches...)
}

// tunnel opens a tunnel and checks it echoes.
func (e *failoverEnv) tunnel(t *testing.T) net.Conn {
	t.Helper()
	conn, err := e.c.Connect(context.Background(), "origin.test:443", netip.MustParseAddr("192.0.2.7"))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	conn.Write([]byte("ping"))
	buf := make([]byte, 4)
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("tunnel echo %q, %v", buf, err)
	}
	conn.SetReadDeadline(time.Time{})
	return conn
}

func tunnelsFrom(p *cloudproxytest.Proxy) int {
	n := 0
	for _, r := range p.Records() {
		if r.Method == "CONNECT" && r.XFF == "192.0.2.7" {
			n++
		}
	}
	return n
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFailoverPrimaryDiesFlowsMoveAndComeBack(t *testing.T) {
	e := newFailover(t, goodAuth)
	e.tunnel(t).Close()
	if tunnelsFrom(e.primary) != 1 || tunnelsFrom(e.backup) != 0 {
		t.Fatalf("first tunnel: primary %d, backup %d; want the primary", tunnelsFrom(e.primary), tunnelsFrom(e.backup))
	}
	addr := e.primary.URL.Host
	e.primary.Close()
	// The next flow fails on the primary and is carried by the backup in
	// the same call: the client sees no failure.
	e.tunnel(t).Close()
	if tunnelsFrom(e.backup) != 1 {
		t.Fatalf("the flow after the primary died did not go to the backup")
	}
	waitFor(t, 2*time.Second, "primary down", func() bool { return !e.c.States()[0].Up })
	st := e.c.States()
	if !st[1].Active || st[0].Active || e.c.String() != e.backup.URL.String() {
		t.Fatalf("states after the primary died: %+v, String %s", st, e.c.String())
	}
	if sw := e.switched(); len(sw) != 1 || sw[0].From != e.primary.URL.String() || sw[0].To != e.backup.URL.String() || sw[0].Cause == nil {
		t.Fatalf("switches: %+v", sw)
	}
	// Back: a new proxy on the primary's address; new flows go there
	// after it passed every probe for RecoverAfter, not before.
	restarted := time.Now()
	p2 := cloudproxytest.Start(t, cloudproxytest.Options{Auth: goodAuth, Dial: func(string) string { return e.echo }, Addr: addr})
	waitFor(t, 5*time.Second, "back on the primary", func() bool { return e.c.States()[0].Active })
	if took := time.Since(restarted); took < recover {
		t.Fatalf("back on the primary after %s; want at least RecoverAfter %s", took, recover)
	}
	e.tunnel(t).Close()
	if tunnelsFrom(p2) != 1 {
		t.Fatal("a flow after the recovery did not go to the primary")
	}
	if sw := e.switched(); len(sw) != 2 || sw[1].To != e.primary.URL.String() || sw[1].Cause != nil {
		t.Fatalf("switches after the recovery: %+v", sw)
	}
	if e.c.Switches() != 2 {
		t.Fatalf("Switches() = %d", e.c.Switches())
	}
}

func TestFailoverPrimaryRefusesCredentials(t *testing.T) {
	e := newFailover(t, "Basic c29tZW9uZS1lbHNl") // the primary wants other credentials: 407
	for range 3 {
		e.tunnel(t).Close() // each one succeeds, through the backup
	}
	if tunnelsFrom(e.backup) != 3 {
		t.Fatalf("backup carried %d of 3", tunnelsFrom(e.backup))
	}
	waitFor(t, 2*time.Second, "primary down for its 407s", func() bool { return !e.c.States()[0].Up })
	if st := e.c.States()[0]; st.LastErr == "" {
		t.Fatalf("primary state %+v: want the 407 as its error", st)
	}
}

func TestFailoverAllDownIsUnavailable(t *testing.T) {
	e := newFailover(t, goodAuth)
	e.primary.Close()
	e.backup.Close()
	waitFor(t, 3*time.Second, "both down", e.c.Unavailable)
	_, err := e.c.Connect(context.Background(), "origin.test:443", netip.Addr{})
	if !errors.Is(err, cloudproxy.ErrUnavailable) {
		t.Fatalf("connect with every proxy down: %v, want ErrUnavailable", err)
	}
	if _, err := e.c.DialProxy(context.Background()); !errors.Is(err, cloudproxy.ErrUnavailable) {
		t.Fatalf("dial proxy with every proxy down: %v, want ErrUnavailable", err)
	}
	sw := e.switched()
	if len(sw) == 0 || sw[len(sw)-1].To != "" {
		t.Fatalf("switches: %+v, want the last to none", sw)
	}
}

// A tunnel through a proxy that goes down is cut (its reader sees the
// end) instead of hanging until the idle timeout.
func TestFailoverCutsTunnelsOfADeadProxy(t *testing.T) {
	e := newFailover(t, goodAuth)
	conn := e.tunnel(t)
	defer conn.Close()
	e.primary.Close() // probes fail: the primary goes down; the tunnel itself still works
	done := make(chan error, 1)
	go func() {
		_, err := conn.Read(make([]byte, 1))
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("read a byte from a cut tunnel")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the tunnel through the dead proxy was not cut within 3 s")
	}
	if e.c.States()[0].Up {
		t.Fatal("primary still up")
	}
}

// A 403 is an answer: it proves the proxy works and is not retried on
// the backup.
func TestFailoverBlockIsNotAFailure(t *testing.T) {
	e := &failoverEnv{echo: startEcho(t)}
	block := map[string]string{"blocked.test": "Sports"}
	e.primary = cloudproxytest.Start(t, cloudproxytest.Options{Auth: goodAuth, Block: block})
	e.backup = cloudproxytest.Start(t, cloudproxytest.Options{Auth: goodAuth, Block: block})
	c, err := cloudproxy.New(cloudproxy.Config{URL: e.primary.URL, Backups: []*url.URL{e.backup.URL}, Username: "tenant", Password: entitlement,
		Health: &cloudproxy.HealthConfig{ProbeTarget: "blocked.test:443", ProbeInterval: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 3 {
		_, err := c.Connect(context.Background(), "blocked.test:443", netip.MustParseAddr("192.0.2.7"))
		var re *cloudproxy.RefusedError
		if !errors.As(err, &re) || re.StatusCode != 403 {
			t.Fatalf("blocked connect: %v", err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if !c.States()[0].Up || tunnelsFrom(e.backup) != 0 || tunnelsFrom(e.primary) != 3 {
		t.Fatalf("403s took the primary down or went to the backup: %+v, backup saw %d", c.States(), tunnelsFrom(e.backup))
	}
}

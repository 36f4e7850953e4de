package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/gateway"
)

// Issue 9, section 4: one client cannot starve the others.

// floodLimits are the gateway's limits in the flood test (the keys of
// issue 9; the values are the suggestion for a small office).
const floodLimits = `limits:
  flows: 2000
  flows_per_client: 256
  new_flows_per_second_per_client: 200
  dns_tcp_per_client: 16
  dns_queries_per_second_per_client: 200
`

// floodNoLimits, set to 1 in the environment, runs TestFlood without the
// limits block: to see the starvation the limits prevent (the victim's
// checks then fail).
const floodNoLimits = "CLOUDSTEER_FLOOD_NO_LIMITS"

// flood is a running `cloudsteer-lab flood` on one LAN host.
type flood struct {
	mu     sync.Mutex
	last   lab.FloodStats
	stderr bytes.Buffer
	done   chan struct{}
}

func (f *flood) stats() lab.FloodStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

// startFlood runs the flooder in the namespace of role until the test
// ends (SIGTERM, then its last stats are logged).
func (e *env) startFlood(t *testing.T, role string, args ...string) *flood {
	t.Helper()
	f := &flood{done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := e.lab.Command(ctx, role, append([]string{bins.lab, "flood"}, args...)...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = &f.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(f.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var s lab.FloodStats
			if json.Unmarshal(sc.Bytes(), &s) == nil {
				f.mu.Lock()
				f.last = s
				f.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		err := cmd.Wait()
		<-f.done
		t.Logf("flooder stopped (%v): %+v %s", err, f.stats(), strings.TrimSpace(f.stderr.String()))
	})
	return f
}

// victimCheck is one thing the second LAN host does while the first floods.
type victimCheck struct {
	what string
	run  func(round int) error
}

func TestFlood(t *testing.T) {
	e := newLabEnv(t, lab.Options{Squid: true, LAN2: true})
	limits := os.Getenv(floodNoLimits) != "1"
	extra := floodLimits
	if !limits {
		extra = ""
		t.Logf("%s=1: no limits in the gateway config; the victim is expected to starve", floodNoLimits)
	}
	e.gatewayFor(t, gateway.Options{
		ProxyURL: fmt.Sprintf("http://%s:%d", lab.SquidV4, lab.SquidPort),
		Username: lab.EntitlementCode, Password: lab.SquidCodePassword,
		Extra: extra,
	})
	www, news := site(t, "www.example.com"), site(t, "news.example.com")
	resolver := lab.NobodyDNSV4.String() // LAN DNS to any address is cloudsteer's

	const victimTimeout = 5 // seconds, for each of the victim's checks
	maxTime := fmt.Sprint(victimTimeout)
	checks := []victimCheck{
		{"https", func(round int) error {
			body, err := e.curlFrom(lab.RoleLAN2, fmt.Sprintf("https://www.example.com/?case=victim-https-%d", round), "www.example.com", www.V4.String(), "--max-time", maxTime)
			if err == nil && !strings.Contains(body, "hello from www.example.com via https") {
				err = fmt.Errorf("body %q", body)
			}
			return err
		}},
		{"http", func(round int) error {
			body, err := e.curlFrom(lab.RoleLAN2, fmt.Sprintf("http://news.example.com/?case=victim-http-%d", round), "news.example.com", news.V4.String(), "--max-time", maxTime)
			if err == nil && !strings.Contains(body, "hello from news.example.com via http") {
				err = fmt.Errorf("body %q", body)
			}
			return err
		}},
		{"dns", func(round int) error {
			// A name the gateway may have cached, and one it cannot have.
			out, err := e.run(lab.RoleLAN2, 2*victimTimeout*time.Second, "dig", "+short", "+time="+maxTime, "+tries=1", "@"+resolver, "www.example.com", "A")
			if err == nil && strings.TrimSpace(out) != www.V4.String() {
				err = fmt.Errorf("answer %q", out)
			}
			if err != nil {
				return fmt.Errorf("www.example.com A: %w", err)
			}
			out, err = e.run(lab.RoleLAN2, 2*victimTimeout*time.Second, "dig", "+time="+maxTime, "+tries=1", "@"+resolver, fmt.Sprintf("victim-%d-%d.example.com", round, time.Now().UnixNano()), "A")
			if err == nil && !strings.Contains(out, "status: NXDOMAIN") && !strings.Contains(out, "status: NOERROR") {
				err = fmt.Errorf("answer %q", out)
			}
			if err != nil {
				return fmt.Errorf("uncached name: %w", err)
			}
			return nil
		}},
	}
	passed := map[string][]int{} // check → rounds it passed
	victim := func(t *testing.T, round int) {
		t.Helper()
		for _, c := range checks {
			start := time.Now()
			err := c.run(round)
			took := time.Since(start)
			if err == nil {
				passed[c.what] = append(passed[c.what], round)
			}
			switch {
			case err != nil:
				t.Errorf("victim %s, round %d: failed after %s: %v", c.what, round, took.Round(time.Millisecond), err)
			case took > victimTimeout*time.Second:
				t.Errorf("victim %s, round %d: took %s, want within %ds", c.what, round, took.Round(time.Millisecond), victimTimeout)
			default:
				t.Logf("victim %s, round %d: ok in %s", c.what, round, took.Round(time.Millisecond))
			}
		}
	}

	// Before the flood: the victim's checks pass (and so can fail later
	// only because of the flood).
	victim(t, 0)
	if t.Failed() {
		t.FailNow()
	}

	start := time.Now()
	f := e.startFlood(t, lab.RoleLAN,
		"--tls", net.JoinHostPort(news.V4.String(), "443"), "--sni", "news.example.com", "--max", "12000",
		"--dns", net.JoinHostPort(resolver, "53"), "--dns-tcp", "64")
	// Let the flood press until the flooder is refused and its held flows
	// stop growing, or it holds its most; at most 100 s.
	var s lab.FloodStats
	prev, stable := int64(-1), 0
	deadline := time.Now().Add(100 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(time.Second)
		s = f.stats()
		if s.TLSOpen == prev && s.TLSFailed > 0 {
			stable++
		} else {
			stable = 0
		}
		prev = s.TLSOpen
		if stable >= 3 || s.TLSOpen >= 12000 {
			break
		}
	}
	t.Logf("flood after %s: %+v", time.Since(start).Round(time.Second), s)
	if s.TLSOpened == 0 || s.DNSSent == 0 {
		t.Fatalf("the flooder did not get going: %+v\n%s", s, f.stderr.String())
	}

	for round := 1; round <= 3; round++ {
		victim(t, round)
		time.Sleep(time.Second)
	}
	s = f.stats()
	t.Logf("flood at the end: %+v", s)

	// What the victim got came through cloudsteer and the cloud proxy as
	// the victim's: Squid saw its address in X-Forwarded-For, the origin
	// the requests.
	victimAddr := lab.Client2V4.Addr().String()
	if !eventually(5*time.Second, func() bool {
		recs, err := e.lab.SquidLog()
		if err != nil {
			t.Fatal(err)
		}
		connects, gets := 0, map[string]bool{}
		for _, r := range recs {
			if r.XFF != victimAddr {
				continue
			}
			if r.Method == "CONNECT" && r.URL == "www.example.com:443" {
				connects++
			}
			if r.Method == "GET" {
				gets[r.URL] = true
			}
		}
		for _, round := range passed["http"] {
			if !gets[fmt.Sprintf("http://news.example.com/?case=victim-http-%d", round)] {
				return false
			}
		}
		return connects >= len(passed["https"])
	}) {
		t.Errorf("squid did not see the victim's (XFF %s) flows of the rounds it passed: %v", victimAddr, passed)
	}
	paths := map[string]bool{}
	for _, r := range e.originLog(time.Time{}) {
		paths[r.Path] = true
	}
	for _, kind := range []string{"https", "http"} {
		for _, round := range passed[kind] {
			if p := fmt.Sprintf("/?case=victim-%s-%d", kind, round); !paths[p] {
				t.Errorf("origin did not see the victim's %s", p)
			}
		}
	}
	if !limits {
		return
	}
	// The limits held the flooder: it was refused, held no more flows
	// than its share, and got no more DNS answered than its rate.
	if s.TLSFailed == 0 {
		t.Errorf("the flooder was never refused a TLS flow: %+v", s)
	}
	if s.TLSMaxOpen > 256+16 {
		t.Errorf("the flooder held %d flows at once, want about flows_per_client (256)", s.TLSMaxOpen)
	}
	if resolved := s.DNSAnswered - s.DNSRefused; float64(resolved) > 200*s.Elapsed+1000 {
		t.Errorf("the flooder had %d DNS queries resolved in %.0fs, want at most about 200/s", resolved, s.Elapsed)
	}
	if s.DNSTCPOpen > 16 {
		t.Errorf("the flooder holds %d DNS-over-TCP connections, want at most dns_tcp_per_client (16)", s.DNSTCPOpen)
	}
}

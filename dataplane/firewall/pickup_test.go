package firewall

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

// officeRouter is a small office router's ruleset (as lab.FirewallRouter):
// masquerade IPv4 to the WAN, stateful forwarding with policy drop.
const officeRouter = `table inet office {
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		ct state invalid drop
		iifname "lan0" oifname "wan0" accept
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan0" meta nfproto ipv4 masquerade
	}
}
`

// echoLoop round-trips a numbered line over c every 20ms until stop
// closes, and reports the first failure (or nil) and the slowest round
// trip on done.
func echoLoop(c net.Conn, stop <-chan struct{}) <-chan [2]any {
	done := make(chan [2]any, 1)
	go func() {
		r := bufio.NewReader(c)
		var slowest time.Duration
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- [2]any{nil, slowest}
				return
			case <-time.After(20 * time.Millisecond):
			}
			start := time.Now()
			_ = c.SetDeadline(start.Add(hangGuard))
			line := fmt.Sprintf("line %d", i)
			if _, err := fmt.Fprintln(c, line); err != nil {
				done <- [2]any{fmt.Errorf("write %q: %w", line, err), slowest}
				return
			}
			got, err := r.ReadString('\n')
			if err != nil || got != "echo "+line+"\n" {
				done <- [2]any{fmt.Errorf("echo of %q: %q, %v", line, got, err), slowest}
				return
			}
			slowest = max(slowest, time.Since(start))
		}
	}()
	return done
}

// TestUntrackedFlowsOutliveNAT starts TCP flows while cloudsteer's table
// is alone (untracked: the classifier does not steer port 9000), loads a
// masquerading, stateful office router beside it, and wants the flows to
// keep going through the switch (the up-to-one-second window in which the
// untrack chains are still there, then the mid-stream pickup) with their
// addresses, and new flows to be masqueraded. Without the pickup chain
// the first IPv4 pickup is masqueraded and the server resets the flow.
func TestUntrackedFlowsOutliveNAT(t *testing.T) {
	l := newLab(t)
	attachClassifier(t, l.gw)
	cfg := testConfig()
	cfg.UntrackUnsteered = true
	tab := newTable(t, l.gw, cfg)
	serveLineEcho(t, l.server, ":9000", "echo ")
	seen := make(chan netip.AddrPort, 8)
	privtest.ServeTCP(t, l.server, ":9001", func(c net.Conn) {
		seen <- c.RemoteAddr().(*net.TCPAddr).AddrPort()
		c.Close()
	})

	type flow struct {
		name string
		c    net.Conn
		done <-chan [2]any
	}
	stop := make(chan struct{})
	var flows []flow
	for _, srv := range []string{"10.20.0.2", "fd00:20::2"} {
		c, err := dialTCP(t, l.client, netip.AddrPortFrom(netip.MustParseAddr(srv), 9000), hangGuard)
		if err != nil {
			t.Fatalf("dial %s: %v", srv, err)
		}
		defer c.Close()
		if conntrackHas(t, l.gw, c.LocalAddr().(*net.TCPAddr).AddrPort()) {
			t.Fatalf("flow to %s tracked while the table is alone", srv)
		}
		flows = append(flows, flow{srv, c, echoLoop(c, stop)})
	}
	time.Sleep(300 * time.Millisecond)
	cmd := privtest.Command(l.gw, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(officeRouter)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("load the office router: %v\n%s", err, out)
	}
	waitUntracking(t, tab, false)
	time.Sleep(3 * time.Second) // well past the switch and the pickup
	close(stop)
	for _, f := range flows {
		res := <-f.done
		if res[0] != nil {
			t.Errorf("untracked flow to %s broke after the NAT appeared: %v", f.name, res[0])
		}
		// A round trip caught in the switch waits for a TCP retransmission
		// (the test's hangGuard deadline fails a flow that never recovers);
		// how long is the machine's business, so it is only logged.
		t.Logf("flow to %s: slowest round trip %v", f.name, res[1].(time.Duration))
		if !conntrackHas(t, l.gw, f.c.LocalAddr().(*net.TCPAddr).AddrPort()) {
			t.Errorf("flow to %s not picked up by conntrack after the switch", f.name)
		}
	}
	// New flows are tracked from their SYN and masqueraded (IPv4).
	for srv, want := range map[string]string{"10.20.0.2": "10.20.0.1", "fd00:20::2": "fd00:10::10"} {
		c, err := dialTCP(t, l.client, netip.AddrPortFrom(netip.MustParseAddr(srv), 9001), hangGuard)
		if err != nil {
			t.Fatalf("new flow to %s: %v", srv, err)
		}
		c.Close()
		select {
		case from := <-seen:
			if from.Addr().Unmap().String() != want {
				t.Errorf("new flow to %s came from %s, want %s", srv, from.Addr(), want)
			}
		case <-time.After(hangGuard):
			t.Fatalf("server %s saw no new flow", srv)
		}
	}

	// The other way: a flow the router masqueraded outlives the router's
	// table (cloudsteer's own nat chain keeps the NAT hooks), and
	// untracking waits until it is over, as notrack would take it past
	// its NAT binding.
	c, err := dialTCP(t, l.client, netip.MustParseAddrPort("10.20.0.2:9000"), hangGuard)
	if err != nil {
		t.Fatalf("dial under NAT: %v", err)
	}
	stop2 := make(chan struct{})
	done := echoLoop(c, stop2)
	time.Sleep(300 * time.Millisecond)
	privtest.Run(t, l.gw, "nft", "delete", "table", "inet", "office")
	time.Sleep(untrackSettle + 2*untrackPoll)
	if tab.Untracking() {
		t.Error("untracking back while a masqueraded flow is live")
	}
	close(stop2)
	if res := <-done; res[0] != nil {
		t.Errorf("masqueraded flow broke when the router's table went away: %v", res[0])
	}
	c.Close()
	waitUntracking(t, tab, true)
}

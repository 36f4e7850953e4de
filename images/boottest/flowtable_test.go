//go:build boottest

package boottest

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
	"github.com/cloudsteer/cloudsteer/lab"
)

// unsteeredPort is a TCP port cloudsteer does not steer (not 80/443/53):
// the test listens on it in the internet namespace.
const unsteeredPort = 7301

// heldConn is a TCP connection from the LAN client held open while the
// VM's connection tracking is read.
type heldConn struct {
	c     net.Conn
	tuple ConntrackTuple
}

// How dialLAN uses a connection once it is up.
const (
	dialOnly = "" // nothing: the TCP handshake alone
	dialEcho = "echo"
)

// dialLAN connects from the LAN client's namespace to addr and returns the
// connection open, after (so the flow carries data both ways): with how
// a server name, a TLS handshake and an HTTP request; dialEcho, a line
// echoed; dialOnly, nothing.
func (r *vmRun) dialLAN(t *testing.T, addr netip.AddrPort, how string) heldConn {
	t.Helper()
	var c net.Conn
	err := privtest.Do(r.lab.NS(lab.RoleLAN), func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr.String(), 10*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("connect from the lan to %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	switch serverName := how; how {
	case dialOnly:
	case dialEcho:
		fmt.Fprintf(c, "ping\n")
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || line != "ping\n" {
			t.Fatalf("echo over %s: %q %v", addr, line, err)
		}
	default:
		pem, err := os.ReadFile(r.lab.CAFile())
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tc := tls.Client(c, &tls.Config{ServerName: serverName, RootCAs: pool, NextProtos: []string{"http/1.1"}})
		fmt.Fprintf(tc, "GET /?case=vm-flowtable HTTP/1.1\r\nHost: %s\r\n\r\n", serverName)
		status, err := bufio.NewReader(tc).ReadString('\n')
		if err != nil || !strings.Contains(status, " 200 ") {
			t.Fatalf("https://%s over %s: %q %v", serverName, addr, status, err)
		}
		c = tc // keep-alive: the connection stays open
	}
	local := netip.MustParseAddrPort(c.LocalAddr().String())
	return heldConn{c: c, tuple: ConntrackTuple{Src: local.Addr(), Dst: addr.Addr(), Sport: int(local.Port()), Dport: int(addr.Port())}}
}

// echoServer listens on addr in the internet namespace and echoes lines.
func (r *vmRun) echoServer(t *testing.T, addr netip.AddrPort) {
	t.Helper()
	var ln net.Listener
	err := privtest.Do(r.lab.NS(lab.RoleInet), func() error {
		var err error
		ln, err = net.Listen("tcp", addr.String())
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s in the internet namespace: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					l, err := br.ReadString('\n')
					if err != nil {
						return
					}
					c.Write([]byte(l))
				}
			}()
		}
	}()
}

// conntrack reads the VM's connection tracking table over SSH.
func (r *vmRun) conntrack(t *testing.T) []ConntrackEntry {
	t.Helper()
	out, err := r.ssh(30*time.Second, "cat /proc/net/nf_conntrack")
	if err != nil {
		t.Fatalf("read /proc/net/nf_conntrack on the VM: %v\n%s", err, out)
	}
	return ParseConntrack(out)
}

// waitConntrack polls the VM's conntrack table until want holds for every
// flow (or 20 s pass: an idle TCP flow leaves the flowtable after 30 s)
// and returns the last entries seen for them.
func (r *vmRun) waitConntrack(t *testing.T, flows []heldConn, want func(ConntrackEntry) bool) ([]ConntrackEntry, bool) {
	t.Helper()
	var got []ConntrackEntry
	ok := eventually(20*time.Second, time.Second, func() bool {
		es := r.conntrack(t)
		got = got[:0]
		all := true
		for _, f := range flows {
			e, found := FindConntrack(es, "tcp", f.tuple)
			got = append(got, e)
			all = all && found && want(e)
		}
		return all
	})
	return got, ok
}

// checkFlowOffload checks the image's flowtable offload on the Debian
// kernel: a bypassed (gw1.akaetp.net:443) and an unsteered
// (www.example.com:7301) NATed TCP flow from the LAN client, held open,
// are in flowtable f (conntrack flags them [OFFLOAD]; their reply goes to
// the WAN address: NAT), while a steered one (www.example.com:443,
// redirected to cloudsteer's proxy) is not. The control: with the image's
// `flow add @f` rule flushed, a new unsteered flow is not offloaded; the
// rule is then added back as offload.nft has it.
func (r *vmRun) checkFlowOffload() {
	r.step("flowtable offload of nated flows", func(t *testing.T) {
		www, _ := lab.SiteByName("www.example.com")
		bypass, _ := lab.SiteByName("gw1.akaetp.net")
		out, err := r.ssh(30*time.Second, "journalctl -b -o cat -u cloudsteer-firewall.service; echo ----; nft list flowtable inet cloudsteer-router f; echo ----; nft list chain inet cloudsteer-router flowoffload")
		if err != nil {
			t.Fatalf("read the firewall over ssh: %v\n%s", err, out)
		}
		parts := strings.Split(out, "----")
		if len(parts) != 3 || !strings.Contains(parts[0], "offloaded to flowtable f") ||
			!strings.Contains(parts[1], "hook ingress") || !strings.Contains(parts[1], "devices = {") ||
			!strings.Contains(parts[2], "flow add @f") {
			t.Fatalf("the firewall has no flowtable offload (journal, flowtable f, chain flowoffload):\n%s", out)
		}
		t.Logf("flowtable:%s", parts[1])
		// The bypass name resolved through the VM now: its address is in
		// cloudsteer's bypass map (the map follows the resolver's TTL).
		if a, err := r.run(lab.RoleLAN, 20*time.Second, "dig", "+short", "+time=5", "+tries=2", "@"+r.router.String(), bypass.Name, "A"); err != nil || strings.TrimSpace(a) != bypass.V4.String() {
			t.Fatalf("dig %s: %q %v", bypass.Name, a, err)
		}
		r.echoServer(t, netip.AddrPortFrom(www.V4, unsteeredPort))
		bypassed := r.dialLAN(t, netip.AddrPortFrom(bypass.V4, 443), bypass.Name)
		unsteered := r.dialLAN(t, netip.AddrPortFrom(www.V4, unsteeredPort), dialEcho)
		steered := r.dialLAN(t, netip.AddrPortFrom(www.V4, 443), dialOnly) // cloudsteer's proxy waits for a ClientHello

		got, ok := r.waitConntrack(t, []heldConn{bypassed, unsteered}, func(e ConntrackEntry) bool {
			return e.Offloaded() && e.Reply.Dst == vmWAN
		})
		if !ok {
			t.Fatalf("the bypassed and unsteered flows are not both offloaded and NATed to %s:\n%s\n%s", vmWAN, got[0].Line, got[1].Line)
		}
		t.Logf("offloaded:\n%s\n%s", got[0].Line, got[1].Line)
		es := r.conntrack(t)
		if e, found := FindConntrack(es, "tcp", steered.tuple); !found || e.Offloaded() || e.Reply.Src != r.router {
			t.Errorf("the steered flow %+v: want tracked, redirected to %s and not offloaded: %q (found %v)", steered.tuple, r.router, e.Line, found)
		}

		// The control: the same kind of flow without the image's rule.
		if out, err := r.ssh(30*time.Second, "nft flush chain inet cloudsteer-router flowoffload"); err != nil {
			t.Fatalf("flush the flowoffload chain: %v %s", err, out)
		}
		restore := func() {
			// The rule of the image's offload.nft (the next boot loads
			// the file again anyway).
			out, err := r.ssh(30*time.Second, "nft add rule inet cloudsteer-router flowoffload meta l4proto '{ tcp, udp }' ct state established flow add @f && nft list chain inet cloudsteer-router flowoffload")
			if err != nil || !strings.Contains(out, "flow add @f") {
				t.Errorf("restore the image's offload rule: %v\n%s", err, out)
			}
		}
		control := r.dialLAN(t, netip.AddrPortFrom(www.V4, unsteeredPort), dialEcho)
		fmt.Fprintf(control.c, "more\n") // packets after the handshake pass the forward chain
		time.Sleep(time.Second)
		// Polled: one run (2026-12-03) did not find the control's entry in
		// a single read taken a second after the echo.
		got, ok = r.waitConntrack(t, []heldConn{control}, func(e ConntrackEntry) bool {
			return !e.Offloaded() && e.Reply.Dst == vmWAN
		})
		if !ok {
			// What conntrack holds towards the echo server, to see why.
			var towards []string
			for _, e := range r.conntrack(t) {
				if e.Orig.Dst == www.V4 && e.Orig.Dport == unsteeredPort {
					towards = append(towards, e.Line)
				}
			}
			restore()
			t.Fatalf("control (no flow add rule): want %+v tracked, NATed to %s and not offloaded: %q; entries to %s:%d:\n%s",
				control.tuple, vmWAN, got[0].Line, www.V4, unsteeredPort, strings.Join(towards, "\n"))
		}
		restore()
		t.Logf("control, without the rule: %s", got[0].Line)
	})
}

package steer

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

// routedHosts returns client ↔ gw ↔ server namespaces: client eth0
// 10.78.0.2/24, fd78::2/64 behind the gw's lan0 (.1); server eth0
// 10.79.0.2/24, fd79::2/64 behind the gw's wan0 (.1). The gw forwards.
func routedHosts(tb testing.TB) (client, gw, server string) {
	tb.Helper()
	client, gw, server = privtest.NewNetNS(tb), privtest.NewNetNS(tb), privtest.NewNetNS(tb)
	run := func(ns string, args ...string) { privtest.Run(tb, ns, args...) }
	run(gw, "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", client)
	run(gw, "ip", "link", "add", "wan0", "type", "veth", "peer", "name", "eth0", "netns", server)
	run(gw, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	for _, a := range []struct{ ns, dev, v4, v6 string }{
		{client, "eth0", "10.78.0.2/24", "fd78::2/64"},
		{gw, "lan0", "10.78.0.1/24", "fd78::1/64"},
		{gw, "wan0", "10.79.0.1/24", "fd79::1/64"},
		{server, "eth0", "10.79.0.2/24", "fd79::2/64"},
	} {
		run(a.ns, "ip", "addr", "add", a.v4, "dev", a.dev)
		run(a.ns, "ip", "addr", "add", a.v6, "dev", a.dev, "nodad")
		run(a.ns, "ip", "link", "set", a.dev, "up")
	}
	run(client, "ip", "route", "add", "default", "via", "10.78.0.1")
	run(client, "ip", "-6", "route", "add", "default", "via", "fd78::1")
	run(server, "ip", "route", "add", "default", "via", "10.79.0.1")
	run(server, "ip", "-6", "route", "add", "default", "via", "fd79::1")
	return client, gw, server
}

// pattern is the byte at offset i of every test stream.
func pattern(i int) byte { return byte(i*7 + i>>16) }

// serveBoth listens on port in ns; each connection first gets size
// pattern bytes, then what the client sends is counted and the count
// written back as 8 bytes when the client half-closes.
func serveBoth(tb testing.TB, ns string, port, size int) {
	tb.Helper()
	privtest.ServeTCP(tb, ns, fmt.Sprintf(":%d", port), func(c net.Conn) {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		buf := make([]byte, 64<<10)
		for off := 0; off < size; {
			n := min(len(buf), size-off)
			for i := range n {
				buf[i] = pattern(off + i)
			}
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
			off += n
		}
		got, _ := io.Copy(io.Discard, c)
		binary.Write(c, binary.BigEndian, got)
	})
}

// exchange dials to from ns, reads and checks the server's size bytes,
// sends up bytes, half-closes and returns what the server counted.
func exchange(tb testing.TB, ns string, to netip.AddrPort, size, up int) int64 {
	tb.Helper()
	var c net.Conn
	err := privtest.Do(ns, func() (err error) {
		d := net.Dialer{Timeout: 5 * time.Second}
		d.SetMultipathTCP(false)
		c, err = d.Dial("tcp", to.String())
		return err
	})
	if err != nil {
		tb.Fatalf("dial %s: %v", to, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 64<<10)
	for got := 0; got < size; {
		n, err := c.Read(buf[:min(len(buf), size-got)])
		for i := range n {
			if buf[i] != pattern(got+i) {
				tb.Fatalf("byte %d from %s is %d, want %d", got+i, to, buf[i], pattern(got+i))
			}
		}
		got += n
		if err != nil {
			tb.Fatalf("read from %s after %d bytes: %v", to, got, err)
		}
	}
	for sent := 0; sent < up; sent += len(buf) {
		if _, err := c.Write(buf[:min(len(buf), up-sent)]); err != nil {
			tb.Fatalf("send to %s: %v", to, err)
		}
	}
	c.(*net.TCPConn).CloseWrite()
	var counted int64
	if err := binary.Read(c, binary.BigEndian, &counted); err != nil {
		tb.Fatalf("read the server's count: %v", err)
	}
	return counted
}

// arrivingHops captures, on dev in ns, the first TCP packet from src and
// returns its IPv4 TTL or IPv6 hop limit; the capture runs while send does.
func arrivingHops(tb testing.TB, ns, dev string, src netip.Addr, send func()) int {
	tb.Helper()
	var fd int
	privtest.InNetNS(tb, ns, func() {
		var err error
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(unix.ETH_P_ALL))); err != nil {
			tb.Fatal(err)
		}
		ifc, err := net.InterfaceByName(dev)
		if err != nil {
			tb.Fatal(err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifc.Index}); err != nil {
			tb.Fatal(err)
		}
	})
	defer unix.Close(fd)
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5})
	go send()
	buf := make([]byte, 2048)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			tb.Fatalf("capture on %s: %v", dev, err)
		}
		p := buf[:n]
		switch {
		case src.Is4() && n >= 20 && p[0]>>4 == 4 && p[9] == unix.IPPROTO_TCP && netip.AddrFrom4([4]byte(p[12:16])) == src:
			return int(p[8])
		case src.Is6() && n >= 40 && p[0]>>4 == 6 && p[6] == unix.IPPROTO_TCP && netip.AddrFrom16([16]byte(p[8:24])) == src:
			return int(p[7])
		}
	}
	tb.Fatalf("no TCP packet from %s seen on %s", src, dev)
	return 0
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// dialHops connects from ns to `to` with the given TTL / hop limit.
func dialHops(ns string, to netip.AddrPort, hops int, timeout time.Duration) error {
	return privtest.Do(ns, func() error {
		d := net.Dialer{Timeout: timeout, Control: func(network, _ string, rc syscall.RawConn) error {
			var serr error
			rc.Control(func(fd uintptr) {
				if to.Addr().Is4() {
					serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, hops)
				} else {
					serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, hops)
				}
			})
			return serr
		}}
		d.SetMultipathTCP(false)
		c, err := d.Dial("tcp", to.String())
		if err == nil {
			c.Close()
		}
		return err
	})
}

func TestFastPathForwards(t *testing.T) {
	client, gw, server := routedHosts(t)
	s := newIn(t, gw, Config{Interfaces: []string{"lan0"}})
	privtest.InNetNS(t, gw, func() {
		if err := s.AttachWAN([]string{"wan0"}); err != nil {
			t.Fatal(err)
		}
	})
	if got := s.WANAttached(); len(got) != 1 || got[0] != "wan0" {
		t.Fatalf("WANAttached() = %v", got)
	}
	const down, up = 16 << 20, 4 << 20
	serveBoth(t, server, 9000, down)
	serveBoth(t, server, 443, 1<<10)
	forwarded := func() (Counter, Counter) {
		t.Helper()
		l, w, err := s.Forwarded()
		if err != nil {
			t.Fatal(err)
		}
		return l, w
	}

	for _, fam := range []struct {
		name           string
		client, server netip.Addr
	}{
		{"v4", netip.MustParseAddr("10.78.0.2"), netip.MustParseAddr("10.79.0.2")},
		{"v6", netip.MustParseAddr("fd78::2"), netip.MustParseAddr("fd79::2")},
	} {
		t.Run(fam.name, func(t *testing.T) {
			to := netip.AddrPortFrom(fam.server, 9000)

			t.Run("off: the stack forwards", func(t *testing.T) {
				if err := s.SetFastPath(false); err != nil {
					t.Fatal(err)
				}
				l0, w0 := forwarded()
				if got := exchange(t, client, to, down, up); got != up {
					t.Fatalf("server counted %d bytes, want %d", got, up)
				}
				if l, w := forwarded(); l != l0 || w != w0 {
					t.Errorf("fast path forwarded %+v / %+v while off", l, w)
				}
			})
			t.Run("on: both directions forwarded around the stack, bytes intact", func(t *testing.T) {
				if err := s.SetFastPath(true); err != nil {
					t.Fatal(err)
				}
				if on, err := s.FastPath(); err != nil || !on {
					t.Fatalf("FastPath() = %v, %v", on, err)
				}
				l0, w0 := forwarded()
				if got := exchange(t, client, to, down, up); got != up {
					t.Fatalf("server counted %d bytes, want %d", got, up)
				}
				l, w := forwarded()
				// At least one packet per 64 KiB each way (GSO packets
				// may be that large), more in practice.
				if w.Packets-w0.Packets < down>>16 || w.Bytes-w0.Bytes < down {
					t.Errorf("from the WAN side %d packets / %d bytes forwarded, want ≥ %d / %d",
						w.Packets-w0.Packets, w.Bytes-w0.Bytes, down>>16, down)
				}
				if l.Packets-l0.Packets < up>>16 || l.Bytes-l0.Bytes < up {
					t.Errorf("from the LAN side %d packets / %d bytes forwarded, want ≥ %d / %d",
						l.Packets-l0.Packets, l.Bytes-l0.Bytes, up>>16, up)
				}
			})
			t.Run("ttl goes down by one; one left is the stack's", func(t *testing.T) {
				l0, _ := forwarded()
				hops := arrivingHops(t, server, "eth0", fam.client, func() { dialHops(client, to, 9, 2*time.Second) })
				if hops != 8 {
					t.Errorf("server saw TTL/hop limit %d, want 8", hops)
				}
				if l, _ := forwarded(); l.Packets == l0.Packets {
					t.Error("the fast path forwarded nothing of that flow")
				}
				// TTL 1 must expire at the gateway: the stack answers with
				// time exceeded, the connection never comes up.
				if err := dialHops(client, to, 1, time.Second); err == nil {
					t.Error("a SYN with TTL 1 reached the server")
				}
			})
			t.Run("steered classes are left to the stack", func(t *testing.T) {
				// The TTL 9 dial above runs on in the background
				// after its first packet was seen: let its last
				// packets pass first.
				time.Sleep(settle)
				l0, _ := forwarded()
				exchange(t, client, netip.AddrPortFrom(fam.server, 443), 1<<10, 0)
				if l, _ := forwarded(); l.Packets != l0.Packets {
					t.Errorf("the fast path took %d packets of a TLS-class flow", l.Packets-l0.Packets)
				}
				bypass := netip.PrefixFrom(fam.server, fam.server.BitLen())
				if err := s.AddBypass(bypass); err != nil {
					t.Fatal(err)
				}
				defer s.DeleteBypass(bypass)
				exchange(t, client, netip.AddrPortFrom(fam.server, 443), 1<<10, 0)
				if l, _ := forwarded(); l.Packets == l0.Packets {
					t.Error("the fast path took nothing of a bypassed flow")
				}
			})
		})
	}
	if err := s.SetFastPath(false); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := tcxIngress(t, gw, "wan0"); len(got) != 0 {
		t.Errorf("after Close, ingress programs on wan0: %v", got)
	}
}

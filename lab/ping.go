package lab

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// pingInterval is how long one echo request waits for its reply before the
// next is sent.
const pingInterval = 300 * time.Millisecond

// Ping sends ICMP echo requests from inside the namespace of role to dst
// until one is answered (nil) or ctx ends (an error). It needs no ping
// binary: it uses a raw ICMP socket opened in that namespace.
func (l *Lab) Ping(ctx context.Context, role string, dst netip.Addr) error {
	ns := l.NS(role)
	if ns == "" {
		return fmt.Errorf("ping from %q: unknown lab role", role)
	}
	return pingNS(ctx, ns, dst)
}

func pingNS(ctx context.Context, ns string, dst netip.Addr) error {
	dst = dst.Unmap()
	network, laddr, proto := "ip4:icmp", "0.0.0.0", 1
	var reqType, replyType icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if dst.Is6() {
		network, laddr, proto = "ip6:ipv6-icmp", "::", 58
		reqType, replyType = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	var conn *icmp.PacketConn
	if err := doInNS(ns, func() error {
		c, err := icmp.ListenPacket(network, laddr)
		conn = c
		return err
	}); err != nil {
		return fmt.Errorf("open icmp socket in %s: %w", ns, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()

	var idb [2]byte
	_, _ = rand.Read(idb[:])
	id := int(binary.BigEndian.Uint16(idb[:]))
	peer := &net.IPAddr{IP: dst.AsSlice()}
	buf := make([]byte, 1500)
	var lastErr error
	for seq := 1; ; seq++ {
		if err := ctx.Err(); err != nil {
			if lastErr == nil {
				lastErr = errors.New("no echo reply")
			}
			return fmt.Errorf("ping %s from %s: %w (%v)", dst, ns, lastErr, err)
		}
		msg := icmp.Message{Type: reqType, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("cloudsteer-lab")}}
		b, err := msg.Marshal(nil)
		if err != nil {
			return fmt.Errorf("marshal echo: %w", err)
		}
		if _, err := conn.WriteTo(b, peer); err != nil {
			// e.g. "network is unreachable" while routes settle: retry.
			lastErr = err
			select {
			case <-ctx.Done():
			case <-time.After(pingInterval):
			}
			continue
		}
		deadline := time.Now().Add(pingInterval)
		if err := conn.SetReadDeadline(deadline); err != nil {
			return fmt.Errorf("set deadline: %w", err)
		}
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				lastErr = errors.New("no echo reply")
				break
			}
			ip, ok := from.(*net.IPAddr)
			if !ok {
				continue
			}
			src, ok := netip.AddrFromSlice(ip.IP)
			if !ok || src.Unmap() != dst {
				continue
			}
			rm, err := icmp.ParseMessage(proto, buf[:n])
			if err != nil || rm.Type != replyType {
				continue
			}
			if echo, ok := rm.Body.(*icmp.Echo); ok && echo.ID == id && echo.Seq == seq {
				return nil
			}
		}
	}
}

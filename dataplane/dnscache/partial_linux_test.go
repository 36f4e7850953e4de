package dnscache

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

// TestChecksumOffloaded checks answers to queries sent with the veth's
// default checksum offload: the query arrives CHECKSUM_PARTIAL (its UDP
// checksum field holds only the pseudo-header sum), and so must the
// answer, with the pseudo-header sum of its own length, for the device (or
// a virtio guest) that completes it. The client's packet socket sees the
// answer before anything completes it; the test completes it and checks
// the result.
func TestChecksumOffloaded(t *testing.T) {
	privtest.RequireRoot(t)
	l := &lab{client: privtest.NewNetNS(t), gw: privtest.NewNetNS(t), gwIf: "lan0"}
	l.link(t)
	privtest.InNetNS(t, l.gw, func() {
		c, err := New(t.Context(), []string{l.gwIf}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		l.cache = c
	})
	t.Cleanup(func() { l.cache.Close() })
	mustPut(t, l.cache, cachedWire(t, "www.example.com", dns.TypeA, 0, []string{"www.example.com. 300 IN CNAME edge.example.net.", "edge.example.net. 60 IN A 203.0.113.10"}, nil), time.Minute)

	for _, server := range []string{labResolver4, labResolver6} {
		t.Run(server, func(t *testing.T) {
			var frame []byte
			var status uint32
			privtest.InNetNS(t, l.client, func() {
				ps := packetSocket(t, "eth0")
				conn, err := net.Dial("udp", net.JoinHostPort(server, "53"))
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				if _, err := conn.Write(query(t, 0x5151, "Www.Example.com", dns.TypeA, 1232, false)); err != nil {
					t.Fatal(err)
				}
				frame, status = readAnswerFrame(t, ps)
			})
			if status&unix.TP_STATUS_CSUMNOTREADY == 0 {
				t.Fatalf("answer not CHECKSUM_PARTIAL (status %#x): the test does not test what it should", status)
			}
			src, dst, udp := splitUDP(t, frame)
			// Complete the checksum as the device would: sum from the
			// UDP header on, the field holding the pseudo-header seed.
			binary.BigEndian.PutUint16(udp[6:], ^onesSum(udp))
			if udpChecksum(src, dst, udp) != 0xffff {
				t.Fatalf("completed UDP checksum invalid: the seed was not the pseudo-header sum")
			}
			m := new(dns.Msg)
			if err := m.Unpack(udp[8:]); err != nil || m.Id != 0x5151 || len(m.Answer) != 2 || m.IsEdns0() == nil {
				t.Fatalf("answer %v: %v", m, err)
			}
		})
	}
}

// packetSocket opens an AF_PACKET socket on iface (in the calling
// thread's namespace) that reports each frame's checksum status.
func packetSocket(t *testing.T, iface string) int {
	t.Helper()
	ifc, err := net.InterfaceByName(iface)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifc.Index}); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
		t.Fatal(err)
	}
	tv := unix.NsecToTimeval((3 * time.Second).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return fd
}

// readAnswerFrame reads frames until one comes from UDP port 53 and
// returns it with its packet-socket status.
func readAnswerFrame(t *testing.T, fd int) ([]byte, uint32) {
	t.Helper()
	buf := make([]byte, 2048)
	oob := make([]byte, 256)
	for range 50 {
		n, oobn, _, from, err := unix.Recvmsg(fd, buf, oob, 0)
		if err != nil {
			t.Fatalf("read packet socket: %v", err)
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); !ok || ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		b := buf[:n]
		var l4 []byte
		switch {
		case len(b) > 14+20+8 && binary.BigEndian.Uint16(b[12:]) == 0x0800 && b[14+9] == 17:
			l4 = b[14+20:]
		case len(b) > 14+40+8 && binary.BigEndian.Uint16(b[12:]) == 0x86dd && b[14+6] == 17:
			l4 = b[14+40:]
		default:
			continue
		}
		if binary.BigEndian.Uint16(l4) != 53 {
			continue
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if m.Header.Level == unix.SOL_PACKET && m.Header.Type == unix.PACKET_AUXDATA && len(m.Data) >= 4 {
				return append([]byte(nil), b...), binary.NativeEndian.Uint32(m.Data)
			}
		}
		t.Fatal("no auxdata with the answer")
	}
	t.Fatal("no answer frame seen")
	return nil, 0
}

// splitUDP returns the addresses and the UDP segment of an IP frame.
func splitUDP(t *testing.T, b []byte) (src, dst netip.Addr, udp []byte) {
	t.Helper()
	if binary.BigEndian.Uint16(b[12:]) == 0x0800 {
		ip := b[14:]
		end := int(binary.BigEndian.Uint16(ip[2:]))
		return netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20])), ip[20:end]
	}
	ip := b[14:]
	end := 40 + int(binary.BigEndian.Uint16(ip[4:]))
	return netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40])), ip[40:end]
}

// htons is v in network byte order, as the socket calls take protocols.
func htons(v uint16) uint16 {
	return binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, v))
}

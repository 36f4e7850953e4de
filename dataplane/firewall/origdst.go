package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// soOriginalDst is SO_ORIGINAL_DST (linux/netfilter_ipv4.h) at SOL_IP and
// IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h) at SOL_IPV6.
const soOriginalDst = 80

// Sizes of struct sockaddr_in and struct sockaddr_in6.
const (
	sockaddrIn4Size = 16
	sockaddrIn6Size = 28
)

// OriginalDst returns the destination a redirected TCP connection was sent
// to before nftables rewrote it, as conntrack recorded it
// (SO_ORIGINAL_DST for IPv4, IP6T_SO_ORIGINAL_DST for IPv6). An IPv4 flow
// accepted on a dual-stack socket gives a plain IPv4 address. For a
// connection that was not redirected the kernel returns the local address.
func OriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	local, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok || local == nil {
		return netip.AddrPort{}, errors.New("original destination: connection has no local TCP address")
	}
	level := unix.SOL_IPV6
	if local.IP.To4() != nil {
		level = unix.SOL_IP // also for v4-mapped addresses on an AF_INET6 socket
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	var buf [sockaddrIn6Size]byte
	n := uint32(len(buf))
	var serr error
	if err := rc.Control(func(fd uintptr) {
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, uintptr(level), soOriginalDst,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		if errno != 0 {
			serr = errno
		}
	}); err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	if serr != nil {
		if errors.Is(serr, syscall.ENOENT) {
			return netip.AddrPort{}, fmt.Errorf("original destination: no conntrack entry for this connection: %w", serr)
		}
		return netip.AddrPort{}, fmt.Errorf("original destination: getsockopt: %w", serr)
	}
	return parseSockaddr(buf[:min(int(n), len(buf))])
}

// parseSockaddr decodes a struct sockaddr_in or sockaddr_in6 as the kernel
// writes it (family in host byte order, port in network byte order).
func parseSockaddr(b []byte) (netip.AddrPort, error) {
	if len(b) < 2 {
		return netip.AddrPort{}, fmt.Errorf("original destination: sockaddr of %d bytes", len(b))
	}
	family := binary.NativeEndian.Uint16(b[0:2])
	switch family {
	case unix.AF_INET:
		if len(b) < sockaddrIn4Size {
			return netip.AddrPort{}, fmt.Errorf("original destination: sockaddr_in of %d bytes", len(b))
		}
		addr := netip.AddrFrom4([4]byte(b[4:8]))
		return netip.AddrPortFrom(addr, binary.BigEndian.Uint16(b[2:4])), nil
	case unix.AF_INET6:
		if len(b) < sockaddrIn6Size {
			return netip.AddrPort{}, fmt.Errorf("original destination: sockaddr_in6 of %d bytes", len(b))
		}
		addr := netip.AddrFrom16([16]byte(b[8:24]))
		if scope := binary.NativeEndian.Uint32(b[24:28]); scope != 0 && addr.IsLinkLocalUnicast() {
			addr = addr.WithZone(strconv.FormatUint(uint64(scope), 10))
		}
		return netip.AddrPortFrom(addr, binary.BigEndian.Uint16(b[2:4])), nil
	default:
		return netip.AddrPort{}, fmt.Errorf("original destination: address family %d", family)
	}
}

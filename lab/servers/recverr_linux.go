package servers

import (
	"net"
	"syscall"
)

// setRecvErr asks the kernel to report ICMP errors (port unreachable) on
// an unconnected UDP socket, so a QUIC dial that is rejected fails at once
// with "connection refused" instead of timing out.
func setRecvErr(pc net.PacketConn) {
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		return
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_RECVERR, 1)
		_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IPV6, syscall.IPV6_RECVERR, 1)
	})
}

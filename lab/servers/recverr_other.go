//go:build !linux

package servers

import "net"

// setRecvErr does nothing outside Linux.
func setRecvErr(net.PacketConn) {}

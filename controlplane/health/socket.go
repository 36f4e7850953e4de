package health

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// SocketCheck returns a DiagnoseInputs.Components check for a listener or packet socket
// the daemon serves on: it passes while the socket is open and, for TCP,
// listening (SO_ACCEPTCONN). It looks at the socket itself rather than
// dialing it, because the nftables listener guard drops connections that
// were not redirected, a probe from the gateway included.
func SocketCheck(c syscall.Conn) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		raw, err := c.SyscallConn()
		if err != nil {
			return fmt.Errorf("inspect socket: %w", err)
		}
		var typ, listening int
		var serr error
		err = raw.Control(func(fd uintptr) {
			typ, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE)
			if serr == nil && typ == unix.SOCK_STREAM {
				listening, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
			}
		})
		switch {
		case err != nil:
			return fmt.Errorf("inspect socket: %w", err)
		case serr != nil:
			return fmt.Errorf("inspect socket: %w", serr)
		case typ == unix.SOCK_STREAM && listening != 1:
			return errors.New("socket is not listening")
		}
		return nil
	}
}

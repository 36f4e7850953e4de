package api

import (
	"context"
	"net"

	"golang.org/x/sys/unix"
)

// peerUIDKey holds a unix-socket peer's uid in a connection's context.
type peerUIDKey struct{}

// unknownUID stands for a peer whose credentials could not be read; it is
// refused like any non-root peer.
const unknownUID = ^uint32(0)

// connContext records the peer's uid (SO_PEERCRED) for unix connections.
func connContext(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return context.WithValue(ctx, peerUIDKey{}, unknownUID)
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return context.WithValue(ctx, peerUIDKey{}, unknownUID)
	}
	return context.WithValue(ctx, peerUIDKey{}, cred.Uid)
}

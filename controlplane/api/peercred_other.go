//go:build !linux

package api

import (
	"context"
	"net"
)

// peerUIDKey holds a unix-socket peer's uid in a connection's context.
type peerUIDKey struct{}

// connContext records nothing where SO_PEERCRED does not exist; the
// socket's mode is the only guard there.
func connContext(ctx context.Context, _ net.Conn) context.Context { return ctx }

// Package sdnotify tells systemd about the daemon's state (sd_notify(3)):
// READY=1 once it serves, RELOADING=1 and READY=1 around a reload,
// STOPPING=1 on the way out. It writes one datagram to the unix socket
// named by $NOTIFY_SOCKET (a path, or "@name" for the abstract namespace)
// and does nothing when that is unset, as when not run by systemd with
// Type=notify. A few lines over a unixgram socket, rather than a module
// for it.
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Env is the variable systemd sets for a Type=notify service.
const Env = "NOTIFY_SOCKET"

// Notify sends state (newline-separated VAR=value assignments) to the
// socket in $NOTIFY_SOCKET. It returns false, nil when that is unset.
func Notify(state string) (bool, error) {
	path := os.Getenv(Env)
	if path == "" {
		return false, nil
	}
	if strings.HasPrefix(path, "@") {
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("notify systemd: %w", err)
	}
	defer c.Close()
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("notify systemd: %w", err)
	}
	return true, nil
}

// Ready is the state for a daemon that serves now.
func Ready(status string) string { return "READY=1\nSTATUS=" + status }

// Reloading is the state for a daemon that starts a reload; systemd 253
// and later want the monotonic time of it (Type=notify-reload).
func Reloading() string {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", ts.Nano()/1000)
}

// Stopping is the state for a daemon on its way out.
const Stopping = "STOPPING=1"

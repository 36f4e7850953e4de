package sdnotify

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// listen makes a notify socket like systemd's and returns a function that
// reads the next datagram.
func listen(t *testing.T, name string) func() string {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return func() string {
		t.Helper()
		buf := make([]byte, 4096)
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read notification: %v", err)
		}
		return string(buf[:n])
	}
}

func TestNotifyPath(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	next := listen(t, sock)
	t.Setenv(Env, sock)
	for _, state := range []string{Ready("steering"), Reloading(), "READY=1", Stopping} {
		sent, err := Notify(state)
		if err != nil || !sent {
			t.Fatalf("Notify(%q) = %v, %v", state, sent, err)
		}
		if got := next(); got != state {
			t.Fatalf("socket got %q, want %q", got, state)
		}
	}
	if r := Reloading(); !strings.HasPrefix(r, "RELOADING=1\nMONOTONIC_USEC=") || strings.HasSuffix(r, "=0") {
		t.Fatalf("Reloading() = %q", r)
	}
}

func TestNotifyAbstract(t *testing.T) {
	name := "cloudsteer-sdnotify-test-" + filepath.Base(t.TempDir())
	next := listen(t, "@"+name) // Go maps a leading @ to the abstract namespace
	t.Setenv(Env, "@"+name)
	if sent, err := Notify("READY=1"); err != nil || !sent {
		t.Fatalf("Notify = %v, %v", sent, err)
	}
	if got := next(); got != "READY=1" {
		t.Fatalf("got %q", got)
	}
}

func TestNotifyUnsetDoesNothing(t *testing.T) {
	t.Setenv(Env, "")
	if sent, err := Notify("READY=1"); sent || err != nil {
		t.Fatalf("Notify without %s = %v, %v", Env, sent, err)
	}
}

func TestNotifyNobodyListening(t *testing.T) {
	t.Setenv(Env, filepath.Join(t.TempDir(), "none"))
	if _, err := Notify("READY=1"); err == nil {
		t.Fatal("no error for a socket nobody listens on")
	}
}

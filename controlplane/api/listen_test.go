package api_test

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/controlplane/api/apitest"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

// TestAuth checks the token on the network listener and its absence on
// the unix socket.
func TestAuth(t *testing.T) {
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("cloudsteer_up 1\n"))
	})
	h := newHarness(t, nil, api.Options{Token: testToken, Metrics: metrics})
	bearer := func(v string) map[string]string { return map[string]string{"Authorization": v} }
	cases := []struct {
		name   string
		unix   bool
		req    request
		status int
	}{
		{"network no token", false, request{method: "GET", path: "/api/v1/status"}, 401},
		{"network wrong token", false, request{method: "GET", path: "/api/v1/status", header: bearer("Bearer " + strings.Repeat("f", 64))}, 401},
		{"network token prefix", false, request{method: "GET", path: "/api/v1/status", header: bearer("Bearer " + testToken[:63])}, 401},
		{"network token suffix", false, request{method: "GET", path: "/api/v1/status", header: bearer("Bearer " + testToken + "0")}, 401},
		{"network basic scheme", false, request{method: "GET", path: "/api/v1/status", header: bearer("Basic " + testToken)}, 401},
		{"network bare token", false, request{method: "GET", path: "/api/v1/status", header: bearer(testToken)}, 401},
		{"network empty bearer", false, request{method: "GET", path: "/api/v1/status", header: bearer("Bearer ")}, 401},
		{"network no token unknown path", false, request{method: "GET", path: "/api/v1/nope"}, 401},
		{"network no token mutation", false, request{method: "POST", path: "/api/v1/resume"}, 401},
		{"network right token", false, request{method: "GET", path: "/api/v1/status", header: bearer("Bearer " + testToken)}, 200},
		{"network right token lowercase scheme", false, request{method: "GET", path: "/api/v1/status", header: bearer("bearer " + testToken)}, 200},
		{"network right token unknown path", false, request{method: "GET", path: "/api/v1/nope", header: bearer("Bearer " + testToken)}, 404},
		{"network metrics without token", false, request{method: "GET", path: "/metrics"}, 200},
		{"network metrics wrong method", false, request{method: "POST", path: "/metrics"}, 405},
		{"unix without token", true, request{method: "GET", path: "/api/v1/status"}, 200},
		{"unix wrong token ignored", true, request{method: "GET", path: "/api/v1/status", header: bearer("Bearer nope")}, 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, base := h.net, h.netURL
			if tc.unix {
				c, base = h.unix, "http://cloudsteer"
			}
			r := do(t, c, base, tc.req)
			if r.status != tc.status {
				t.Fatalf("status = %d, want %d: %s", r.status, tc.status, r.body)
			}
			if tc.status == 401 {
				if got := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
					t.Errorf("WWW-Authenticate = %q", got)
				}
				if e := r.errBody(t); e.Code != "unauthorized" {
					t.Errorf("code = %q", e.Code)
				}
				if r.header.Get("Cloudsteer-Version") != "" {
					t.Error("version shown before auth")
				}
			}
		})
	}
	if logs := h.logs.String(); strings.Contains(logs, testToken[:16]) {
		t.Errorf("token in logs:\n%s", logs)
	}
	if !strings.Contains(h.logs.String(), "status=401") {
		t.Errorf("refused requests not logged:\n%s", h.logs.String())
	}
}

// TestNetworkPauseBy checks that a pause over the network records the
// client address.
func TestNetworkPauseBy(t *testing.T) {
	h := newHarness(t, nil, api.Options{Token: testToken})
	r := do(t, h.net, h.netURL, request{method: "POST", path: "/api/v1/pause", ct: jsonCT, body: `{"duration":"15m"}`,
		header: map[string]string{"Authorization": "Bearer " + testToken}})
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if h.fake.LastPauseBy != "127.0.0.1" {
		t.Errorf("by = %q, want 127.0.0.1", h.fake.LastPauseBy)
	}
}

func TestServeNetworkNeedsToken(t *testing.T) {
	srv, err := api.NewServer(apitest.New(nil), api.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := srv.ServeNetwork(context.Background(), ln); err == nil {
		t.Fatal("ServeNetwork without a token succeeded")
	}
}

// blockingCtrl holds Diagnose until release is closed.
type blockingCtrl struct {
	*apitest.Fake
	entered chan struct{}
	release chan struct{}
}

func (b blockingCtrl) Diagnose(ctx context.Context) model.Report {
	close(b.entered)
	<-b.release
	return b.Fake.Diagnose(ctx)
}

// TestGracefulShutdown checks that a request in flight when the context
// ends still gets its answer, and that the socket file is gone afterwards.
func TestGracefulShutdown(t *testing.T) {
	ctrl := blockingCtrl{apitest.New(nil), make(chan struct{}), make(chan struct{})}
	srv, err := api.NewServer(ctrl, api.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "s")
	ln, err := api.ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- srv.ServeUnix(ctx, ln) }()

	c := unixClient(sock)
	answered := make(chan response, 1)
	go func() { answered <- do(t, c, "http://x", request{method: "POST", path: "/api/v1/diagnose"}) }()
	<-ctrl.entered
	cancel()
	// New connections are refused once shutdown has closed the listener.
	for {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			break
		}
		conn.Close()
		time.Sleep(5 * time.Millisecond)
	}
	close(ctrl.release)
	if r := <-answered; r.status != 200 {
		t.Errorf("in-flight request: %d %s", r.status, r.body)
	}
	if err := <-served; err != nil {
		t.Errorf("ServeUnix = %v, want nil", err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
}

func TestListenUnix(t *testing.T) {
	t.Run("creates dir and socket modes", func(t *testing.T) {
		dir := t.TempDir()
		sock := filepath.Join(dir, "run", "cloudsteer", "admin.sock")
		ln, err := api.ListenUnix(sock)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		wantMode(t, filepath.Dir(sock), fs.ModeDir|0o700)
		wantMode(t, sock, fs.ModeSocket|0o600)
	})
	t.Run("replaces stale socket", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "admin.sock")
		old, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		old.SetUnlinkOnClose(false)
		old.Close()
		if _, err := os.Lstat(sock); err != nil {
			t.Fatalf("stale socket not there: %v", err)
		}
		ln, err := api.ListenUnix(sock)
		if err != nil {
			t.Fatalf("ListenUnix over a stale socket: %v", err)
		}
		ln.Close()
	})
	t.Run("refuses live socket", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "admin.sock")
		live, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer live.Close()
		if ln, err := api.ListenUnix(sock); err == nil {
			ln.Close()
			t.Fatal("ListenUnix took over a live socket")
		} else if !strings.Contains(err.Error(), "already running") {
			t.Errorf("error = %v", err)
		}
	})
	t.Run("refuses regular file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "admin.sock")
		if err := os.WriteFile(path, []byte("keep me"), 0o644); err != nil {
			t.Fatal(err)
		}
		if ln, err := api.ListenUnix(path); err == nil {
			ln.Close()
			t.Fatal("ListenUnix replaced a regular file")
		}
		if b, _ := os.ReadFile(path); string(b) != "keep me" {
			t.Error("regular file changed")
		}
	})
}

func wantMode(tb testing.TB, path string, want fs.FileMode) {
	tb.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		tb.Fatal(err)
	}
	if fi.Mode() != want {
		tb.Errorf("%s mode = %v, want %v", path, fi.Mode(), want)
	}
}

// TestUnixPeerNotRoot connects as uid nobody (with curl, after opening the
// socket's mode) and expects the peer-credential check to refuse it.
func TestUnixPeerNotRoot(t *testing.T) {
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "curl")
	h := newHarness(t, nil, api.Options{})
	for _, p := range []string{filepath.Dir(filepath.Dir(h.sock)), filepath.Dir(h.sock)} {
		if err := os.Chmod(p, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(h.sock, 0o666); err != nil {
		t.Fatal(err)
	}
	run := func(cred *syscall.Credential) string {
		cmd := exec.Command("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket", h.sock, "http://x/api/v1/status")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("curl: %v", err)
		}
		return string(out)
	}
	if got := run(&syscall.Credential{Uid: 65534, Gid: 65534}); got != "403" {
		t.Errorf("nobody got HTTP %s, want 403", got)
	}
	if got := run(nil); got != "200" {
		t.Errorf("root got HTTP %s, want 200", got)
	}
}

func TestLoadOrCreateToken(t *testing.T) {
	t.Run("create then load", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state", api.TokenFileName)
		tok, err := api.LoadOrCreateToken(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(tok) != 64 || strings.Trim(tok, "0123456789abcdef") != "" {
			t.Errorf("token %q is not 64 hex digits", tok)
		}
		wantMode(t, path, 0o600)
		wantMode(t, filepath.Dir(path), fs.ModeDir|0o700)
		again, err := api.LoadOrCreateToken(path)
		if err != nil || again != tok {
			t.Errorf("second load = %q, %v; want %q", again, err, tok)
		}
		entries, _ := os.ReadDir(filepath.Dir(path))
		if len(entries) != 1 {
			t.Errorf("state dir holds %d files, want 1 (temp file left?)", len(entries))
		}
	})
	t.Run("two tokens differ", func(t *testing.T) {
		a, err1 := api.LoadOrCreateToken(filepath.Join(t.TempDir(), "a"))
		b, err2 := api.LoadOrCreateToken(filepath.Join(t.TempDir(), "b"))
		if err1 != nil || err2 != nil || a == b {
			t.Errorf("tokens %q %q (%v %v)", a, b, err1, err2)
		}
	})
	t.Run("fixes wide mode", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "tok")
		if err := os.WriteFile(path, []byte(testToken+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		tok, err := api.LoadOrCreateToken(path)
		if err != nil || tok != testToken {
			t.Fatalf("load = %q, %v", tok, err)
		}
		wantMode(t, path, 0o600)
	})
	for _, tc := range []struct {
		name, content string
	}{
		{"empty file", ""},
		{"short token", "abc\n"},
		{"bad characters", strings.Repeat("x", 40) + " y\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tok")
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if tok, err := api.LoadOrCreateToken(path); err == nil {
				t.Fatalf("accepted %q", tok)
			} else if !strings.Contains(err.Error(), "delete the file") {
				t.Errorf("error %v does not say what to do", err)
			}
		})
	}
	t.Run("symlink", func(t *testing.T) {
		dir := t.TempDir()
		target := filepath.Join(dir, "target")
		if err := os.WriteFile(target, []byte(testToken), 0o600); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(dir, "tok")
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		if _, err := api.LoadOrCreateToken(link); err == nil {
			t.Fatal("followed a symlink")
		}
	})
	t.Run("directory", func(t *testing.T) {
		if _, err := api.LoadOrCreateToken(t.TempDir()); err == nil {
			t.Fatal("accepted a directory")
		}
	})
}

func TestParsePauseDuration(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want time.Duration
		err  bool
	}{
		{"15m", "15m", 15 * time.Minute, false},
		{"1h", "1h", time.Hour, false},
		{"24h", "24h", 24 * time.Hour, false},
		{"1d", "1d", 24 * time.Hour, false},
		{"7d", "7d", model.MaxPause, false},
		{"zero", "0", 0, false},
		{"zero seconds", "0s", 0, false},
		{"forever", "forever", 0, false},
		{"spaces", " 1h ", time.Hour, false},
		{"compound", "1h30m", 90 * time.Minute, false},
		{"max", "168h", model.MaxPause, false},
		{"empty", "", 0, true},
		{"8d", "8d", 0, true},
		{"0d", "0d", 0, true},
		{"fraction days", "1.5d", 0, true},
		{"over max", "168h0m1s", 0, true},
		{"negative", "-1m", 0, true},
		{"no unit", "15", 0, true},
		{"words", "an hour", 0, true},
		{"overflow", "9999999999999h", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := api.ParsePauseDuration(tc.in)
			if (err != nil) != tc.err || got != tc.want {
				t.Errorf("ParsePauseDuration(%q) = %v, %v; want %v, err %v", tc.in, got, err, tc.want, tc.err)
			}
		})
	}
}

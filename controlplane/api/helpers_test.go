package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/controlplane/api/apitest"
)

const testToken = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// t0 is the fake controller's clock.
var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// harness is an api.Server over a fake controller, served on a real unix
// socket and a real loopback TCP listener.
type harness struct {
	fake    *apitest.Fake
	srv     *api.Server
	sock    string
	unix    *http.Client
	netURL  string
	net     *http.Client
	logs    *syncBuffer
	stopped chan struct{}
}

// newHarness starts the servers; they stop at test cleanup, which also
// checks that both Serve calls returned nil.
func newHarness(tb testing.TB, ctrl api.Controller, opts api.Options) *harness {
	tb.Helper()
	fake, _ := ctrl.(*apitest.Fake)
	if ctrl == nil {
		fake = apitest.New(func() time.Time { return t0 })
		ctrl = fake
	}
	logs := &syncBuffer{}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	srv, err := api.NewServer(ctrl, opts)
	if err != nil {
		tb.Fatalf("NewServer: %v", err)
	}
	dir, err := os.MkdirTemp("", "csapi")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "run", "admin.sock")
	uln, err := api.ListenUnix(sock)
	if err != nil {
		tb.Fatalf("ListenUnix: %v", err)
	}
	lc := net.ListenConfig{}
	lc.SetMultipathTCP(false)
	tln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		uln.Close()
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 2)
	go func() { errs <- srv.ServeUnix(ctx, uln) }()
	if opts.Token != "" {
		go func() { errs <- srv.ServeNetwork(ctx, tln) }()
	} else {
		tln.Close()
		errs <- nil
	}
	h := &harness{
		fake: fake, srv: srv, sock: sock, logs: logs, stopped: make(chan struct{}),
		unix:   unixClient(sock),
		netURL: "http://" + tln.Addr().String(),
		net:    &http.Client{Transport: &http.Transport{}},
	}
	tb.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-errs; err != nil {
				tb.Errorf("serve returned %v, want nil after cancel", err)
			}
		}
		h.unix.CloseIdleConnections()
		h.net.CloseIdleConnections()
	})
	return h
}

func unixClient(sock string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
}

// request is one HTTP exchange.
type request struct {
	method string
	path   string // may hold a query; escaped as given
	ct     string // Content-Type; "" sends none
	body   string
	header map[string]string
}

// response is what came back.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) errBody(tb testing.TB) api.Error {
	tb.Helper()
	var e api.Error
	if err := json.Unmarshal(r.body, &e); err != nil {
		tb.Fatalf("error body %q is not JSON: %v", r.body, err)
	}
	return e
}

func do(tb testing.TB, c *http.Client, base string, q request) response {
	tb.Helper()
	var body io.Reader
	if q.body != "" {
		body = strings.NewReader(q.body)
	}
	req, err := http.NewRequest(q.method, base+q.path, body)
	if err != nil {
		tb.Fatalf("new request: %v", err)
	}
	if q.ct != "" {
		req.Header.Set("Content-Type", q.ct)
	}
	for k, v := range q.header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", q.method, q.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("read body: %v", err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// decode unmarshals a response body into a T.
func decode[T any](tb testing.TB, r response) T {
	tb.Helper()
	var v T
	if err := json.Unmarshal(r.body, &v); err != nil {
		tb.Fatalf("body %q: %v", r.body, err)
	}
	return v
}

func jsonValid(b []byte) bool { return json.Valid(b) }

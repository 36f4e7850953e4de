package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Server timeouts; diagnose (the slowest call) finishes within 10 s.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 60 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 16 << 10
	// shutdownTimeout bounds the graceful part of shutdown; requests
	// still running then have their contexts cancelled and are closed.
	shutdownTimeout = 5 * time.Second
)

// listenerKey marks a request's context with the listener it came in on.
type listenerKey struct{}

// ServeUnix serves the API without a token on ln (from ListenUnix) until
// ctx ends, then shuts down gracefully within a bounded time and returns
// nil. Peers whose uid is neither root nor the daemon's are refused.
func (s *Server) ServeUnix(ctx context.Context, ln net.Listener) error {
	api := s.apiHandler()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if uid, ok := r.Context().Value(peerUIDKey{}).(uint32); ok && uid != 0 && int(uid) != os.Geteuid() {
			writeError(w, r, http.StatusForbidden, CodeForbidden, "the admin socket is for root only")
			return
		}
		api.ServeHTTP(w, r)
	})
	return s.serve(ctx, ln, "unix", s.logged(h))
}

// ServeNetwork serves the API on ln until ctx ends: every /api/v1 request
// needs "Authorization: Bearer <token>"; GET /metrics (when Options.Metrics
// is set) needs none. It refuses to start without Options.Token.
func (s *Server) ServeNetwork(ctx context.Context, ln net.Listener) error {
	if s.opts.Token == "" {
		return errors.New("serve api on network: no token configured")
	}
	return s.serve(ctx, ln, "network", s.logged(s.networkHandler()))
}

// networkHandler is the network listener's handler: metrics, then the API
// behind the token check.
func (s *Server) networkHandler() http.Handler {
	api := s.apiHandler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.hostAllowed(r) {
			writeError(w, r, http.StatusMisdirectedRequest, CodeMisdirected,
				"Host "+strconv.Quote(clip(r.Host))+" is not this gateway: use its LAN address or a name in admin.hostnames")
			return
		}
		if r.URL.Path == "/metrics" && s.opts.Metrics != nil {
			if r.Method != http.MethodGet {
				w.Header().Set("Allow", "GET")
				writeError(w, r, http.StatusMethodNotAllowed, CodeMethodNotAllowed, "method "+clip(r.Method)+" not allowed here (allowed: GET)")
				return
			}
			s.opts.Metrics.ServeHTTP(w, r)
			return
		}
		if !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="cloudsteer"`)
			writeError(w, r, http.StatusUnauthorized, CodeUnauthorized,
				"missing or wrong token: send Authorization: Bearer <token> (see `cloudsteer token`)")
			return
		}
		api.ServeHTTP(w, r)
	})
}

// authorized compares the bearer token in constant time (hashes first, so
// the length does not leak either).
func (s *Server) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := tokenSum(strings.TrimSpace(tok))
	return subtle.ConstantTimeCompare(got[:], s.authSum[:]) == 1
}

func tokenSum(tok string) [32]byte { return sha256.Sum256([]byte(tok)) }

// statusWriter remembers the status a handler wrote, for the access log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// logged writes one debug line per request (never headers or bodies) and a
// warning for refused tokens.
func (s *Server) logged(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		lvl := slog.LevelDebug
		if sw.status == http.StatusUnauthorized {
			lvl = slog.LevelWarn
		}
		s.log.Log(r.Context(), lvl, "request", "method", clip(r.Method), "path", clip(r.URL.Path),
			"status", sw.status, "remote", r.RemoteAddr, "took", time.Since(start))
	})
}

// NewHTTPServer returns an http.Server for h with the admin API's
// timeouts and header limit, so that other listeners of the daemon (the
// web console) hold clients to the same bounds. errorLog receives the
// server's own errors at debug level.
func NewHTTPServer(h http.Handler, errorLog *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(errorLog.Handler(), slog.LevelDebug),
	}
}

// serve runs an http.Server on ln until ctx ends.
func (s *Server) serve(ctx context.Context, ln net.Listener, kind string, h http.Handler) error {
	base, cancelBase := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBase()
	base = context.WithValue(base, listenerKey{}, kind)
	srv := NewHTTPServer(h, s.log)
	srv.BaseContext = func(net.Listener) context.Context { return base }
	srv.ConnContext = connContext
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.log.Info("admin api listening", "listener", kind, "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serve api on %s: %w", kind, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		s.log.Warn("admin api shutdown timed out; closing", "listener", kind)
		cancelBase()
		_ = srv.Close()
	}
	<-errc
	return nil
}

// ListenUnix listens on a unix socket at path for ServeUnix: it creates
// the parent directory (0700) when missing, replaces a stale socket (one
// nobody listens on), refuses to replace anything else, and makes the
// socket 0600.
func ListenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("listen on %s: exists and is not a socket", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("listen on %s: another process is serving it (is cloudsteer already running?)", path)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("listen on %s: check existing socket: %w", path, err)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("listen on %s: remove stale socket: %w", path, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return ln, nil
}

// SessionAuth authenticates a web-console request by its session cookie:
// account names the signed-in admin (ok false: no live session), and
// csrfOK says whether the request carries that session's CSRF token.
type SessionAuth func(r *http.Request) (account string, ok, csrfOK bool)

// CodeCSRF (403) answers a console request that changes state without its
// session's CSRF token.
const CodeCSRF = "csrf"

// ConsoleHandler serves the API inside the web console's HTTPS origin:
// a request is authorized by the bearer token, as on the network listener,
// or by a console session (session); with a session, every method but GET
// and HEAD needs the CSRF token too. The console checks the Host before.
func (s *Server) ConsoleHandler(session SessionAuth) http.Handler {
	api := s.apiHandler()
	return s.logged(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = r.WithContext(context.WithValue(r.Context(), listenerKey{}, "network"))
		if r.Header.Get("Authorization") != "" {
			if s.opts.Token == "" || !s.authorized(r) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="cloudsteer"`)
				writeError(w, r, http.StatusUnauthorized, CodeUnauthorized, "wrong token")
				return
			}
			api.ServeHTTP(w, r)
			return
		}
		_, ok, csrfOK := session(r)
		if !ok {
			writeError(w, r, http.StatusUnauthorized, CodeUnauthorized, "not signed in: sign in to the console again")
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && !csrfOK {
			writeError(w, r, http.StatusForbidden, CodeCSRF, "missing or wrong CSRF token: reload the page")
			return
		}
		api.ServeHTTP(w, r)
	}))
}

// Package api is the admin API server: JSON over HTTP under /api/v1, served
// on a root-only unix socket (no token) and on the LAN management address
// (bearer token), driving a Controller. docs/openapi.yaml describes it.
package api

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"path"
	"slices"
	"strings"
)

// Prefix is the path every API route starts with.
const Prefix = "/api/v1"

// TokenFileName is the token file's name inside the state directory.
const TokenFileName = "admin.token"

// maxBody is the largest request body the API reads.
const maxBody = 64 << 10

// Options configure a Server.
type Options struct {
	// Token is the bearer token network clients must send; ServeNetwork
	// refuses to start without one.
	Token string
	// Logger receives access and error logs; nil discards them.
	Logger *slog.Logger
	// Metrics, when set, is served at GET /metrics on the network listener
	// without a token.
	Metrics http.Handler
	// AllowHost, when set, decides which Host headers the network listener
	// answers (everything, /metrics included): the gateway's own addresses
	// and names, so that a DNS-rebinding page in a LAN browser, whose
	// requests name the attacker's domain, gets 421 and nothing else. It
	// gets either the address or the name from hostheader.Parse. The unix socket is
	// not checked.
	AllowHost func(addr netip.Addr, name string) bool
	// Version is reported in the Cloudsteer-Version header and fills
	// Status.Version when the controller leaves it empty.
	Version string
}

// Server is the admin API: one route table served on a unix socket and,
// behind bearer-token auth, on a network listener.
type Server struct {
	ctrl    Controller
	opts    Options
	log     *slog.Logger
	routes  []route
	mux     *http.ServeMux
	authSum [32]byte // sha256 of the token
}

// route is one path of the API with its handlers by method.
type route struct {
	path    string // ServeMux pattern without method, under Prefix
	methods map[string]http.HandlerFunc
}

// NewServer returns a Server driving ctrl.
func NewServer(ctrl Controller, opts Options) (*Server, error) {
	if ctrl == nil {
		return nil, errors.New("new api server: nil controller")
	}
	if opts.Token != "" {
		if err := checkToken(opts.Token); err != nil {
			return nil, fmt.Errorf("new api server: %w", err)
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		ctrl: ctrl,
		opts: opts,
		log:  log.With("component", "api"),
		mux:  http.NewServeMux(),
	}
	if opts.Token != "" {
		s.authSum = tokenSum(opts.Token)
	}
	s.routes = append(s.routeTable(), s.consoleRoutes()...)
	for _, rt := range s.routes {
		s.mux.Handle(rt.path, methodDispatch(rt.methods))
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, http.StatusNotFound, "not_found", "no such endpoint: "+clip(r.URL.Path))
	})
	return s, nil
}

// routeTable lists every API route; the OpenAPI test checks it against
// docs/openapi.yaml.
func (s *Server) routeTable() []route {
	p := func(suffix string) string { return Prefix + suffix }
	return []route{
		{p("/status"), map[string]http.HandlerFunc{http.MethodGet: s.getStatus}},
		{p("/bypass"), map[string]http.HandlerFunc{
			http.MethodGet:  s.listBypass,
			http.MethodPost: s.addBypass,
		}},
		{p("/bypass/{value}"), map[string]http.HandlerFunc{
			http.MethodDelete: s.removeBypass,
			http.MethodPatch:  s.patchBypass,
		}},
		{p("/bypass/{value}/enable"), map[string]http.HandlerFunc{http.MethodPost: s.enableBypass(true)}},
		{p("/bypass/{value}/disable"), map[string]http.HandlerFunc{http.MethodPost: s.enableBypass(false)}},
		{p("/pause"), map[string]http.HandlerFunc{
			http.MethodGet:  s.getPause,
			http.MethodPost: s.pause,
		}},
		{p("/resume"), map[string]http.HandlerFunc{http.MethodPost: s.resume}},
		{p("/events"), map[string]http.HandlerFunc{http.MethodGet: s.events}},
		{p("/activate"), map[string]http.HandlerFunc{http.MethodPost: s.activate}},
		{p("/diagnose"), map[string]http.HandlerFunc{http.MethodPost: s.diagnose}},
		{p("/settings"), map[string]http.HandlerFunc{
			http.MethodGet: s.getSettings,
			http.MethodPut: s.putSettings,
		}},
	}
}

// methodDispatch picks the handler for r.Method, or answers 405 with Allow.
func methodDispatch(m map[string]http.HandlerFunc) http.Handler {
	allowed := make([]string, 0, len(m))
	for meth := range m {
		allowed = append(allowed, meth)
	}
	slices.Sort(allowed)
	allow := strings.Join(allowed, ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, ok := m[r.Method]
		if !ok {
			w.Header().Set("Allow", allow)
			writeError(w, r, http.StatusMethodNotAllowed, "method_not_allowed",
				fmt.Sprintf("method %s not allowed here (allowed: %s)", clip(r.Method), allow))
			return
		}
		h(w, r)
	})
}

// apiHandler serves the route table: canonical paths only, JSON errors for
// everything the mux would answer in plain text.
func (s *Server) apiHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.opts.Version != "" {
			w.Header().Set("Cloudsteer-Version", s.opts.Version)
		}
		// The mux would redirect a non-canonical path (//, /./, /../)
		// with an HTML body; an API client gets a JSON 404 instead.
		ep := r.URL.EscapedPath()
		if ep == "" || ep[0] != '/' || cleanPath(ep) != ep || r.Method == http.MethodConnect {
			writeError(w, r, http.StatusNotFound, "not_found", "no such endpoint: "+clip(r.URL.Path))
			return
		}
		s.mux.ServeHTTP(w, r)
	})
}

// cleanPath is path.Clean keeping a trailing slash, as ServeMux does.
func cleanPath(p string) string {
	np := path.Clean(p)
	if strings.HasSuffix(p, "/") && np != "/" {
		np += "/"
	}
	return np
}

package api

import (
	"context"
	"net/http"
	"time"
)

// ConsoleAdmin is the root-only side of the web console that the CLI
// drives (`cloudsteer console ...`): the console's address and
// certificate, the first-run setup link and the last-resort admin reset.
// A Controller that also implements it gets the /console routes; they are
// answered on the unix socket only (403 on the network listener and
// inside the console), because a setup link is what lets its holder
// create the console's administrator.
type ConsoleAdmin interface {
	// ConsoleInfo describes the console.
	ConsoleInfo(ctx context.Context) (ConsoleInfo, error)
	// ConsoleSetupLink makes a new one-time setup link (replacing any
	// older one); ErrConflict when an admin is set up already.
	ConsoleSetupLink(ctx context.Context) (SetupLink, error)
	// ConsoleResetAdmin deletes the administrator, ends every console
	// session and returns a new setup link.
	ConsoleResetAdmin(ctx context.Context) (SetupLink, error)
}

// ConsoleInfo is the answer to GET /console.
type ConsoleInfo struct {
	// Enabled is console.enabled; the other fields are empty when false.
	Enabled bool `json:"enabled"`
	// URLs are the console's https:// addresses, one per LAN address.
	URLs []string `json:"urls"`
	// Fingerprint is the SHA-256 of its HTTPS certificate, colon-hex.
	Fingerprint string `json:"fingerprint"`
	// CertificateExpires is when that certificate expires.
	CertificateExpires time.Time `json:"certificate_expires"`
	// AdminSetUp says an administrator exists; User is its name.
	AdminSetUp bool   `json:"admin_set_up"`
	User       string `json:"user,omitempty"`
	// SetupLinkPending says an unused, unexpired setup link exists.
	SetupLinkPending bool `json:"setup_link_pending"`
}

// SetupLink is the answer to POST /console/setup-link and
// /console/reset-admin: a one-time link (a secret until used) and its
// expiry.
type SetupLink struct {
	URL     string    `json:"url"`
	Expires time.Time `json:"expires"`
}

// consoleRoutes are the console's root-only routes.
func (s *Server) consoleRoutes() []route {
	p := func(suffix string) string { return Prefix + suffix }
	return []route{
		{p("/console"), map[string]http.HandlerFunc{http.MethodGet: s.unixOnly(s.getConsole)}},
		{p("/console/setup-link"), map[string]http.HandlerFunc{http.MethodPost: s.unixOnly(s.consoleSetupLink)}},
		{p("/console/reset-admin"), map[string]http.HandlerFunc{http.MethodPost: s.unixOnly(s.consoleResetAdmin)}},
	}
}

// unixOnly answers 403 unless the request came in on the unix socket, and
// 404 when the controller has no console.
func (s *Server) unixOnly(h func(http.ResponseWriter, *http.Request, ConsoleAdmin)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if kind, _ := r.Context().Value(listenerKey{}).(string); kind != "unix" {
			writeError(w, r, http.StatusForbidden, CodeForbidden,
				"console administration is for root on the gateway only: run `cloudsteer console` there")
			return
		}
		ca, ok := s.ctrl.(ConsoleAdmin)
		if !ok {
			writeError(w, r, http.StatusNotFound, CodeNotFound, "this gateway has no web console")
			return
		}
		if !noBody(w, r) {
			return
		}
		h(w, r, ca)
	}
}

func (s *Server) getConsole(w http.ResponseWriter, r *http.Request, ca ConsoleAdmin) {
	info, err := ca.ConsoleInfo(r.Context())
	if err != nil {
		s.writeCtrlError(w, r, "console info", err)
		return
	}
	if info.URLs == nil {
		info.URLs = []string{}
	}
	writeJSON(w, http.StatusOK, info)
}

func (s *Server) consoleSetupLink(w http.ResponseWriter, r *http.Request, ca ConsoleAdmin) {
	l, err := ca.ConsoleSetupLink(r.Context())
	if err != nil {
		s.writeCtrlError(w, r, "console setup link", err)
		return
	}
	writeJSON(w, http.StatusOK, l)
}

func (s *Server) consoleResetAdmin(w http.ResponseWriter, r *http.Request, ca ConsoleAdmin) {
	l, err := ca.ConsoleResetAdmin(r.Context())
	if err != nil {
		s.writeCtrlError(w, r, "console reset admin", err)
		return
	}
	s.log.Warn("console admin reset from the unix socket; every console session ended")
	writeJSON(w, http.StatusOK, l)
}

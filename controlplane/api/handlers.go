package api

import (
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// Request and response bodies beyond the model types.
type (
	// BypassList is the answer to GET /bypass.
	BypassList struct {
		Entries []model.BypassEntry `json:"entries"`
	}
	// AddBypassRequest is the body of POST /bypass.
	AddBypassRequest struct {
		Value   string `json:"value"`
		Comment string `json:"comment,omitempty"`
		// Force accepts a CIDR that makes the enabled bypass CIDRs cover
		// more than a /8 of IPv4 or a /16 of IPv6.
		Force bool `json:"force,omitempty"`
	}
	// SetEnabledRequest is the body of PATCH /bypass/{value}.
	SetEnabledRequest struct {
		Enabled *bool `json:"enabled,omitempty"`
		Force   bool  `json:"force,omitempty"` // as in AddBypassRequest
		// Comment, when present, replaces the entry's comment ("" clears
		// it).
		Comment *string `json:"comment,omitempty"`
	}
	// ForceRequest is the optional body of POST /bypass/{value}/enable.
	ForceRequest struct {
		Force bool `json:"force,omitempty"` // as in AddBypassRequest
	}
	// Removed is the answer to DELETE /bypass/{value}.
	Removed struct {
		Value   string `json:"value"`
		Removed bool   `json:"removed"`
	}
	// PauseRequest is the body of POST /pause.
	PauseRequest struct {
		// Duration is "15m", "1h", "24h", "1d", any Go duration up to
		// model.MaxPause, or "0"/"forever" for until resumed.
		Duration string `json:"duration"`
		// Code is the entitlement code, needed when the require-code
		// setting is on.
		Code string `json:"code,omitempty"`
	}
	// EventList is the answer to GET /events.
	EventList struct {
		Events []model.Event `json:"events"`
	}
	// ActivateRequest is the body of POST /activate.
	ActivateRequest struct {
		Code string `json:"code"`
	}
	// Activated is the answer to POST /activate.
	Activated struct {
		Code string `json:"entitlement_code"` // masked
		// Verified says the cloud proxy accepted the code; InUse that it is
		// what the gateway now authenticates with. Both are false when
		// chaining credentials (cloud_proxy.username) are configured: the
		// code is then only stored.
		Verified bool   `json:"verified"`
		InUse    bool   `json:"in_use"`
		Message  string `json:"message"`
	}
)

// Input bounds the API enforces before the controller sees a value.
const (
	maxValueLen   = 260 // a 253-byte name plus a wildcard, or a CIDR
	maxCommentLen = 256
	maxCodeLen    = 256
	maxNameFilter = 253
	// MaxEventLimit is the most events one GET /events returns.
	MaxEventLimit = 1000
)

// by names who asked, for the pause record: "cli" on the unix socket,
// the client's address on the network.
func by(r *http.Request) string {
	if v, ok := r.Context().Value(listenerKey{}).(string); ok && v == "network" {
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			return ap.Addr().Unmap().String()
		}
		return "api"
	}
	return "cli"
}

// noQuery answers 400 when a request carries query parameters the
// endpoint does not take.
func noQuery(w http.ResponseWriter, r *http.Request) bool {
	if r.URL.RawQuery == "" {
		return true
	}
	writeError(w, r, http.StatusBadRequest, CodeInvalid, "this endpoint takes no query parameters")
	return false
}

// noBody checks a request that takes no parameters: no query, and an empty
// body or an empty JSON object.
func noBody(w http.ResponseWriter, r *http.Request) bool {
	return noQuery(w, r) && readJSON(w, r, &struct{}{}, false)
}

func (s *Server) getStatus(w http.ResponseWriter, r *http.Request) {
	if !noBody(w, r) {
		return
	}
	st := s.ctrl.Status(r.Context())
	if st.Version == "" {
		st.Version = s.opts.Version
	}
	if st.Reasons == nil {
		st.Reasons = []model.Reason{}
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) listBypass(w http.ResponseWriter, r *http.Request) {
	if !noBody(w, r) {
		return
	}
	list := s.ctrl.Bypass(r.Context())
	if list == nil {
		list = []model.BypassEntry{}
	}
	writeJSON(w, http.StatusOK, BypassList{Entries: list})
}

func (s *Server) addBypass(w http.ResponseWriter, r *http.Request) {
	var req AddBypassRequest
	if !noQuery(w, r) || !readJSON(w, r, &req, true) {
		return
	}
	value := strings.TrimSpace(req.Value)
	if msg := checkValue(value); msg != "" {
		writeError(w, r, http.StatusBadRequest, CodeInvalid, msg)
		return
	}
	if msg := checkText("comment", req.Comment, maxCommentLen); msg != "" {
		writeError(w, r, http.StatusBadRequest, CodeInvalid, msg)
		return
	}
	e, err := s.ctrl.AddBypass(r.Context(), value, req.Comment, req.Force)
	if err != nil {
		s.writeCtrlError(w, r, "add bypass", err)
		return
	}
	s.log.Info("bypass added", "value", e.Value, "by", by(r))
	writeJSON(w, http.StatusCreated, e)
}

// pathValue returns the {value} path segment, or answers 400.
func pathValue(w http.ResponseWriter, r *http.Request) (string, bool) {
	v := r.PathValue("value")
	if msg := checkValue(v); msg != "" {
		writeError(w, r, http.StatusBadRequest, CodeInvalid, msg)
		return "", false
	}
	return v, true
}

func (s *Server) removeBypass(w http.ResponseWriter, r *http.Request) {
	v, ok := pathValue(w, r)
	if !ok || !noBody(w, r) {
		return
	}
	if err := s.ctrl.RemoveBypass(r.Context(), v); err != nil {
		s.writeCtrlError(w, r, "remove bypass", err)
		return
	}
	s.log.Info("bypass removed", "value", v, "by", by(r))
	writeJSON(w, http.StatusOK, Removed{Value: v, Removed: true})
}

func (s *Server) enableBypass(enabled bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, ok := pathValue(w, r)
		if !ok || !noQuery(w, r) {
			return
		}
		var req ForceRequest
		if !readJSON(w, r, &req, false) {
			return
		}
		s.setEnabled(w, r, v, enabled, req.Force)
	}
}

func (s *Server) patchBypass(w http.ResponseWriter, r *http.Request) {
	v, ok := pathValue(w, r)
	if !ok || !noQuery(w, r) {
		return
	}
	var req SetEnabledRequest
	if !readJSON(w, r, &req, true) {
		return
	}
	if req.Enabled == nil && req.Comment == nil {
		writeError(w, r, http.StatusBadRequest, CodeInvalid, `give "enabled" (true or false), "comment", or both`)
		return
	}
	if req.Comment != nil {
		if msg := checkText("comment", *req.Comment, maxCommentLen); msg != "" {
			writeError(w, r, http.StatusBadRequest, CodeInvalid, msg)
			return
		}
		e, err := s.ctrl.SetBypassComment(r.Context(), v, *req.Comment)
		if err != nil {
			s.writeCtrlError(w, r, "set bypass comment", err)
			return
		}
		s.log.Info("bypass comment changed", "value", e.Value, "by", by(r))
		if req.Enabled == nil {
			writeJSON(w, http.StatusOK, e)
			return
		}
	}
	s.setEnabled(w, r, v, *req.Enabled, req.Force)
}

func (s *Server) setEnabled(w http.ResponseWriter, r *http.Request, v string, enabled, force bool) {
	e, err := s.ctrl.SetBypassEnabled(r.Context(), v, enabled, force)
	if err != nil {
		s.writeCtrlError(w, r, "set bypass enabled", err)
		return
	}
	s.log.Info("bypass changed", "value", e.Value, "enabled", e.Enabled, "by", by(r))
	writeJSON(w, http.StatusOK, e)
}

func (s *Server) getPause(w http.ResponseWriter, r *http.Request) {
	if !noBody(w, r) {
		return
	}
	writeJSON(w, http.StatusOK, s.ctrl.PauseState(r.Context()))
}

func (s *Server) pause(w http.ResponseWriter, r *http.Request) {
	var req PauseRequest
	if !noQuery(w, r) || !readJSON(w, r, &req, true) {
		return
	}
	d, err := ParsePauseDuration(req.Duration)
	if err != nil {
		writeError(w, r, http.StatusBadRequest, CodeInvalid, err.Error())
		return
	}
	if msg := checkText("code", req.Code, maxCodeLen); msg != "" {
		writeError(w, r, http.StatusBadRequest, CodeInvalid, msg)
		return
	}
	who := by(r)
	ps, err := s.ctrl.Pause(r.Context(), d, req.Code, who)
	if err != nil {
		s.writeCtrlError(w, r, "pause", err)
		return
	}
	s.log.Info("protection paused", "for", d, "by", who)
	writeJSON(w, http.StatusOK, ps)
}

func (s *Server) resume(w http.ResponseWriter, r *http.Request) {
	if !noBody(w, r) {
		return
	}
	ps, err := s.ctrl.Resume(r.Context())
	if err != nil {
		s.writeCtrlError(w, r, "resume", err)
		return
	}
	s.log.Info("protection resumed", "by", by(r))
	writeJSON(w, http.StatusOK, ps)
}

func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	if !readJSON(w, r, &struct{}{}, false) {
		return
	}
	f, msg := parseEventFilter(r.URL.RawQuery)
	if msg != "" {
		writeError(w, r, http.StatusBadRequest, CodeInvalid, msg)
		return
	}
	evs, err := s.ctrl.Events(r.Context(), f)
	if err != nil {
		s.writeCtrlError(w, r, "events", err)
		return
	}
	if evs == nil {
		evs = []model.Event{}
	}
	writeJSON(w, http.StatusOK, EventList{Events: evs})
}

// parseEventFilter reads GET /events parameters: client (an IP), name,
// since and until (RFC 3339), limit (1..MaxEventLimit). Unknown or
// repeated parameters are errors.
func parseEventFilter(raw string) (model.EventFilter, string) {
	var f model.EventFilter
	q, err := url.ParseQuery(raw)
	if err != nil {
		return f, "invalid query string: " + clip(oneLine(err.Error()))
	}
	for k, vs := range q {
		if len(vs) > 1 {
			return f, fmt.Sprintf("query parameter %q given more than once", clip(k))
		}
		v := vs[0]
		switch k {
		case "client":
			a, err := netip.ParseAddr(v)
			if err != nil {
				return f, fmt.Sprintf("client %q is not an IP address", clip(v))
			}
			f.Client = a.Unmap().String()
		case "name":
			if msg := checkText("name", v, maxNameFilter); msg != "" {
				return f, msg
			}
			f.Name = v
		case "since", "until":
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return f, fmt.Sprintf("%s %q is not an RFC 3339 time (like 2026-01-02T15:04:05Z)", k, clip(v))
			}
			if k == "since" {
				f.Since = t
			} else {
				f.Until = t
			}
		case "limit":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > MaxEventLimit {
				return f, fmt.Sprintf("limit %q must be a number from 1 to %d", clip(v), MaxEventLimit)
			}
			f.Limit = n
		default:
			return f, fmt.Sprintf("unknown query parameter %q (known: client, name, since, until, limit)", clip(k))
		}
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && f.Until.Before(f.Since) {
		return f, "until is before since"
	}
	return f, ""
}

func (s *Server) activate(w http.ResponseWriter, r *http.Request) {
	var req ActivateRequest
	if !noQuery(w, r) || !readJSON(w, r, &req, true) {
		return
	}
	code := strings.TrimSpace(req.Code)
	if code == "" {
		writeError(w, r, http.StatusBadRequest, CodeInvalid, `field "code" is required`)
		return
	}
	if msg := checkText("code", code, maxCodeLen); msg != "" {
		writeError(w, r, http.StatusBadRequest, CodeInvalid, msg)
		return
	}
	a, err := s.ctrl.Activate(r.Context(), code)
	if err != nil {
		s.writeCtrlError(w, r, "activate", err)
		return
	}
	s.log.Info("entitlement code set", "code", a.Code, "verified", a.Verified, "by", by(r))
	writeJSON(w, http.StatusOK, a)
}

func (s *Server) diagnose(w http.ResponseWriter, r *http.Request) {
	if !noBody(w, r) {
		return
	}
	rep := s.ctrl.Diagnose(r.Context())
	if rep.Checks == nil {
		rep.Checks = []model.Check{}
	}
	writeJSON(w, http.StatusOK, rep)
}

func (s *Server) getSettings(w http.ResponseWriter, r *http.Request) {
	if !noBody(w, r) {
		return
	}
	writeJSON(w, http.StatusOK, s.ctrl.Settings(r.Context()))
}

// SettingsRequest is the body of PUT /settings: every setting is
// required, so a client that does not know a setting cannot reset it by
// accident.
type SettingsRequest struct {
	RequireCodeToPause *bool `json:"require_code_to_pause"`
	// Code is the entitlement code, needed to switch require_code_to_pause
	// off.
	Code string `json:"code,omitempty"`
}

func (s *Server) putSettings(w http.ResponseWriter, r *http.Request) {
	var req SettingsRequest
	if !noQuery(w, r) || !readJSON(w, r, &req, true) {
		return
	}
	if req.RequireCodeToPause == nil {
		writeError(w, r, http.StatusBadRequest, CodeInvalid, `field "require_code_to_pause" is required (true or false)`)
		return
	}
	if msg := checkText("code", req.Code, maxCodeLen); msg != "" {
		writeError(w, r, http.StatusBadRequest, CodeInvalid, msg)
		return
	}
	got, err := s.ctrl.SetSettings(r.Context(), Settings{RequireCodeToPause: *req.RequireCodeToPause}, req.Code)
	if err != nil {
		s.writeCtrlError(w, r, "set settings", err)
		return
	}
	s.log.Info("settings changed", "require_code_to_pause", got.RequireCodeToPause, "by", by(r))
	writeJSON(w, http.StatusOK, got)
}

// checkValue is the API's coarse check of a bypass value (the controller
// validates the syntax): present, bounded, printable, no spaces.
func checkValue(v string) string {
	switch {
	case v == "":
		return `bypass value is required (a domain like "bank.example" or "*.example.com", or an IP/CIDR)`
	case len(v) > maxValueLen:
		return fmt.Sprintf("bypass value longer than %d bytes", maxValueLen)
	case !utf8.ValidString(v):
		return "bypass value is not valid UTF-8"
	}
	for _, r := range v {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return fmt.Sprintf("bypass value %q contains a space or control character", clip(v))
		}
	}
	return ""
}

// checkText bounds a free-text field and keeps control characters out of
// stored text and logs.
func checkText(field, v string, max int) string {
	if len(v) > max {
		return fmt.Sprintf("%s longer than %d bytes", field, max)
	}
	if !utf8.ValidString(v) {
		return field + " is not valid UTF-8"
	}
	for _, r := range v {
		if unicode.IsControl(r) {
			return field + " contains a control character"
		}
	}
	return ""
}

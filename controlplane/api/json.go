package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// Error is the body of every error answer.
type Error struct {
	Error string `json:"error"` // for people, one line
	Code  string `json:"code"`  // stable: "invalid", "not_found", ...
}

// Error codes beyond the model sentinels' ones.
const (
	CodeInvalid          = "invalid"
	CodeUnauthorized     = "unauthorized"
	CodeForbidden        = "forbidden"
	CodeNotFound         = "not_found"
	CodeConflict         = "conflict"
	CodeRejected         = "rejected"
	CodeUnavailable      = "unavailable"
	CodeInternal         = "internal"
	CodeMethodNotAllowed = "method_not_allowed"
	CodeUnsupportedMedia = "unsupported_media_type"
	CodeTooLarge         = "too_large"
	// CodeMisdirected (421) answers a network request whose Host is not
	// the gateway's (DNS rebinding).
	CodeMisdirected = "misdirected"
)

// sentinels maps the controller's errors to HTTP statuses and codes.
var sentinels = []struct {
	err    error
	status int
	code   string
}{
	{model.ErrInvalid, http.StatusBadRequest, CodeInvalid},
	{model.ErrUnauthorized, http.StatusUnauthorized, CodeUnauthorized},
	{model.ErrForbidden, http.StatusForbidden, CodeForbidden},
	{model.ErrNotFound, http.StatusNotFound, CodeNotFound},
	{model.ErrConflict, http.StatusConflict, CodeConflict},
	{model.ErrRejected, http.StatusUnprocessableEntity, CodeRejected},
	{model.ErrUnavailable, http.StatusServiceUnavailable, CodeUnavailable},
}

// writeJSON answers status with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Model types always marshal; this is a programming error.
		status = http.StatusInternalServerError
		b = []byte(`{"error":"internal error","code":"internal"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// writeError answers status with an Error body.
func writeError(w http.ResponseWriter, _ *http.Request, status int, code, msg string) {
	writeJSON(w, status, Error{Error: msg, Code: code})
}

// writeCtrlError maps an error from the controller: a model sentinel to
// its status with the error's (safe) text, anything else to a generic 500
// whose detail goes only to the log.
func (s *Server) writeCtrlError(w http.ResponseWriter, r *http.Request, op string, err error) {
	for _, m := range sentinels {
		if errors.Is(err, m.err) {
			writeError(w, r, m.status, m.code, oneLine(err.Error()))
			return
		}
	}
	s.log.Error("controller error", "op", op, "method", r.Method, "path", r.URL.Path, "err", err)
	writeError(w, r, http.StatusInternalServerError, CodeInternal, "internal error (see the cloudsteer log)")
}

// errBody is a request body problem with its answer.
type errBody struct {
	status int
	code   string
	msg    string
}

func (e *errBody) Error() string { return e.msg }

// readJSON decodes r's body into dst. With required false an empty body is
// fine (dst stays zero); a non-empty one must still be a JSON object of
// dst's fields. It answers the client itself and returns false on a bad
// body.
func readJSON(w http.ResponseWriter, r *http.Request, dst any, required bool) bool {
	if err := decodeBody(w, r, dst, required); err != nil {
		var eb *errBody
		if !errors.As(err, &eb) {
			eb = &errBody{http.StatusBadRequest, CodeInvalid, err.Error()}
		}
		writeError(w, r, eb.status, eb.code, eb.msg)
		return false
	}
	return true
}

func decodeBody(w http.ResponseWriter, r *http.Request, dst any, required bool) error {
	ct := r.Header.Get("Content-Type")
	if required && !isJSON(ct) {
		return unsupportedMedia(ct)
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &errBody{http.StatusRequestEntityTooLarge, CodeTooLarge,
				fmt.Sprintf("request body larger than %d bytes", maxBody)}
		}
		return &errBody{http.StatusBadRequest, CodeInvalid, "read request body: " + oneLine(err.Error())}
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		if required {
			return &errBody{http.StatusBadRequest, CodeInvalid, "request body is empty: expected a JSON object"}
		}
		return nil
	}
	if !required && !isJSON(ct) {
		return unsupportedMedia(ct)
	}
	if trimmed[0] != '{' {
		return &errBody{http.StatusBadRequest, CodeInvalid, "request body must be a JSON object"}
	}
	if !utf8.Valid(trimmed) {
		return &errBody{http.StatusBadRequest, CodeInvalid, "request body is not valid UTF-8"}
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return &errBody{http.StatusBadRequest, CodeInvalid, jsonProblem(err)}
	}
	if _, err := dec.Token(); err != io.EOF {
		return &errBody{http.StatusBadRequest, CodeInvalid, "invalid JSON: data after the object"}
	}
	return nil
}

func unsupportedMedia(ct string) error {
	if ct == "" {
		return &errBody{http.StatusUnsupportedMediaType, CodeUnsupportedMedia,
			"missing Content-Type: send application/json"}
	}
	return &errBody{http.StatusUnsupportedMediaType, CodeUnsupportedMedia,
		fmt.Sprintf("unsupported Content-Type %q: send application/json", clip(ct))}
}

// isJSON reports whether a Content-Type header names JSON.
func isJSON(ct string) bool {
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return false
	}
	cs, ok := params["charset"]
	return !ok || strings.EqualFold(cs, "utf-8")
}

// jsonProblem turns a decoding error into a clear one-line message.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at byte %d: %s", se.Offset, oneLine(se.Error()))
	case errors.As(err, &te):
		if te.Field == "" {
			return fmt.Sprintf("invalid JSON: expected %s, got %s", te.Type, te.Value)
		}
		return fmt.Sprintf("invalid JSON: field %q must be %s, got %s", clip(te.Field), jsonKind(te.Type.Kind().String()), te.Value)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "invalid JSON: the object is cut short"
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	if strings.HasPrefix(msg, "unknown field ") {
		return "invalid JSON: " + clip(msg)
	}
	return "invalid JSON: " + clip(oneLine(msg))
}

func jsonKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "int", "int64", "uint64", "float64":
		return "a number"
	}
	return k
}

// clip shortens client-supplied text echoed in messages.
func clip(s string) string {
	const n = 120
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// oneLine replaces line breaks so a message stays one line.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
}

package console

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// pageRoutes registers the signed-in pages, the console's own small
// endpoints the pages' script calls (badge, event seen mark, client names,
// CA upload) and the public CA download.
func (c *Console) pageRoutes() {
	c.mux.HandleFunc("GET /{$}", c.page(c.statusPage))
	c.mux.HandleFunc("GET /bypass", c.page(c.bypassPage))
	c.mux.HandleFunc("GET /pause", c.page(c.pausePage))
	c.mux.HandleFunc("GET /events", c.page(c.eventsPage))
	c.mux.HandleFunc("GET /diagnostics", c.page(c.diagnosticsPage))
	c.mux.HandleFunc("GET /settings", c.page(c.settingsPage))
	c.mux.HandleFunc("GET /certificate", c.page(c.certificatePage))
	c.mux.Handle("POST /certificate", c.limitUpload(c.requireLogin(c.uploadCA)))
	c.mux.HandleFunc("GET /upgrade", c.page(c.upgradePage))
	c.mux.HandleFunc("POST /upgrade", c.requireLogin(c.uploadUpgrade))
	c.mux.HandleFunc("POST /upgrade/url", c.requireLogin(c.fetchUpgrade))

	c.mux.HandleFunc("GET /badge", c.requireLogin(c.badgeJSON))
	c.mux.HandleFunc("POST /events/seen", c.requireLogin(c.markSeen))
	c.mux.HandleFunc("POST /clients", c.requireLogin(c.nameClient))

	ca := c.CAHandler()
	c.mux.Handle("GET /ca", ca)
	c.mux.Handle("GET /ca.cer", ca)
}

// page serves h behind the login, with the navigation's badge filled in.
func (c *Console) page(h func(w http.ResponseWriter, r *http.Request, p pageData)) http.HandlerFunc {
	return c.requireLogin(func(w http.ResponseWriter, r *http.Request, p pageData) {
		p.Badge = c.badge(r.Context(), p.User)
		h(w, r, p)
	})
}

// badgeWindow is how many of the newest events the badge looks at; it
// shows at most this many.
const badgeWindow = 100

// seenEvents keeps, per account, the ID of the newest event the admin has
// seen on the Events page. It lives in memory: after a restart the recent
// blocks count as new again, as the agent's notifications do.
type seenEvents struct {
	mu sync.Mutex
	id map[string]uint64
}

func (s *seenEvents) get(account string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.id[account]
}

// mark raises account's seen mark to id (never lowers it).
func (s *seenEvents) mark(account string, id uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.id == nil {
		s.id = map[string]uint64{}
	}
	if id > s.id[account] {
		s.id[account] = id
	}
}

// isBlock reports whether an event counts for the badge: a request the
// cloud blocked (web or DNS), not a failed login or an auth failure.
func isBlock(e model.Event) bool { return e.Reason == "blocked" || e.Reason == "dns_blocked" }

// badge counts the block events newer than account's seen mark.
func (c *Console) badge(ctx context.Context, account string) int {
	evs, err := c.b.Events(ctx, model.EventFilter{Limit: badgeWindow})
	if err != nil {
		c.log.Warn("badge: read events", "err", err)
		return 0
	}
	seen, n := c.seen.get(account), 0
	for _, e := range evs {
		if e.ID > seen && isBlock(e) {
			n++
		}
	}
	return n
}

// badgeAnswer is GET /badge: the count and its label in the page's
// language, so that the script needs no catalog.
type badgeAnswer struct {
	Count int    `json:"count"`
	Label string `json:"label"`
}

func (c *Console) badgeJSON(w http.ResponseWriter, r *http.Request, p pageData) {
	n := c.badge(r.Context(), p.User)
	writePageJSON(w, http.StatusOK, badgeAnswer{Count: n, Label: c.cat.text(p.Lang, "nav.badge", n)})
}

// markSeen is POST /events/seen (id=<event id>): the Events page's script
// says it has shown events up to id.
func (c *Console) markSeen(w http.ResponseWriter, r *http.Request, p pageData) {
	id, err := strconv.ParseUint(r.PostFormValue("id"), 10, 64)
	if err != nil {
		writePageJSON(w, http.StatusBadRequest, pageJSONError{Error: c.cat.text(p.Lang, "events.err.seen"), Code: "invalid"})
		return
	}
	// Never past the newest event, so that a bad id cannot hide blocks
	// still to come.
	if evs, err := c.b.Events(r.Context(), model.EventFilter{Limit: 1}); err == nil && len(evs) > 0 {
		c.seen.mark(p.User, min(id, evs[0].ID))
	}
	n := c.badge(r.Context(), p.User)
	writePageJSON(w, http.StatusOK, badgeAnswer{Count: n, Label: c.cat.text(p.Lang, "nav.badge", n)})
}

// pageJSONError is the body of the console endpoints' errors, shaped as the
// admin API's (error, code), so the script reads both alike.
type pageJSONError struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// writePageJSON answers status with v as JSON.
func writePageJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal error","code":"internal"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

package console

import (
	"errors"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// Event page bounds.
const (
	eventsPageLimit = 100 // rows the page shows
	maxNameFilter   = 253 // as the API's name filter
	maxClientName   = 64  // a client's name given by the admin
	maxClientFilter = 64
)

// localTimeLayouts are what an <input type="datetime-local"> sends, read
// in the browser's zone (the tz parameter the script adds) or UTC.
var localTimeLayouts = []string{"2006-01-02T15:04", "2006-01-02T15:04:05"}

// eventForm is the filter form as the admin typed it, shown back.
type eventForm struct {
	Client, Name, Since, Until string
	TZ                         string
}

// filterError is a filter problem: a catalog key and the offending text.
type filterError struct {
	Key string
	Arg string
}

func (e *filterError) Error() string { return e.Key + ": " + e.Arg }

// parseEventQuery reads the Events page's filter from its query: client
// (an IP address or a name the admin gave one), name (substring of the
// host name), since and until (RFC 3339, or datetime-local in the zone tz,
// minutes west of UTC as JavaScript's getTimezoneOffset gives it, UTC when
// absent). Unknown parameters are ignored; a repeated one counts once.
// names maps client keys to their names, for the client filter.
func parseEventQuery(q url.Values, names map[string]string) (model.EventFilter, eventForm, error) {
	f := model.EventFilter{Limit: eventsPageLimit}
	form := eventForm{
		Client: strings.TrimSpace(q.Get("client")),
		Name:   strings.TrimSpace(q.Get("name")),
		Since:  strings.TrimSpace(q.Get("since")),
		Until:  strings.TrimSpace(q.Get("until")),
		TZ:     strings.TrimSpace(q.Get("tz")),
	}
	zone := time.UTC
	if form.TZ != "" {
		m, err := strconv.Atoi(form.TZ)
		if err != nil || m < -16*60 || m > 16*60 {
			return f, form, &filterError{"events.err.tz", clipEcho(form.TZ)}
		}
		zone = time.FixedZone("", -m*60)
	}
	if form.Client != "" {
		c, ok := clientFilter(form.Client, names)
		if !ok {
			return f, form, &filterError{"events.err.client", clipEcho(form.Client)}
		}
		f.Client = c
	}
	if form.Name != "" {
		if len(form.Name) > maxNameFilter || !printableText(form.Name) {
			return f, form, &filterError{"events.err.name", clipEcho(form.Name)}
		}
		f.Name = form.Name
	}
	var err error
	if f.Since, err = parseFilterTime(form.Since, zone); err != nil {
		return f, form, &filterError{"events.err.since", clipEcho(form.Since)}
	}
	if f.Until, err = parseFilterTime(form.Until, zone); err != nil {
		return f, form, &filterError{"events.err.until", clipEcho(form.Until)}
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && f.Until.Before(f.Since) {
		return f, form, &filterError{"events.err.order", ""}
	}
	return f, form, nil
}

// clientFilter turns the client field into the IP the events carry: an IP
// address as it is, or the IP named so by the admin (case-insensitive).
func clientFilter(s string, names map[string]string) (string, bool) {
	if len(s) > maxClientFilter {
		return "", false
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().String(), true
	}
	for k, n := range names {
		if a, err := netip.ParseAddr(k); err == nil && strings.EqualFold(n, s) {
			return a.Unmap().String(), true
		}
	}
	return "", false
}

func parseFilterTime(s string, zone *time.Location) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if len(s) > 40 {
		return time.Time{}, errors.New("too long")
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	for _, l := range localTimeLayouts {
		if t, err := time.ParseInLocation(l, s, zone); err == nil {
			return t, nil
		}
	}
	return time.Time{}, errors.New("not a time")
}

// printableText reports whether s is valid UTF-8 without control characters.
func printableText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// clipEcho shortens user text echoed in a message.
func clipEcho(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if utf8.RuneCountInString(s) <= 60 {
		return s
	}
	return string([]rune(s)[:60]) + "…"
}

// eventRow is one event as the page shows it.
type eventRow struct {
	model.Event
	ClientName string
	Reason     string // the reason in words (the code itself when unknown)
}

// clientRow is one client of the rows shown, with its naming form (one
// per client, not per row: a page of 100 rows from three clients has three
// forms).
type clientRow struct {
	Client, Name string
	NameFor      string // the naming field's label
	Index        int
}

// eventsData is the Events page's data.
type eventsData struct {
	Form     eventForm
	Error    string // the filter problem, translated
	Rows     []eventRow
	Clients  []clientRow // the rows' clients, in order of first appearance
	Top      uint64      // the newest event's ID shown
	APIQuery string      // the same filter for GET /api/v1/events
	Back     string      // this page with its query, for the naming form
	L        eventLabels
}

// eventLabels are the texts every row repeats, looked up once per page.
type eventLabels struct {
	Time, Client, MAC, CName, Name, Reason, Dest, Save string
}

func (c *Console) eventLabels(lang string) eventLabels {
	t := func(k string) string { return c.cat.text(lang, k) }
	return eventLabels{
		Time: t("events.col_time"), Client: t("events.col_client"), MAC: t("events.col_mac"), CName: t("events.col_cname"),
		Name: t("events.col_name"), Reason: t("events.col_reason"), Dest: t("events.col_dest"),
		Save: t("events.save"),
	}
}

// eventReasons are the event reasons the catalogs translate
// (event.reason.<reason>).
var eventReasons = []string{"blocked", "dns_blocked", "auth_failed", "login_failed",
	"cloud_proxy_switch", "cloud_proxy_failed_open", "cloud_proxy_failed_closed", "cloud_proxy_recovered", "cloud_dns_switch"}

func (c *Console) eventsPage(w http.ResponseWriter, r *http.Request, p pageData) {
	ctx := r.Context()
	names, err := c.b.ClientNames(ctx)
	if err != nil {
		c.log.Warn("events page: read client names", "err", err)
		names = map[string]string{}
	}
	flt, form, ferr := parseEventQuery(r.URL.Query(), names)
	d := eventsData{Form: form, Back: "/events", L: c.eventLabels(p.Lang)}
	if r.URL.RawQuery != "" && len(r.URL.RawQuery) < 1024 {
		d.Back += "?" + r.URL.RawQuery
	}
	status := http.StatusOK
	var fe *filterError
	if errors.As(ferr, &fe) {
		d.Error = c.cat.text(p.Lang, fe.Key, fe.Arg)
		status = http.StatusBadRequest
	} else {
		evs, err := c.b.Events(ctx, flt)
		if err != nil {
			c.log.Error("events page: read events", "err", err)
			d.Error = c.cat.text(p.Lang, "events.err.read")
		}
		seenClient := map[string]bool{}
		for _, e := range evs {
			row := eventRow{Event: e, ClientName: names[e.Client], Reason: e.Reason}
			if row.ClientName == "" && e.MAC != "" {
				row.ClientName = names[strings.ToLower(e.MAC)]
			}
			if e.Client != "" && !seenClient[e.Client] {
				seenClient[e.Client] = true
				d.Clients = append(d.Clients, clientRow{Client: e.Client, Name: names[e.Client], Index: len(d.Clients),
					NameFor: c.cat.text(p.Lang, "events.name_for", e.Client)})
			}
			if slices.Contains(eventReasons, e.Reason) {
				row.Reason = c.cat.text(p.Lang, "event.reason."+e.Reason)
			}
			d.Rows = append(d.Rows, row)
			if e.ID > d.Top {
				d.Top = e.ID
			}
		}
		d.APIQuery = apiEventQuery(flt)
		// Opening Events (unfiltered or not) shows the newest blocks:
		// the badge starts again from here.
		if all, err := c.b.Events(ctx, model.EventFilter{Limit: 1}); err == nil && len(all) > 0 {
			c.seen.mark(p.User, all[0].ID)
		}
		p.Badge = 0
	}
	p.Data = d
	c.render(w, r, status, "events", p)
}

// apiEventQuery is f as GET /api/v1/events parameters.
func apiEventQuery(f model.EventFilter) string {
	q := url.Values{}
	if f.Client != "" {
		q.Set("client", f.Client)
	}
	if f.Name != "" {
		q.Set("name", f.Name)
	}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.UTC().Format(time.RFC3339))
	}
	if !f.Until.IsZero() {
		q.Set("until", f.Until.UTC().Format(time.RFC3339))
	}
	return q.Encode()
}

// clientKey checks a client key for naming: an IP address or a MAC,
// returned in the form ClientNames uses (lowercase, colon-separated MAC).
func clientKey(s string) (string, bool) {
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return a.Unmap().String(), true
	}
	if len(s) == 17 {
		if m, err := net.ParseMAC(s); err == nil && len(m) == 6 {
			return m.String(), true
		}
	}
	return "", false
}

// namedClient is the answer to POST /clients.
type namedClient struct {
	Client string `json:"client"`
	Name   string `json:"name"`
}

// nameClient is POST /clients (client, name; csrf): the admin names a LAN
// client (an empty name removes it). The script sends the CSRF header and
// gets JSON; a plain form post goes back to the Events page.
func (c *Console) nameClient(w http.ResponseWriter, r *http.Request, p pageData) {
	script := r.Header.Get(csrfHeader) != ""
	fail := func(status int, code, key string, args ...any) {
		msg := c.cat.text(p.Lang, key, args...)
		if script {
			writePageJSON(w, status, pageJSONError{Error: msg, Code: code})
			return
		}
		http.Error(w, msg, status)
	}
	key, ok := clientKey(strings.TrimSpace(r.PostFormValue("client")))
	if !ok {
		fail(http.StatusBadRequest, "invalid", "events.err.client_key")
		return
	}
	name := strings.TrimSpace(r.PostFormValue("name"))
	if utf8.RuneCountInString(name) > maxClientName || !printableText(name) {
		fail(http.StatusBadRequest, "invalid", "events.err.client_name", maxClientName)
		return
	}
	if err := c.b.SetClientName(r.Context(), key, name); err != nil {
		if errors.Is(err, model.ErrInvalid) {
			fail(http.StatusBadRequest, "invalid", "events.err.client_name", maxClientName)
			return
		}
		c.log.Error("name client", "err", err)
		fail(http.StatusInternalServerError, "internal", "common.err.internal")
		return
	}
	c.log.Info("client named", "client", key, "by", p.User)
	if script {
		writePageJSON(w, http.StatusOK, namedClient{Client: key, Name: name})
		return
	}
	back := r.PostFormValue("back")
	if !strings.HasPrefix(back, "/events") || strings.ContainsAny(back, "\\\r\n") || strings.HasPrefix(back, "//") {
		back = "/events"
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}

package browser

import (
	"context"
	"time"
)

// Response is what a navigation ended with.
type Response struct {
	Status int    `json:"status"` // the main document's HTTP status (0 for data: and the like)
	URL    string `json:"url"`    // the page's URL after redirects
}

// Goto navigates to url and waits for the load event.
func (b *Browser) Goto(ctx context.Context, url string) (Response, error) {
	var r Response
	err := b.call(ctx, "goto", map[string]any{"url": url}, &r)
	return r, err
}

// Reload reloads the page.
func (b *Browser) Reload(ctx context.Context) (Response, error) {
	var r Response
	err := b.call(ctx, "reload", nil, &r)
	return r, err
}

// Fill types value into the one input, textarea or select matching selector,
// replacing what is there.
func (b *Browser) Fill(ctx context.Context, selector, value string) error {
	return b.call(ctx, "fill", map[string]any{"selector": selector, "value": value}, nil)
}

// Click clicks the one element matching selector (waiting until it is
// visible, enabled and still).
func (b *Browser) Click(ctx context.Context, selector string) error {
	return b.call(ctx, "click", map[string]any{"selector": selector}, nil)
}

// Check ticks the checkbox or radio matching selector.
func (b *Browser) Check(ctx context.Context, selector string) error {
	return b.call(ctx, "check", map[string]any{"selector": selector}, nil)
}

// Uncheck clears the checkbox matching selector.
func (b *Browser) Uncheck(ctx context.Context, selector string) error {
	return b.call(ctx, "uncheck", map[string]any{"selector": selector}, nil)
}

// IsChecked reports whether the checkbox or radio matching selector is ticked.
func (b *Browser) IsChecked(ctx context.Context, selector string) (bool, error) {
	var v bool
	err := b.call(ctx, "isChecked", map[string]any{"selector": selector}, &v)
	return v, err
}

// SelectOption selects the options with these values (or labels) in the
// select matching selector and returns the values selected.
func (b *Browser) SelectOption(ctx context.Context, selector string, values ...string) ([]string, error) {
	var v []string
	err := b.call(ctx, "selectOption", map[string]any{"selector": selector, "values": values}, &v)
	return v, err
}

// SetInputFiles puts these files (absolute paths; none: clears it) into
// the file input matching selector, as a user choosing them would.
func (b *Browser) SetInputFiles(ctx context.Context, selector string, paths ...string) error {
	if paths == nil {
		paths = []string{}
	}
	return b.call(ctx, "setInputFiles", map[string]any{"selector": selector, "files": paths}, nil)
}

// Press focuses the element matching selector and presses key ("Enter",
// "Tab", "Control+a").
func (b *Browser) Press(ctx context.Context, selector, key string) error {
	return b.call(ctx, "press", map[string]any{"selector": selector, "key": key}, nil)
}

// Focus focuses the element matching selector.
func (b *Browser) Focus(ctx context.Context, selector string) error {
	return b.call(ctx, "focus", map[string]any{"selector": selector}, nil)
}

// Text returns the rendered text (innerText) of the one element matching
// selector.
func (b *Browser) Text(ctx context.Context, selector string) (string, error) {
	var v string
	err := b.call(ctx, "text", map[string]any{"selector": selector}, &v)
	return v, err
}

// Texts returns the rendered text of every element matching selector, in
// document order (none: empty, no error).
func (b *Browser) Texts(ctx context.Context, selector string) ([]string, error) {
	var v []string
	err := b.call(ctx, "texts", map[string]any{"selector": selector}, &v)
	return v, err
}

// Count returns how many elements match selector now.
func (b *Browser) Count(ctx context.Context, selector string) (int, error) {
	var v int
	err := b.call(ctx, "count", map[string]any{"selector": selector}, &v)
	return v, err
}

// Attr returns attribute name of the one element matching selector; ok is
// false when the element lacks it.
func (b *Browser) Attr(ctx context.Context, selector, name string) (value string, ok bool, err error) {
	var v *string
	if err := b.call(ctx, "attr", map[string]any{"selector": selector, "name": name}, &v); err != nil {
		return "", false, err
	}
	if v == nil {
		return "", false, nil
	}
	return *v, true, nil
}

// InputValue returns the current value of the input, textarea or select
// matching selector.
func (b *Browser) InputValue(ctx context.Context, selector string) (string, error) {
	var v string
	err := b.call(ctx, "inputValue", map[string]any{"selector": selector}, &v)
	return v, err
}

// IsVisible reports whether the first element matching selector is visible
// now (no waiting).
func (b *Browser) IsVisible(ctx context.Context, selector string) (bool, error) {
	var v bool
	err := b.call(ctx, "isVisible", map[string]any{"selector": selector}, &v)
	return v, err
}

// Element states for WaitFor.
const (
	Attached = "attached"
	Detached = "detached"
	Visible  = "visible"
	Hidden   = "hidden"
)

// WaitFor waits until the first element matching selector is in state
// (Attached, Detached, Visible or Hidden) within timeout (zero:
// Options.Timeout); the context's deadline caps it.
func (b *Browser) WaitFor(ctx context.Context, selector, state string, timeout time.Duration) error {
	return b.do(ctx, timeout, "waitFor", map[string]any{"selector": selector, "state": state}, nil)
}

// WaitForText waits until an element matching selector has text
// containing text (case-sensitive) within timeout (as for WaitFor) and
// returns that element's text.
func (b *Browser) WaitForText(ctx context.Context, selector, text string, timeout time.Duration) (string, error) {
	var v string
	err := b.do(ctx, timeout, "waitForText", map[string]any{"selector": selector, "text": text}, &v)
	return v, err
}

// WaitForURL waits until the page's URL contains substr and the page
// loaded, within timeout (as for WaitFor), and returns the URL.
func (b *Browser) WaitForURL(ctx context.Context, substr string, timeout time.Duration) (string, error) {
	var v string
	err := b.do(ctx, timeout, "waitForURL", map[string]any{"contains": substr}, &v)
	return v, err
}

// Layout is the page's size as laid out.
type Layout struct {
	ScrollWidth int `json:"scrollWidth"` // the document's width, overflow included
	ClientWidth int `json:"clientWidth"` // the document's visible width
	InnerWidth  int `json:"innerWidth"`  // the window's width
}

// Layout measures the page; ScrollWidth > ClientWidth means it scrolls
// sideways (too wide for a phone).
func (b *Browser) Layout(ctx context.Context) (Layout, error) {
	var v Layout
	err := b.call(ctx, "layout", nil, &v)
	return v, err
}

// Focused is the element that has the keyboard focus.
type Focused struct {
	Tag      string `json:"tag"`      // lower case; "" when nothing (the body) has it
	DataTest string `json:"dataTest"` // its data-test attribute
	Text     string `json:"text"`     // its text or value, clipped
}

// Focused describes the element that has the keyboard focus.
func (b *Browser) Focused(ctx context.Context) (Focused, error) {
	var v Focused
	err := b.call(ctx, "focused", nil, &v)
	return v, err
}

// URL returns the page's URL.
func (b *Browser) URL(ctx context.Context) (string, error) {
	var v string
	err := b.call(ctx, "url", nil, &v)
	return v, err
}

// Title returns the page's title.
func (b *Browser) Title(ctx context.Context) (string, error) {
	var v string
	err := b.call(ctx, "title", nil, &v)
	return v, err
}

// Content returns the page's HTML as the DOM has it now.
func (b *Browser) Content(ctx context.Context) (string, error) {
	var v string
	err := b.call(ctx, "content", nil, &v)
	return v, err
}

// Screenshot writes a PNG of the viewport (fullPage: the whole page) to
// path, which should be absolute (the driver runs in its own directory).
func (b *Browser) Screenshot(ctx context.Context, path string, fullPage bool) error {
	return b.call(ctx, "screenshot", map[string]any{"path": path, "fullPage": fullPage}, nil)
}

// SetExtraHeaders sends these headers with every later request of the page.
func (b *Browser) SetExtraHeaders(ctx context.Context, headers map[string]string) error {
	return b.call(ctx, "setExtraHeaders", map[string]any{"headers": headers}, nil)
}

// SetViewport resizes the page.
func (b *Browser) SetViewport(ctx context.Context, v Viewport) error {
	return b.call(ctx, "setViewport", map[string]any{"width": v.Width, "height": v.Height}, nil)
}

// Request is an HTTP request sent with the page's cookies but without the
// page (no script, no CSRF token unless given).
type Request struct {
	Method  string            // empty: GET
	URL     string            // absolute
	Headers map[string]string // besides the context's (cookies, extra headers)
	Form    map[string]string // sent as application/x-www-form-urlencoded
	Body    string            // sent as is when Form is nil and Body is not empty
	// MaxRedirects to follow; zero: none (the 3xx is returned).
	MaxRedirects int
}

// HTTPResponse is what Fetch got.
type HTTPResponse struct {
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers"` // lower-case names
	Body    string            `json:"body"`
}

// Fetch sends r through the browser context's request API: the browser's
// cookies go with it and the responses' cookies are kept.
func (b *Browser) Fetch(ctx context.Context, r Request) (HTTPResponse, error) {
	p := map[string]any{"method": r.Method, "url": r.URL, "headers": r.Headers, "maxRedirects": r.MaxRedirects}
	if r.Form != nil {
		p["form"] = r.Form
	} else if r.Body != "" {
		p["body"] = r.Body
	}
	var v HTTPResponse
	err := b.call(ctx, "request", p, &v)
	return v, err
}

// Cookie is one browser cookie with its flags.
type Cookie struct {
	Name     string  `json:"name"`
	Value    string  `json:"value"`
	Domain   string  `json:"domain"`
	Path     string  `json:"path"`
	Expires  float64 `json:"expires"` // Unix seconds, -1 for a session cookie
	HTTPOnly bool    `json:"httpOnly"`
	Secure   bool    `json:"secure"`
	SameSite string  `json:"sameSite"` // "Strict", "Lax" or "None"
}

// Cookies returns the cookies the browser would send to these URLs (none
// given: all of them). Values are secrets: never log them.
func (b *Browser) Cookies(ctx context.Context, urls ...string) ([]Cookie, error) {
	var v []Cookie
	err := b.call(ctx, "cookies", map[string]any{"urls": urls}, &v)
	return v, err
}

// ClearCookies forgets every cookie (a new visitor, say).
func (b *Browser) ClearCookies(ctx context.Context) error {
	return b.call(ctx, "clearCookies", nil, nil)
}

// ConsoleErrors returns the page's console errors and uncaught exceptions
// since the last call (a CSP violation shows up here).
func (b *Browser) ConsoleErrors(ctx context.Context) ([]string, error) {
	var v []string
	err := b.call(ctx, "consoleErrors", nil, &v)
	return v, err
}

// RequestRecord is one request the page made.
type RequestRecord struct {
	Method string `json:"method"`
	URL    string `json:"url"`
	// FailedRequests only: what asked for it (Playwright's resource type:
	// "document", "script", "stylesheet", "fetch", "image", ...).
	Type   string `json:"type"`
	Status int    `json:"status"` // FailedRequests only: the HTTP status, 0 when none came
	Error  string `json:"error"`  // FailedRequests only: the network error
}

// Requests returns the requests the page made since the last call (at most
// the last 500), to check it reached no other host.
func (b *Browser) Requests(ctx context.Context) ([]RequestRecord, error) {
	var v []RequestRecord
	err := b.call(ctx, "requests", nil, &v)
	return v, err
}

// FailedRequests returns the page's requests since the last call that got
// an HTTP status of 400 or more or no answer at all (at most the last 500).
func (b *Browser) FailedRequests(ctx context.Context) ([]RequestRecord, error) {
	var v []RequestRecord
	err := b.call(ctx, "failedRequests", nil, &v)
	return v, err
}

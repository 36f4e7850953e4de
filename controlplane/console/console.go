// Package console is the gateway's web console: HTML pages in English and
// Japanese for status, bypass domains, pause, events, diagnostics, settings
// and the inspection CA, behind a login with the source manual's password
// rules and TOTP two-factor authentication; on the appliance image, the
// upgrade page too.
//
// Pages are rendered on the server from embedded templates (go:embed; no
// CDN, nothing fetched at run time). Reading is a plain GET; every change
// goes through the admin API (mounted at /api/v1 on the same origin) from
// the pages' small script, authenticated by the session cookie and the
// session's CSRF token in the X-CSRF-Token header. The login, setup and
// enrolment forms are the console's own endpoints, CSRF-checked too.
//
// Handler serves everything on the HTTPS listener; the daemon binds it to
// the LAN interfaces only and puts tlscert.Redirector on plain HTTP, apart
// from the CA download (CAHandler), which any LAN client may fetch.
package console

import (
	"context"
	"errors"
	"html/template"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/controlplane/console/auth"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// Backend is the running gateway as the console sees it: the admin API's
// controller (status, bypass, pause, events, activate, quick test,
// settings) plus what only the console needs. controlplane/daemon
// implements it; tests use a fake.
type Backend interface {
	api.Controller

	// Admin returns the console's administrator; ok is false before setup.
	Admin(ctx context.Context) (a model.AdminAccount, ok bool, err error)
	// PutAdmin replaces the stored administrator (password change, TOTP
	// enrolment, recovery codes used, TOTP last step).
	PutAdmin(ctx context.Context, a model.AdminAccount) error
	// CheckSetupToken reports whether token is the live first-run setup
	// token, without using it up (nil when it is).
	CheckSetupToken(ctx context.Context, token string) error
	// SetupAdmin creates the administrator with a, using up token in the
	// same transaction (store.ErrSetupToken, store.ErrAdminExists).
	SetupAdmin(ctx context.Context, token string, a model.AdminAccount) error

	// ClientNames returns the names the admin gave LAN clients, keyed by
	// IP address or MAC (lowercase, colon-separated).
	ClientNames(ctx context.Context) (map[string]string, error)
	// SetClientName names a client (IP or MAC); an empty name removes it.
	// ErrInvalid for a key that is neither or a name too long.
	SetClientName(ctx context.Context, client, name string) error

	// LastHour returns the flow counters of the last hour.
	LastHour(ctx context.Context) Counters
	// LastReport returns the last quick test run (by anyone: console, CLI,
	// API); ok is false when none has run since start.
	LastReport(ctx context.Context) (r model.Report, ok bool)

	// InspectionCA returns the provider's inspection CA certificate (DER)
	// that LAN clients must trust, and where it came from ("config" or
	// "upload"); ok is false when there is none.
	InspectionCA(ctx context.Context) (der []byte, source string, ok bool)
	// SetInspectionCA stores an uploaded CA certificate (PEM or DER). It
	// refuses (ErrInvalid) anything that is not one CA certificate, and
	// (ErrConflict) when the config file names the CA.
	SetInspectionCA(ctx context.Context, certPEMOrDER []byte) error

	// Info returns what the settings page shows besides Settings.
	Info(ctx context.Context) Info

	// ReceiveUpgrade takes an upgrade bundle of the appliance image: it
	// verifies it (signature, then every file) while saving it for the
	// root unit that writes the other slot and reboots, and returns the
	// bundle's version. ErrInvalid (saying why) for a bundle that does not
	// verify or is not newer than the running image; ErrForbidden when the
	// gateway does not run from the image.
	ReceiveUpgrade(ctx context.Context, r io.Reader) (version string, err error)
	// UpgradeState is where the last upgrade from the console stands; ok
	// is false when there was none.
	UpgradeState(ctx context.Context) (st UpgradeState, ok bool)

	// RecordEvent adds a console event (a failed login: Proto "console",
	// Reason "login_failed") to the event log.
	RecordEvent(ctx context.Context, e model.Event)
}

// Counters are the flows of the last hour, for the status page.
type Counters struct {
	Steered  uint64    `json:"steered"`  // handed to the cloud proxy
	Bypassed uint64    `json:"bypassed"` // spliced direct (bypass list, agent domains)
	Blocked  uint64    `json:"blocked"`  // block events
	Since    time.Time `json:"since"`    // start of the window (or of the daemon, if later)
}

// UpgradeState is the last console upgrade's progress, as the root unit
// that installs it records it.
type UpgradeState struct {
	State   string // "received", "installing", "rebooting", "installed", "failed"
	Version string
	Error   string
	Time    time.Time
}

// Info is the read-only part of the settings page.
type Info struct {
	CloudProxy   string   // host:port of the cloud proxy
	DNSUpstreams []string // the cloud resolvers
	// ConsoleFingerprint is the SHA-256 fingerprint of the console's
	// HTTPS certificate, as `cloudsteer console fingerprint` prints it.
	ConsoleFingerprint string
	Version            string
}

// Options configure a Console.
type Options struct {
	// API serves /api/v1 for the pages' script; the console wraps it with
	// the session check (api.Server.ConsoleHandler).
	API *api.Server
	// AllowHost decides which Host headers are answered (421 otherwise),
	// as the admin API does: the gateway's LAN addresses and
	// admin.hostnames.
	AllowHost func(addr netip.Addr, name string) bool
	Logger    *slog.Logger
	// Now is the clock (time.Now if nil).
	Now func() time.Time
	// HashParams are the argon2id parameters for new password and
	// recovery-code hashes (auth.DefaultHashParams when zero; tests use
	// cheap ones). Verification reads the parameters from each hash.
	HashParams auth.HashParams
	// HTTPClient downloads upgrade bundles from the admin's URL
	// (http.DefaultClient if nil).
	HTTPClient *http.Client
	// HashConcurrency bounds how many argon2id computations (19 MiB each
	// with the defaults) run at once; further logins wait for a slot
	// (2 when <= 0).
	HashConcurrency int
}

// Console serves the web console.
type Console struct {
	b    Backend
	opts Options
	log  *slog.Logger
	now  func() time.Time

	sessions *auth.SessionStore
	limiter  *auth.Limiter
	totp     *auth.TOTPVerifier
	login    *loginState // pending logins, enrolment secrets, one-time displays (auth_state.go)

	cat   catalogs
	pages map[string]*template.Template
	seen  seenEvents // per account, the newest event shown on the Events page (pages.go)
	mux   *http.ServeMux
}

// New returns a Console driving b.
func New(b Backend, opts Options) (*Console, error) {
	if b == nil {
		return nil, errors.New("new console: nil backend")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	c := &Console{
		b:        b,
		opts:     opts,
		log:      log.With("component", "console"),
		now:      now,
		sessions: auth.NewSessionStore(now, 0, 0, 0),
		limiter:  auth.NewLimiter(now, 0),
		totp:     auth.NewTOTPVerifier(now),
		mux:      http.NewServeMux(),
	}
	if err := c.initLogin(); err != nil {
		return nil, err
	}
	var err error
	if c.cat, err = loadCatalogs(); err != nil {
		return nil, err
	}
	if c.pages, err = parsePages(); err != nil {
		return nil, err
	}
	c.mux.Handle("GET /static/", staticHandler())
	c.mux.HandleFunc("POST /lang", c.setLang)
	c.authRoutes()
	c.pageRoutes()
	if opts.API != nil {
		c.mux.Handle("/api/v1/", opts.API.ConsoleHandler(c.apiSession))
	}
	return c, nil
}

// Handler is the HTTPS listener's handler: the Host check and security
// headers, then the pages, the login and the API.
func (c *Console) Handler() http.Handler {
	return c.secured(c.mux)
}

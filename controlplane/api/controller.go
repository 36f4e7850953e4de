package api

import (
	"context"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// Controller is what the admin API drives: the running gateway's control
// plane (controlplane/daemon implements it). Errors wrap the model.Err*
// sentinels, which the API maps to HTTP statuses; their text is safe to show.
type Controller interface {
	// Status is the "info" view: protected / paused / not protected, with reasons.
	Status(ctx context.Context) model.Status

	// Bypass lists every entry, system entries first.
	Bypass(ctx context.Context) []model.BypassEntry
	// AddBypass validates value (domain pattern, IDN allowed, or IP/CIDR),
	// stores it enabled and applies it to new flows. ErrConflict when it
	// is listed already (the config file's entries included); ErrInvalid
	// for a CIDR that would make the enabled CIDRs too broad, unless force.
	AddBypass(ctx context.Context, value, comment string, force bool) (model.BypassEntry, error)
	// RemoveBypass deletes an entry (ErrForbidden for system entries,
	// ErrConflict for the config file's: remove them there).
	RemoveBypass(ctx context.Context, value string) error
	// SetBypassEnabled enables or disables an entry (ErrForbidden for
	// system entries); a config entry's run-time state is kept as its
	// override. Enabling a CIDR checks breadth as AddBypass does.
	SetBypassEnabled(ctx context.Context, value string, enabled, force bool) (model.BypassEntry, error)
	// SetBypassComment replaces an entry's comment (ErrForbidden for
	// system entries, ErrConflict for the config file's: their comment is
	// the file's).
	SetBypassComment(ctx context.Context, value, comment string) (model.BypassEntry, error)

	// Pause stops steering for d (0 = until resumed). code is checked when
	// the require-code setting is on (ErrForbidden when wrong).
	Pause(ctx context.Context, d time.Duration, code, by string) (model.PauseState, error)
	Resume(ctx context.Context) (model.PauseState, error)
	PauseState(ctx context.Context) model.PauseState

	// Events returns block events, newest first.
	Events(ctx context.Context, f model.EventFilter) ([]model.Event, error)

	// Activate verifies code against the cloud proxy (ErrRejected on 407,
	// ErrUnavailable when unreachable), stores it and uses it from then on.
	// With chaining credentials configured it only stores it, unverified,
	// and says so. The answer carries the masked code.
	Activate(ctx context.Context, code string) (Activated, error)

	// Diagnose runs the quick test (install, network, components, settings).
	Diagnose(ctx context.Context) model.Report

	// Settings and SetSettings read and change the runtime settings.
	// Switching RequireCodeToPause off needs the entitlement code in code
	// (ErrForbidden otherwise).
	Settings(ctx context.Context) Settings
	SetSettings(ctx context.Context, s Settings, code string) (Settings, error)
}

// Settings are the runtime settings the API can change.
type Settings struct {
	// RequireCodeToPause makes Pause demand the entitlement code.
	RequireCodeToPause bool `json:"require_code_to_pause"`
}

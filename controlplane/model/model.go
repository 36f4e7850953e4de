// Package model holds the plain data types the control plane stores,
// serves over the admin API and prints in the CLI: bypass entries, the pause
// state, status with reasons, block events and quick-test reports. They
// carry JSON tags and no behaviour beyond small helpers.
package model

import (
	"errors"
	"time"
)

// BypassKind says what a bypass entry names.
type BypassKind string

// Bypass entry kinds.
const (
	BypassDomain BypassKind = "domain" // "example.com", "*.example.com", ".example.com"
	BypassCIDR   BypassKind = "cidr"   // "192.0.2.0/24", "2001:db8::1/128"
)

// BypassEntry is one line of the bypass list.
type BypassEntry struct {
	// Value is the canonical form: punycode lowercase domain pattern, or a
	// masked prefix.
	Value   string     `json:"value"`
	Kind    BypassKind `json:"kind"`
	Enabled bool       `json:"enabled"`
	// System entries (the cloud agent's domains) cannot be removed or
	// disabled.
	System bool `json:"system"`
	// Source is "system", "config" (from the config file, following it on
	// every start and reload) or "api" (added at run time through the API
	// or CLI).
	Source string `json:"source"`
	// Override is set on a config entry whose state was changed at run
	// time: "disabled". It is kept across restarts while the entry stays
	// in the config file.
	Override string    `json:"override,omitempty"`
	Comment  string    `json:"comment,omitempty"`
	Added    time.Time `json:"added"`
}

// PauseState is whether protection is paused and until when.
type PauseState struct {
	Paused bool `json:"paused"`
	// Until is the automatic resume time; zero with Paused means "until
	// resumed".
	Until time.Time `json:"until,omitzero"`
	Since time.Time `json:"since,omitzero"`
	By    string    `json:"by,omitempty"` // "cli", "api", client address
}

// ActiveAt reports whether the pause is in force at t.
func (p PauseState) ActiveAt(t time.Time) bool {
	return p.Paused && (p.Until.IsZero() || t.Before(p.Until))
}

// Pause durations the desktop agent offers; the API accepts these and any
// other positive duration up to MaxPause, or 0 for "until resumed".
var PauseChoices = []time.Duration{15 * time.Minute, time.Hour, 24 * time.Hour}

// MaxPause is the longest timed pause.
const MaxPause = 7 * 24 * time.Hour

// Protection is the headline state, as the agent shows it.
type Protection string

// Protection states.
const (
	Protected    Protection = "protected"
	Paused       Protection = "paused"
	NotProtected Protection = "not_protected"
)

// Reason is one cause of not being (fully) protected.
type Reason struct {
	Code    string `json:"code"`    // stable, e.g. "no_entitlement_code", "cloud_proxy_unreachable"
	Message string `json:"message"` // for people
}

// Reason codes.
const (
	ReasonNoCode             = "no_entitlement_code"
	ReasonProxyUnreachable   = "cloud_proxy_unreachable"
	ReasonProxyRefusesCode   = "cloud_proxy_refuses_code"
	ReasonDNSFailing         = "cloud_dns_failing"
	ReasonNotAttached        = "program_not_attached"
	ReasonNoFirewallTable    = "nftables_table_missing"
	ReasonPaused             = "paused"
	ReasonHealthNotYetProbed = "health_not_probed"
	// No cloud proxy is healthy; steered web traffic goes direct
	// (cloud_proxy.failure_mode open: blocking) or only to bypass
	// destinations (closed: listed, not blocking, as nothing leaves
	// uninspected).
	ReasonProxyFailedOpen   = "cloud_proxy_failed_open"
	ReasonProxyFailedClosed = "cloud_proxy_failed_closed"
	// ReasonProxyOnBackup: the primary cloud proxy is down and a backup
	// carries the traffic (listed, not blocking).
	ReasonProxyOnBackup = "cloud_proxy_on_backup"
	// ReasonDNSOnBackup: the first cloud resolver fails and queries go to
	// another one first (listed, not blocking).
	ReasonDNSOnBackup = "cloud_dns_on_backup"
)

// DNSUpstreamState is one configured cloud resolver's health in Status.
type DNSUpstreamState struct {
	// Addr is the upstream as configured, normalised: "IP:port" for plain
	// DNS, "tls://host:853", "https://host:443/dns-query", ... otherwise.
	Addr    string `json:"addr"`
	Healthy bool   `json:"healthy"`
	Active  bool   `json:"active"` // the one queries go to first
}

// CloudProxyState is one configured cloud proxy's health in Status.
type CloudProxyState struct {
	URL     string    `json:"url"`
	Healthy bool      `json:"healthy"`
	Active  bool      `json:"active"` // the one new flows use
	Since   time.Time `json:"since"`  // when Healthy last changed
	Error   string    `json:"error,omitempty"`
}

// ReasonQUICByNameUnavailable: firewall.quic_by_name is on but the QUIC
// gate cannot run (the kernel cannot queue, the queue number is taken, the
// gate stopped): QUIC is rejected unless its address is in the bypass map,
// as without the option (listed, not blocking: nothing leaves uninspected,
// bypass sites whose address the kernel does not know yet fall back to
// TCP).
const ReasonQUICByNameUnavailable = "quic_by_name_unavailable"

// ReasonFirewallBlocks: another firewall drops the flows cloudsteer
// redirects to its listeners; steering is held off (fail-open) until it
// lets them in.
const ReasonFirewallBlocks = "firewall_blocks_redirect"

// Status is the gateway's "info" view.
type Status struct {
	State      Protection `json:"state"`
	PauseUntil time.Time  `json:"pause_until,omitzero"`
	Reasons    []Reason   `json:"reasons"`
	// Code is the entitlement code masked (first 4 and last 4 characters).
	Code string `json:"entitlement_code"`
	// CodeSource says where the code came from: "config" (the config
	// file) or "activate" (`cloudsteer activate`); empty without a code.
	CodeSource string    `json:"entitlement_code_source,omitempty"`
	CloudProxy string    `json:"cloud_proxy"`
	Interfaces []string  `json:"lan_interfaces"`
	Attached   []string  `json:"attached"`
	Version    string    `json:"version"`
	Started    time.Time `json:"started"`
	CheckedAt  time.Time `json:"checked_at,omitzero"` // last health probe

	// AttachMode is how the eBPF programs are attached: "tcx" or "legacy"
	// (clsact/cls_bpf, on kernels without TCX or by dataplane.attach).
	AttachMode string `json:"attach_mode,omitempty"`
	// WANInterfaces are the WAN interfaces the fast path's forwarder is on
	// now (followed as links come and go); empty without the fast path.
	WANInterfaces []string `json:"wan_interfaces,omitempty"`
	// CloudProxies are the configured cloud proxies, primary first, with
	// their health and which one is in use; FailureMode is
	// cloud_proxy.failure_mode ("open" or "closed").
	CloudProxies []CloudProxyState `json:"cloud_proxies,omitempty"`
	FailureMode  string            `json:"failure_mode,omitempty"`
	// DNSUpstreams are the cloud resolvers, in order, with their health.
	DNSUpstreams []DNSUpstreamState `json:"dns_upstreams,omitempty"`
	// Image is the appliance image's version, slot and upgrade state;
	// absent when cloudsteer does not run from the image.
	Image *ImageStatus `json:"image,omitempty"`
}

// Event is a request the cloud blocked (or a refusal worth an admin's
// attention).
type Event struct {
	ID       uint64    `json:"id"`
	Time     time.Time `json:"time"`
	Client   string    `json:"client"`        // LAN client IP
	MAC      string    `json:"mac,omitempty"` // when the neighbour table knows it
	Name     string    `json:"name"`          // host name asked for
	Proto    string    `json:"proto"`         // "http", "tls", "dns"
	Reason   string    `json:"reason"`        // "blocked", "auth_failed", "dns_blocked"
	Category string    `json:"category,omitempty"`
	Status   int       `json:"status,omitempty"`
	Target   string    `json:"target,omitempty"` // the address:port the client sent the flow to, when known
}

// EventFilter selects events; zero fields match everything.
type EventFilter struct {
	Client string
	Name   string // substring, case-insensitive
	Since  time.Time
	Until  time.Time
	Limit  int // newest first; 0 = default 100
}

// Check is one quick-test check.
type Check struct {
	Name   string        `json:"name"` // "install", "network", "components", "settings"
	OK     bool          `json:"ok"`
	Detail string        `json:"detail"` // why it failed, or what was verified
	Took   time.Duration `json:"took_ns"`
}

// Report is a quick-test run.
type Report struct {
	Time   time.Time `json:"time"`
	OK     bool      `json:"ok"`
	Checks []Check   `json:"checks"`
}

// MaskCode shows an entitlement code as "3315…a8e3"; "" stays "".
func MaskCode(code string) string {
	if len(code) < 12 {
		if code == "" {
			return ""
		}
		return "…"
	}
	return code[:4] + "…" + code[len(code)-4:]
}

// Errors the controller returns; the admin API maps each to an HTTP status.
var (
	ErrInvalid      = errors.New("invalid input")                      // 400
	ErrUnauthorized = errors.New("unauthorized")                       // 401
	ErrForbidden    = errors.New("not allowed")                        // 403 (system entry, wrong code to pause)
	ErrNotFound     = errors.New("not found")                          // 404
	ErrConflict     = errors.New("already exists")                     // 409
	ErrRejected     = errors.New("code rejected by the cloud proxy")   // 422
	ErrUnavailable  = errors.New("cloud proxy unreachable, try again") // 503
)

// Plain returns an error that matches sentinel (errors.Is) and reads msg
// alone, for messages that would read badly after the sentinel's text.
func Plain(sentinel error, msg string) error { return plainError{msg, sentinel} }

type plainError struct {
	msg string
	is  error
}

func (e plainError) Error() string { return e.msg }
func (e plainError) Unwrap() error { return e.is }

// ImageStatus is the appliance image the gateway runs from, in Status
// (absent when not running on the image): version and slot, whether the
// booted slot is still on trial, and what became of the last upgrade.
type ImageStatus struct {
	// Version is IMAGE_VERSION of the running root.
	Version string `json:"version,omitempty"`
	// Slot is the booted root slot ("a" or "b", from cloudsteer.slot= on
	// the kernel command line).
	Slot string `json:"slot"`
	// Boot is the booted slot's entry; Other the other slot's, when it has
	// one. Both are absent when the boot entries cannot be read (the ESP
	// is root-only: `cloudsteer status` as root reads them).
	Boot  *SlotEntry `json:"boot,omitempty"`
	Other *SlotEntry `json:"other,omitempty"`
	// RolledBack is set when the other slot holds an upgrade that used up
	// its boot tries without being marked good, so systemd-boot came back
	// to this slot.
	RolledBack bool `json:"rolled_back,omitempty"`
	// Upgrade says in a sentence where the last upgrade stands ("upgrade
	// to 2 failed to come up healthy; rolled back to 1"); empty when there
	// is nothing to say.
	Upgrade string `json:"upgrade,omitempty"`
	// EntriesError says why the boot entries could not be read.
	EntriesError string `json:"entries_error,omitempty"`
}

// SlotEntry is one slot's boot loader entry.
type SlotEntry struct {
	Slot    string `json:"slot"`
	Version string `json:"version"`
	// State: "good" (no boot counter: the image's first entry or marked
	// good by systemd-bless-boot), "trial" (counting, tries left), "bad"
	// (tries used up: systemd-boot no longer picks it).
	State     string `json:"state"`
	TriesLeft int    `json:"tries_left,omitempty"`
	TriesDone int    `json:"tries_done,omitempty"`
	File      string `json:"file"`
}

// Slot entry states.
const (
	SlotGood  = "good"
	SlotTrial = "trial"
	SlotBad   = "bad"
)

package lab

// FloodStats is what `cloudsteer-lab flood` (a LAN host misbehaving on
// purpose, for the fairness tests and bench) reports: one JSON line per
// interval on stdout and a last one when it stops.
type FloodStats struct {
	Elapsed float64 `json:"elapsed_s"`
	// TLS flows: held now, the most held at once, established in all,
	// failed to establish (refused, timed out, reset before done) and
	// closed by the other side while held.
	TLSOpen    int64 `json:"tls_open"`
	TLSMaxOpen int64 `json:"tls_max_open"`
	TLSOpened  int64 `json:"tls_opened"`
	TLSFailed  int64 `json:"tls_failed"`
	TLSClosed  int64 `json:"tls_closed"`
	// DNS over UDP: queries sent, answers received (of which REFUSED),
	// send errors.
	DNSSent     int64 `json:"dns_sent"`
	DNSAnswered int64 `json:"dns_answered"`
	DNSRefused  int64 `json:"dns_refused"`
	DNSSendErrs int64 `json:"dns_send_errors"`
	// DNS over TCP connections held idle now, and failed attempts.
	DNSTCPOpen   int64  `json:"dns_tcp_open"`
	DNSTCPFailed int64  `json:"dns_tcp_failed"`
	LastTLSError string `json:"last_tls_error,omitempty"`
}

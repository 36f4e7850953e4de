package steer

import "fmt"

// Verdict is what the classifier decided for a packet; its values come from
// enum verdict in bpf/steer.c.
type Verdict uint32

// The classifier's verdicts (docs/design.md, "Marks and verdicts").
const (
	VerdictOther      = Verdict(steerVerdictVERDICT_OTHER)
	VerdictBypass     = Verdict(steerVerdictVERDICT_BYPASS)
	VerdictHTTP       = Verdict(steerVerdictVERDICT_HTTP)
	VerdictTLS        = Verdict(steerVerdictVERDICT_TLS)
	VerdictDNS        = Verdict(steerVerdictVERDICT_DNS)
	VerdictQUICReject = Verdict(steerVerdictVERDICT_QUIC_REJECT)
	VerdictPaused     = Verdict(steerVerdictVERDICT_PAUSED)
	VerdictDoTReject  = Verdict(steerVerdictVERDICT_DOT_REJECT)
)

// numVerdicts is the number of verdicts, the size of the counters map.
const numVerdicts = int(steerVerdictVERDICT_MAX)

// The skb marks the classifier writes; their values come from enum mark in
// bpf/steer.c. Verdicts other and paused write no mark, except that every
// packet of a web TCP flow that started bypassed or paused gets MarkUntrack
// instead of its verdict's mark (see bpf/steer.c).
const (
	MarkUntrack uint32 = uint32(steerMarkMARK_UNTRACK)
	MarkBypass  uint32 = uint32(steerMarkMARK_BYPASS)
	MarkHTTP    uint32 = uint32(steerMarkMARK_HTTP)
	MarkTLS     uint32 = uint32(steerMarkMARK_TLS)
	MarkDNS     uint32 = uint32(steerMarkMARK_DNS)
	MarkQUIC    uint32 = uint32(steerMarkMARK_QUIC)
	MarkDoT     uint32 = uint32(steerMarkMARK_DOT)
)

// Verdicts returns every verdict in counter-index order.
func Verdicts() []Verdict {
	vs := make([]Verdict, numVerdicts)
	for i := range vs {
		vs[i] = Verdict(i)
	}
	return vs
}

// String returns the verdict's name as used in logs and metrics.
func (v Verdict) String() string {
	switch v {
	case VerdictOther:
		return "other"
	case VerdictBypass:
		return "bypass"
	case VerdictHTTP:
		return "http"
	case VerdictTLS:
		return "tls"
	case VerdictDNS:
		return "dns"
	case VerdictQUICReject:
		return "quic_reject"
	case VerdictPaused:
		return "paused"
	case VerdictDoTReject:
		return "dot_reject"
	default:
		return fmt.Sprintf("verdict(%d)", uint32(v))
	}
}

// Mark returns the skb mark the verdict writes, and false for verdicts that
// leave the mark alone.
func (v Verdict) Mark() (uint32, bool) {
	switch v {
	case VerdictBypass:
		return MarkBypass, true
	case VerdictHTTP:
		return MarkHTTP, true
	case VerdictTLS:
		return MarkTLS, true
	case VerdictDNS:
		return MarkDNS, true
	case VerdictQUICReject:
		return MarkQUIC, true
	case VerdictDoTReject:
		return MarkDoT, true
	default:
		return 0, false
	}
}

// Counter is the number of packets and bytes (whole frames, Ethernet header
// included) that got one verdict, summed over CPUs.
type Counter struct {
	Packets uint64
	Bytes   uint64
}

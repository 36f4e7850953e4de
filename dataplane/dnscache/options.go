package dnscache

import (
	"log/slog"
	"time"

	"github.com/cilium/ebpf"

	"github.com/cloudsteer/cloudsteer/dataplane/tcx"
)

// Defaults used when the matching Options field is zero.
const (
	DefaultMaxEntries = 8192
	DefaultRefresh    = 250 * time.Millisecond
	// refreshSlack is how late a refresh may come without a TTL in the
	// kernel going above the Go resolver's.
	refreshSlack = 100 * time.Millisecond
)

// Options tune a Cache; the zero value is usable.
type Options struct {
	// Mark, when not zero, restricts answers to packets whose skb mark
	// equals it (dataplane/steer's DNS mark, set by the classifier that
	// runs first).
	Mark uint32
	// After is the program to attach right after (dataplane/steer's
	// classifier, so Mark is set by the time this program runs); nil
	// attaches first.
	After *ebpf.Program
	// MaxEntries bounds the kernel map (LRU); default 8192.
	MaxEntries int
	// Refresh is how often TTLs are lowered and expired answers removed;
	// default 250ms, at most 900ms.
	Refresh time.Duration
	// Logger is the parent logger (default slog.Default()).
	Logger *slog.Logger
	// Attach is the attach mode (tcx.Choose resolves it: the zero value
	// takes $CLOUDSTEER_ATTACH, then auto); use the classifier's when
	// After is set.
	Attach tcx.Mode
}

func (o Options) withDefaults() Options {
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultMaxEntries
	}
	if o.Refresh <= 0 {
		o.Refresh = DefaultRefresh
	}
	// TTLs are whole seconds: a slower refresh would leave them higher
	// than the Go resolver's, or force them lower by more than a second.
	o.Refresh = min(o.Refresh, time.Second-refreshSlack)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Stats are the program's counters since Load, and the answers Go keeps
// in the map now.
type Stats struct {
	Hits     uint64 // queries answered in the kernel
	Shape    uint64 // port 53 packets that are not a plain query the program serves
	Name     uint64 // question name too long, compressed or malformed
	Misses   uint64 // no answer in the map
	Expired  uint64 // answer in the map past its expiry, or its TTLs not yet lowered, or the owner lease ran out
	TooBig   uint64 // answer larger than the client accepts
	Errors   uint64 // rewrite failed half way: packet dropped (client retries)
	Unmarked uint64 // packet without Options.Mark
	// HitRcodes counts the answers sent by rcode (index: 0 NOERROR,
	// 3 NXDOMAIN, ...); they add up to Hits.
	HitRcodes [16]uint64
	Entries   int
}

// reasonCount is the number of counters (enum reason's REASON_MAX).
const reasonCount = 8

func (s *Stats) set(r uint32, n uint64) {
	switch r {
	case 0:
		s.Hits = n
	case 1:
		s.Shape = n
	case 2:
		s.Name = n
	case 3:
		s.Misses = n
	case 4:
		s.Expired = n
	case 5:
		s.TooBig = n
	case 6:
		s.Errors = n
	case 7:
		s.Unmarked = n
	}
}

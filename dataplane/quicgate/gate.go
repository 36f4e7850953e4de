// Package quicgate decides new LAN QUIC flows by name: the first datagrams
// of a flow wait in an NFQUEUE while a quicsni.Reassembler reads the
// ClientHello from its Initials; the flow is let through when its SNI is a
// bypass name and its destination is an address cloudsteer's resolver
// holds for that name (Policy.BypassTarget returns the destination
// itself), and rejected otherwise, so inspected sites fall back to TCP.
// Each held packet goes back to the kernel with NF_REPEAT and the packet
// mark MarkOK or MarkNo; the table's rules then keep the verdict for the
// rest of the flow (an accept in the conntrack mark, a reject in a timeout
// set), so later packets never reach Go. See dataplane/quicsni's package
// doc and INTEGRATION.md for the rules.
package quicgate

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/cloudsteer/cloudsteer/dataplane/nfqueue"
	"github.com/cloudsteer/cloudsteer/dataplane/quicsni"
)

// Policy is the part of the bypass state the gate consults (the proxy's
// Policy; controlplane/bypass.Set implements it).
type Policy interface {
	BypassName(name string) bool
	BypassTarget(ctx context.Context, name string, dst netip.AddrPort) (netip.AddrPort, error)
}

// Queue gives queued packets their verdict (*nfqueue.Queue).
type Queue interface {
	Verdict(id, verdict uint32, mark *uint32) error
}

// Reasons a flow was accepted or rejected, for metrics and logs.
const (
	ReasonBypass       = "bypass"        // accepted: a bypass name, to one of its addresses
	ReasonNoSNI        = "no_sni"        // no usable server name in the hello
	ReasonNotBypass    = "not_bypass"    // a name that is inspected: TCP goes to the proxy
	ReasonNoAddress    = "no_address"    // a bypass name with no address known (an event)
	ReasonOtherAddress = "other_address" // a bypass name, but not to one of its addresses
	ReasonBadInitial   = "bad_initial"   // not a readable QUIC client Initial
	ReasonTimeout      = "timeout"       // the hello was not whole in time
	ReasonOverflow     = "overflow"      // too many flows pending at once
)

// Reasons lists every reason, ReasonBypass (the one accept) first.
var Reasons = []string{ReasonBypass, ReasonNoSNI, ReasonNotBypass, ReasonNoAddress, ReasonOtherAddress,
	ReasonBadInitial, ReasonTimeout, ReasonOverflow}

// Decision is one flow's verdict.
type Decision struct {
	Client, Dst netip.AddrPort
	Name        string // the SNI, when read
	Accept      bool
	Reason      string
	Err         error // for bad_initial and no_address
	Packets     int   // packets held until the verdict
}

// Config configures a Gate.
type Config struct {
	Policy         Policy
	Queue          Queue
	MarkOK, MarkNo uint32
	// PendingTimeout bounds how long a flow's packets wait for the rest
	// of its hello (1 s when 0).
	PendingTimeout time.Duration
	// MaxPending bounds flows waiting at once (1024 when 0); new flows
	// over it are rejected at once.
	MaxPending int
	// Limits bound each flow's reassembler.
	Limits quicsni.Limits
	// Decided is called for each verdict (metrics, events); may be nil.
	Decided func(Decision)
	Log     *slog.Logger
}

type flowKey struct{ src, dst netip.AddrPort }

type flow struct {
	r        *quicsni.Reassembler
	held     []uint32
	started  time.Time
	deciding bool // the hello is read; the policy is being asked
}

// decidedTTL is how long a verdict is remembered for packets that were
// queued before the kernel had it, and maxDecided bounds how many are
// (a flood of new flows must not grow memory; a straggler of a forgotten
// flow starts a new reassembler, which rejects it or waits for the rest).
const (
	decidedTTL = 5 * time.Second
	maxDecided = 16384
)

type verdict struct {
	accept bool
	until  time.Time
}

// Gate holds the pending flows. Handle and Sweep are called from one
// goroutine (Run's); decisions finish on goroutines of their own.
type Gate struct {
	cfg     Config
	ctx     context.Context
	mu      sync.Mutex
	pending map[flowKey]*flow
	decided map[flowKey]verdict
	now     func() time.Time
	wg      sync.WaitGroup
}

// New returns a Gate; ctx bounds the policy lookups it starts.
func New(ctx context.Context, cfg Config) *Gate {
	if cfg.PendingTimeout <= 0 {
		cfg.PendingTimeout = time.Second
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 1024
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	cfg.Log = cfg.Log.With("component", "quicgate")
	return &Gate{cfg: cfg, ctx: ctx, pending: map[flowKey]*flow{}, decided: map[flowKey]verdict{}, now: time.Now}
}

// Handle takes one queued packet.
func (g *Gate) Handle(id uint32, l3 []byte) {
	src, dst, payload, err := parseUDP(l3)
	if err != nil {
		g.verdicts([]uint32{id}, false)
		g.report(Decision{Reason: ReasonBadInitial, Err: err, Packets: 1})
		return
	}
	k := flowKey{src, dst}
	now := g.now()
	g.mu.Lock()
	if v, ok := g.decided[k]; ok && now.Before(v.until) {
		g.mu.Unlock()
		g.verdicts([]uint32{id}, v.accept)
		return
	}
	f := g.pending[k]
	if f == nil {
		if len(g.pending) >= g.cfg.MaxPending {
			g.mu.Unlock()
			g.verdicts([]uint32{id}, false)
			g.report(Decision{Client: src, Dst: dst, Reason: ReasonOverflow, Packets: 1})
			return
		}
		f = &flow{r: quicsni.NewReassembler(g.cfg.Limits), started: now}
		g.pending[k] = f
	}
	f.held = append(f.held, id)
	if f.deciding {
		g.mu.Unlock()
		return
	}
	hello, err := f.r.Feed(payload)
	switch {
	case errors.Is(err, quicsni.ErrIncomplete):
		g.mu.Unlock()
	case err != nil:
		g.mu.Unlock()
		g.finish(k, Decision{Client: src, Dst: dst, Reason: ReasonBadInitial, Err: err})
	default:
		f.deciding = true
		g.mu.Unlock()
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			g.finish(k, g.decide(src, dst, hello))
		}()
	}
}

// decide applies the trust rule to a flow's hello.
func (g *Gate) decide(src, dst netip.AddrPort, h *quicsni.Hello) Decision {
	d := Decision{Client: src, Dst: dst, Name: h.ServerName}
	switch {
	case h.ServerName == "":
		d.Reason = ReasonNoSNI
	case !g.cfg.Policy.BypassName(h.ServerName):
		d.Reason = ReasonNotBypass
	default:
		target, err := g.cfg.Policy.BypassTarget(g.ctx, h.ServerName, dst)
		switch {
		case err != nil:
			d.Reason, d.Err = ReasonNoAddress, err
		case target != netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port()):
			d.Reason = ReasonOtherAddress
		default:
			d.Accept, d.Reason = true, ReasonBypass
		}
	}
	return d
}

// finish gives the flow's held packets their verdict, in the order they
// came, and remembers it for stragglers.
func (g *Gate) finish(k flowKey, d Decision) {
	g.mu.Lock()
	f := g.pending[k]
	delete(g.pending, k)
	if len(g.decided) < maxDecided {
		g.decided[k] = verdict{accept: d.Accept, until: g.now().Add(decidedTTL)}
	}
	var held []uint32
	if f != nil {
		held = f.held
	}
	g.mu.Unlock()
	d.Packets = len(held)
	g.verdicts(held, d.Accept)
	g.report(d)
}

func (g *Gate) verdicts(ids []uint32, accept bool) {
	mark := g.cfg.MarkNo
	if accept {
		mark = g.cfg.MarkOK
	}
	for _, id := range ids {
		if err := g.cfg.Queue.Verdict(id, nfqueue.Repeat, &mark); err != nil {
			g.cfg.Log.Warn("quic verdict", "id", id, "err", err)
		}
	}
}

func (g *Gate) report(d Decision) {
	if d.Reason == ReasonNoAddress || d.Reason == ReasonBadInitial && d.Err != nil {
		g.cfg.Log.Debug("quic flow rejected", "client", d.Client, "dst", d.Dst, "name", d.Name, "reason", d.Reason, "err", d.Err)
	}
	if g.cfg.Decided != nil {
		g.cfg.Decided(d)
	}
}

// Sweep rejects flows pending longer than PendingTimeout and forgets old
// verdicts.
func (g *Gate) Sweep() {
	now := g.now()
	var late []flowKey
	g.mu.Lock()
	for k, f := range g.pending {
		if !f.deciding && now.Sub(f.started) >= g.cfg.PendingTimeout {
			late = append(late, k)
		}
	}
	for k, v := range g.decided {
		if !now.Before(v.until) {
			delete(g.decided, k)
		}
	}
	g.mu.Unlock()
	for _, k := range late {
		g.finish(k, Decision{Client: k.src, Dst: k.dst, Reason: ReasonTimeout})
	}
}

// Pending is the number of flows waiting (for tests and metrics).
func (g *Gate) Pending() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.pending)
}

// Wait waits for the decisions in progress.
func (g *Gate) Wait() { g.wg.Wait() }

// Run reads q until ctx ends or q fails, sweeping every 100 ms.
func Run(ctx context.Context, q *nfqueue.Queue, g *Gate) error {
	stop := context.AfterFunc(ctx, func() { q.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		q.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		ps, err := q.Receive()
		if ctx.Err() != nil {
			g.Wait()
			return ctx.Err()
		}
		select {
		case <-tick.C:
			g.Sweep()
		default:
		}
		if err != nil {
			if isTimeout(err) {
				continue
			}
			if errors.Is(err, nfqueue.ErrClosed) {
				return err
			}
			// A netlink hiccup: the queue is still bound, keep reading.
			g.cfg.Log.Warn("read QUIC queue", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		for _, p := range ps {
			g.Handle(p.ID, p.Payload)
		}
	}
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

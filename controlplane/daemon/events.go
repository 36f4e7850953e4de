package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// Event writer bounds: a flood of blocked requests costs at most one
// store commit (one fsync, sparing a small box's flash) per
// eventCommitEvery, and at most eventQueue+eventMaxBatch events wait in
// memory; the rest are dropped and counted.
const (
	eventCommitEvery = 100 * time.Millisecond
	eventQueue       = 4096
	eventMaxBatch    = 4096
)

// events is the writer of block events: the proxy and the resolver hand
// them over without waiting for the disk, and it stores them in batches.
type events struct {
	d     *Daemon
	ch    chan model.Event
	every time.Duration // least time between two commits
	max   int           // most events in one batch
	write func([]model.Event) error
	// onDrop counts events that were not stored (metrics).
	onDrop func(n int)

	dropped atomic.Uint64
	stored  atomic.Uint64
	macs    map[netip.Addr]macEntry
	// mac looks a client's MAC up (tests replace it).
	lookupMAC func(client string) string
}

type macEntry struct {
	mac string
	at  time.Time
}

func newEvents(d *Daemon) *events {
	e := &events{d: d, ch: make(chan model.Event, eventQueue), every: eventCommitEvery, max: eventMaxBatch,
		write: d.store.AppendEvents, macs: map[netip.Addr]macEntry{}}
	e.lookupMAC = e.mac
	return e
}

// offer queues ev, or drops and counts it when the queue is full.
func (e *events) offer(ev model.Event) {
	select {
	case e.ch <- ev:
	default:
		e.drop(1)
	}
}

func (e *events) drop(n int) {
	e.dropped.Add(uint64(n))
	if e.onDrop != nil {
		e.onDrop(n)
	}
}

// run stores queued events until ctx ends: the first event after a quiet
// spell at once, then whatever arrived meanwhile no sooner than every
// after the previous commit, at most max at a time.
func (e *events) run(ctx context.Context) {
	var (
		batch []model.Event
		last  time.Time
		timer = time.NewTimer(time.Hour)
	)
	timer.Stop()
	commit := func() {
		for i := range batch {
			batch[i].MAC = e.lookupMAC(batch[i].Client)
		}
		if err := e.write(batch); err != nil {
			e.d.log.Warn("store events", "events", len(batch), "err", err)
			e.drop(len(batch))
		} else {
			e.stored.Add(uint64(len(batch)))
			if e.d.metrics != nil {
				for _, ev := range batch {
					e.d.metrics.EventRecorded(ev.Reason)
				}
			}
		}
		last = time.Now()
		batch = batch[:0]
	}
	for {
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
				return
			case ev := <-e.ch:
				batch = append(batch, ev)
			}
		}
		if wait := time.Until(last.Add(e.every)); wait > 0 {
			timer.Reset(wait)
		collect:
			for len(batch) < e.max {
				select {
				case <-ctx.Done():
					timer.Stop()
					commit()
					return
				case ev := <-e.ch:
					batch = append(batch, ev)
				case <-timer.C:
					break collect
				}
			}
			if len(batch) >= e.max && timer.Stop() {
				// Full before the interval ended: wait it out (the
				// channel fills meanwhile, then offers drop).
				select {
				case <-ctx.Done():
					commit()
					return
				case <-time.After(time.Until(last.Add(e.every))):
				}
			}
		}
		// Take what is queued now, within the batch bound.
	drain:
		for len(batch) < e.max {
			select {
			case ev := <-e.ch:
				batch = append(batch, ev)
			default:
				break drain
			}
		}
		commit()
	}
}

// mac looks the client up in the neighbour table (cached for a minute).
func (e *events) mac(client string) string {
	a, err := netip.ParseAddr(client)
	if err != nil {
		return ""
	}
	if m, ok := e.macs[a]; ok && time.Since(m.at) < time.Minute {
		return m.mac
	}
	fam := netlink.FAMILY_V4
	if a.Is6() {
		fam = netlink.FAMILY_V6
	}
	mac := ""
	if neighs, err := netlink.NeighList(0, fam); err == nil {
		for _, n := range neighs {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a && len(n.HardwareAddr) > 0 {
				mac = n.HardwareAddr.String()
				break
			}
		}
	}
	if len(e.macs) > 4096 {
		clear(e.macs)
	}
	e.macs[a] = macEntry{mac: mac, at: time.Now()}
	return mac
}

// logLimiter lets one log line per cause through per interval and counts
// the rest, reporting the count with the next line of that cause.
type logLimiter struct {
	every time.Duration
	now   func() time.Time

	mu     sync.Mutex
	causes map[string]*limitState
}

type limitState struct {
	last       time.Time
	suppressed int
}

// maxLogCauses bounds the limiter's memory; causes are few fixed strings.
const maxLogCauses = 256

// allow reports whether a line for cause may be written now and how many
// were suppressed since the last one written.
func (l *logLimiter) allow(cause string) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if l.causes == nil || len(l.causes) > maxLogCauses {
		l.causes = map[string]*limitState{}
	}
	st := l.causes[cause]
	if st == nil {
		st = &limitState{}
		l.causes[cause] = st
	} else if now.Sub(st.last) < l.every {
		st.suppressed++
		return false, 0
	}
	n := st.suppressed
	st.last, st.suppressed = now, 0
	return true, n
}

// authLogEvery is how often a refused-credentials line is logged per cause.
const authLogEvery = time.Minute

// logAuthFailed logs a refusal of the tenant's credentials once per
// status per authLogEvery, with the number of refusals not logged since.
func (d *Daemon) logAuthFailed(client netip.Addr, name string, status int) {
	ok, suppressed := d.authLog.allow(fmt.Sprintf("auth_failed/%d", status))
	if !ok {
		return
	}
	attrs := []any{"client", client, "name", name, "status", status}
	if suppressed > 0 {
		attrs = append(attrs, "suppressed", suppressed)
	}
	d.log.Log(context.Background(), slog.LevelError,
		"cloud proxy rejected the tenant credentials: check the entitlement code", attrs...)
}

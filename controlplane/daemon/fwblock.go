package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/cloudsteer/cloudsteer/dataplane/firewall"
)

// Another firewall that drops the redirected flows.
//
// A ruleset beside cloudsteer's table may drop what the nat chain
// redirects to the listeners (a Debian-style input policy drop that
// accepts only lo and established flows). cloudsteer cannot accept it
// past that drop and does not edit other tables, so it watches the reach
// counters (firewall.Reach) and fails open: when, within blockWindow, at
// least blockMinRedirects redirected packets of a kind (HTTP/TLS SYNs, or
// DNS) and family entered the input hook — less those its own per-client
// limits refused, and at least a quarter of the entries (unexplained) —
// and not one of that kind and family got through it,
// steering is held off: the web classes with the pause switch, as a pause
// does, and DNS by firewall.HoldDNS (a pause keeps DNS filtered, but here
// the redirect would only feed the drop), so the LAN goes direct; the status says
// firewall_blocks_redirect with the rule to add, and a warning is logged.
// It then retries: at once when the nft ruleset changes (the admin added
// the rule), else every blockRecheck, by steering again and watching;
// the first redirected packets that get through end the block, and
// another blocked window brings it back.
//
// No false alarm: an idle LAN redirects nothing, and a working one has
// arrivals in the same window as its redirects (a packet leaves the input
// hook microseconds after it entered), so only a drop between the first
// and the last input chain — another firewall's, or cloudsteer's own
// limits, which are counted and taken off — gives entries without a
// single arrival.
const (
	blockPoll         = time.Second
	blockWindow       = 10 * time.Second
	blockMinRedirects = 3
	blockRecheck      = 30 * time.Second
)

// reachSource is what the detector reads (firewall.Table).
type reachSource interface {
	Reach() (firewall.Reach, error)
	InputBlockers() ([]firewall.Blocker, error)
	Generation() (uint32, error)
}

// reachSample is the counters at one poll.
type reachSample struct {
	at time.Time
	r  firewall.Reach
}

// blockWatch decides from the reach counters whether another firewall
// blocks the redirects; its state feeds applyPause and the status.
type blockWatch struct {
	mu      sync.Mutex
	blocked bool   // steering is held off, or re-checked (trial)
	trial   bool   // steering is on again to see whether the block is gone
	message string // what is wrong and the fix, for the status
	since   time.Time
	warned  string // the last message logged as a warning

	samples   []reachSample // within blockWindow; samples[0] is the baseline
	gen       uint32        // nft generation when the block was last confirmed
	lastCheck time.Time
}

// state returns whether steering must be held off and the status message
// ("" when nothing blocks).
func (b *blockWatch) state() (holdOff bool, message string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.blocked {
		return false, ""
	}
	return !b.trial, b.message
}

// delta is the change of the counters from the oldest sample to now.
func (b *blockWatch) delta(now firewall.Reach) firewall.Reach {
	if len(b.samples) == 0 {
		return firewall.Reach{}
	}
	o := b.samples[0].r
	fam := func(n, o firewall.ReachCounts) firewall.ReachCounts {
		return firewall.ReachCounts{
			WebEntered: n.WebEntered - o.WebEntered, WebArrived: n.WebArrived - o.WebArrived,
			DNSEntered: n.DNSEntered - o.DNSEntered, DNSArrived: n.DNSArrived - o.DNSArrived,
		}
	}
	return firewall.Reach{
		V4: fam(now.V4, o.V4), V6: fam(now.V6, o.V6),
		WebRefused: now.WebRefused - o.WebRefused, DNSRefused: now.DNSRefused - o.DNSRefused,
	}
}

// families pairs each family's counters with its name.
func families(d firewall.Reach) []struct {
	name string
	c    firewall.ReachCounts
} {
	return []struct {
		name string
		c    firewall.ReachCounts
	}{{"IPv4", d.V4}, {"IPv6", d.V6}}
}

// blockedKinds names the kinds, per family, whose redirects entered the
// input hook and found no way through it. cloudsteer's own refusals are
// not told apart by family, so they are taken off each family's count.
func blockedKinds(d firewall.Reach) []string {
	var kinds []string
	for _, f := range families(d) {
		if n, ok := unexplained(f.c.WebEntered, d.WebRefused); ok && f.c.WebArrived == 0 {
			kinds = append(kinds, fmt.Sprintf("%d %s HTTP/TLS connection attempts", n, f.name))
		}
		if n, ok := unexplained(f.c.DNSEntered, d.DNSRefused); ok && f.c.DNSArrived == 0 {
			kinds = append(kinds, fmt.Sprintf("%d %s DNS packets", n, f.name))
		}
	}
	return kinds
}

// blockMinShare is the least share of the entries (1/blockMinShare)
// that must be neither refused by cloudsteer's limits nor arrived for
// the window to count as blocked.
const blockMinShare = 4

// unexplained is the number of entries that cloudsteer's own refusals do
// not account for, and whether that is evidence of another firewall's
// drop: at least blockMinRedirects and at least a quarter of what
// entered. The share matters under a flood: a client over its limits has
// thousands of SYNs refused per second while its admitted flows arrived
// before the window began, and the counters are read one after another,
// so a handful of refusals can fall between the reads. Without the share
// that handful would look like a drop, and a LAN host could switch the
// filtering off by flooding; with it, a flood only delays the detection
// of a real block until the flood ends.
func unexplained(entered, refused uint64) (uint64, bool) {
	if entered < refused+blockMinRedirects {
		return 0, false
	}
	n := entered - refused
	return n, n*blockMinShare >= entered
}

// through reports whether redirected packets got in: every kind of every
// family that was redirected arrived at least once, and something did.
func through(d firewall.Reach) bool {
	var any bool
	for _, f := range families(d) {
		if f.c.WebEntered > 0 && f.c.WebArrived == 0 || f.c.DNSEntered > 0 && f.c.DNSArrived == 0 {
			return false
		}
		any = any || f.c.WebArrived+f.c.DNSArrived > 0
	}
	return any
}

// step takes one poll of src at now and reports whether the hold-off
// changed (the caller then re-applies the pause switch).
func (b *blockWatch) step(now time.Time, src reachSource, log *slog.Logger) (changed bool, err error) {
	r, err := src.Reach()
	if err != nil {
		return false, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(b.samples) > 1 && now.Sub(b.samples[1].at) >= blockWindow {
		b.samples = b.samples[1:]
	}
	d := b.delta(r)
	b.samples = append(b.samples, reachSample{at: now, r: r})

	switch {
	case !b.blocked || b.trial:
		kinds := blockedKinds(d)
		if len(kinds) == 0 {
			if b.trial && through(d) {
				log.Info("redirected traffic reaches the listeners again: steering resumed", "blocked_for", now.Sub(b.since).Round(time.Second))
				b.blocked, b.trial, b.message, b.warned = false, false, "", ""
				b.samples = b.samples[len(b.samples)-1:]
			}
			return false, nil
		}
		var key string
		b.message, key = b.describe(src, kinds)
		if !b.blocked {
			b.since = now
		}
		b.blocked, b.trial = true, false
		b.gen, _ = src.Generation()
		b.lastCheck = now
		b.samples = b.samples[len(b.samples)-1:]
		if key != b.warned {
			log.Warn("another firewall drops the traffic cloudsteer redirects: steering paused, the LAN goes direct (fail-open) until it lets it in", "problem", b.message)
			b.warned = key
		} else {
			log.Debug("redirected traffic still dropped: steering paused again")
		}
		return true, nil
	default: // blocked, steering held off: retry on a ruleset change or after a while
		gen, gerr := src.Generation()
		if (gerr == nil && gen != b.gen) || now.Sub(b.lastCheck) >= blockRecheck {
			log.Info("re-checking whether the firewall lets redirected traffic in: steering on", "ruleset_changed", gerr == nil && gen != b.gen)
			b.trial = true
			b.lastCheck = now
			b.samples = b.samples[len(b.samples)-1:]
			return true, nil
		}
		return false, nil
	}
}

// describe says what is wrong and the one rule to add; key is the part
// that does not change from one window to the next (the chains and the
// advice), so a block that stays is warned about once.
func (b *blockWatch) describe(src reachSource, kinds []string) (message, key string) {
	blockers, err := src.InputBlockers()
	var where string
	switch {
	case err != nil:
		where = fmt.Sprintf("(the other tables cannot be read: %v)", err)
	case len(blockers) > 0:
		names := make([]string, len(blockers))
		for i, x := range blockers {
			names[i] = x.String()
		}
		where = "by the input chain with policy drop " + strings.Join(names, ", ")
	default:
		where = "by a rule on the input hook outside cloudsteer's table"
	}
	advice := firewall.BlockAdvice(blockers)
	return fmt.Sprintf("another firewall drops the traffic cloudsteer redirects to its listeners (%s in %s redirected, none got in) %s; LAN traffic goes direct, unfiltered, until it is fixed; %s",
		strings.Join(kinds, " and "), blockWindow, where, advice), where + advice
}

// watchBlocks polls the reach counters until ctx ends.
func (d *Daemon) watchBlocks(ctx context.Context) {
	t := time.NewTicker(blockPoll)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed, err := d.fwBlock.step(d.now(), d.fw, d.log)
		if err != nil {
			if !failing {
				d.log.Warn("read the redirect counters", "err", err)
			}
			failing = true
			continue
		}
		failing = false
		if changed {
			d.ctrl.mu.Lock()
			err := d.applyPause()
			d.ctrl.mu.Unlock()
			if err != nil {
				d.log.Warn("set pause switch", "err", err)
			}
			held, _ := d.fwBlock.state()
			if err := d.fw.HoldDNS(held); err != nil {
				d.log.Warn("hold the DNS redirect", "err", err)
			}
		}
	}
}

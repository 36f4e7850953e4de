package daemon

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"github.com/cloudsteer/cloudsteer/controlplane/config"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
	"github.com/cloudsteer/cloudsteer/dataplane/nfqueue"
	"github.com/cloudsteer/cloudsteer/dataplane/quicgate"
)

// The QUIC gate's verdict marks (next to the classifier's 0x0c5700xx marks;
// the firewall checks they are distinct) and the conntrack-mark bit an
// accepted flow gets.
const (
	markQUICOK = 0x0c570011
	markQUICNo = 0x0c570012
	quicCtMask = 0x20000000
)

// openQUICGate binds the QUIC gate's queue when firewall.quic_by_name is
// on (the default) and the kernel can queue from cloudsteer's table, and
// returns the gate's rules for the table; otherwise nil, and QUIC stays
// rejected unless its address is in the bypass map, as without the
// option: one warning says why and the status lists
// quic_by_name_unavailable (setQUICOff).
func (d *Daemon) openQUICGate(cfg *config.Config) *quicgate.RuleConfig {
	if cfg.Firewall.QUICByName == nil || !*cfg.Firewall.QUICByName {
		return nil
	}
	compat := !nfqueue.Available(false)
	if compat && !nfqueue.Available(true) {
		d.setQUICOff("the kernel has neither nft_queue nor the xtables NFQUEUE target (nft_compat)", nil)
		return nil
	}
	q, err := nfqueue.Open(cfg.Firewall.QUICQueue, 1024)
	if err != nil {
		d.setQUICOff(fmt.Sprintf("cannot bind NFQUEUE %d (firewall.quic_queue; nfnetlink_queue missing, or the number taken by another program)", cfg.Firewall.QUICQueue), err)
		return nil
	}
	d.quicQueue = q
	d.closers = append(d.closers, q.Close)
	return &quicgate.RuleConfig{MarkOK: markQUICOK, MarkNo: markQUICNo, CtMask: quicCtMask, CtOK: quicCtMask,
		Queue: cfg.Firewall.QUICQueue, Compat: compat}
}

// setQUICOff records why the QUIC gate is not running, for the status
// (quicGateOff), and logs it once.
func (d *Daemon) setQUICOff(why string, err error) {
	d.quicMu.Lock()
	d.quicOff = why
	d.quicMu.Unlock()
	args := []any{"component", "quicgate", "reason", why}
	if err != nil {
		args = append(args, "err", err)
	}
	d.log.Warn("QUIC by name unavailable: QUIC stays rejected unless its address is in the bypass map", args...)
}

// quicGateOff says why firewall.quic_by_name is on but the gate is not
// running ("" when it runs or is off in the config).
func (d *Daemon) quicGateOff() string {
	d.quicMu.Lock()
	defer d.quicMu.Unlock()
	return d.quicOff
}

// startQUICGate runs the gate on the queue openQUICGate bound.
func (d *Daemon) startQUICGate(ctx context.Context) {
	q := d.quicQueue
	if q == nil {
		return
	}
	g := quicgate.New(ctx, quicgate.Config{Policy: d.bypass, Queue: q, MarkOK: markQUICOK, MarkNo: markQUICNo,
		Decided: d.quicDecided, Log: d.log})
	d.goRun(func() {
		if err := quicgate.Run(ctx, q, g); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, nfqueue.ErrClosed) {
			d.log.Error("QUIC gate stopped: new QUIC flows are dropped until restart", "err", err)
			d.quicMu.Lock()
			d.quicOff = "the QUIC gate stopped (" + err.Error() + "): new QUIC flows are dropped until cloudsteer restarts"
			d.quicMu.Unlock()
		}
	})
	d.log.Info("QUIC by name on: new QUIC flows to bypass names pass, the rest falls back to TCP")
}

// quicDecided counts the gate's verdicts and turns a QUIC flow refused
// for want of an address for its bypass name into a bypass_refused event,
// as the proxy does for TLS.
func (d *Daemon) quicDecided(dec quicgate.Decision) {
	d.quicMu.Lock()
	if d.quicFlows == nil {
		d.quicFlows = map[string]uint64{}
	}
	d.quicFlows[dec.Reason]++
	d.quicMu.Unlock()
	if dec.Reason != quicgate.ReasonNoAddress || d.events == nil {
		return
	}
	d.events.offer(model.Event{Time: d.now(), Client: dec.Client.Addr().String(), Name: dec.Name, Proto: "quic",
		Reason: "bypass_refused", Target: dec.Dst.String()})
}

// QUICFlows returns the gate's verdicts by reason (metrics.Source).
func (d *Daemon) QUICFlows() map[string]uint64 {
	d.quicMu.Lock()
	defer d.quicMu.Unlock()
	return maps.Clone(d.quicFlows)
}

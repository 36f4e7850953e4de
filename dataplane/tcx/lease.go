package tcx

import (
	"fmt"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// The owner lease: each program's "lease" map holds one CLOCK_MONOTONIC
// time in nanoseconds (bpf_ktime_get_ns's clock) until which the process
// that loaded it is known to be alive. The process renews it every
// LeaseRenew to now+LeaseTime; the programs do anything beyond marking
// (the fast path's forwarding, the DNS answerer's answers) only while
// bpf_ktime_get_ns() is below it. So when the process is gone (killed,
// its legacy filters left behind) or stalled for longer than LeaseTime -
// LeaseRenew, the programs stop acting on state nobody keeps any more
// within LeaseTime, and packets take the stack's path. Close writes 0
// first, so the programs go inert before they are detached.
const (
	LeaseTime  = time.Second
	LeaseRenew = 250 * time.Millisecond
)

// Lease renews one lease map. Its methods are safe for concurrent use.
type Lease struct {
	m    *ebpf.Map
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// StartLease writes the lease now and renews it until Stop or Lapse.
func StartLease(m *ebpf.Map) (*Lease, error) {
	l := &Lease{m: m, stop: make(chan struct{}), done: make(chan struct{})}
	if err := l.renew(); err != nil {
		return nil, err
	}
	go l.run()
	return l, nil
}

func (l *Lease) run() {
	defer close(l.done)
	t := time.NewTicker(LeaseRenew)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			_ = l.renew() // a failed write lets the lease run out: the safe side
		}
	}
}

func (l *Lease) renew() error {
	now, err := monotonicNs()
	if err != nil {
		return err
	}
	return l.write(now + uint64(LeaseTime))
}

func (l *Lease) write(until uint64) error {
	if err := l.m.Update(uint32(0), until, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("write owner lease: %w", err)
	}
	return nil
}

// Stop stops renewing: the lease runs out within LeaseTime, as when the
// process is killed.
func (l *Lease) Stop() {
	l.once.Do(func() { close(l.stop) })
	<-l.done
}

// Lapse stops renewing and ends the lease now.
func (l *Lease) Lapse() error {
	l.Stop()
	return l.write(0)
}

func monotonicNs() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("read monotonic clock: %w", err)
	}
	return uint64(ts.Nano()), nil
}

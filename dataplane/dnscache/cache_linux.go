package dnscache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/cloudsteer/cloudsteer/dataplane/tcx"
)

// Cache is the loaded eBPF answerer, its answers map, the Go copy of what
// the map holds (to decay TTLs) and its TCX ingress links. Its methods are
// safe for concurrent use.
type Cache struct {
	log     *slog.Logger
	objs    dnscacheObjects
	refresh time.Duration
	now     func() time.Time

	mu      sync.Mutex
	entries map[dnscacheQkey]*entry
	closed  bool

	links tcx.Links
	lease *tcx.Lease

	stop context.CancelFunc
	done chan struct{}
}

// guardTime is how much earlier than computed a kernel value stops being
// used.
const guardTime = 10 * time.Millisecond

// entry is one answer in the kernel map as Go remembers it.
type entry struct {
	ans     *answer
	stored  time.Time
	expires time.Time
	dec     uint32 // seconds the TTLs in the kernel value were lowered by
}

// New loads the program, attaches it at TCX ingress of every interface in
// ifaces and starts the TTL refresher, which stops with Close (not with
// ctx, which bounds only the set-up). On error nothing stays attached.
func New(ctx context.Context, ifaces []string, opts Options) (*Cache, error) {
	if err := tcx.CheckInterfaces("dnscache", ifaces); err != nil {
		return nil, err
	}
	nics, err := tcx.Lookup(ifaces)
	if err != nil {
		return nil, err
	}
	mode, why, err := tcx.Choose(opts.Attach)
	if err != nil {
		return nil, fmt.Errorf("dnscache: %w", err)
	}
	c, err := load(ctx, opts, mode)
	if err != nil {
		return nil, err
	}
	for _, ifc := range nics {
		if err := ctx.Err(); err != nil {
			return nil, errors.Join(err, c.Close())
		}
		if err := c.attach(ifc, opts.After); err != nil {
			return nil, errors.Join(err, c.Close())
		}
	}
	c.log.Info("dns answer cache attached", "interfaces", ifaces, "attach_mode", mode, "why", why)
	return c, nil
}

// filterName names the program's filter in legacy attach mode.
const filterName = tcx.FilterPrefix + "dnscache"

// Load loads the program and its maps and starts the refresher and the
// owner lease without attaching anywhere; tests use it with Program.
func Load(ctx context.Context, opts Options) (*Cache, error) { return load(ctx, opts, tcx.ModeTCX) }

func load(ctx context.Context, opts Options, mode tcx.Mode) (*Cache, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raise RLIMIT_MEMLOCK for eBPF maps: %w (run as root or with CAP_SYS_RESOURCE)", err)
	}
	opts = opts.withDefaults()
	spec, err := loadDnscache()
	if err != nil {
		return nil, fmt.Errorf("load dns cache spec: %w", err)
	}
	spec.Maps["answers"].MaxEntries = uint32(opts.MaxEntries)
	if mode == tcx.ModeLegacy {
		// A cls_bpf filter takes a plain sched_cls program; kernels
		// without TCX do not know its attach type.
		for _, p := range spec.Programs {
			p.AttachType = ebpf.AttachNone
		}
	}
	c := &Cache{
		log:     opts.Logger.With("component", "dnscache"),
		refresh: opts.Refresh,
		now:     time.Now,
		entries: make(map[dnscacheQkey]*entry),
		done:    make(chan struct{}),
	}
	c.links.Mode = mode
	if err := spec.LoadAndAssign(&c.objs, nil); err != nil {
		return nil, explainLoad(err)
	}
	if c.lease, err = tcx.StartLease(c.objs.Lease); err != nil {
		c.objs.Close()
		return nil, err
	}
	if err := c.objs.Config.Update(uint32(0), dnscacheSettings{Mark: opts.Mark}, ebpf.UpdateAny); err != nil {
		c.lease.Stop()
		c.objs.Close()
		return nil, fmt.Errorf("write dns cache settings: %w", err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	c.stop = cancel
	go c.refresher(rctx)
	return c, nil
}

func explainLoad(err error) error {
	var verr *ebpf.VerifierError
	switch {
	case errors.As(err, &verr):
		return fmt.Errorf("load eBPF dns cache: the kernel verifier rejected it (needs Linux >= 5.12): %+v", verr)
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("load eBPF dns cache: %w (needs root, or CAP_BPF and CAP_NET_ADMIN)", err)
	default:
		return fmt.Errorf("load eBPF dns cache: %w", err)
	}
}

// attach attaches the program at ingress of ifc: right after the program
// after when it is given, first otherwise.
func (c *Cache) attach(ifc *net.Interface, after *ebpf.Program) error {
	return c.links.Attach(ifc, c.objs.DnscacheIngress, filterName, tcx.Place{After: after, First: after == nil})
}

// Mode is the attach mode: tcx or legacy.
func (c *Cache) Mode() tcx.Mode { return c.links.Mode }

// Program returns the loaded program, e.g. for ebpf.Program.Run in tests.
// It stays owned by c.
func (c *Cache) Program() *ebpf.Program { return c.objs.DnscacheIngress }

// Put stores wire, a packed DNS response, as the answer to its question
// for ttl from now. wire must be what the Go resolver caches: the answer
// to the lowercase question, ID 0, RD clear, no OPT record (see
// parseAnswer for the rest). An answer the program cannot serve returns
// an error and is not stored; an older answer to the same question is
// removed then.
func (c *Cache) Put(wire []byte, ttl time.Duration) error {
	a, err := parseAnswer(wire)
	if err != nil {
		return err
	}
	if ttl <= 0 {
		return fmt.Errorf("put answer: ttl %s", ttl)
	}
	now := c.now()
	e := &entry{ans: a, stored: now, expires: now.Add(ttl)}
	k := dnscacheQkey{Name: a.name}
	binary.BigEndian.PutUint16(k.Qtype[:], a.qtype)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("put answer: cache closed")
	}
	e.dec = c.decFor(e, now)
	v, err := c.value(e, now)
	if err == nil {
		err = c.objs.Answers.Update(&k, &v, ebpf.UpdateAny)
	}
	if err != nil {
		delete(c.entries, k)
		_ = c.objs.Answers.Delete(&k)
		return fmt.Errorf("put answer: %w", err)
	}
	c.entries[k] = e
	return nil
}

// decFor is how many seconds to lower e's TTLs by when writing its value
// at now: the value holds until the next refresh, so it takes the
// elapsed time the next refresh will see, plus a margin for a late tick,
// never leaving a TTL above what the Go resolver gives in between.
func (c *Cache) decFor(e *entry, now time.Time) uint32 {
	ahead := now.Add(c.refresh + refreshSlack).Sub(e.stored)
	return uint32(max(ahead, 0) / time.Second)
}

// value builds the kernel value of e with TTLs lowered by e.dec.
func (c *Cache) value(e *entry, now time.Time) (dnscacheAnswer, error) {
	var v dnscacheAnswer
	mono, err := monotonicNow()
	if err != nil {
		return v, err
	}
	// The value is used until the answer expires or until the Go
	// resolver's TTLs drop below the ones written here, whichever comes
	// first: a late refresh then sends queries on to the resolver instead
	// of serving TTLs above its own. guardTime covers the moment between
	// the resolver storing the answer and calling Put.
	until := e.stored.Add(time.Duration(e.dec+1) * time.Second)
	if e.expires.Before(until) {
		until = e.expires
	}
	until = until.Add(-guardTime)
	left := until.Sub(now)
	if left <= 0 {
		return v, errors.New("expired")
	}
	v.Expires = mono + uint64(left)
	for i, vr := range e.ans.variants(e.dec) {
		v.Len[i] = uint16(len(vr.data))
		var be [2]byte
		binary.BigEndian.PutUint16(be[:], vr.sum)
		v.Csum[i] = binary.NativeEndian.Uint16(be[:]) // memory order, as csum_partial sums
		v.Hdr[i] = vr.hdr
		if i == 1 {
			copy(v.Data[:], vr.data) // the EDNS0 variant starts with the other
		}
	}
	return v, nil
}

func monotonicNow() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("read monotonic clock: %w", err)
	}
	return uint64(ts.Nano()), nil
}

// Delete removes the answer to name (text form, any case) and qtype; one
// that is not there is not an error.
func (c *Cache) Delete(name string, qtype uint16) error {
	wn, err := wireName(name)
	if err != nil {
		return nil // never stored
	}
	k := dnscacheQkey{Name: wn}
	binary.BigEndian.PutUint16(k.Qtype[:], qtype)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	delete(c.entries, k)
	if err := c.objs.Answers.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete answer %s: %w", name, err)
	}
	return nil
}

// Flush removes every answer.
func (c *Cache) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	var errs []error
	for k := range c.entries {
		if err := c.objs.Answers.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
		}
		delete(c.entries, k)
	}
	// Entries Go no longer tracks (none expected) go too.
	var k dnscacheQkey
	var keys []dnscacheQkey
	it := c.objs.Answers.Iterate()
	var v dnscacheAnswer
	for it.Next(&k, &v) {
		keys = append(keys, k)
	}
	for _, k := range keys {
		if err := c.objs.Answers.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("flush answers: %w", err)
	}
	return nil
}

// Len is the number of answers the Go side tracks.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// refresher lowers the kernel values' TTLs as time passes and removes
// expired answers, every c.refresh until ctx ends.
func (c *Cache) refresher(ctx context.Context) {
	defer close(c.done)
	t := time.NewTicker(c.refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.refreshOnce()
		}
	}
}

func (c *Cache) refreshOnce() {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.entries {
		if !now.Before(e.expires) {
			delete(c.entries, k)
			if err := c.objs.Answers.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				c.log.Debug("delete expired answer", "err", err)
			}
			continue
		}
		dec := c.decFor(e, now)
		if dec == e.dec {
			continue
		}
		e.dec = dec
		v, err := c.value(e, now)
		if err == nil {
			// UpdateExist: an answer the kernel's LRU evicted stays out.
			err = c.objs.Answers.Update(&k, &v, ebpf.UpdateExist)
		}
		if err != nil {
			delete(c.entries, k)
			if !errors.Is(err, ebpf.ErrKeyNotExist) {
				c.log.Debug("refresh answer", "err", err)
				_ = c.objs.Answers.Delete(&k)
			}
		}
	}
}

// Stats returns the per-reason counters summed over CPUs.
func (c *Cache) Stats() (Stats, error) {
	var s Stats
	var perCPU []uint64
	for r := range uint32(reasonCount) {
		if err := c.objs.Stats.Lookup(r, &perCPU); err != nil {
			return s, fmt.Errorf("read dns cache counter %d: %w", r, err)
		}
		var n uint64
		for _, v := range perCPU {
			n += v
		}
		s.set(r, n)
	}
	for i := range uint32(len(s.HitRcodes)) {
		if err := c.objs.Stats.Lookup(reasonCount+i, &perCPU); err != nil {
			return s, fmt.Errorf("read dns cache rcode counter %d: %w", i, err)
		}
		for _, v := range perCPU {
			s.HitRcodes[i] += v
		}
	}
	s.Entries = c.Len()
	return s, nil
}

// Attached returns the interfaces where the program is still attached.
func (c *Cache) Attached() []string { return c.links.Attached() }

// Close ends the owner lease (the program stops answering at once), stops
// the refresher, detaches the program everywhere and releases its maps.
// Calling it again does nothing.
func (c *Cache) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	leaseErr := c.lease.Lapse()
	c.stop()
	<-c.done

	c.mu.Lock()
	defer c.mu.Unlock()
	errs := []error{leaseErr, c.links.Close()}
	c.entries = nil
	if err := c.objs.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close eBPF objects: %w", err))
	}
	return errors.Join(errs...)
}

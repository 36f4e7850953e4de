package steer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	"golang.org/x/sys/unix"

	"github.com/cloudsteer/cloudsteer/dataplane/tcx"
)

// Config is what New needs: the LAN interfaces to classify ingress traffic on.
type Config struct {
	// Interfaces are the LAN interface names; at least one.
	Interfaces []string
	// Logger receives lifecycle messages; nil means slog.Default().
	Logger *slog.Logger
	// Attach is the attach mode (tcx.Choose resolves it: the zero value
	// takes $CLOUDSTEER_ATTACH, then auto).
	Attach tcx.Mode
}

// Filter names of the programs in legacy attach mode.
const (
	filterClassifier = tcx.FilterPrefix + "classifier"
	filterForwarder  = tcx.FilterPrefix + "forwarder"
)

// Steer is the loaded classifier, its maps and its TCX ingress links.
// Its methods are safe for concurrent use.
type Steer struct {
	log  *slog.Logger
	objs steerObjects

	links tcx.Links // the classifier on the LAN interfaces
	wan   tcx.Links // the forwarder on the WAN interfaces
	lease *tcx.Lease

	mu     sync.Mutex // also serializes read-modify-writes of the settings
	closed bool
}

// Validate reports every problem with the configuration, one per line.
func (c Config) Validate() error { return tcx.CheckInterfaces("steer", c.Interfaces) }

// New validates cfg, loads the classifier and attaches it at TCX ingress of
// every interface in cfg. On error nothing stays attached or loaded.
func New(ctx context.Context, cfg Config) (*Steer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ifaces, err := tcx.Lookup(cfg.Interfaces)
	if err != nil {
		return nil, err
	}
	mode, why, err := tcx.Choose(cfg.Attach)
	if err != nil {
		return nil, fmt.Errorf("steer: %w", err)
	}

	s, err := load(ctx, mode)
	if err != nil {
		return nil, err
	}
	if cfg.Logger != nil {
		s.log = cfg.Logger.With("component", "steer")
	}
	for _, ifc := range ifaces {
		if err := ctx.Err(); err != nil {
			return nil, errors.Join(err, s.Close())
		}
		// After any programs already there, so those keep precedence and
		// we never hide traffic from them.
		if err := s.links.Attach(ifc, s.objs.SteerIngress, filterClassifier, tcx.Place{}); err != nil {
			return nil, errors.Join(err, s.Close())
		}
	}
	s.log.Info("classifier attached", "interfaces", s.Attached(), "attach_mode", mode, "why", why)
	return s, nil
}

// Load loads the classifier and its maps into the kernel without attaching
// it anywhere, and starts renewing the owner lease. Tests use it with
// Program to run packets through the classifier; New uses it before
// attaching.
func Load(ctx context.Context) (*Steer, error) { return load(ctx, tcx.ModeTCX) }

func load(ctx context.Context, mode tcx.Mode) (*Steer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raise RLIMIT_MEMLOCK for eBPF maps: %w (run as root or with CAP_SYS_RESOURCE)", err)
	}
	s := &Steer{log: slog.Default().With("component", "steer")}
	s.links.Mode, s.wan.Mode = mode, mode
	spec, err := loadSteer()
	if err != nil {
		return nil, fmt.Errorf("load eBPF classifier spec: %w", err)
	}
	if mode == tcx.ModeLegacy {
		// A cls_bpf filter takes a plain sched_cls program; kernels
		// without TCX do not know its attach type.
		for _, p := range spec.Programs {
			p.AttachType = ebpf.AttachNone
		}
	}
	if err := spec.LoadAndAssign(&s.objs, nil); err != nil {
		return nil, explainLoad(err)
	}
	if s.lease, err = tcx.StartLease(s.objs.Lease); err != nil {
		s.objs.Close()
		return nil, err
	}
	return s, nil
}

// Mode is the attach mode of the classifier: tcx or legacy.
func (s *Steer) Mode() tcx.Mode { return s.links.Mode }

// explainLoad adds what the user can do to an error from loading the
// classifier.
func explainLoad(err error) error {
	var verr *ebpf.VerifierError
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("load eBPF classifier: %w (needs root, or CAP_BPF and CAP_NET_ADMIN)", err)
	case errors.As(err, &verr):
		return fmt.Errorf("load eBPF classifier: the kernel verifier rejected it (needs Linux >= 5.12): %+v", verr)
	case errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("load eBPF classifier: %w (needs Linux >= 5.12 with BPF and LPM trie maps)", err)
	default:
		return fmt.Errorf("load eBPF classifier: %w", err)
	}
}

// Program returns the loaded classifier, e.g. for ebpf.Program.Run in tests.
// It stays owned by s.
func (s *Steer) Program() *ebpf.Program { return s.objs.SteerIngress }

// Attached returns the interfaces on which the classifier is still
// attached. One whose interface was deleted is gone with it and is not
// listed.
func (s *Steer) Attached() []string { return s.links.Attached() }

// AttachWAN attaches the fast path's forwarder at ingress of the WAN
// interfaces named (in the classifier's mode), after any programs already
// there. It forwards nothing
// until SetFastPath(true). An interface already holding it is skipped.
func (s *Steer) AttachWAN(names []string) error {
	have := map[string]bool{}
	for _, n := range s.wan.Attached() {
		have[n] = true
	}
	var todo []string
	for _, n := range names {
		if !have[n] {
			todo = append(todo, n)
		}
	}
	ifaces, err := tcx.Lookup(todo)
	if err != nil {
		return err
	}
	for _, ifc := range ifaces {
		if err := s.wan.Attach(ifc, s.objs.ForwardIngress, filterForwarder, tcx.Place{}); err != nil {
			return err
		}
	}
	if len(ifaces) > 0 {
		s.log.Info("fast path forwarder attached", "interfaces", s.wan.Attached())
	}
	return nil
}

// WANAttached returns the WAN interfaces the forwarder is attached to.
func (s *Steer) WANAttached() []string { return s.wan.Attached() }

// ForwarderProgram returns the loaded WAN forwarder, for tests.
func (s *Steer) ForwarderProgram() *ebpf.Program { return s.objs.ForwardIngress }

// updateSettings applies change to the settings map's entry.
func (s *Steer) updateSettings(what string, change func(*steerSettings)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var v steerSettings
	if err := s.objs.Settings.Lookup(uint32(0), &v); err != nil {
		return fmt.Errorf("set %s: read settings: %w", what, err)
	}
	change(&v)
	if err := s.objs.Settings.Update(uint32(0), v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("set %s: %w", what, err)
	}
	return nil
}

// SetFastPath turns the fast path on or off: while on, the classifier and
// the WAN forwarder forward the TCP cloudsteer does not steer themselves
// (see bpf/steer.c). Turn it on only while the stack would do no more than
// route that traffic: no netfilter ruleset but cloudsteer's, no IPsec.
func (s *Steer) SetFastPath(on bool) error {
	return s.updateSettings("fast path", func(v *steerSettings) {
		v.Fastpath = 0
		if on {
			v.Fastpath = 1
		}
	})
}

// FastPath reports whether the fast path is on.
func (s *Steer) FastPath() (bool, error) {
	var v steerSettings
	if err := s.objs.Settings.Lookup(uint32(0), &v); err != nil {
		return false, fmt.Errorf("read fast path switch: %w", err)
	}
	return v.Fastpath != 0, nil
}

// Forwarded returns what the fast path forwarded, taken from the LAN side
// and from the WAN side, summed over CPUs.
func (s *Steer) Forwarded() (fromLAN, fromWAN Counter, err error) {
	var out [2]Counter
	var perCPU []steerCounter
	for i := range out {
		if err := s.objs.Forwarded.Lookup(uint32(i), &perCPU); err != nil {
			return Counter{}, Counter{}, fmt.Errorf("read fast path counter: %w", err)
		}
		for _, pc := range perCPU {
			out[i].Packets += pc.Packets
			out[i].Bytes += pc.Bytes
		}
	}
	return out[0], out[1], nil
}

// Close ends the owner lease (the programs stop forwarding at once),
// detaches the classifier and the forwarder from every interface and
// releases the maps. Calling it again does nothing.
func (s *Steer) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	if err := s.lease.Lapse(); err != nil {
		errs = append(errs, err)
	}
	if n := s.links.Len(); n > 0 {
		s.log.Info("detaching classifier", "interfaces", n)
	}
	errs = append(errs, s.links.Close(), s.wan.Close())
	if err := s.objs.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close eBPF objects: %w", err))
	}
	return errors.Join(errs...)
}

// normalize checks p and returns it masked, with an IPv4-mapped IPv6 prefix
// of length >= 96 turned into the IPv4 prefix it covers.
func normalize(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return netip.Prefix{}, fmt.Errorf("bypass prefix %q is not valid", p)
	}
	p = p.Masked()
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p, nil
}

// AddBypass makes packets to p skip steering (verdict bypass). IPv4-mapped
// IPv6 prefixes are stored as IPv4.
func (s *Steer) AddBypass(p netip.Prefix) error {
	p, err := normalize(p)
	if err != nil {
		return err
	}
	var one uint8 = 1
	if p.Addr().Is4() {
		err = s.objs.BypassV4.Update(v4Key(p), one, ebpf.UpdateAny)
	} else {
		err = s.objs.BypassV6.Update(v6Key(p), one, ebpf.UpdateAny)
	}
	if errors.Is(err, unix.ENOSPC) {
		return fmt.Errorf("add bypass %s: %w (bypass map full)", p, err)
	}
	if err != nil {
		return fmt.Errorf("add bypass %s: %w", p, err)
	}
	return nil
}

// DeleteBypass removes p from the bypass map; a prefix that is not there is
// not an error.
func (s *Steer) DeleteBypass(p netip.Prefix) error {
	p, err := normalize(p)
	if err != nil {
		return err
	}
	if p.Addr().Is4() {
		err = s.objs.BypassV4.Delete(v4Key(p))
	} else {
		err = s.objs.BypassV6.Delete(v6Key(p))
	}
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete bypass %s: %w", p, err)
	}
	return nil
}

// BypassPrefixes returns the bypass map's prefixes, IPv4 first, sorted.
func (s *Steer) BypassPrefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	var val uint8

	var k4 steerBypassV4Key
	it := s.objs.BypassV4.Iterate()
	for it.Next(&k4, &val) {
		out = append(out, netip.PrefixFrom(netip.AddrFrom4(k4.Addr), int(k4.Prefixlen)))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list IPv4 bypass prefixes: %w", err)
	}

	var k6 steerBypassV6Key
	it = s.objs.BypassV6.Iterate()
	for it.Next(&k6, &val) {
		out = append(out, netip.PrefixFrom(netip.AddrFrom16(k6.Addr), int(k6.Prefixlen)))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list IPv6 bypass prefixes: %w", err)
	}

	slices.SortFunc(out, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	return out, nil
}

func v4Key(p netip.Prefix) steerBypassV4Key {
	return steerBypassV4Key{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As4()}
}

func v6Key(p netip.Prefix) steerBypassV6Key {
	return steerBypassV6Key{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As16()}
}

// SetPaused turns the pause switch on or off. While paused, traffic that
// would be steered gets verdict paused and no mark; bypass still applies.
func (s *Steer) SetPaused(paused bool) error {
	return s.updateSettings("pause switch", func(v *steerSettings) {
		v.Paused = 0
		if paused {
			v.Paused = 1
		}
	})
}

// Paused reports whether the pause switch is on.
func (s *Steer) Paused() (bool, error) {
	var v steerSettings
	if err := s.objs.Settings.Lookup(uint32(0), &v); err != nil {
		return false, fmt.Errorf("read pause switch: %w", err)
	}
	return v.Paused != 0, nil
}

// Counters returns the packets and bytes per verdict since the classifier
// was loaded, summed over CPUs.
func (s *Steer) Counters() (map[Verdict]Counter, error) {
	out := make(map[Verdict]Counter, numVerdicts)
	var perCPU []steerCounter
	for _, v := range Verdicts() {
		if err := s.objs.Counters.Lookup(uint32(v), &perCPU); err != nil {
			return nil, fmt.Errorf("read %s counter: %w", v, err)
		}
		var c Counter
		for _, pc := range perCPU {
			c.Packets += pc.Packets
			c.Bytes += pc.Bytes
		}
		out[v] = c
	}
	return out, nil
}

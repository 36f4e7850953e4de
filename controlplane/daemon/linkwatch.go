package daemon

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Following the interfaces.
//
// A WAN link is re-dialled (PPPoE), re-plugged (a USB modem) or gets a new
// address and default route (DHCP); a LAN interface goes down and up (a
// switch rebooting) or is deleted and made again (a bridge re-made). The
// daemon follows the namespace's link, address and route events from
// netlink and, once a burst of them is over, puts back what a change
// undid:
//
//   - LAN interfaces: a device made anew has a new ifindex; its listeners
//     (bound to the old one) are opened again on it, then the classifier
//     and the DNS answerer are attached again (the kernel detached their
//     links with the old device). The nftables table matches interfaces
//     by name, so it follows by itself. Down and up changes nothing: the
//     links and the sockets stay.
//   - WAN interfaces (with the fast path): the default routes' interfaces
//     are recomputed (or firewall.wan_interfaces are followed as they come
//     and go) and the forwarder is attached to each one that lacks it.
//   - An address of a WAN interface that goes (a new DHCP lease, a
//     re-dial with a new address, the interface itself going) kills the
//     warm connections to the cloud proxy made from it: the cloud proxy
//     client is replaced by a fresh one, so that no new flow waits on one.
//
// Each change is logged once. Everything is also checked every
// linkResync, in case events were lost (a full socket buffer); the
// subscriptions are made again if they fail.
const (
	linkQuiet       = 200 * time.Millisecond // a burst is over when no event came for this long
	linkMaxWait     = time.Second            // but is acted on at the latest this long after it began
	linkResync      = 30 * time.Second
	linkResubscribe = time.Second
)

// linkWatch is the state of the interface follower.
type linkWatch struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	wan    []string       // WAN interfaces in use: wanted and holding the forwarder
	wanIdx map[int]string // ifindex → name of the wanted WAN interfaces last seen
	// wanAddrGone is set when an address of a WAN interface went away:
	// the warm connections to the cloud proxy made from it are dead.
	wanAddrGone bool
	lanIdx      map[string]int    // LAN interface → ifindex last seen (0: missing)
	warned      map[string]string // what → the last problem logged, to log each once
}

func newLinkWatch() *linkWatch {
	return &linkWatch{lanIdx: map[string]int{}, wanIdx: map[int]string{}, warned: map[string]string{}}
}

// WANInUse returns the WAN interfaces the fast path's forwarder is on.
func (w *linkWatch) WANInUse() []string {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.wan)
}

// startLinkWatch follows the namespace's interfaces until Close.
func (d *Daemon) startLinkWatch(ctx context.Context) error {
	ns, err := netns.Get()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	w := d.links
	w.cancel, w.done = cancel, make(chan struct{})
	go func() {
		defer close(w.done)
		defer ns.Close()
		d.followLinks(ctx, ns)
	}()
	return nil
}

// stopLinkWatch stops the follower and waits for it (Close, before the
// programs are detached).
func (d *Daemon) stopLinkWatch() {
	if w := d.links; w != nil && w.cancel != nil {
		w.cancel()
		<-w.done
	}
}

// linkEvents are the three subscriptions; closing done ends them.
type linkEvents struct {
	done   chan struct{}
	links  chan netlink.LinkUpdate
	addrs  chan netlink.AddrUpdate
	routes chan netlink.RouteUpdate
}

func subscribeLinks(ns netns.NsHandle) (*linkEvents, error) {
	ev := &linkEvents{
		done:   make(chan struct{}),
		links:  make(chan netlink.LinkUpdate, 64),
		addrs:  make(chan netlink.AddrUpdate, 64),
		routes: make(chan netlink.RouteUpdate, 64),
	}
	// A receive error closes that subscription's channel, which the
	// follower sees; the callback has nothing to add.
	onErr := func(error) {}
	// The sockets are made on this thread. Naming the namespace makes the
	// library setns into it, which needs CAP_SYS_ADMIN (the packaged
	// service has not got it), so it is named only when this thread is in
	// another one (an in-process test's gateway namespace).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var nsp *netns.NsHandle
	if cur, err := netns.Get(); err != nil || !cur.Equal(ns) {
		nsp = &ns
		if err == nil {
			cur.Close()
		}
	} else {
		cur.Close()
	}
	err := errors.Join(
		netlink.LinkSubscribeWithOptions(ev.links, ev.done, netlink.LinkSubscribeOptions{Namespace: nsp, ErrorCallback: onErr}),
		netlink.AddrSubscribeWithOptions(ev.addrs, ev.done, netlink.AddrSubscribeOptions{Namespace: nsp, ErrorCallback: onErr}),
		netlink.RouteSubscribeWithOptions(ev.routes, ev.done, netlink.RouteSubscribeOptions{Namespace: nsp, ErrorCallback: onErr}),
	)
	if err != nil {
		ev.close()
		return nil, err
	}
	return ev, nil
}

// close ends the subscriptions and drains their channels, so their
// goroutines are not left blocked on a send.
func (ev *linkEvents) close() {
	close(ev.done)
	go func() {
		for range ev.links {
		}
	}()
	go func() {
		for range ev.addrs {
		}
	}()
	go func() {
		for range ev.routes {
		}
	}()
}

// followLinks is the follower's loop.
func (d *Daemon) followLinks(ctx context.Context, ns netns.NsHandle) {
	var ev *linkEvents
	defer func() {
		if ev != nil {
			ev.close()
		}
	}()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	resync := time.NewTicker(linkResync)
	defer resync.Stop()
	var burst time.Time // when the pending burst began; zero: none pending
	kick := func() {
		now := time.Now()
		if burst.IsZero() {
			burst = now
		}
		debounce.Reset(min(linkQuiet, max(0, burst.Add(linkMaxWait).Sub(now))))
	}
	for {
		if ev == nil {
			var err error
			if ev, err = subscribeLinks(ns); err != nil {
				d.links.warnOnce(d, "subscribe", "cannot follow interface changes; trying again", err)
				select {
				case <-ctx.Done():
					return
				case <-time.After(linkResubscribe):
				}
				continue
			}
			d.links.clear("subscribe")
			// Whatever changed before the subscription is caught here.
			d.reconcileLinks()
		}
		var lost bool
		select {
		case <-ctx.Done():
			return
		case _, ok := <-ev.links:
			lost = !ok
			kick()
		case u, ok := <-ev.addrs:
			lost = !ok
			if ok && !u.NewAddr {
				d.links.noteAddrGone(u.LinkIndex)
			}
			kick()
		case u, ok := <-ev.routes:
			lost = !ok
			if !ok || isDefaultRoute(u.Route) {
				kick()
			}
		case <-debounce.C:
			burst = time.Time{}
			d.reconcileLinks()
		case <-resync.C:
			d.reconcileLinks()
		}
		if lost {
			d.log.Debug("interface events subscription ended; subscribing again")
			ev.close()
			ev = nil
		}
	}
}

// noteAddrGone notes that an address of the interface with ifindex went
// away, when it is a WAN interface.
func (w *linkWatch) noteAddrGone(ifindex int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.wanIdx[ifindex]; ok {
		w.wanAddrGone = true
	}
}

// takeAddrGone reports and clears wanAddrGone.
func (w *linkWatch) takeAddrGone() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	gone := w.wanAddrGone
	w.wanAddrGone = false
	return gone
}

// isDefaultRoute reports whether r is a default route of the main table.
func isDefaultRoute(r netlink.Route) bool {
	if r.Table != 0 && r.Table != unix.RT_TABLE_MAIN {
		return false
	}
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0
}

// warnOnce logs a problem with what, unless the same one was logged last.
func (w *linkWatch) warnOnce(d *Daemon, what, msg string, err error) {
	w.mu.Lock()
	same := w.warned[what] == err.Error()
	w.warned[what] = err.Error()
	w.mu.Unlock()
	if !same {
		d.log.Warn(msg, "what", what, "err", err)
	}
}

// clear forgets what's last problem, so that a new one is logged.
func (w *linkWatch) clear(what string) {
	w.mu.Lock()
	delete(w.warned, what)
	w.mu.Unlock()
}

// ifindexOf returns dev's ifindex, 0 when there is no such device, and
// false when it cannot tell.
func ifindexOf(dev string) (int, bool) {
	l, err := netlink.LinkByName(dev)
	if err != nil {
		var nf netlink.LinkNotFoundError
		return 0, errors.As(err, &nf)
	}
	return l.Attrs().Index, true
}

// reconcileLinks puts back what interface changes undid: the LAN
// interfaces' listeners, classifier and DNS answerer, and the fast path's
// forwarder on the WAN interfaces.
func (d *Daemon) reconcileLinks() {
	w := d.links
	lan := d.cfg.LANInterfaces
	for _, dev := range lan {
		idx, ok := ifindexOf(dev)
		if !ok {
			continue
		}
		w.mu.Lock()
		prev, seen := w.lanIdx[dev]
		w.lanIdx[dev] = idx
		w.mu.Unlock()
		switch {
		case !seen || prev == idx:
		case idx == 0:
			d.log.Warn("LAN interface gone: its clients are not steered until it is back", "interface", dev)
		case prev == 0:
			d.log.Info("LAN interface back", "interface", dev, "ifindex", idx)
		default:
			d.log.Info("LAN interface made anew", "interface", dev, "ifindex", idx, "was", prev)
		}
		did, err := d.lanLn.refresh(dev, idx)
		switch {
		case err != nil:
			w.warnOnce(d, "listeners@"+dev, "LAN listeners not bound again; trying again at the next change", err)
		case did && idx != 0:
			w.clear("listeners@" + dev)
			d.log.Info("LAN listeners bound again", "interface", dev, "ifindex", idx)
		}
	}
	// After the listeners, as at start: no flow is steered to a socket
	// that is not there.
	if got, err := d.steer.Reattach(lan); err != nil {
		w.warnOnce(d, "classifier", "classifier not attached again; trying again at the next change", err)
	} else if len(got) > 0 {
		w.clear("classifier")
		d.log.Info("classifier attached again", "interfaces", got, "attached", d.steer.Attached())
	}
	if dc := d.kdns.c.Load(); dc != nil {
		if got, err := dc.Reattach(lan, d.steer.Program()); err != nil {
			w.warnOnce(d, "dnscache", "DNS answerer not attached again; trying again at the next change", err)
		} else if len(got) > 0 {
			w.clear("dnscache")
			d.log.Info("DNS answerer attached again", "interfaces", got)
		}
	}
	d.followWAN()
	if w.takeAddrGone() {
		d.renewCloud()
	}
}

// renewCloud replaces the cloud proxy client with a new one, so that its
// warm connections, made from a WAN address that is gone (a new DHCP
// lease, a re-dial with a new address), are not handed to flows that
// would wait for an answer that never comes. Tunnels already made stay.
func (d *Daemon) renewCloud() {
	if d.proxy == nil || d.proxy.Cloud() == nil {
		return
	}
	d.ctrl.mu.Lock() // as a code change does
	defer d.ctrl.mu.Unlock()
	code, err := d.store.Code()
	if err != nil {
		d.log.Warn("WAN address gone: cannot read the code to renew the cloud proxy client", "err", err)
		return
	}
	client, err := d.newCloudClient(code)
	if err != nil {
		d.log.Warn("WAN address gone: cannot renew the cloud proxy client", "err", err)
		return
	}
	d.setCloud(client)
	d.log.Info("WAN address gone: warm connections to the cloud proxy dropped")
}

package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
)

// LAN-bound listeners.
//
// A socket bound to a device (SO_BINDTODEVICE) keeps the device's ifindex,
// not its name. When a LAN interface is deleted and made again (a bridge
// re-made, a USB NIC re-plugged) the new device has a new ifindex and the
// old sockets take nothing any more: they are not closed or told, they
// just never match a packet again. A device that only goes down and up
// keeps its ifindex and its sockets keep working. So each LAN interface's
// listeners are opened by openers kept here, and opened again (after the
// old ones are closed) when the interface's ifindex changes.

// lanOpener opens one set of listeners bound to dev, starts serving them
// until ctx ends, and returns what closes them.
type lanOpener func(ctx context.Context, dev string) ([]func() error, error)

// lanListeners are the listeners of every LAN interface. Its methods are
// safe for concurrent use.
type lanListeners struct {
	mu     sync.Mutex
	parent context.Context
	devs   map[string]*lanDev
	closed bool
}

// lanDev is one LAN interface's listeners.
type lanDev struct {
	ifindex int // the device's ifindex when they were opened; 0: none open
	openers []lanOpener
	cancel  context.CancelFunc
	closers []func() error
}

func newLANListeners(ctx context.Context) *lanListeners {
	return &lanListeners{parent: ctx, devs: map[string]*lanDev{}}
}

// add keeps open for dev and runs it now.
func (l *lanListeners) add(dev string, open lanOpener) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("listeners closed")
	}
	g := l.devs[dev]
	if g == nil {
		ifc, err := net.InterfaceByName(dev)
		if err != nil {
			return fmt.Errorf("find LAN interface %s: %w", dev, err)
		}
		g = &lanDev{ifindex: ifc.Index}
		l.devs[dev] = g
	}
	g.openers = append(g.openers, open)
	closers, err := open(l.ctxOf(g), dev)
	g.closers = append(g.closers, closers...)
	return err
}

// ctxOf returns a context that ends when g's listeners are closed.
func (l *lanListeners) ctxOf(g *lanDev) context.Context {
	ctx, cancel := context.WithCancel(l.parent)
	if prev := g.cancel; prev != nil {
		g.cancel = func() { prev(); cancel() }
	} else {
		g.cancel = cancel
	}
	return ctx
}

// stop closes g's listeners and ends their serve loops.
func (g *lanDev) stop() error {
	if g.cancel != nil {
		g.cancel()
		g.cancel = nil
	}
	var errs []error
	for i := len(g.closers) - 1; i >= 0; i-- {
		if err := g.closers[i](); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	g.closers = nil
	return errors.Join(errs...)
}

// refresh makes dev's listeners bound to the device whose ifindex is index
// now (0: the device is gone): when it differs from the one they were
// opened on, they are closed and, for a device that is there, opened
// again. It reports whether anything was done; on an error the next
// refresh tries again.
func (l *lanListeners) refresh(dev string, index int) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.devs[dev]
	if l.closed || g == nil || g.ifindex == index {
		return false, nil
	}
	errs := []error{g.stop()}
	g.ifindex = 0
	if index == 0 {
		return true, errors.Join(errs...)
	}
	ctx, cancel := context.WithCancel(l.parent)
	g.cancel = cancel
	for _, open := range g.openers {
		closers, err := open(ctx, dev)
		g.closers = append(g.closers, closers...)
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return true, err
	}
	g.ifindex = index
	return true, nil
}

// boundTo returns the ifindex dev's listeners are bound to (0: none).
func (l *lanListeners) boundTo(dev string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if g := l.devs[dev]; g != nil {
		return g.ifindex
	}
	return 0
}

// devices returns the LAN interfaces with listeners, sorted.
func (l *lanListeners) devices() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for dev := range l.devs {
		out = append(out, dev)
	}
	slices.Sort(out)
	return out
}

// closeAll closes every listener for good.
func (l *lanListeners) closeAll() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	var errs []error
	for _, g := range l.devs {
		errs = append(errs, g.stop())
	}
	return errors.Join(errs...)
}

// openSteered opens the steered listeners on dev (TLS, HTTP, DNS over TCP
// and UDP, IPv4 and IPv6) and serves them until ctx ends.
func (d *Daemon) openSteered(ctx context.Context, dev string) (closers []func() error, err error) {
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
			closers = nil
		}
	}()
	cfg := d.cfg
	for _, fam := range []string{"4", "6"} {
		tlsLn, err := listenTCP(ctx, fam, dev, cfg.Listen.TLSPort, true)
		if err != nil {
			return closers, err
		}
		closers = append(closers, tlsLn.Close)
		httpLn, err := listenTCP(ctx, fam, dev, cfg.Listen.HTTPPort, true)
		if err != nil {
			return closers, err
		}
		closers = append(closers, httpLn.Close)
		dnsTCP, err := listenTCP(ctx, fam, dev, cfg.Listen.DNSPort, false)
		if err != nil {
			return closers, err
		}
		closers = append(closers, dnsTCP.Close)
		dnsUDP, err := listenUDP(ctx, fam, dev, cfg.Listen.DNSPort)
		if err != nil {
			return closers, err
		}
		closers = append(closers, dnsUDP.Close)
		at := fam + "@" + dev
		d.goServe("tls"+at, func() error { return d.proxy.ServeTLS(ctx, tlsLn) })
		d.goServe("http"+at, func() error { return d.proxy.ServePlainHTTP(ctx, httpLn) })
		d.goServe("dns"+at, func() error { return d.resolver.Serve(ctx, dnsUDP, dnsTCP) })
	}
	return closers, nil
}

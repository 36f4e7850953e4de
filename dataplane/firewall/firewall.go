// Package firewall owns cloudsteer's nftables table: the redirect of marked
// DNS, HTTP and TLS flows to the local listeners, the QUIC reject, the
// guard that keeps the listeners unreachable from the WAN side, the
// per-client limits on steered flows and DNS (limits.go), and the raw
// chains that keep unsteered TCP out of connection tracking while no
// other ruleset needs it.
//
// The table carries the owner flag and is created over one lasting netlink
// socket that the Table keeps open, so the kernel deletes it when that socket
// closes, also when the process is killed: a crash fails open.
package firewall

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/cloudsteer/cloudsteer/dataplane/quicgate"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultTableName is the name of the inet table when Config.TableName is empty.
const DefaultTableName = "cloudsteer"

// Marks are the packet marks the classifier (dataplane/steer) sets; each is
// compared as a full 32-bit value. Untrack (the web TCP flows that started
// bypassed or paused) is only used, and must only be set, with
// UntrackUnsteered.
type Marks struct {
	HTTP, TLS, DNS, QUIC uint32
	Untrack              uint32
	// DoT marks TCP and UDP 853 (DNS over TLS or QUIC) to anything but a
	// bypass destination; such flows are refused in the forward chain.
	// Zero leaves them alone (dns.reject_dot off).
	DoT uint32
}

// Config is what the table is built from.
type Config struct {
	// LANInterfaces are the names of the LAN interfaces; the listeners are
	// reachable only through them and lo. Names, not indexes, so an
	// interface may be re-created while the table exists.
	LANInterfaces []string
	// Marks are the classifier's verdict marks.
	Marks Marks
	// HTTPPort, TLSPort and DNSPort are the local ports of the proxy and
	// resolver listeners, the redirect targets.
	HTTPPort, TLSPort, DNSPort uint16
	// GuardTCPPorts are further local TCP ports (e.g. an admin API)
	// reachable only from the LAN interfaces or lo.
	GuardTCPPorts []uint16
	// TableName is the inet table's name; empty means DefaultTableName.
	TableName string
	// UntrackUnsteered lets TCP flows the classifier does not steer
	// (bypassed, paused, other ports) skip connection tracking while this
	// table is the only netfilter ruleset in the namespace and there is
	// no IPsec policy (see untrack.go). Nothing else in the namespace then needs conntrack, so
	// those flows are plain routing, as if cloudsteer were not there.
	UntrackUnsteered bool
	// Limits are the per-client limits on steered flows (see limits.go);
	// the zero value sets none.
	Limits Limits
	// QUICGate, when set, sends new LAN QUIC flows (M_QUIC) to the QUIC
	// gate's NFQUEUE instead of rejecting them (quicgate.AddRules; its
	// MarkQUIC is taken from Marks.QUIC). Nil keeps the plain reject.
	QUICGate *quicgate.RuleConfig
}

// Table is cloudsteer's owner-flagged nftables table, alive as long as the
// Table's netlink socket is open.
type Table struct {
	log      *slog.Logger
	name     string
	replaced bool

	cfg     Config
	procNet *os.File        // the namespace's /proc/net, for legacy iptables tables; may be nil
	xfrm    *netlink.Handle // the namespace's IPsec policies; may be nil
	ct      *netlink.Handle // the namespace's conntrack table (untrack.go); may be nil

	cbMu     sync.Mutex // serializes onChange calls
	onChange func(untracking bool)

	stopWatch chan struct{} // closed by Close; nil without UntrackUnsteered
	watchDone chan struct{}

	mu         sync.Mutex
	untracking bool           // the untrack chains are installed
	pickup     bool           // the pickup chain is installed (untrack.go)
	aloneSince time.Time      // since when no other ruleset was seen; zero while one is
	waitLogged bool           // "untracking waits for translated flows" was logged
	holdRule   *nftables.Rule // the HoldDNS rule while it is in (reach.go)
	conn       *nftables.Conn // lasting; nil after Close
	owner      uint32         // netlink port id the kernel records as owner
	closed     bool
}

// New validates cfg and installs the table in the network namespace of the
// calling thread. A table of the same name left by something else is
// deleted first, in the same atomic batch (see Replaced); a table of that
// name owned by another live process is an error. On error nothing is
// created.
func New(ctx context.Context, cfg Config) (*Table, error) {
	if cfg.TableName == "" {
		cfg.TableName = DefaultTableName
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("firewall config: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	log := slog.With("component", "firewall", "table", cfg.TableName)

	conn, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("open nftables netlink socket: %w", err)
	}
	t := &Table{log: log, name: cfg.TableName, conn: conn, cfg: cfg}
	if cfg.UntrackUnsteered {
		// Opened from this thread, so it is this namespace's /proc/net.
		if d, err := os.Open("/proc/thread-self/net"); err == nil {
			t.procNet = d
		} else {
			log.Warn("cannot see legacy iptables tables", "err", err)
		}
		if h, err := netlink.NewHandle(unix.NETLINK_XFRM); err == nil {
			t.xfrm = h
		} else {
			log.Warn("cannot see IPsec policies", "err", err)
		}
		if h, err := netlink.NewHandle(unix.NETLINK_NETFILTER); err == nil {
			t.ct = h
		} else {
			log.Warn("cannot see the conntrack table", "err", err)
		}
	}
	if err := t.install(ctx, cfg); err != nil {
		t.closeHandles()
		return nil, errors.Join(err, closeConn(conn))
	}
	if cfg.UntrackUnsteered {
		t.stopWatch, t.watchDone = make(chan struct{}), make(chan struct{})
		go t.watchUntrack(t.stopWatch, t.watchDone)
	}
	return t, nil
}

func (t *Table) install(ctx context.Context, cfg Config) error {
	old, err := lookupTable(t.conn, t.name)
	if err != nil {
		return err
	}
	if old != nil {
		if old.Flags&nftables.TableFlagOwner != 0 {
			return fmt.Errorf("table inet %s is owned by a running process (netlink port id %d); is another cloudsteer running in this network namespace?", t.name, old.Owner)
		}
		t.conn.DelTable(old)
		t.replaced = true
	}
	if err := build(t.conn, cfg); err != nil {
		return err
	}
	var other string
	if cfg.UntrackUnsteered {
		if other, err = t.otherRuleset(); err != nil {
			return err
		}
		if other == "" {
			tab := &nftables.Table{Name: t.name, Family: nftables.TableFamilyINet}
			if err := addUntrack(t.conn, tab, cfg); err != nil {
				return err
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := t.conn.Flush(); err != nil {
		if errors.Is(err, unix.EPERM) && old != nil {
			return fmt.Errorf("replace table inet %s (now owned by another process?): %w", t.name, err)
		}
		return fmt.Errorf("install table inet %s: %w", t.name, err)
	}
	if t.replaced {
		t.log.Warn("deleted a leftover table of the same name before creating ours", "old_flags", uint32(old.Flags))
	}
	cur, err := lookupTable(t.conn, t.name)
	if err != nil {
		return err
	}
	if cur == nil || cur.Flags&nftables.TableFlagOwner == 0 {
		return fmt.Errorf("table inet %s: kernel did not keep the owner flag; need kernel >= 5.12", t.name)
	}
	t.owner = cur.Owner
	t.untracking = cfg.UntrackUnsteered && other == ""
	t.log.Info("table installed", "lan", cfg.LANInterfaces, "http_port", cfg.HTTPPort,
		"tls_port", cfg.TLSPort, "dns_port", cfg.DNSPort, "guard_tcp_ports", cfg.GuardTCPPorts,
		"untrack_unsteered", t.untracking, "limits", fmt.Sprintf("%+v", cfg.Limits))
	if cfg.UntrackUnsteered && other != "" {
		t.log.Info("another netfilter ruleset is present: tracking every flow", "ruleset", other)
	}
	return nil
}

// Replaced reports whether New found a table of the same name (left by
// something else) and deleted it before creating this one.
func (t *Table) Replaced() bool { return t.replaced }

// Name is the inet table's name.
func (t *Table) Name() string { return t.name }

// Present reports whether the table still exists in the kernel and is
// still the one this Table owns. After Close it reports false.
func (t *Table) Present() (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false, nil
	}
	cur, err := lookupTable(t.conn, t.name)
	if err != nil {
		return false, err
	}
	return cur != nil && cur.Flags&nftables.TableFlagOwner != 0 && cur.Owner == t.owner, nil
}

// Close deletes the table and closes the lasting netlink socket. Closing
// the socket alone would make the kernel delete the table too; the explicit
// delete makes the outcome visible as an error. Close is safe to call twice.
func (t *Table) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.mu.Unlock()
	if t.stopWatch != nil {
		close(t.stopWatch)
		<-t.watchDone
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closeHandles()
	var errs []error
	t.conn.DelTable(&nftables.Table{Name: t.name, Family: nftables.TableFamilyINet})
	if err := t.conn.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("delete table inet %s: %w", t.name, err))
	}
	errs = append(errs, closeConn(t.conn))
	t.conn = nil
	t.log.Info("table deleted")
	return errors.Join(errs...)
}

// closeHandles closes what otherRuleset reads the namespace through.
func (t *Table) closeHandles() {
	if t.procNet != nil {
		t.procNet.Close()
	}
	if t.xfrm != nil {
		t.xfrm.Close()
	}
	if t.ct != nil {
		t.ct.Close()
	}
}

// lookupTable returns the inet table name, or nil when there is none.
func lookupTable(conn *nftables.Conn, name string) (*nftables.Table, error) {
	tab, err := conn.ListTableOfFamily(name, nftables.TableFamilyINet)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up table inet %s: %w", name, err)
	}
	return tab, nil
}

func closeConn(conn *nftables.Conn) error {
	if err := conn.CloseLasting(); err != nil {
		return fmt.Errorf("close nftables netlink socket: %w", err)
	}
	return nil
}

//go:build !linux

package dnscache

import (
	"context"
	"errors"
	"time"

	"github.com/cilium/ebpf"
)

// errNotLinux is what every Cache function returns off Linux.
var errNotLinux = errors.New("dnscache: eBPF DNS answers need Linux")

// Cache is the eBPF DNS answer cache; off Linux it cannot be made.
type Cache struct{}

// New returns an error off Linux.
func New(ctx context.Context, ifaces []string, opts Options) (*Cache, error) { return nil, errNotLinux }

// Load returns an error off Linux.
func Load(ctx context.Context, opts Options) (*Cache, error) { return nil, errNotLinux }

// Program returns nil off Linux.
func (c *Cache) Program() *ebpf.Program { return nil }

// Put returns an error off Linux.
func (c *Cache) Put(wire []byte, ttl time.Duration) error { return errNotLinux }

// Delete returns an error off Linux.
func (c *Cache) Delete(name string, qtype uint16) error { return errNotLinux }

// Flush returns an error off Linux.
func (c *Cache) Flush() error { return errNotLinux }

// Len is 0 off Linux.
func (c *Cache) Len() int { return 0 }

// Stats returns an error off Linux.
func (c *Cache) Stats() (Stats, error) { return Stats{}, errNotLinux }

// Attached is empty off Linux.
func (c *Cache) Attached() []string { return nil }

// Close does nothing off Linux.
func (c *Cache) Close() error { return nil }

// Reattach returns an error off Linux.
func (c *Cache) Reattach(names []string, after *ebpf.Program) ([]string, error) {
	return nil, errNotLinux
}

package dhcpnames

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// DefaultInterval is how often the lease directory is looked at. networkd
// rewrites a file (by rename) whenever a lease is bound, so a new device's
// name answers within this long.
const DefaultInterval = 2 * time.Second

// maxFiles bounds the files read from the directory (one per LAN
// interface in practice).
const maxFiles = 64

// Watcher keeps a Table current from a lease directory by polling it: a
// file's name, size and modification time decide whether it is read
// again, and the table is rebuilt every interval so expired leases leave
// it. A missing directory is an empty table (no DHCP server runs); a file
// that does not parse keeps its last good leases and is logged once per
// change.
type Watcher struct {
	Dir      string
	Domain   string
	Interval time.Duration
	// Reserved returns the names (canonical) no lease may take: the
	// gateway's own.
	Reserved func() []string
	Log      *slog.Logger
	Now      func() time.Time

	table atomic.Pointer[Table]
	files map[string]fileState
}

type fileState struct {
	size   int64
	mtime  time.Time
	leases []Lease
}

// Table is the current table (never nil after the first Refresh).
func (w *Watcher) Table() *Table { return w.table.Load() }

// Lookup answers a name from the current table.
func (w *Watcher) Lookup(name string) ([]netip.Addr, bool) { return w.Table().Lookup(name) }

// Run refreshes the table until ctx ends.
func (w *Watcher) Run(ctx context.Context) {
	iv := w.Interval
	if iv <= 0 {
		iv = DefaultInterval
	}
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		w.Refresh()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Refresh reads what changed in the directory and rebuilds the table.
func (w *Watcher) Refresh() {
	log := w.Log
	if log == nil {
		log = slog.Default()
	}
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	if w.files == nil {
		w.files = map[string]fileState{}
	}
	seen := map[string]bool{}
	entries, err := os.ReadDir(w.Dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.Warn("read DHCP lease directory", "dir", w.Dir, "err", err)
	}
	for _, e := range entries {
		if len(seen) >= maxFiles {
			break
		}
		// networkd writes a temporary file and renames it over the lease
		// file; the temporary ones start with a dot.
		if strings.HasPrefix(e.Name(), ".") || !e.Type().IsRegular() {
			continue
		}
		path := filepath.Join(w.Dir, e.Name())
		fi, err := e.Info()
		if err != nil {
			continue
		}
		seen[path] = true
		old, had := w.files[path]
		if had && old.size == fi.Size() && old.mtime.Equal(fi.ModTime()) {
			continue
		}
		st := fileState{size: fi.Size(), mtime: fi.ModTime(), leases: old.leases}
		if fi.Size() > MaxFileSize {
			log.Warn("DHCP lease file too large, not read", "file", path, "bytes", fi.Size())
		} else if b, err := os.ReadFile(path); err != nil {
			log.Warn("read DHCP lease file", "file", path, "err", err)
		} else if leases, skipped, err := Parse(b); err != nil {
			log.Warn("DHCP lease file kept at its last good content", "file", path, "err", err)
		} else {
			st.leases = leases
			if skipped > 0 {
				log.Debug("DHCP leases without a usable host name", "file", path, "skipped", skipped)
			}
		}
		w.files[path] = st
	}
	for p := range w.files {
		if !seen[p] {
			delete(w.files, p)
		}
	}
	paths := make([]string, 0, len(w.files))
	for p := range w.files {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	var all []Lease
	for _, p := range paths {
		all = append(all, w.files[p].leases...)
	}
	var reserved []string
	if w.Reserved != nil {
		reserved = w.Reserved()
	}
	prev := w.table.Load()
	t := NewTable(all, w.Domain, reserved, now())
	w.table.Store(t)
	if prev == nil || prev.Len() != t.Len() {
		log.Info("LAN host names from DHCP leases", "names", t.Len(), "dir", w.Dir)
	}
}

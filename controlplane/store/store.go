// Package store is the control plane's embedded state store: bypass entries,
// the pause state, the entitlement code, settings, the web console's admin
// account and first-run setup token, and a bounded log of block
// events, kept in one bbolt file (DIR/state.db, mode 0600) so that run-time
// changes survive restarts, SIGKILL and power loss. Every write is one
// fsynced bbolt transaction: after a crash the file holds either all of a
// write or none of it.
package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// FileName is the name of the state file inside the state directory.
const FileName = "state.db"

// MaxEvents is the default bound on stored events; the oldest are dropped
// beyond it.
const MaxEvents = 10000

// DefaultLockTimeout is how long Open waits for another process to release
// the state file.
const DefaultLockTimeout = 2 * time.Second

// schemaVersion is the layout this package writes; Open refuses files written
// by a newer layout.
const schemaVersion = 1

// ErrInUse is returned (wrapped) by Open when another process holds the state
// file.
var ErrInUse = errors.New("in use by another cloudsteer")

// ErrCorrupt is returned (wrapped) by Open when the integrity check finds a
// damaged state file.
var ErrCorrupt = errors.New("state file is corrupt")

var (
	bucketMeta     = []byte("meta")
	bucketBypass   = []byte("bypass")
	bucketState    = []byte("state")
	bucketSecret   = []byte("secret")
	bucketSettings = []byte("settings")
	bucketEvents   = []byte("events")
	bucketAdmin    = []byte("admin")
	bucketConsole  = []byte("console")

	keyVersion     = []byte("version")
	keyEventCount  = []byte("event_count")
	keyPause       = []byte("pause")
	keyCode        = []byte("entitlement_code")
	allBuckets     = [][]byte{bucketMeta, bucketBypass, bucketState, bucketSecret, bucketSettings, bucketEvents, bucketAdmin, bucketConsole}
	maxCheckErrors = 10
)

// Store is the open state file. Its methods are safe for concurrent use.
type Store struct {
	db        *bolt.DB
	dir       string
	maxEvents int
	log       *slog.Logger
	now       func() time.Time // clock for the setup token and password changes; tests replace it

	// Group commit of AppendEvent: see events.go.
	mu         sync.Mutex
	pending    []*appendReq
	committing bool

	eventCommits atomic.Uint64 // AppendEvents transactions
}

// Option changes how Open opens the store.
type Option func(*options)

type options struct {
	maxEvents   int
	lockTimeout time.Duration
	log         *slog.Logger
}

// WithMaxEvents bounds the event log to n entries (n > 0; default MaxEvents).
func WithMaxEvents(n int) Option {
	return func(o *options) { o.maxEvents = n }
}

// WithLockTimeout sets how long Open waits for another process to release
// the state file (d > 0; default DefaultLockTimeout).
func WithLockTimeout(d time.Duration) Option {
	return func(o *options) { o.lockTimeout = d }
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.log = l }
}

// Open opens or creates the store in dir. It creates dir with mode 0700 when
// missing, creates or tightens DIR/state.db to mode 0600, takes an exclusive
// lock on it (failing with ErrInUse after the lock timeout, or sooner when ctx
// ends), and checks the file's integrity, failing with ErrCorrupt when
// damaged. A timed context deadline shortens the lock wait.
func Open(ctx context.Context, dir string, opts ...Option) (*Store, error) {
	o := options{maxEvents: MaxEvents, lockTimeout: DefaultLockTimeout, log: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	if o.maxEvents <= 0 {
		return nil, fmt.Errorf("open store: max events %d must be positive", o.maxEvents)
	}
	if o.lockTimeout <= 0 {
		return nil, fmt.Errorf("open store: lock timeout %s must be positive", o.lockTimeout)
	}
	if dir == "" {
		return nil, errors.New("open store: empty state dir")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	log := o.log.With("component", "store")
	start := time.Now()

	if err := prepareDir(dir, log); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, FileName)
	if err := tightenFile(path, log); err != nil {
		return nil, err
	}

	_, statErr := os.Lstat(path)
	created := errors.Is(statErr, fs.ErrNotExist)

	timeout := o.lockTimeout
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); left < timeout {
			timeout = max(left, time.Millisecond)
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("state dir %s is %w (lock not released within %s)", dir, ErrInUse, timeout)
	}
	if err != nil {
		return nil, fmt.Errorf("open state file %s: %w", path, err)
	}
	// bbolt created the file with 0600 minus the umask; make it exactly 0600.
	if err := tightenFile(path, log); err != nil {
		db.Close()
		return nil, err
	}

	if created {
		// bbolt fsyncs the file, not the directory entry naming it.
		if err := syncDir(dir); err != nil {
			db.Close()
			return nil, err
		}
	}

	s := &Store{db: db, dir: dir, maxEvents: o.maxEvents, log: log, now: time.Now}
	if err := s.check(); err != nil {
		db.Close()
		return nil, err
	}
	n, err := s.initialize()
	if err != nil {
		db.Close()
		return nil, err
	}
	log.Info("state store open", "path", path, "events", n, "max_events", o.maxEvents,
		"took", time.Since(start).Round(time.Microsecond))
	return s, nil
}

// prepareDir creates dir with mode 0700 when missing and warns when an
// existing dir is open to other users (it is not changed: it may be shared).
func prepareDir(dir string, log *slog.Logger) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create state dir: %w", err)
		}
		// MkdirAll's mode is reduced by the umask; set it exactly.
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("set state dir mode: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("stat state dir: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("state dir %s is not a directory", dir)
	case fi.Mode().Perm()&0o077 != 0:
		log.Warn("state dir is accessible to other users; the state file itself is 0600",
			"dir", dir, "mode", fmt.Sprintf("%#o", fi.Mode().Perm()))
	}
	return nil
}

// tightenFile makes an existing state file mode 0600, refusing anything that
// is not a regular file (a symlink could point the secret elsewhere).
func tightenFile(path string, log *slog.Logger) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat state file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("state file %s is not a regular file but %s", path, describeType(fi.Mode()))
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		if err := os.Chmod(path, 0o600); err != nil {
			return fmt.Errorf("set state file mode: %w", err)
		}
		if perm&0o077 != 0 {
			log.Warn("state file was readable by other users; mode set to 0600",
				"path", path, "was", fmt.Sprintf("%#o", perm))
		}
	}
	return nil
}

// syncDir makes a new directory entry in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open state dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync state dir: %w", err)
	}
	return nil
}

func describeType(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "a symlink"
	case m.IsDir():
		return "a directory"
	default:
		return "a special file"
	}
}

// check runs bbolt's consistency check (every page reachable or free, no
// page used twice, keys ordered). Its cost is bounded because the store is:
// a few MB at most.
func (s *Store) check() error {
	var problems []string
	err := s.db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			if len(problems) < maxCheckErrors {
				problems = append(problems, err.Error())
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("check state file: %w", err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s: %s (move it aside to start with an empty store)",
			ErrCorrupt, s.db.Path(), strings.Join(problems, "; "))
	}
	return nil
}

// initialize creates the buckets, checks the schema version, recounts the
// events and trims them to the bound. It returns the event count.
func (s *Store) initialize() (int, error) {
	var n int
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keyVersion); v != nil {
			if len(v) != 8 {
				return fmt.Errorf("%w: schema version has %d bytes", ErrCorrupt, len(v))
			}
			if got := binary.BigEndian.Uint64(v); got > schemaVersion {
				return fmt.Errorf("state file has schema version %d, this cloudsteer knows up to %d: use a newer cloudsteer", got, schemaVersion)
			}
		}
		if err := meta.Put(keyVersion, u64(schemaVersion)); err != nil {
			return err
		}
		// The counter makes AppendEvent O(log n); recount here so that it
		// can never drift for long.
		n = tx.Bucket(bucketEvents).Stats().KeyN
		if err := meta.Put(keyEventCount, u64(uint64(n))); err != nil {
			return err
		}
		var err error
		n, err = s.trimEvents(tx, n)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("initialize state file: %w", err)
	}
	return n, nil
}

// Close releases the state file. Writes after Close fail.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close state file: %w", err)
	}
	return nil
}

// Path is the state file's path.
func (s *Store) Path() string { return s.db.Path() }

// Dir is the state directory.
func (s *Store) Dir() string { return s.dir }

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// quiet is a logger for tests that only care about errors.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// openStore opens a store in dir and closes it at the end of the test.
func openStore(tb testing.TB, dir string, opts ...Option) *Store {
	tb.Helper()
	s, err := Open(context.Background(), dir, append([]Option{WithLogger(quiet)}, opts...)...)
	if err != nil {
		tb.Fatalf("Open(%s): %v", dir, err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// checkFile opens the state file in dir read-only and runs bbolt's
// consistency check, failing the test on any problem.
func checkFile(tb testing.TB, dir string) {
	tb.Helper()
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		tb.Fatalf("open state file read-only: %v", err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
	if err != nil {
		tb.Fatalf("bbolt check: %v", err)
	}
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestRoundTrip(t *testing.T) {
	entry := func(v string, k model.BypassKind, enabled bool) model.BypassEntry {
		return model.BypassEntry{Value: v, Kind: k, Enabled: enabled, Source: "api", Comment: "c " + v, Added: t0}
	}
	tests := []struct {
		name  string
		write func(*Store) error
		check func(testing.TB, *Store)
	}{
		{
			name:  "empty store",
			write: func(*Store) error { return nil },
			check: func(tb testing.TB, s *Store) {
				if got, err := s.Bypass(); err != nil || len(got) != 0 {
					tb.Errorf("Bypass() = %v, %v; want none", got, err)
				}
				if got, err := s.Pause(); err != nil || got != (model.PauseState{}) {
					tb.Errorf("Pause() = %+v, %v; want zero", got, err)
				}
				if got, err := s.Code(); err != nil || got != "" {
					tb.Errorf("Code() = %q, %v; want empty", got, err)
				}
				if got, ok, err := s.Setting("x"); err != nil || ok || got != "" {
					tb.Errorf("Setting(x) = %q, %v, %v; want unset", got, ok, err)
				}
				if n, err := s.EventCount(); err != nil || n != 0 {
					tb.Errorf("EventCount() = %d, %v; want 0", n, err)
				}
				if got, err := s.Events(model.EventFilter{}); err != nil || got == nil || len(got) != 0 {
					tb.Errorf("Events() = %#v, %v; want empty non-nil", got, err)
				}
			},
		},
		{
			name: "bypass put, replace and delete",
			write: func(s *Store) error {
				for _, e := range []model.BypassEntry{
					entry("b.example", model.BypassDomain, true),
					entry("*.a.example", model.BypassDomain, true),
					entry("192.0.2.0/24", model.BypassCIDR, true),
					entry("gone.example", model.BypassDomain, true),
					entry("b.example", model.BypassDomain, false), // replaces
				} {
					if err := s.PutBypass(e); err != nil {
						return err
					}
				}
				if ok, err := s.DeleteBypass("gone.example"); err != nil || !ok {
					return fmt.Errorf("DeleteBypass(gone.example) = %v, %v; want true", ok, err)
				}
				if ok, err := s.DeleteBypass("never.example"); err != nil || ok {
					return fmt.Errorf("DeleteBypass(never.example) = %v, %v; want false", ok, err)
				}
				return nil
			},
			check: func(tb testing.TB, s *Store) {
				got, err := s.Bypass()
				if err != nil {
					tb.Fatal(err)
				}
				want := []model.BypassEntry{ // ordered by value
					entry("*.a.example", model.BypassDomain, true),
					entry("192.0.2.0/24", model.BypassCIDR, true),
					entry("b.example", model.BypassDomain, false),
				}
				if d := cmp.Diff(want, got); d != "" {
					tb.Errorf("Bypass() (-want +got):\n%s", d)
				}
			},
		},
		{
			name: "system entry keeps its flags",
			write: func(s *Store) error {
				return s.PutBypass(model.BypassEntry{Value: "agent.cloud.example", Kind: model.BypassDomain, Enabled: true, System: true, Source: "system"})
			},
			check: func(tb testing.TB, s *Store) {
				got, err := s.Bypass()
				if err != nil || len(got) != 1 || !got[0].System || got[0].Source != "system" || !got[0].Added.IsZero() {
					tb.Errorf("Bypass() = %+v, %v", got, err)
				}
			},
		},
		{
			name: "pause timed",
			write: func(s *Store) error {
				return s.PutPause(model.PauseState{Paused: true, Since: t0, Until: t0.Add(time.Hour), By: "cli"})
			},
			check: func(tb testing.TB, s *Store) {
				got, err := s.Pause()
				want := model.PauseState{Paused: true, Since: t0, Until: t0.Add(time.Hour), By: "cli"}
				if err != nil || !cmp.Equal(got, want) {
					tb.Errorf("Pause() = %+v, %v; want %+v", got, err, want)
				}
			},
		},
		{
			name: "pause then resume",
			write: func(s *Store) error {
				if err := s.PutPause(model.PauseState{Paused: true, Since: t0, By: "api"}); err != nil {
					return err
				}
				return s.PutPause(model.PauseState{})
			},
			check: func(tb testing.TB, s *Store) {
				if got, err := s.Pause(); err != nil || got != (model.PauseState{}) {
					tb.Errorf("Pause() = %+v, %v; want zero", got, err)
				}
			},
		},
		{
			name:  "code",
			write: func(s *Store) error { return s.PutCode("3315abcdef0123456789a8e3") },
			check: func(tb testing.TB, s *Store) {
				if got, err := s.Code(); err != nil || got != "3315abcdef0123456789a8e3" {
					tb.Errorf("Code() = %q, %v", got, err)
				}
			},
		},
		{
			name: "code replaced then cleared",
			write: func(s *Store) error {
				if err := s.PutCode("first-code-000000"); err != nil {
					return err
				}
				if err := s.PutCode("second-code-00000"); err != nil {
					return err
				}
				return s.PutCode("")
			},
			check: func(tb testing.TB, s *Store) {
				if got, err := s.Code(); err != nil || got != "" {
					tb.Errorf("Code() = %q, %v; want empty", got, err)
				}
			},
		},
		{
			name: "settings",
			write: func(s *Store) error {
				for _, kv := range [][2]string{{"require_code_to_pause", "true"}, {"empty", ""}, {"x", "1"}, {"x", "2"}, {"gone", "y"}} {
					if err := s.PutSetting(kv[0], kv[1]); err != nil {
						return err
					}
				}
				_, err := s.DeleteSetting("gone")
				return err
			},
			check: func(tb testing.TB, s *Store) {
				for _, c := range []struct {
					key, val string
					ok       bool
				}{{"require_code_to_pause", "true", true}, {"empty", "", true}, {"x", "2", true}, {"gone", "", false}, {"never", "", false}} {
					if got, ok, err := s.Setting(c.key); err != nil || got != c.val || ok != c.ok {
						tb.Errorf("Setting(%q) = %q, %v, %v; want %q, %v", c.key, got, ok, err, c.val, c.ok)
					}
				}
			},
		},
		{
			name: "events",
			write: func(s *Store) error {
				for i := range 3 {
					e := model.Event{ID: 999, Time: t0.Add(time.Duration(i) * time.Second), Client: "192.168.50.10", MAC: "02:00:00:00:00:01",
						Name: fmt.Sprintf("n%d.example", i), Proto: "tls", Reason: "blocked", Category: "gambling", Status: 403}
					got, err := s.AppendEvent(e)
					if err != nil {
						return err
					}
					e.ID = uint64(i + 1)
					if !cmp.Equal(got, e) {
						return fmt.Errorf("AppendEvent returned %+v, want %+v", got, e)
					}
				}
				return nil
			},
			check: func(tb testing.TB, s *Store) {
				got, err := s.Events(model.EventFilter{})
				if err != nil {
					tb.Fatal(err)
				}
				var want []model.Event
				for i := 2; i >= 0; i-- {
					want = append(want, model.Event{ID: uint64(i + 1), Time: t0.Add(time.Duration(i) * time.Second), Client: "192.168.50.10",
						MAC: "02:00:00:00:00:01", Name: fmt.Sprintf("n%d.example", i), Proto: "tls", Reason: "blocked", Category: "gambling", Status: 403})
				}
				if d := cmp.Diff(want, got); d != "" {
					tb.Errorf("Events() (-want +got):\n%s", d)
				}
				if n, err := s.EventCount(); err != nil || n != 3 {
					tb.Errorf("EventCount() = %d, %v; want 3", n, err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir)
			if err := tt.write(s); err != nil {
				t.Fatalf("write: %v", err)
			}
			tt.check(t, s)
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			checkFile(t, dir)
			t.Run("after reopen", func(t *testing.T) {
				tt.check(t, openStore(t, dir))
			})
		})
	}
}

func TestInvalidWrites(t *testing.T) {
	s := openStore(t, t.TempDir())
	tests := []struct {
		name  string
		write func() error
	}{
		{"bypass empty value", func() error { return s.PutBypass(model.BypassEntry{Kind: model.BypassDomain}) }},
		{"bypass unknown kind", func() error { return s.PutBypass(model.BypassEntry{Value: "a.example", Kind: "regex"}) }},
		{"bypass huge value", func() error {
			return s.PutBypass(model.BypassEntry{Value: strings.Repeat("a", 2000), Kind: model.BypassDomain})
		}},
		{"seed with one bad entry", func() error {
			return s.SeedBypass([]model.BypassEntry{{Value: "ok.example", Kind: model.BypassDomain}, {Value: "", Kind: model.BypassDomain}})
		}},
		{"setting empty key", func() error { return s.PutSetting("", "v") }},
		{"events negative limit", func() error { _, err := s.Events(model.EventFilter{Limit: -1}); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.write(); !errors.Is(err, model.ErrInvalid) {
				t.Errorf("err = %v; want model.ErrInvalid", err)
			}
		})
	}
	// Nothing of the rejected seed was stored.
	if got, err := s.Bypass(); err != nil || len(got) != 0 {
		t.Errorf("Bypass() after invalid writes = %v, %v; want none", got, err)
	}
}

func TestSeedBypassDoesNotOverride(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	// Run-time changes: an entry disabled by the admin, one added by API.
	runtime := []model.BypassEntry{
		{Value: "cfg1.example", Kind: model.BypassDomain, Enabled: false, Source: "config", Comment: "disabled by admin"},
		{Value: "api.example", Kind: model.BypassDomain, Enabled: true, Source: "api"},
	}
	for _, e := range runtime {
		if err := s.PutBypass(e); err != nil {
			t.Fatal(err)
		}
	}
	seed := []model.BypassEntry{
		{Value: "cfg1.example", Kind: model.BypassDomain, Enabled: true, Source: "config"},
		{Value: "cfg2.example", Kind: model.BypassDomain, Enabled: true, Source: "config"},
		{Value: "10.0.0.0/8", Kind: model.BypassCIDR, Enabled: true, Source: "config"},
		{Value: "cfg2.example", Kind: model.BypassDomain, Enabled: false, Source: "config", Comment: "duplicate"},
	}
	want := []model.BypassEntry{seed[2], runtime[1], runtime[0], seed[1]}
	for round := range 2 { // seeding again on the next start changes nothing
		if err := s.SeedBypass(seed); err != nil {
			t.Fatal(err)
		}
		got, err := s.Bypass()
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("round %d: Bypass() (-want +got):\n%s", round, d)
		}
		s.Close()
		s = openStore(t, dir)
	}
}

func TestModes(t *testing.T) {
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })

	tests := []struct {
		name    string
		prepare func(tb testing.TB, dir string) // dir is the state dir to use
	}{
		{"new nested dir", func(testing.TB, string) {}},
		{"existing file 0644", func(tb testing.TB, dir string) {
			s := openStore(tb, dir)
			s.Close()
			if err := os.Chmod(filepath.Join(dir, FileName), 0o644); err != nil {
				tb.Fatal(err)
			}
		}},
		{"existing file 0400", func(tb testing.TB, dir string) {
			s := openStore(tb, dir)
			s.Close()
			if err := os.Chmod(filepath.Join(dir, FileName), 0o400); err != nil {
				tb.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "var", "lib", "cloudsteer")
			tt.prepare(t, dir)
			s := openStore(t, dir)
			if err := s.PutCode("secret-code-0000"); err != nil {
				t.Fatal(err)
			}
			for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, FileName): 0o600} {
				fi, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				if got := fi.Mode().Perm(); got != want {
					t.Errorf("mode of %s = %#o; want %#o", path, got, want)
				}
			}
		})
	}
}

func TestSecondOpenFails(t *testing.T) {
	dir := t.TempDir()
	first := openStore(t, dir)

	_, err := Open(context.Background(), dir, WithLogger(quiet), WithLockTimeout(100*time.Millisecond))
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second Open: err = %v; want ErrInUse", err)
	}
	if want := "state dir " + dir + " is in use by another cloudsteer"; !strings.Contains(err.Error(), want) {
		t.Errorf("second Open: err = %q; want it to contain %q", err, want)
	}

	// A context deadline shorter than the lock timeout ends the wait too.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := Open(ctx, dir, WithLogger(quiet)); !errors.Is(err, ErrInUse) {
		t.Fatalf("Open with deadline: err = %v; want ErrInUse", err)
	}

	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	openStore(t, dir) // released
}

func TestOpenRejects(t *testing.T) {
	tests := []struct {
		name string
		dir  func(tb testing.TB) string
		ctx  func() context.Context
		opts []Option
	}{
		{name: "empty dir", dir: func(testing.TB) string { return "" }},
		{name: "dir is a file", dir: func(tb testing.TB) string {
			p := filepath.Join(tb.TempDir(), "f")
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				tb.Fatal(err)
			}
			return p
		}},
		{name: "state file is a symlink", dir: func(tb testing.TB) string {
			dir := tb.TempDir()
			if err := os.Symlink(filepath.Join(tb.TempDir(), "elsewhere.db"), filepath.Join(dir, FileName)); err != nil {
				tb.Fatal(err)
			}
			return dir
		}},
		{name: "state file is a directory", dir: func(tb testing.TB) string {
			dir := tb.TempDir()
			if err := os.Mkdir(filepath.Join(dir, FileName), 0o700); err != nil {
				tb.Fatal(err)
			}
			return dir
		}},
		{name: "not a bbolt file", dir: func(tb testing.TB) string {
			dir := tb.TempDir()
			if err := os.WriteFile(filepath.Join(dir, FileName), []byte(strings.Repeat("not bbolt ", 2000)), 0o600); err != nil {
				tb.Fatal(err)
			}
			return dir
		}},
		{name: "canceled context", dir: func(tb testing.TB) string { return tb.TempDir() }, ctx: func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}},
		{name: "zero max events", dir: func(tb testing.TB) string { return tb.TempDir() }, opts: []Option{WithMaxEvents(0)}},
		{name: "negative lock timeout", dir: func(tb testing.TB) string { return tb.TempDir() }, opts: []Option{WithLockTimeout(-time.Second)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.ctx != nil {
				ctx = tt.ctx()
			}
			s, err := Open(ctx, tt.dir(t), append([]Option{WithLogger(quiet)}, tt.opts...)...)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded; want an error")
			}
			t.Logf("error: %v", err)
		})
	}
}

func TestOpenDetectsCorruption(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	var seed []model.BypassEntry
	for i := range 2000 {
		seed = append(seed, model.BypassEntry{Value: fmt.Sprintf("host%04d.example", i), Kind: model.BypassDomain, Enabled: true})
	}
	if err := s.SeedBypass(seed); err != nil {
		t.Fatal(err)
	}
	s.Close()

	// Overwrite a page in the middle of the file (not the two meta pages)
	// with a plausible-looking but wrong page header, as a bad sector or a
	// stray write would leave it.
	path := filepath.Join(dir, FileName)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pageSize := os.Getpagesize()
	pages := len(data) / pageSize
	if pages < 8 {
		t.Fatalf("state file has only %d pages", pages)
	}
	// Find a branch or leaf page and zero its item headers: a reachable page
	// whose contents no longer match.
	corrupted := false
	for p := 2; p < pages && !corrupted; p++ {
		off := p * pageSize
		flags := uint16(data[off+8]) | uint16(data[off+9])<<8
		if flags == 0x02 && (uint16(data[off+10])|uint16(data[off+11])<<8) > 10 { // leaf with items
			for i := off + 16; i < off+pageSize; i++ {
				data[i] = 0xff
			}
			corrupted = true
		}
	}
	if !corrupted {
		t.Fatal("no leaf page found to corrupt")
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = Open(context.Background(), dir, WithLogger(quiet))
	if err == nil {
		s.Close()
		t.Fatal("Open of a corrupted file succeeded")
	}
	t.Logf("error: %v", err)
	if !errors.Is(err, ErrCorrupt) {
		t.Errorf("err = %v; want ErrCorrupt", err)
	}
}

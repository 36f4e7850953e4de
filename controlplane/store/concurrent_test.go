package store

import (
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// TestConcurrentUse runs writers and readers of every kind at once (run it
// with -race) and checks that every event got a distinct, contiguous ID and
// every write landed.
func TestConcurrentUse(t *testing.T) {
	const (
		eventWriters    = 8
		eventsPerWriter = 150
		max             = 500
		kvWriters       = 3
		kvPerWriter     = 60
	)
	dir := t.TempDir()
	s := openStore(t, dir, WithMaxEvents(max))

	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		gotID = map[uint64]string{}
		stop  = make(chan struct{})
	)
	for w := range eventWriters {
		wg.Go(func() {
			for i := range eventsPerWriter {
				name := fmt.Sprintf("w%d-%d", w, i)
				e, err := s.AppendEvent(model.Event{Client: strconv.Itoa(w), Name: name})
				if err != nil {
					t.Errorf("AppendEvent: %v", err)
					return
				}
				mu.Lock()
				if prev, dup := gotID[e.ID]; dup {
					t.Errorf("ID %d given to %s and %s", e.ID, prev, name)
				}
				gotID[e.ID] = name
				mu.Unlock()
			}
		})
	}
	for w := range kvWriters {
		wg.Go(func() {
			for i := range kvPerWriter {
				v := fmt.Sprintf("w%d-%d.example", w, i)
				errs := []error{
					s.PutBypass(model.BypassEntry{Value: v, Kind: model.BypassDomain, Enabled: true}),
					s.SeedBypass([]model.BypassEntry{{Value: "seed-" + v, Kind: model.BypassDomain}}),
					s.PutSetting("k"+strconv.Itoa(w), strconv.Itoa(i)),
					s.PutPause(model.PauseState{Paused: i%2 == 0, By: v}),
					s.PutCode("code-" + v),
				}
				if _, err := s.DeleteBypass("seed-" + v); err != nil {
					errs = append(errs, err)
				}
				for _, err := range errs {
					if err != nil {
						t.Errorf("write %s: %v", v, err)
					}
				}
			}
		})
	}
	var readers sync.WaitGroup
	for r := range 3 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				evs, err := s.Events(model.EventFilter{Client: strconv.Itoa(r), Limit: 50})
				if err == nil && !slices.IsSortedFunc(evs, func(a, b model.Event) int { return int(b.ID) - int(a.ID) }) {
					t.Errorf("Events not newest first")
				}
				if err == nil {
					_, err = s.Bypass()
				}
				if err == nil {
					_, err = s.Pause()
				}
				if err == nil {
					_, _, err = s.Setting("k0")
				}
				if err == nil {
					var n int
					n, err = s.EventCount()
					if n > max {
						t.Errorf("EventCount() = %d above the bound %d", n, max)
					}
				}
				if err != nil {
					t.Errorf("read: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()

	const total = eventWriters * eventsPerWriter
	if len(gotID) != total {
		t.Fatalf("%d distinct IDs for %d events", len(gotID), total)
	}
	for id := uint64(1); id <= total; id++ {
		if _, ok := gotID[id]; !ok {
			t.Fatalf("ID %d never given out; IDs are not contiguous", id)
		}
	}
	evs, err := s.Events(model.EventFilter{Limit: MaxEventLimit})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != max {
		t.Fatalf("%d events stored; want %d", len(evs), max)
	}
	for i, e := range evs {
		if want := uint64(total - i); e.ID != want || e.Name != gotID[e.ID] {
			t.Fatalf("stored event %d = %d %s; want %d %s", i, e.ID, e.Name, want, gotID[want])
		}
	}
	entries, err := s.Bypass()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != kvWriters*kvPerWriter {
		t.Errorf("%d bypass entries stored; want %d (seeded ones deleted)", len(entries), kvWriters*kvPerWriter)
	}
	for w := range kvWriters {
		if v, ok, err := s.Setting("k" + strconv.Itoa(w)); err != nil || !ok || v != strconv.Itoa(kvPerWriter-1) {
			t.Errorf("Setting(k%d) = %q, %v, %v; want %d", w, v, ok, err, kvPerWriter-1)
		}
	}
	s.Close()
	checkFile(t, dir)
}

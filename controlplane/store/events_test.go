package store

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// appendN appends n events named "e<i>.example" from client "c<i%3>" at
// t0+i seconds, i counting on from first.
func appendN(tb testing.TB, s *Store, first, n int) {
	tb.Helper()
	for i := first; i < first+n; i++ {
		_, err := s.AppendEvent(model.Event{Time: t0.Add(time.Duration(i) * time.Second), Client: fmt.Sprintf("c%d", i%3),
			Name: fmt.Sprintf("E%d.Example", i), Proto: "http", Reason: "blocked"})
		if err != nil {
			tb.Fatalf("AppendEvent %d: %v", i, err)
		}
	}
}

func ids(evs []model.Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

// idRange returns hi, hi-1, ..., lo.
func idRange(hi, lo uint64) []uint64 {
	var out []uint64
	for id := hi; id >= lo && id > 0; id-- {
		out = append(out, id)
	}
	return out
}

func TestEventBound(t *testing.T) {
	tests := []struct {
		name      string
		max, n    int
		reopenMax int // reopen with this bound afterwards (0: no reopen)
		wantCount int
		wantFirst uint64 // oldest ID kept
	}{
		{name: "below bound", max: 50, n: 30, wantCount: 30, wantFirst: 1},
		{name: "at bound", max: 50, n: 50, wantCount: 50, wantFirst: 1},
		{name: "bound plus some", max: 50, n: 73, wantCount: 50, wantFirst: 24},
		{name: "many times the bound", max: 20, n: 1000, wantCount: 20, wantFirst: 981},
		{name: "bound lowered on reopen", max: 50, n: 50, reopenMax: 10, wantCount: 10, wantFirst: 41},
		{name: "default bound", max: MaxEvents, n: MaxEvents + 25, wantCount: MaxEvents, wantFirst: 26},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			var opts []Option
			if tt.max != MaxEvents { // else exercise the default
				opts = append(opts, WithMaxEvents(tt.max))
			}
			s := openStore(t, dir, opts...)
			appendConcurrently(t, s, tt.n)
			if tt.reopenMax > 0 {
				s.Close()
				s = openStore(t, dir, WithMaxEvents(tt.reopenMax))
			}
			n, err := s.EventCount()
			if err != nil || n != tt.wantCount {
				t.Errorf("EventCount() = %d, %v; want %d", n, err, tt.wantCount)
			}
			got, err := s.Events(model.EventFilter{Limit: MaxEventLimit})
			if err != nil {
				t.Fatal(err)
			}
			want := idRange(uint64(tt.n), tt.wantFirst)
			if !slices.Equal(ids(got), want) {
				t.Errorf("stored IDs = %v...; want %v...", head(ids(got)), head(want))
			}
			s.Close()
			checkFile(t, dir)
		})
	}
}

func head(v []uint64) []uint64 { return v[:min(len(v), 5)] }

// appendConcurrently appends n events from 8 goroutines.
func appendConcurrently(tb testing.TB, s *Store, n int) {
	tb.Helper()
	var wg sync.WaitGroup
	const workers = 8
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				if _, err := s.AppendEvent(model.Event{Client: "c", Name: fmt.Sprintf("e%d", i)}); err != nil {
					tb.Errorf("AppendEvent: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestEventFilters(t *testing.T) {
	s := openStore(t, t.TempDir())
	appendN(t, s, 0, 30) // IDs 1..30, event i has ID i+1, time t0+i s, client c<i%3>
	tests := []struct {
		name string
		f    model.EventFilter
		want []uint64
	}{
		{name: "all newest first", f: model.EventFilter{}, want: idRange(30, 1)},
		{name: "limit", f: model.EventFilter{Limit: 4}, want: []uint64{30, 29, 28, 27}},
		{name: "limit above max is clamped", f: model.EventFilter{Limit: MaxEventLimit + 5}, want: idRange(30, 1)},
		{name: "client exact", f: model.EventFilter{Client: "c1"}, want: []uint64{29, 26, 23, 20, 17, 14, 11, 8, 5, 2}},
		{name: "client is not a substring match", f: model.EventFilter{Client: "c"}, want: nil},
		{name: "name substring any case", f: model.EventFilter{Name: "e2"}, want: []uint64{30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 3}},
		{name: "name upper case", f: model.EventFilter{Name: "E15.EXAMPLE"}, want: []uint64{16}},
		{name: "name no match", f: model.EventFilter{Name: "nothing"}, want: nil},
		{name: "since inclusive", f: model.EventFilter{Since: t0.Add(27 * time.Second)}, want: []uint64{30, 29, 28}},
		{name: "until exclusive", f: model.EventFilter{Until: t0.Add(2 * time.Second)}, want: []uint64{2, 1}},
		{name: "window", f: model.EventFilter{Since: t0.Add(10 * time.Second), Until: t0.Add(13 * time.Second)}, want: []uint64{13, 12, 11}},
		{name: "window other zone", f: model.EventFilter{Since: t0.Add(10 * time.Second).In(time.FixedZone("x", 3600))}, want: idRange(30, 11)},
		{name: "empty window", f: model.EventFilter{Since: t0.Add(20 * time.Second), Until: t0.Add(10 * time.Second)}, want: nil},
		{name: "all filters and limit", f: model.EventFilter{Client: "c0", Name: "1", Since: t0.Add(5 * time.Second), Limit: 2}, want: []uint64{22, 19}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Events(tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(got); !slices.Equal(got, tt.want) && (len(got) != 0 || len(tt.want) != 0) {
				t.Errorf("Events(%+v) IDs = %v; want %v", tt.f, got, tt.want)
			}
			for _, e := range got {
				i := int(e.ID) - 1
				if !e.Time.Equal(t0.Add(time.Duration(i)*time.Second)) || e.Client != fmt.Sprintf("c%d", i%3) || e.Name != fmt.Sprintf("E%d.Example", i) {
					t.Errorf("event %d = %+v; fields do not match what was appended", e.ID, e)
				}
			}
		})
	}
}

func TestEventDefaults(t *testing.T) {
	s := openStore(t, t.TempDir())
	before := time.Now()
	got, err := s.AppendEvent(model.Event{ID: 77, Name: "x.example"})
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != 1 || got.Time.Before(before) || time.Since(got.Time) < 0 {
		t.Errorf("AppendEvent = %+v; want ID 1 and Time set to now", got)
	}
	appendN(t, s, 0, DefaultEventLimit+10)
	evs, err := s.Events(model.EventFilter{})
	if err != nil || len(evs) != DefaultEventLimit {
		t.Errorf("Events() returned %d events, %v; want the default limit %d", len(evs), err, DefaultEventLimit)
	}
}

func TestEventIDsMonotonicAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, WithMaxEvents(5))
	appendN(t, s, 0, 12)
	s.Close()
	s = openStore(t, dir, WithMaxEvents(5))
	e, err := s.AppendEvent(model.Event{Name: "after"})
	if err != nil || e.ID != 13 {
		t.Errorf("AppendEvent after reopen = %+v, %v; want ID 13", e, err)
	}
}

// TestEventFloodFileBounded appends many times the bound and checks that
// the file stops growing: trimmed pages are reused.
func TestEventFloodFileBounded(t *testing.T) {
	const max = 500
	dir := t.TempDir()
	s := openStore(t, dir, WithMaxEvents(max))
	size := func() int64 {
		fi, err := os.Stat(filepath.Join(dir, FileName))
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	appendConcurrently(t, s, 4*max)
	settled := size()
	const rounds = 6
	for range rounds {
		appendConcurrently(t, s, 4*max)
	}
	after := size()
	t.Logf("file size after %d events: %d bytes; after %d more: %d bytes", 4*max, settled, rounds*4*max, after)
	if after > 2*settled {
		t.Errorf("file grew from %d to %d bytes while the event count stayed at %d", settled, after, max)
	}
	if n, err := s.EventCount(); err != nil || n != max {
		t.Errorf("EventCount() = %d, %v; want %d", n, err, max)
	}
}

func TestAppendAfterClose(t *testing.T) {
	s := openStore(t, t.TempDir())
	s.Close()
	if _, err := s.AppendEvent(model.Event{Name: "x"}); err == nil {
		t.Error("AppendEvent after Close succeeded")
	}
	if err := s.PutCode("x"); err == nil {
		t.Error("PutCode after Close succeeded")
	}
}

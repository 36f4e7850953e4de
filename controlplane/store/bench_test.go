package store

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// BenchmarkAppendEvent measures one caller appending (one fsync each) and a
// flood from many goroutines (group commit), at the default bound, and
// reports the file size at the end.
func BenchmarkAppendEvent(b *testing.B) {
	for _, par := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("callers=%d", par), func(b *testing.B) {
			dir := b.TempDir()
			s := openStore(b, dir)
			ev := model.Event{Time: t0, Client: "192.168.50.10", Name: "blocked.example", Proto: "tls", Reason: "blocked", Category: "gambling", Status: 403}
			b.SetParallelism(par) // par * GOMAXPROCS goroutines
			if par == 1 {
				for b.Loop() {
					if _, err := s.AppendEvent(ev); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := s.AppendEvent(ev); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			b.StopTimer()
			if fi, err := os.Stat(filepath.Join(dir, FileName)); err == nil {
				b.ReportMetric(float64(fi.Size()), "file-bytes")
			}
		})
	}
}

// BenchmarkEvents measures reading with a filter that matches nothing
// (a full scan of MaxEvents events) and the default newest-100 page.
func BenchmarkEvents(b *testing.B) {
	s := openStore(b, b.TempDir())
	appendConcurrently(b, s, MaxEvents)
	for _, f := range []struct {
		name string
		f    model.EventFilter
	}{
		{"newest 100", model.EventFilter{}},
		{"full scan no match", model.EventFilter{Client: "none"}},
	} {
		b.Run(f.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := s.Events(f.f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

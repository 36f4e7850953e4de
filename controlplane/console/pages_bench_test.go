package console

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// BenchmarkPages renders each page with 100 events and 50 bypass entries
// (the server-time budget is 100 ms a page on the lab box).
func BenchmarkPages(b *testing.B) {
	pt := newPagesTest(b, Options{})
	for i := range 100 {
		pt.f.events = append(pt.f.events, model.Event{ID: uint64(i + 1), Time: evT0.Add(time.Duration(i) * time.Second), Client: "10.0.0.5", Name: fmt.Sprintf("host%d.example", i), Reason: "blocked"})
	}
	for i := range 50 {
		pt.f.entries = append(pt.f.entries, model.BypassEntry{Value: fmt.Sprintf("site%d.example", i), Kind: model.BypassDomain, Enabled: true, Source: "api"})
	}
	for path := range signedInPages {
		b.Run(path, func(b *testing.B) {
			for b.Loop() {
				if w := pt.do(b, pageReq{path: path, lang: "ja"}); w.Code != http.StatusOK {
					b.Fatal(w.Code)
				}
			}
		})
	}
}

package dnsbench

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

// A short run measures every row, unbound's included, with no failed
// query, and each encrypted resolver row used one upstream connection.
func TestRunShort(t *testing.T) {
	privtest.RequireCommand(t, "unbound")
	rows, err := Run(context.Background(), Options{Queries: 50, Concurrency: 4, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	Print(&b, rows)
	t.Logf("\n%s", b.String())
	if len(rows) != 6 {
		t.Fatalf("%d rows", len(rows))
	}
	for _, r := range rows {
		if r.Err != nil || r.Errors != 0 || r.Queries != 50 || r.QPS <= 0 || r.P50 <= 0 || r.P99 < r.P50 {
			t.Errorf("%s: %+v", r.Name, r)
		}
		if strings.HasPrefix(r.Name, "resolver, d") && r.UpstreamConns != 1 {
			t.Errorf("%s: %d upstream connections, want 1", r.Name, r.UpstreamConns)
		}
		if r.UpstreamQueries < int64(r.Queries) {
			t.Errorf("%s: upstream saw %d queries for %d cache misses", r.Name, r.UpstreamQueries, r.Queries)
		}
	}
}

package metrics_test

import (
	"context"
	"encoding/base64"
	"errors"
	"maps"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/cloudsteer/cloudsteer/controlplane/bypass"
	"github.com/cloudsteer/cloudsteer/controlplane/metrics"
	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy"
	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy/cloudproxytest"
	"github.com/cloudsteer/cloudsteer/dataplane/dnscache"
	"github.com/cloudsteer/cloudsteer/dataplane/proxy"
	"github.com/cloudsteer/cloudsteer/dataplane/resolver"
	"github.com/cloudsteer/cloudsteer/dataplane/steer"
)

// fakeSource is a Source whose values the test sets.
type fakeSource struct {
	mu       sync.Mutex
	counters map[steer.Verdict]steer.Counter
	steerErr error
	proxy    proxy.Stats
	resolver resolver.Stats
	cloud    cloudproxy.Stats
	kernel   *dnscache.Stats
	bypass   int
	bstats   bypass.Stats
	paused   bool
	untrack  bool
	noFast   bool
	refused  map[string]uint64
}

func (f *fakeSource) SteerCounters() (map[steer.Verdict]steer.Counter, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.counters), f.steerErr
}

func (f *fakeSource) ProxyStats() proxy.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.proxy
}

func (f *fakeSource) ResolverStats() resolver.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.resolver
	s.Rcodes = maps.Clone(s.Rcodes)
	return s
}

func (f *fakeSource) CloudPoolStats() cloudproxy.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cloud
}

func (f *fakeSource) KernelDNSStats() (dnscache.Stats, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.kernel == nil {
		return dnscache.Stats{}, false
	}
	return *f.kernel, true
}

func (f *fakeSource) BypassMapSize() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bypass
}

func (f *fakeSource) BypassStats() bypass.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bstats
}

func (f *fakeSource) Paused() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.paused
}

func (f *fakeSource) FastPath() (bool, steer.Counter, steer.Counter, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.untrack, steer.Counter{Packets: 70, Bytes: 7000}, steer.Counter{Packets: 71, Bytes: 7100}, !f.noFast
}

func (f *fakeSource) Untracking() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.untrack
}

func (f *fakeSource) LimitRefusals() map[string]uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.refused)
}

func (f *fakeSource) QUICFlows() map[string]uint64 {
	return map[string]uint64{"bypass": 3, "not_bypass": 9, "bad_initial": 1}
}

var _ metrics.Source = (*fakeSource)(nil)

func busySource() *fakeSource {
	return &fakeSource{
		counters: map[steer.Verdict]steer.Counter{
			steer.VerdictOther:  {Packets: 1000, Bytes: 64000},
			steer.VerdictBypass: {Packets: 20, Bytes: 3000},
			steer.VerdictTLS:    {Packets: 300, Bytes: 450000},
			steer.VerdictDNS:    {Packets: 40, Bytes: 3200},
		},
		proxy: proxy.Stats{Active: 3, Accepted: 57, Proxied: 50, Bypassed: 4, Blocked: 2, AuthFailed: 1,
			UpstreamErrors: 5, BadClients: 6, BytesUp: 12345, BytesDown: 987654},
		resolver: resolver.Stats{Queries: 100, CacheHits: 30, CacheMisses: 70, Coalesced: 7, UpstreamErrors: 8,
			Malformed: 9, Dropped: 10, Rcodes: map[string]uint64{"NOERROR": 90, "NXDOMAIN": 8, "SERVFAIL": 2}, CacheEntries: 42},
		cloud: cloudproxy.Stats{TakenWarm: 40, DialedCold: 12, DiscardedStale: 3, Retries: 2, Expired: 5,
			RefillDials: 48, RefillErrors: 1, Idle: 4},
		bypass:  11,
		bstats:  bypass.Stats{LearnRefusedPerName: 13, LearnRefusedFull: 14, LearnRefusedAddr: 15, Evicted: 16},
		paused:  true,
		untrack: true,
		refused: map[string]uint64{"flows_per_client": 7, "dns_queries_per_client": 300, "some_new_limit": 2},
	}
}

// scrape GETs /metrics from h and parses the text exposition.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/plain")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse exposition: %v", err)
	}
	return fams
}

// sample is one expected series.
type sample struct {
	name   string
	labels map[string]string
	typ    dto.MetricType
	value  float64
}

// value finds a series in fams; ok is false when it is not there.
func value(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (v float64, typ dto.MetricType, ok bool) {
	f := fams[name]
	if f == nil {
		return 0, 0, false
	}
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, lp := range m.GetLabel() {
			got[lp.GetName()] = lp.GetValue()
		}
		if !maps.Equal(got, labels) {
			continue
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue(), f.GetType(), true
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue(), f.GetType(), true
		}
		return math.NaN(), f.GetType(), true
	}
	return 0, 0, false
}

func l(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func TestScrape(t *testing.T) {
	src := busySource()
	m := metrics.New(src)
	fams := scrape(t, m.Handler())
	C, G := dto.MetricType_COUNTER, dto.MetricType_GAUGE
	want := []sample{
		{"cloudsteer_packets_total", l("verdict", "other"), C, 1000},
		{"cloudsteer_packets_total", l("verdict", "bypass"), C, 20},
		{"cloudsteer_packets_total", l("verdict", "tls"), C, 300},
		{"cloudsteer_packets_total", l("verdict", "dns"), C, 40},
		{"cloudsteer_packets_total", l("verdict", "http"), C, 0},
		{"cloudsteer_packets_total", l("verdict", "quic_reject"), C, 0},
		{"cloudsteer_packets_total", l("verdict", "paused"), C, 0},
		{"cloudsteer_bytes_total", l("verdict", "tls"), C, 450000},
		{"cloudsteer_bytes_total", l("verdict", "bypass"), C, 3000},
		{"cloudsteer_proxy_flows_accepted_total", l(), C, 57},
		{"cloudsteer_proxy_flows_active", l(), G, 3},
		{"cloudsteer_proxy_requests_total", l("outcome", "proxied"), C, 50},
		{"cloudsteer_proxy_requests_total", l("outcome", "bypassed"), C, 4},
		{"cloudsteer_proxy_requests_total", l("outcome", "blocked"), C, 2},
		{"cloudsteer_proxy_requests_total", l("outcome", "auth_failed"), C, 1},
		{"cloudsteer_proxy_requests_total", l("outcome", "upstream_error"), C, 5},
		{"cloudsteer_proxy_requests_total", l("outcome", "bad_client"), C, 6},
		{"cloudsteer_proxy_bytes_total", l("direction", "up"), C, 12345},
		{"cloudsteer_proxy_bytes_total", l("direction", "down"), C, 987654},
		{"cloudsteer_dns_requests_total", l(), C, 100},
		{"cloudsteer_dns_queries_total", l("rcode", "NOERROR"), C, 90},
		{"cloudsteer_dns_queries_total", l("rcode", "NXDOMAIN"), C, 8},
		{"cloudsteer_dns_queries_total", l("rcode", "SERVFAIL"), C, 2},
		{"cloudsteer_dns_cache_hits_total", l(), C, 30},
		{"cloudsteer_dns_cache_misses_total", l(), C, 70},
		{"cloudsteer_dns_cache_hit_ratio", l(), G, 0.3},
		{"cloudsteer_dns_cache_entries", l(), G, 42},
		{"cloudsteer_dns_coalesced_total", l(), C, 7},
		{"cloudsteer_dns_upstream_errors_total", l(), C, 8},
		{"cloudsteer_dns_malformed_total", l(), C, 9},
		{"cloudsteer_dns_dropped_total", l(), C, 10},
		{"cloudsteer_bypass_map_entries", l(), G, 11},
		{"cloudsteer_bypass_learn_refused_total", l("reason", "per_name"), C, 13},
		{"cloudsteer_bypass_learn_refused_total", l("reason", "map_full"), C, 14},
		{"cloudsteer_bypass_learn_refused_total", l("reason", "address"), C, 15},
		{"cloudsteer_bypass_learn_evicted_total", l(), C, 16},
		{"cloudsteer_paused", l(), G, 1},
		{"cloudsteer_untracking_unsteered", l(), G, 1},
		{"cloudsteer_fast_path", l(), G, 1},
		{"cloudsteer_fast_path_packets_total", l("from", "lan"), C, 70},
		{"cloudsteer_fast_path_packets_total", l("from", "wan"), C, 71},
		{"cloudsteer_fast_path_bytes_total", l("from", "lan"), C, 7000},
		{"cloudsteer_fast_path_bytes_total", l("from", "wan"), C, 7100},
		{"cloudsteer_cloud_proxy_connections_total", l("how", "warm"), C, 40},
		{"cloudsteer_cloud_proxy_connections_total", l("how", "cold"), C, 12},
		{"cloudsteer_cloud_proxy_warm_idle", l(), G, 4},
		{"cloudsteer_cloud_proxy_warm_discarded_total", l("reason", "stale"), C, 3},
		{"cloudsteer_cloud_proxy_warm_discarded_total", l("reason", "expired"), C, 5},
		{"cloudsteer_cloud_proxy_connect_retries_total", l(), C, 2},
		{"cloudsteer_cloud_proxy_warm_refills_total", l("outcome", "ok"), C, 48},
		{"cloudsteer_cloud_proxy_warm_refills_total", l("outcome", "error"), C, 1},
		{"cloudsteer_events_total", l("reason", "blocked"), C, 0},
		{"cloudsteer_events_total", l("reason", "auth_failed"), C, 0},
		{"cloudsteer_events_total", l("reason", "dns_blocked"), C, 0},
		{"cloudsteer_limit_refused_total", l("limit", "flows_per_client"), C, 7},
		{"cloudsteer_limit_refused_total", l("limit", "dns_queries_per_client"), C, 300},
		{"cloudsteer_limit_refused_total", l("limit", "flows"), C, 0},
		{"cloudsteer_limit_refused_total", l("limit", "new_flows_per_client"), C, 0},
		{"cloudsteer_limit_refused_total", l("limit", "dns_tcp_per_client"), C, 0},
		{"cloudsteer_limit_refused_total", l("limit", "dns_tcp"), C, 0},
		{"cloudsteer_limit_refused_total", l("limit", "some_new_limit"), C, 2},
		{"cloudsteer_events_dropped_total", l(), C, 0},
		{"cloudsteer_quic_flows_total", l("reason", "bypass"), C, 3},
		{"cloudsteer_quic_flows_total", l("reason", "not_bypass"), C, 9},
		{"cloudsteer_quic_flows_total", l("reason", "bad_initial"), C, 1},
		{"cloudsteer_quic_flows_total", l("reason", "timeout"), C, 0},
	}
	for _, w := range want {
		v, typ, ok := value(fams, w.name, w.labels)
		switch {
		case !ok:
			t.Errorf("%s%v missing", w.name, w.labels)
		case typ != w.typ:
			t.Errorf("%s is a %v, want %v", w.name, typ, w.typ)
		case math.Abs(v-w.value) > 1e-9:
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, v, w.value)
		}
	}
	if n := len(fams["cloudsteer_packets_total"].GetMetric()); n != len(steer.Verdicts()) {
		t.Errorf("packets_total has %d series, want one per verdict (%d)", n, len(steer.Verdicts()))
	}
	for _, name := range []string{"go_goroutines", "process_open_fds", "cloudsteer_cloud_proxy_connect_seconds"} {
		if fams[name] == nil {
			t.Errorf("%s missing", name)
		}
	}
	for name, f := range fams {
		if f.GetHelp() == "" {
			t.Errorf("%s has no help", name)
		}
	}
}

// TestScrapeReadsNow checks the values are read at each scrape.
func TestScrapeReadsNow(t *testing.T) {
	src := busySource()
	h := metrics.New(src).Handler()
	scrape(t, h)
	src.mu.Lock()
	src.paused = false
	src.untrack = false
	src.bypass = 12
	src.proxy.Accepted = 58
	src.counters[steer.VerdictHTTP] = steer.Counter{Packets: 5, Bytes: 500}
	src.resolver.CacheHits = 70
	src.resolver.Rcodes["REFUSED"] = 1
	src.mu.Unlock()
	fams := scrape(t, h)
	for _, w := range []sample{
		{"cloudsteer_paused", l(), 0, 0},
		{"cloudsteer_untracking_unsteered", l(), 0, 0},
		{"cloudsteer_bypass_map_entries", l(), 0, 12},
		{"cloudsteer_proxy_flows_accepted_total", l(), 0, 58},
		{"cloudsteer_packets_total", l("verdict", "http"), 0, 5},
		{"cloudsteer_dns_cache_hit_ratio", l(), 0, 0.5},
		{"cloudsteer_dns_queries_total", l("rcode", "REFUSED"), 0, 1},
	} {
		if v, _, ok := value(fams, w.name, w.labels); !ok || v != w.value {
			t.Errorf("%s%v = %v (present %v), want %v", w.name, w.labels, v, ok, w.value)
		}
	}

	// An unreadable fast path leaves its series out.
	src.mu.Lock()
	src.noFast = true
	src.mu.Unlock()
	fams = scrape(t, h)
	if _, _, ok := value(fams, "cloudsteer_fast_path", l()); ok {
		t.Error("cloudsteer_fast_path served although the source could not read it")
	}
}

// TestKernelDNSFoldedIn checks that queries the eBPF answerer served count
// as requests, cache hits and answers by rcode, next to its own series.
func TestKernelDNSFoldedIn(t *testing.T) {
	src := busySource()
	k := dnscache.Stats{Hits: 900, Misses: 70, Shape: 5, Unmarked: 2, Entries: 33}
	k.HitRcodes[0], k.HitRcodes[3] = 880, 20
	src.kernel = &k
	fams := scrape(t, metrics.New(src).Handler())
	C, G := dto.MetricType_COUNTER, dto.MetricType_GAUGE
	for _, w := range []sample{
		{"cloudsteer_dns_requests_total", l(), C, 1000},
		{"cloudsteer_dns_cache_hits_total", l(), C, 930},
		{"cloudsteer_dns_cache_hit_ratio", l(), G, 930.0 / 1000},
		{"cloudsteer_dns_queries_total", l("rcode", "NOERROR"), C, 970},
		{"cloudsteer_dns_queries_total", l("rcode", "NXDOMAIN"), C, 28},
		{"cloudsteer_dns_queries_total", l("rcode", "SERVFAIL"), C, 2},
		{"cloudsteer_dns_kernel_answers_total", l(), C, 900},
		{"cloudsteer_dns_kernel_passed_total", l("reason", "miss"), C, 70},
		{"cloudsteer_dns_kernel_passed_total", l("reason", "not_plain_query"), C, 5},
		{"cloudsteer_dns_kernel_passed_total", l("reason", "not_steered"), C, 2},
		{"cloudsteer_dns_kernel_cache_entries", l(), G, 33},
	} {
		v, typ, ok := value(fams, w.name, w.labels)
		if !ok || typ != w.typ || math.Abs(v-w.value) > 1e-9 {
			t.Errorf("%s%v = %v %v (present %v), want %v %v", w.name, w.labels, v, typ, ok, w.value, w.typ)
		}
	}
	// Without the answerer its series are left out.
	src.kernel = nil
	fams = scrape(t, metrics.New(src).Handler())
	if fams["cloudsteer_dns_kernel_answers_total"] != nil {
		t.Error("kernel answer series present without the answerer")
	}
}

func TestHitRatioBeforeLookups(t *testing.T) {
	fams := scrape(t, metrics.New(&fakeSource{}).Handler())
	v, _, ok := value(fams, "cloudsteer_dns_cache_hit_ratio", l())
	if !ok || !math.IsNaN(v) {
		t.Errorf("hit ratio with no lookups = %v (present %v), want NaN", v, ok)
	}
	if _, _, ok := value(fams, "cloudsteer_dns_queries_total", l("rcode", "NOERROR")); ok {
		t.Error("dns_queries_total has an rcode series with no answers")
	}
}

func TestSourceErrors(t *testing.T) {
	src := busySource()
	src.steerErr = errors.New("map lookup: bad file descriptor")
	src.bypass = -1
	h := metrics.New(src).Handler()
	scrape(t, h) // a scrape counts its own errors after serving them
	fams := scrape(t, h)
	for _, name := range []string{"cloudsteer_packets_total", "cloudsteer_bytes_total", "cloudsteer_bypass_map_entries"} {
		if fams[name] != nil {
			t.Errorf("%s served although its source failed", name)
		}
	}
	if v, _, ok := value(fams, "cloudsteer_paused", l()); !ok || v != 1 {
		t.Errorf("paused = %v (present %v): the other metrics should still be served", v, ok)
	}
	if v, _, ok := value(fams, "promhttp_metric_handler_errors_total", l("cause", "gathering")); !ok || v != 1 {
		t.Errorf("promhttp_metric_handler_errors_total{cause=gathering} = %v (present %v), want 1 (the first scrape)", v, ok)
	}
}

func TestEventRecorded(t *testing.T) {
	m := metrics.New(&fakeSource{})
	for _, r := range []string{"blocked", "blocked", "dns_blocked", "blocked"} {
		m.EventRecorded(r)
	}
	fams := scrape(t, m.Handler())
	for reason, want := range map[string]float64{"blocked": 3, "dns_blocked": 1, "auth_failed": 0} {
		if v, _, ok := value(fams, "cloudsteer_events_total", l("reason", reason)); !ok || v != want {
			t.Errorf("events_total{reason=%q} = %v (present %v), want %v", reason, v, ok, want)
		}
	}
}

func TestOwnRegistry(t *testing.T) {
	metrics.New(&fakeSource{})
	metrics.New(&fakeSource{}) // a second registry must not collide with the first
	fams, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if strings.HasPrefix(f.GetName(), "cloudsteer_") {
			t.Errorf("%s is on the global registry", f.GetName())
		}
	}
}

// TestConnectHistogram feeds the histogram from a real cloud proxy client:
// a tunnel, a 407 and a dial to a closed port.
func TestConnectHistogram(t *testing.T) {
	const entitlement = "3315471d-b831-48ed-a621-17042a74a8e3"
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("tenant:"+entitlement))
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	target, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { target.Close() })
	go func() {
		for {
			c, err := target.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	px := cloudproxytest.Start(t, cloudproxytest.Options{Auth: auth, Dial: func(string) string { return target.Addr().String() }})
	dead, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := &url.URL{Scheme: "http", Host: dead.Addr().String()}
	dead.Close()

	m := metrics.New(&fakeSource{})
	attempts := []struct {
		url      *url.URL
		password string
	}{
		{px.URL, entitlement}, {px.URL, entitlement}, {px.URL, "wrong"}, {deadURL, entitlement},
	}
	for _, a := range attempts {
		c, err := cloudproxy.New(cloudproxy.Config{URL: a.url, Username: "tenant", Password: a.password, OnConnect: m.ObserveConnect})
		if err != nil {
			t.Fatal(err)
		}
		if conn, err := c.Connect(context.Background(), "www.example.com:443", netip.Addr{}); err == nil {
			conn.Close()
		}
	}
	m.ObserveConnect(20*time.Second, errors.New("beyond the last bucket"))

	fams := scrape(t, m.Handler())
	f := fams["cloudsteer_cloud_proxy_connect_seconds"]
	if f.GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("connect_seconds is a %v", f.GetType())
	}
	counts := map[string]uint64{}
	for _, s := range f.GetMetric() {
		h := s.GetHistogram()
		outcome := s.GetLabel()[0].GetValue()
		counts[outcome] = h.GetSampleCount()
		var bounds []float64
		for _, b := range h.GetBucket() {
			bounds = append(bounds, b.GetUpperBound())
		}
		if n := len(bounds); n == 0 || !math.IsInf(bounds[n-1], 1) || !slices.Equal(bounds[:n-1], metrics.ConnectBuckets) {
			t.Errorf("%s buckets %v, want %v and +Inf", outcome, bounds, metrics.ConnectBuckets)
		}
		if outcome == metrics.OutcomeError && h.GetSampleSum() < 20 {
			t.Errorf("error sum %v does not include the 20 s observation", h.GetSampleSum())
		}
	}
	want := map[string]uint64{metrics.OutcomeOK: 2, metrics.OutcomeRefused: 1, metrics.OutcomeError: 2}
	if !maps.Equal(counts, want) {
		t.Errorf("connect attempts by outcome = %v, want %v", counts, want)
	}
}

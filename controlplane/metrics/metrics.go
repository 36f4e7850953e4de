// Package metrics exposes the gateway's counters to Prometheus: the eBPF
// classifier's packets and bytes per verdict, the transparent proxy's
// flows and bytes, the cloud proxy connect latency, the resolver's queries
// and cache, the bypass map size, block events and the pause switch. The
// dataplane's counters are read when Prometheus scrapes, so nothing runs
// between scrapes.
package metrics

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/cloudsteer/cloudsteer/dataplane/quicgate"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cloudsteer/cloudsteer/controlplane/bypass"
	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy"
	"github.com/cloudsteer/cloudsteer/dataplane/dnscache"
	"github.com/cloudsteer/cloudsteer/dataplane/proxy"
	"github.com/cloudsteer/cloudsteer/dataplane/resolver"
	"github.com/cloudsteer/cloudsteer/dataplane/steer"
)

const namespace = "cloudsteer"

// Source is what the daemon reads its counters from at scrape time. Each
// method must be cheap and safe for concurrent use.
type Source interface {
	// SteerCounters returns the classifier's packets and bytes per
	// verdict (steer.Steer.Counters).
	SteerCounters() (map[steer.Verdict]steer.Counter, error)
	// ProxyStats returns the transparent proxy's counters (proxy.Proxy.Stats).
	ProxyStats() proxy.Stats
	// CloudPoolStats returns the counters of the warm connections to the
	// cloud proxy (cloudproxy.Client.Stats, summed over clients).
	CloudPoolStats() cloudproxy.Stats
	// KernelDNSStats returns the eBPF DNS answerer's counters
	// (dnscache.Cache.Stats); ok is false when it is not running.
	KernelDNSStats() (s dnscache.Stats, ok bool)
	// ResolverStats returns the resolver's counters (resolver.Resolver.Stats).
	ResolverStats() resolver.Stats
	// BypassMapSize returns the number of prefixes in the kernel bypass
	// map (len of steer.Steer.BypassPrefixes), or a negative number when
	// the map cannot be read; the gauge is then left out of the scrape.
	BypassMapSize() int
	// BypassStats returns the bypass set's counters (bypass.Set.Stats).
	BypassStats() bypass.Stats
	// Paused reports whether protection is paused now.
	Paused() bool
	// Untracking reports whether unsteered TCP skips connection tracking
	// now (firewall.Table.Untracking).
	Untracking() bool
	// FastPath returns whether the eBPF fast path is on and what it
	// forwarded from each side (steer.Steer.Forwarded); ok is false when
	// it cannot be read, and the series are left out.
	FastPath() (on bool, fromLAN, fromWAN steer.Counter, ok bool)
	// LimitRefusals returns, per limit (LimitNames and any other name),
	// how many flows, connections or queries were refused or dropped
	// for it: the kernel's (firewall.Table.LimitRefusals), the proxy's
	// and the resolver's counts added up by the daemon.
	LimitRefusals() map[string]uint64
	// QUICFlows returns, per reason (quicgate.Reasons), how many new QUIC
	// flows the QUIC gate decided; all zero while it is off.
	QUICFlows() map[string]uint64
}

// LimitNames are the limit label values of limit_refused_total, always
// exported (from zero): flows (overall, the proxy), flows_per_client
// (kernel and proxy), new_flows_per_client (kernel), dns_tcp_per_client
// (kernel and resolver), dns_tcp (overall, the resolver) and
// dns_queries_per_client (kernel and resolver).
var LimitNames = []string{"flows", "flows_per_client", "new_flows_per_client", "dns_tcp_per_client", "dns_tcp", "dns_queries_per_client"}

// ConnectBuckets are the upper bounds, in seconds, of the connect latency
// histogram: from a nearby proxy's few milliseconds up to the cloud proxy
// client's 15 s default timeout.
var ConnectBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15}

// Connect outcomes, the outcome label of the connect latency histogram.
const (
	OutcomeOK      = "ok"      // tunnel or connection established
	OutcomeRefused = "refused" // the proxy answered with a refusal (403, 407, ...)
	OutcomeError   = "error"   // no answer: dial, TLS, timeout or protocol error
)

// EventReasons are the event reasons counted from zero (model.Event.Reason).
var EventReasons = []string{"blocked", "auth_failed", "dns_blocked", "bypass_refused"}

// Metrics is the gateway's Prometheus registry and the metrics fed by
// calls rather than read from the Source.
type Metrics struct {
	reg     *prometheus.Registry
	connect *prometheus.HistogramVec
	events  *prometheus.CounterVec
	dropped prometheus.Counter
	log     *slog.Logger
}

// New returns Metrics reading src at scrape time, on a registry of its own
// that also carries the Go runtime and process collectors.
func New(src Source) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		connect: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "cloud_proxy_connect_seconds",
			Help:      "Time from dialing the cloud proxy to its answer (CONNECT) or to the connection (absolute-form HTTP), by outcome.",
			Buckets:   ConnectBuckets,
		}, []string{"outcome"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "events_total",
			Help:      "Block events recorded, by reason.",
		}, []string{"reason"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "events_dropped_total",
			Help:      "Block events not stored: the writer's bounded queue was full (a flood) or the store failed.",
		}),
		log: slog.Default().With("component", "metrics"),
	}
	for _, o := range []string{OutcomeOK, OutcomeRefused, OutcomeError} {
		m.connect.WithLabelValues(o)
	}
	for _, r := range EventReasons {
		m.events.WithLabelValues(r)
	}
	m.reg.MustRegister(
		m.connect,
		m.events,
		m.dropped,
		newCollector(src),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	if fs, ok := src.(FailoverSource); ok {
		m.reg.MustRegister(newFailoverCollector(fs))
	}
	return m
}

// Handler serves the registry in the Prometheus exposition formats. When
// a Source method fails, the other metrics are still served and the error
// is logged and counted in promhttp_metric_handler_errors_total.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:      errorLog{m.log},
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      m.reg,
	})
}

// ObserveConnect records one attempt to reach the cloud proxy; it has the
// signature of cloudproxy.Config.OnConnect.
func (m *Metrics) ObserveConnect(d time.Duration, err error) {
	m.connect.WithLabelValues(connectOutcome(err)).Observe(d.Seconds())
}

func connectOutcome(err error) string {
	var re *cloudproxy.RefusedError
	switch {
	case err == nil:
		return OutcomeOK
	case errors.As(err, &re):
		return OutcomeRefused
	}
	return OutcomeError
}

// EventRecorded counts one block event. reason is a fixed code such as
// model.Event.Reason ("blocked", "auth_failed", "dns_blocked"), never text
// from the network, so the label's values stay few.
func (m *Metrics) EventRecorded(reason string) {
	m.events.WithLabelValues(reason).Inc()
}

// EventsDropped counts n block events that were not stored.
func (m *Metrics) EventsDropped(n int) {
	m.dropped.Add(float64(n))
}

// errorLog writes promhttp's errors to the log, one line per error of a
// prometheus.MultiError.
type errorLog struct{ log *slog.Logger }

func (l errorLog) Println(v ...any) {
	var what []string
	var errs []error
	for _, x := range v {
		var me prometheus.MultiError
		switch e := x.(type) {
		case error:
			if errors.As(e, &me) {
				errs = append(errs, me...)
			} else {
				errs = append(errs, e)
			}
		default:
			what = append(what, fmt.Sprint(x))
		}
	}
	msg := strings.TrimSuffix(strings.Join(what, " "), ":")
	if msg == "" {
		msg = "serve metrics"
	}
	if len(errs) == 0 {
		l.log.Warn(msg)
	}
	for _, err := range errs {
		l.log.Warn(msg, "err", err)
	}
}

// collector reads the Source at each scrape.
type collector struct {
	src Source

	packets, bytes                                *prometheus.Desc
	flowsAccepted, flowsActive                    *prometheus.Desc
	proxyRequests, proxyBytes                     *prometheus.Desc
	dnsRequests, dnsQueries, dnsLocalNX           *prometheus.Desc
	dnsHits, dnsMisses, dnsRatio                  *prometheus.Desc
	dnsEntries, dnsCoalesced                      *prometheus.Desc
	dnsUpstreamErrs, dnsMalformed                 *prometheus.Desc
	dnsDropped, bypassEntries, paused, untracking *prometheus.Desc
	cloudConns, cloudWarmIdle                     *prometheus.Desc
	cloudDiscarded, cloudRetries                  *prometheus.Desc
	cloudRefills                                  *prometheus.Desc
	dnsKernelHits, dnsKernelPassed                *prometheus.Desc
	dnsKernelEntries                              *prometheus.Desc
	fastPath, fastPackets, fastBytes              *prometheus.Desc
	bypassRefused, bypassEvicted                  *prometheus.Desc
	limitRefused                                  *prometheus.Desc
	quicFlows                                     *prometheus.Desc
}

func newCollector(src Source) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
	}
	return &collector{
		src:              src,
		packets:          d("packets_total", "Packets the eBPF classifier saw on LAN ingress, by verdict.", "verdict"),
		bytes:            d("bytes_total", "Bytes (whole frames) the eBPF classifier saw on LAN ingress, by verdict.", "verdict"),
		flowsAccepted:    d("proxy_flows_accepted_total", "TCP flows the transparent proxy accepted."),
		flowsActive:      d("proxy_flows_active", "TCP flows the transparent proxy is serving now."),
		proxyRequests:    d("proxy_requests_total", "TLS tunnels and HTTP requests handled by the transparent proxy, by outcome.", "outcome"),
		proxyBytes:       d("proxy_bytes_total", "Bytes the transparent proxy forwarded: up (client to upstream) and down.", "direction"),
		dnsRequests:      d("dns_requests_total", "DNS requests received with a full header, before any answer (kernel cache answers included)."),
		dnsQueries:       d("dns_queries_total", "DNS queries answered, by response code (kernel cache answers included).", "rcode"),
		dnsLocalNX:       d("dns_local_nxdomain_total", "DNS queries the resolver answered NXDOMAIN itself: the canary domain and the DNS-over-HTTPS host names (dns.application_dns_canary, dns.block_doh)."),
		dnsHits:          d("dns_cache_hits_total", "DNS queries answered from the cache, in the kernel or in the resolver."),
		dnsMisses:        d("dns_cache_misses_total", "DNS queries sent to (or joined with a query in flight to) the cloud resolvers."),
		dnsRatio:         d("dns_cache_hit_ratio", "Cache hits over hits plus misses since start; NaN before the first lookup."),
		dnsEntries:       d("dns_cache_entries", "Answers in the DNS cache now."),
		dnsCoalesced:     d("dns_coalesced_total", "DNS cache misses that shared one upstream exchange with another."),
		dnsUpstreamErrs:  d("dns_upstream_errors_total", "Failed attempts at a cloud resolver."),
		dnsMalformed:     d("dns_malformed_total", "DNS requests answered FORMERR or dropped as garbage."),
		dnsDropped:       d("dns_dropped_total", "DNS requests dropped unanswered."),
		bypassEntries:    d("bypass_map_entries", "Prefixes in the kernel bypass map (configured and learned)."),
		paused:           d("paused", "1 while protection is paused, else 0."),
		untracking:       d("untracking_unsteered", "1 while TCP that is not steered skips connection tracking (no other netfilter ruleset), else 0."),
		dnsKernelHits:    d("dns_kernel_answers_total", "DNS queries the eBPF answerer on the LAN interfaces answered from its cache."),
		dnsKernelPassed:  d("dns_kernel_passed_total", "Port 53 packets the eBPF answerer passed on to the resolver, by reason.", "reason"),
		dnsKernelEntries: d("dns_kernel_cache_entries", "Answers in the eBPF answerer's map now."),
		fastPath:         d("fast_path", "1 while unsteered TCP is forwarded in eBPF around the IP stack, else 0."),
		fastPackets:      d("fast_path_packets_total", "Packets the eBPF fast path forwarded, by the side they came from (lan, wan).", "from"),
		fastBytes:        d("fast_path_bytes_total", "Bytes (whole frames) the eBPF fast path forwarded, by the side they came from.", "from"),
		cloudConns:       d("cloud_proxy_connections_total", "Connections to the cloud proxy a flow used: taken warm from the pool or dialed cold.", "how"),
		cloudWarmIdle:    d("cloud_proxy_warm_idle", "Established, unused connections to the cloud proxy waiting in the pool."),
		cloudDiscarded:   d("cloud_proxy_warm_discarded_total", "Warm connections closed unused: found dead when taken (stale) or past their max age (expired).", "reason"),
		cloudRetries:     d("cloud_proxy_connect_retries_total", "CONNECTs sent again on a fresh connection after a warm one failed before any answer."),
		cloudRefills:     d("cloud_proxy_warm_refills_total", "Background dials that filled the warm pool, by outcome.", "outcome"),
		bypassRefused: d("bypass_learn_refused_total", "Addresses from DNS answers for bypass names not put in the kernel bypass map, by reason: "+
			"per_name (the name holds the maximum), map_full (no room, nothing evictable), address (not global unicast, or the gateway's own).", "reason"),
		bypassEvicted: d("bypass_learn_evicted_total", "Learned addresses of admin bypass names evicted to make room for a system name's."),
		limitRefused:  d("limit_refused_total", "Flows, connections and DNS queries refused or dropped because a client or the gateway was at a limit, by limit.", "limit"),
		quicFlows: d("quic_flows_total", "New LAN QUIC flows the QUIC gate (firewall.quic_by_name) decided, by reason: bypass (let through: a bypass name to one of its resolver addresses); "+
			"rejected: no_sni, not_bypass, no_address, other_address, bad_initial, timeout, overflow.", "reason"),
	}
}

// Describe sends every metric's description.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.packets, c.bytes, c.flowsAccepted, c.flowsActive, c.proxyRequests, c.proxyBytes,
		c.dnsRequests, c.dnsQueries, c.dnsHits, c.dnsMisses, c.dnsRatio, c.dnsEntries,
		c.dnsCoalesced, c.dnsUpstreamErrs, c.dnsMalformed, c.dnsDropped, c.bypassEntries, c.paused, c.untracking,
		c.cloudConns, c.cloudWarmIdle, c.cloudDiscarded, c.cloudRetries, c.cloudRefills,
		c.dnsKernelHits, c.dnsKernelPassed, c.dnsKernelEntries,
		c.fastPath, c.fastPackets, c.fastBytes, c.bypassRefused, c.bypassEvicted, c.limitRefused, c.quicFlows,
	} {
		ch <- d
	}
}

// Collect reads the Source and sends the current values.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}

	if vc, err := c.src.SteerCounters(); err != nil {
		ch <- prometheus.NewInvalidMetric(c.packets, fmt.Errorf("read classifier counters: %w", err))
	} else {
		for _, v := range steer.Verdicts() {
			counter(c.packets, float64(vc[v].Packets), v.String())
			counter(c.bytes, float64(vc[v].Bytes), v.String())
		}
	}

	ps := c.src.ProxyStats()
	counter(c.flowsAccepted, float64(ps.Accepted))
	gauge(c.flowsActive, float64(ps.Active))
	for _, o := range []struct {
		name string
		n    uint64
	}{
		{"proxied", ps.Proxied},
		{"bypassed", ps.Bypassed},
		{proxy.KindBlocked, ps.Blocked},
		{proxy.KindAuthFailed, ps.AuthFailed},
		{proxy.KindUpstreamError, ps.UpstreamErrors},
		{proxy.KindBadClient, ps.BadClients},
		{proxy.KindBypassRefused, ps.BypassRefused},
		{"doh_refused", ps.DoHRefused},
		{"failed_open", ps.FailedOpen},
		{"failed_closed", ps.FailedClosed},
	} {
		counter(c.proxyRequests, float64(o.n), o.name)
	}
	counter(c.proxyBytes, float64(ps.BytesUp), "up")
	counter(c.proxyBytes, float64(ps.BytesDown), "down")

	cs := c.src.CloudPoolStats()
	counter(c.cloudConns, float64(cs.TakenWarm), "warm")
	counter(c.cloudConns, float64(cs.DialedCold), "cold")
	gauge(c.cloudWarmIdle, float64(cs.Idle))
	counter(c.cloudDiscarded, float64(cs.DiscardedStale), "stale")
	counter(c.cloudDiscarded, float64(cs.Expired), "expired")
	counter(c.cloudRetries, float64(cs.Retries))
	counter(c.cloudRefills, float64(cs.RefillDials), "ok")
	counter(c.cloudRefills, float64(cs.RefillErrors), "error")

	rs := c.src.ResolverStats()
	ks, kernel := c.src.KernelDNSStats()
	rcodes := maps.Clone(rs.Rcodes)
	if rcodes == nil {
		rcodes = map[string]uint64{}
	}
	if kernel {
		rs.Queries += ks.Hits
		rs.CacheHits += ks.Hits
		for i, n := range ks.HitRcodes {
			if n > 0 {
				rcodes[dns.RcodeToString[i]] += n
			}
		}
		counter(c.dnsKernelHits, float64(ks.Hits))
		for _, r := range []struct {
			name string
			n    uint64
		}{
			{"not_plain_query", ks.Shape}, {"name", ks.Name}, {"miss", ks.Misses}, {"expired", ks.Expired},
			{"too_big", ks.TooBig}, {"error", ks.Errors}, {"not_steered", ks.Unmarked},
		} {
			counter(c.dnsKernelPassed, float64(r.n), r.name)
		}
		gauge(c.dnsKernelEntries, float64(ks.Entries))
	}
	counter(c.dnsRequests, float64(rs.Queries))
	for rcode, n := range rcodes {
		counter(c.dnsQueries, float64(n), rcode)
	}
	counter(c.dnsLocalNX, float64(rs.LocalNXDomain))
	counter(c.dnsHits, float64(rs.CacheHits))
	counter(c.dnsMisses, float64(rs.CacheMisses))
	ratio := math.NaN()
	if total := rs.CacheHits + rs.CacheMisses; total > 0 {
		ratio = float64(rs.CacheHits) / float64(total)
	}
	gauge(c.dnsRatio, ratio)
	gauge(c.dnsEntries, float64(rs.CacheEntries))
	counter(c.dnsCoalesced, float64(rs.Coalesced))
	counter(c.dnsUpstreamErrs, float64(rs.UpstreamErrors))
	counter(c.dnsMalformed, float64(rs.Malformed))
	counter(c.dnsDropped, float64(rs.Dropped))

	if n := c.src.BypassMapSize(); n < 0 {
		ch <- prometheus.NewInvalidMetric(c.bypassEntries, errors.New("read bypass map: source reports it unreadable"))
	} else {
		gauge(c.bypassEntries, float64(n))
	}

	bs := c.src.BypassStats()
	counter(c.bypassRefused, float64(bs.LearnRefusedPerName), "per_name")
	counter(c.bypassRefused, float64(bs.LearnRefusedFull), "map_full")
	counter(c.bypassRefused, float64(bs.LearnRefusedAddr), "address")
	counter(c.bypassEvicted, float64(bs.Evicted))

	paused := 0.0
	if c.src.Paused() {
		paused = 1
	}
	gauge(c.paused, paused)

	untracking := 0.0
	if c.src.Untracking() {
		untracking = 1
	}
	gauge(c.untracking, untracking)

	refused := c.src.LimitRefusals()
	for _, name := range LimitNames {
		counter(c.limitRefused, float64(refused[name]), name)
	}
	for name, n := range refused {
		if !slices.Contains(LimitNames, name) {
			counter(c.limitRefused, float64(n), name)
		}
	}

	quicFlows := c.src.QUICFlows()
	for _, r := range quicgate.Reasons {
		counter(c.quicFlows, float64(quicFlows[r]), r)
	}

	if on, lan, wan, ok := c.src.FastPath(); ok {
		v := 0.0
		if on {
			v = 1
		}
		gauge(c.fastPath, v)
		counter(c.fastPackets, float64(lan.Packets), "lan")
		counter(c.fastPackets, float64(wan.Packets), "wan")
		counter(c.fastBytes, float64(lan.Bytes), "lan")
		counter(c.fastBytes, float64(wan.Bytes), "wan")
	}
}

package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy"
	"github.com/cloudsteer/cloudsteer/dataplane/resolver"
)

// FailoverSource is implemented by a Source whose cloud proxies are
// health-checked (cloud_proxy.urls, cloud_proxy.failure_mode).
type FailoverSource interface {
	Source
	// CloudProxyStates returns each cloud proxy's health, primary first
	// (cloudproxy.Client.States).
	CloudProxyStates() []cloudproxy.ProxyState
	// CloudProxySwitches counts the changes of the proxy new flows use
	// (to a backup, to none, back) since start.
	CloudProxySwitches() uint64
	// DNSUpstreamStates returns each cloud resolver's health, in
	// configured order (resolver.Resolver.UpstreamStates).
	DNSUpstreamStates() []resolver.UpstreamState
}

// failoverCollector exports the cloud proxies' health.
type failoverCollector struct {
	src                            FailoverSource
	active, healthy, switchs       *prometheus.Desc
	dnsActive, dnsHealthy, dnsSwit *prometheus.Desc
}

func newFailoverCollector(src FailoverSource) *failoverCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
	}
	return &failoverCollector{
		src:     src,
		active:  d("cloud_proxy_active", "1 for the cloud proxy new flows use now, else 0 (all 0 while none is healthy: the failure mode applies).", "url"),
		healthy: d("cloud_proxy_healthy", "1 while the cloud proxy passes its health checks, else 0.", "url"),
		switchs: d("cloud_proxy_switches_total", "Changes of the cloud proxy new flows use: to a backup, to none (failure mode), back."),

		dnsActive:  d("dns_upstream_active", "1 for the cloud resolver queries go to first, else 0.", "upstream"),
		dnsHealthy: d("dns_upstream_healthy", "1 while the cloud resolver answers, else 0 (a failed one is probed until it has answered for a while).", "upstream"),
		dnsSwit:    d("dns_upstream_switches_total", "Changes of the cloud resolver queries go to first."),
	}
}

func (c *failoverCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.active
	ch <- c.healthy
	ch <- c.switchs
	ch <- c.dnsActive
	ch <- c.dnsHealthy
	ch <- c.dnsSwit
}

func (c *failoverCollector) Collect(ch chan<- prometheus.Metric) {
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	for _, s := range c.src.CloudProxyStates() {
		ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, b(s.Active), s.URL)
		ch <- prometheus.MustNewConstMetric(c.healthy, prometheus.GaugeValue, b(s.Up), s.URL)
	}
	ch <- prometheus.MustNewConstMetric(c.switchs, prometheus.CounterValue, float64(c.src.CloudProxySwitches()))
	for _, u := range c.src.DNSUpstreamStates() {
		ch <- prometheus.MustNewConstMetric(c.dnsActive, prometheus.GaugeValue, b(u.Active), u.Name)
		ch <- prometheus.MustNewConstMetric(c.dnsHealthy, prometheus.GaugeValue, b(u.Up), u.Name)
	}
	ch <- prometheus.MustNewConstMetric(c.dnsSwit, prometheus.CounterValue, float64(c.src.ResolverStats().UpstreamSwitches))
}

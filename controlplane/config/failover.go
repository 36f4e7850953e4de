package config

import (
	"fmt"
	"net/url"
	"strconv"
	"time"
)

// Failure modes (cloud_proxy.failure_mode).
const (
	FailureOpen   = "open"
	FailureClosed = "closed"
	// DefaultFailureMode is open: cloudsteer is fail-open by construction
	// (a crash or a stop leaves the network direct), the agent it stands
	// in for lets traffic out when its cloud is gone, and an office must
	// keep working; a site that prefers no web to uninspected web sets
	// closed.
	DefaultFailureMode = FailureOpen
)

// Health-check defaults of the cloud proxies.
const (
	DefaultProbeInterval = time.Second
	DefaultProbeTimeout  = time.Second
	DefaultRecoverAfter  = 10 * time.Second
	// MaxCloudProxies caps cloud_proxy.urls.
	MaxCloudProxies = 8
)

// CloudFailover is the part of cloud_proxy about more than one proxy and
// about a cloud that fails (inline in CloudProxy).
type CloudFailover struct {
	// URLs are the cloud proxies, primary first, then backups; instead of
	// URL (which is a list of one).
	URLs []string `yaml:"urls"`
	// FailureMode is what steered web traffic gets while no cloud proxy
	// is healthy: "open" (direct) or "closed" (only bypass destinations).
	FailureMode string `yaml:"failure_mode"`
	// ProbeInterval is the time between two health probes of each proxy.
	ProbeInterval Duration `yaml:"probe_interval"`
	// ProbeTimeout bounds a probe's TCP connect (and a real flow's while
	// a backup is up).
	ProbeTimeout Duration `yaml:"probe_timeout"`
	// RecoverAfter is how long a proxy that was down must pass every
	// check before new flows go to it again.
	RecoverAfter Duration `yaml:"recover_after"`
}

func (f *CloudFailover) setDefaults() {
	if f.FailureMode == "" {
		f.FailureMode = DefaultFailureMode
	}
	if f.ProbeInterval == 0 {
		f.ProbeInterval = Duration(DefaultProbeInterval)
	}
	if f.ProbeTimeout == 0 {
		f.ProbeTimeout = Duration(DefaultProbeTimeout)
	}
	if f.RecoverAfter == 0 {
		f.RecoverAfter = Duration(DefaultRecoverAfter)
	}
}

// proxyURLList returns the configured proxy URLs with the key each came
// from: url alone, or urls.
func (p *CloudProxy) proxyURLList() ([]string, []string, error) {
	switch {
	case p.URL != "" && len(p.URLs) > 0:
		return nil, nil, bad("cloud_proxy.urls", "set either url or urls, not both")
	case p.URL != "":
		return []string{p.URL}, []string{"cloud_proxy.url"}, nil
	case len(p.URLs) == 0:
		return nil, nil, bad("cloud_proxy.url", "required (or cloud_proxy.urls), e.g. http://proxy.example.net:8080")
	case len(p.URLs) > MaxCloudProxies:
		return nil, nil, bad("cloud_proxy.urls", "at most %d proxies", MaxCloudProxies)
	}
	keys := make([]string, len(p.URLs))
	for i := range p.URLs {
		keys[i] = fmt.Sprintf("cloud_proxy.urls[%d]", i)
	}
	return p.URLs, keys, nil
}

// checkProxyURL validates one cloud proxy URL.
func checkProxyURL(key, s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, bad(key, "not a URL: %q", s)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, bad(key, "scheme must be http or https, not %q", u.Scheme)
	}
	if u.Hostname() == "" {
		return nil, bad(key, "no host in %q", s)
	}
	if u.User != nil {
		return nil, bad(key, "put credentials in entitlement_code or username/password, not in the URL")
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
		return nil, bad(key, "a proxy URL has no path or query: %q", s)
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, bad(key, "bad port %q", port)
		}
	}
	return u, nil
}

// validateURLs checks url/urls and the failover keys; it reports whether
// any proxy is https (for ca_file).
func (p *CloudProxy) validateURLs() (anyHTTPS bool, err error) {
	list, keys, err := p.proxyURLList()
	if err != nil {
		return false, err
	}
	seen := map[string]bool{}
	for i, s := range list {
		u, err := checkProxyURL(keys[i], s)
		if err != nil {
			return false, err
		}
		if seen[u.Scheme+"://"+u.Host] {
			return false, bad(keys[i], "%q is listed twice", s)
		}
		seen[u.Scheme+"://"+u.Host] = true
		anyHTTPS = anyHTTPS || u.Scheme == "https"
	}
	switch p.FailureMode {
	case FailureOpen, FailureClosed:
	default:
		return false, bad("cloud_proxy.failure_mode", "%q is not one of open, closed", p.FailureMode)
	}
	if p.ProbeInterval < Duration(100*time.Millisecond) {
		return false, bad("cloud_proxy.probe_interval", "must be at least 100ms")
	}
	if p.ProbeTimeout < Duration(100*time.Millisecond) {
		return false, bad("cloud_proxy.probe_timeout", "must be at least 100ms")
	}
	if p.RecoverAfter < 0 {
		return false, bad("cloud_proxy.recover_after", "must be positive")
	}
	return anyHTTPS, nil
}

// ProxyURLs returns the parsed cloud proxy URLs, primary first.
func (p *CloudProxy) ProxyURLs() []*url.URL {
	list, _, _ := p.proxyURLList() // validated
	out := make([]*url.URL, 0, len(list))
	for _, s := range list {
		u, _ := url.Parse(s)
		out = append(out, u)
	}
	return out
}

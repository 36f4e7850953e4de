package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestFailoverDefaultsAndURL(t *testing.T) {
	c, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	cp := c.CloudProxy
	if cp.FailureMode != "open" || cp.ProbeInterval.D() != time.Second || cp.ProbeTimeout.D() != time.Second || cp.RecoverAfter.D() != 10*time.Second {
		t.Errorf("defaults: %+v", cp.CloudFailover)
	}
	if us := cp.ProxyURLs(); len(us) != 1 || us[0].String() != "http://198.51.100.10:8080" {
		t.Errorf("url as a list of one: %v", us)
	}
}

func TestFailoverURLs(t *testing.T) {
	doc := strings.Replace(good, "url: http://198.51.100.10:8080",
		"urls: [\"http://198.51.100.10:8080\", \"https://backup.example:8443\"]\n  failure_mode: closed\n  recover_after: 30s\n  probe_interval: 500ms\n  ca_file: /etc/hostname", 1)
	c, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	us := c.CloudProxy.ProxyURLs()
	if len(us) != 2 || us[0].Host != "198.51.100.10:8080" || us[1].Host != "backup.example:8443" || c.CloudProxy.ProxyURL().String() != us[0].String() {
		t.Errorf("urls: %v", us)
	}
	if f := c.CloudProxy.CloudFailover; f.FailureMode != "closed" || f.RecoverAfter.D() != 30*time.Second || f.ProbeInterval.D() != 500*time.Millisecond {
		t.Errorf("failover keys: %+v", f)
	}
}

func TestFailoverBad(t *testing.T) {
	urls := func(list string) string {
		return strings.Replace(good, "url: http://198.51.100.10:8080", "urls: "+list, 1)
	}
	tests := []struct{ name, doc, key string }{
		{"url and urls", strings.Replace(good, "url: http://198.51.100.10:8080", "url: http://198.51.100.10:8080\n  urls: [\"http://198.51.100.11:8080\"]", 1), "cloud_proxy.urls"},
		{"empty urls", urls("[]"), "cloud_proxy.url"},
		{"bad second url", urls(`["http://198.51.100.10:8080", "socks5://x:1"]`), "cloud_proxy.urls[1]"},
		{"twice", urls(`["http://198.51.100.10:8080", "http://198.51.100.10:8080"]`), "cloud_proxy.urls[1]"},
		{"too many", urls(`["http://a:1","http://b:1","http://c:1","http://d:1","http://e:1","http://f:1","http://g:1","http://h:1","http://i:1"]`), "cloud_proxy.urls"},
		{"bad mode", strings.Replace(good, "entitlement_code:", "failure_mode: sideways\n  entitlement_code:", 1), "cloud_proxy.failure_mode"},
		{"tiny probe interval", strings.Replace(good, "entitlement_code:", "probe_interval: 1ms\n  entitlement_code:", 1), "cloud_proxy.probe_interval"},
		{"negative recover", strings.Replace(good, "entitlement_code:", "recover_after: -1s\n  entitlement_code:", 1), "cloud_proxy.recover_after"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			var ce *Error
			if !errors.As(err, &ce) || ce.Key != tt.key {
				t.Fatalf("err = %v, want a problem with %s", err, tt.key)
			}
		})
	}
}

package appliance

import (
	"strings"
	"testing"

	"github.com/cloudsteer/cloudsteer/controlplane/config"
)

// TestCloudProxyCredentials: cloud_proxy_password goes into cloudsteer's
// cloud_proxy.username/password, the user defaulting to the entitlement
// code; the password is never in an error; bad values are refused.
func TestCloudProxyCredentials(t *testing.T) {
	code := "3315471d-b831-48ed-a621-17042a74a8e3"
	gen := func(conf string, code string) (string, error) {
		c, errs := Parse([]byte(conf))
		if len(errs) != 0 {
			t.Fatalf("parse %q: %v", conf, errs)
		}
		return cloudsteerYAML(c, Roles{}, "", code)
	}
	out, err := gen("cloud_proxy = http://198.51.100.11:3128\ncloud_proxy_password = s3cret\n", code)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CloudProxy.Username != code || cfg.CloudProxy.Password != "s3cret" {
		t.Errorf("username %q password %q, want the code and s3cret:\n%s", cfg.CloudProxy.Username, cfg.CloudProxy.Password, out)
	}
	out, err = gen("cloud_proxy = http://198.51.100.11:3128\ncloud_proxy_user = office1\ncloud_proxy_password = s3cret\n", code)
	if err != nil || !strings.Contains(out, `username: "office1"`) {
		t.Errorf("explicit user: %v\n%s", err, out)
	}
	if _, err := gen("cloud_proxy_password = s3cret\n", ""); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("a password without user or code: %v", err)
	}
	c, errs := Parse([]byte("cloud_proxy_user = a:b\ncloud_proxy_password = \"\"\n"))
	_ = c
	if len(errs) != 2 {
		t.Errorf("bad user and empty password: %v", errs)
	}
	for _, e := range errs {
		if strings.Contains(e.Error(), "a:b") {
			t.Errorf("an error echoes the value: %v", e)
		}
	}
}

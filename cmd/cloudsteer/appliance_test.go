package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestApplianceCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.conf")
	bad := filepath.Join(dir, "bad.conf")
	os.WriteFile(good, []byte("wan_mode = dhcp\nwan_address = 203.0.113.2/24\n"), 0o644)
	os.WriteFile(bad, []byte("# x\nlan_address = 300.1.1.1/24\npppoe_password = hunter2hunter2\nwan_mode = pppoe\n"), 0o644)
	var out, errb bytes.Buffer
	if code := mainErr([]string{"appliance", "check", good}, &out, &errb); code != exitOK || !strings.Contains(out.String(), "router.conf ok") ||
		!strings.Contains(errb.String(), "warning: router.conf line 2: wan_address: ignored") {
		t.Fatalf("good: %d %q %q", code, out.String(), errb.String())
	}
	out.Reset()
	errb.Reset()
	code := mainErr([]string{"appliance", "check", bad}, &out, &errb)
	if code != exitConfig || !strings.Contains(errb.String(), "router.conf line 2: lan_address:") ||
		!strings.Contains(errb.String(), "router.conf line 4: wan_mode: pppoe needs pppoe_user") || strings.Contains(errb.String(), "hunter2") {
		t.Fatalf("bad: %d %q", code, errb.String())
	}
	if code := mainErr([]string{"appliance", "nosuch"}, &out, &errb); code != exitConfig {
		t.Fatalf("unknown subcommand: %d", code)
	}
}

package lab_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
	"github.com/cloudsteer/cloudsteer/lab"
)

// TestVMGatewayTopology checks the lab built for a VM gateway: the gateway
// namespace only bridges (each lab link with its tap, no address of its
// own, no forwarding), the LAN client has no address until a DHCP lease,
// and StartVM refuses a lab without a VM gateway.
func TestVMGatewayTopology(t *testing.T) {
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "ip")
	l := upLab(t, lab.Options{VMGateway: true})
	if !l.VMGateway() || !l.NAT() {
		t.Fatalf("VMGateway %v NAT %v: want both (the VM masquerades)", l.VMGateway(), l.NAT())
	}
	run := func(role string, args ...string) string {
		out, err := l.Command(context.Background(), role, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	for port, bridge := range map[string]string{lab.GWLANIf: lab.BridgeLAN, lab.TapLAN: lab.BridgeLAN, lab.GWWANIf: lab.BridgeWAN, lab.TapWAN: lab.BridgeWAN} {
		if out := run(lab.RoleGW, "ip", "-o", "link", "show", "dev", port); !strings.Contains(out, "master "+bridge) {
			t.Errorf("%s is not a port of %s: %s", port, bridge, out)
		}
	}
	if out := run(lab.RoleGW, "ip", "-o", "-d", "link", "show", "dev", lab.TapWAN); !strings.Contains(out, "tun type tap") {
		t.Errorf("%s is not a tap: %s", lab.TapWAN, out)
	}
	if out := strings.TrimSpace(run(lab.RoleGW, "ip", "-o", "addr", "show", "scope", "global")); out != "" {
		t.Errorf("the gateway namespace has addresses of its own: %s", out)
	}
	if out := strings.TrimSpace(run(lab.RoleGW, "sysctl", "-n", "net.ipv4.ip_forward")); out != "0" {
		t.Errorf("the gateway namespace forwards (ip_forward %s)", out)
	}
	if out := strings.TrimSpace(run(lab.RoleLAN, "ip", "-4", "-o", "addr", "show", "dev", lab.ClientIf)); out != "" {
		t.Errorf("the LAN client has an address before any lease: %s", out)
	}
	if out := run(lab.RoleInet, "ip", "-o", "addr", "show", "dev", lab.InetIf); !strings.Contains(out, lab.InetV4.String()) {
		t.Errorf("the internet side lacks %s: %s", lab.InetV4, out)
	}
	// No server answers yet: the lease attempt ends with ctx.
	if _, err := exec.LookPath("udhcpc"); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if lease, err := l.DHCPLease(ctx, lab.RoleLAN); err == nil {
			t.Errorf("a lease without a VM: %+v", lease)
		}
	}
	plain := upLab(t, lab.Options{})
	if _, _, err := plain.StartVM(t.TempDir()+"/vm.log", "true"); err == nil {
		t.Error("StartVM ran in a lab without a VM gateway")
	}
}

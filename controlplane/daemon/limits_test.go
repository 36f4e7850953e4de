package daemon

import (
	"testing"

	"github.com/cloudsteer/cloudsteer/controlplane/config"
	"github.com/cloudsteer/cloudsteer/dataplane/firewall"
)

func TestPlanDescriptors(t *testing.T) {
	for _, tt := range []struct {
		name          string
		soft          uint64
		asked, dnsTCP int
		want          fdPlan
	}{
		{"defaults fit 20 000", 19999, 8192, 512, fdPlan{Soft: 19999, Reserve: 1999, DNSTCP: 512, Asked: 8192, Flows: 8192}},
		{"too many flows are lowered", 19999, 10000, 512, fdPlan{Soft: 19999, Reserve: 1999, DNSTCP: 512, Asked: 10000, Flows: 8744, Clamped: true}},
		{"off means what fits", 19999, 0, 512, fdPlan{Soft: 19999, Reserve: 1999, DNSTCP: 512, Flows: 8744}},
		{"small limit keeps the 1024 reserve", 4096, 8192, 512, fdPlan{Soft: 4096, Reserve: 1024, DNSTCP: 512, Asked: 8192, Flows: 1280, Clamped: true}},
		{"tiny limit: reserve at most half, a floor of flows", 1024, 8192, 512, fdPlan{Soft: 1024, Reserve: 512, DNSTCP: 512, Asked: 8192, Flows: minFlows, Clamped: true}},
		{"unlimited", 1 << 62, 8192, 512, fdPlan{Soft: 1 << 62, Reserve: maxSoft / 10, DNSTCP: 512, Asked: 8192, Flows: 8192}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := planDescriptors(tt.soft, tt.asked, tt.dnsTCP); got != tt.want {
				t.Errorf("planDescriptors(%d, %d, %d) = %+v, want %+v", tt.soft, tt.asked, tt.dnsTCP, got, tt.want)
			}
			if got := planDescriptors(tt.soft, tt.asked, tt.dnsTCP); tt.soft < maxSoft && 2*got.Flows+got.DNSTCP+got.Reserve > int(tt.soft) && got.Flows != minFlows {
				t.Errorf("plan %+v does not fit %d descriptors", got, tt.soft)
			}
		})
	}
}

func TestRaiseNoFile(t *testing.T) {
	soft, hard, err := raiseNoFile()
	if err != nil {
		t.Fatal(err)
	}
	// Go's runtime raises the soft limit to hard-1; raiseNoFile leaves that.
	if soft+1 < hard {
		t.Errorf("soft limit %d, hard %d: not raised", soft, hard)
	}
}

func TestFirewallLimits(t *testing.T) {
	c, err := config.Parse([]byte("lan_interfaces: [lan0]\ncloud_proxy:\n  url: http://192.0.2.1:8080\ndns:\n  upstreams: [192.0.2.53]\nlimits:\n  dns_tcp_per_client: 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := firewall.Limits{FlowsPerClient: 512, NewFlowsPerSecond: 200, NewFlowsBurst: 400, DNSQueriesPerSecond: 200, DNSQueriesBurst: 400}
	if got := firewallLimits(c.Limits); got != want {
		t.Errorf("firewallLimits = %+v, want %+v", got, want)
	}
}

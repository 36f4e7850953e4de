package bench

import (
	"slices"
	"strings"
	"testing"

	"github.com/cloudsteer/cloudsteer/bench/load"
	"github.com/cloudsteer/cloudsteer/bench/serve"
)

func TestIsSelf(t *testing.T) {
	for _, tc := range []struct {
		self, comm string
		want       bool
	}{
		{"cloudsteer-bench", "cloudsteer-benc", true},
		{"cloudsteer-bench", "cloudsteer", false},
		{"load", "load", true},
		{"cloudsteer-bench", "redsocks", false},
	} {
		if got := isSelf(tc.self, tc.comm); got != tc.want {
			t.Errorf("isSelf(%q, %q) = %v, want %v", tc.self, tc.comm, got, tc.want)
		}
	}
}

func TestExpandOnly(t *testing.T) {
	got := ExpandOnly([]string{OnlyNAT, PCeiling, OnlySquidCloud})
	want := []string{PDirectNAT, PBypassNAT, PCeiling, PSteeredSq, PRedsocksSq, PSquidSq, PCeilingSq}
	if !slices.Equal(got, want) {
		t.Fatalf("ExpandOnly = %q, want %q", got, want)
	}
	for _, p := range Paths {
		if strings.Contains(p.Name, ",") {
			t.Errorf("path %q has a comma: --only splits on commas", p.Name)
		}
	}
}

// TestVisitOrderCoversPaths checks every path is measured by exactly one
// visit, and that the NAT and Squid-cloud paths' visits carry their flags
// (without them the row would measure the plain path under another name).
func TestVisitOrderCoversPaths(t *testing.T) {
	for round := range 2 {
		seen := map[string]visit{}
		for _, v := range visitOrder(round) {
			for _, name := range v.paths {
				if _, dup := seen[name]; dup {
					t.Errorf("round %d: %q in two visits", round, name)
				}
				seen[name] = v
			}
		}
		for _, p := range Paths {
			v, ok := seen[p.Name]
			if !ok {
				t.Errorf("round %d: %q in no visit", round, p.Name)
				continue
			}
			if v.kind != p.Gateway || v.nat != p.NAT || v.squid != p.SquidCloud {
				t.Errorf("round %d: %q visited as %+v, want gateway %s nat %v squid %v", round, p.Name, v, p.Gateway, p.NAT, p.SquidCloud)
			}
		}
	}
}

// TestVerifySquidCloud checks a Squid-cloud sample is refused when the
// lean proxy carried it or the origin saw the gateway (it went direct).
func TestVerifySquidCloud(t *testing.T) {
	p := Paths[slices.IndexFunc(Paths, func(p Path) bool { return p.Name == PSteeredSq })]
	s := load.Spec{Mode: load.ModeConns}
	res := load.Result{Conns: 10}
	ok := serve.Stats{OriginConns: 10, Requests: 10, OriginPeers: map[string]int64{"203.0.113.101": 10}}
	if msg := verify(p, s, res, ok); msg != "" {
		t.Fatalf("a Squid-carried sample: %s", msg)
	}
	lean := ok
	lean.Tunnels = 10
	if verify(p, s, res, lean) == "" {
		t.Error("a sample the lean proxy carried passed")
	}
	direct := ok
	direct.OriginPeers = map[string]int64{"10.20.0.1": 10}
	if verify(p, s, res, direct) == "" {
		t.Error("a sample that went direct passed")
	}
}

// TestVerifyProbeOnBypass checks cloudsteer's health probe (a tunnel
// without X-Forwarded-For) does not void a bypass sample, while a steered
// flow (with X-Forwarded-For) on the bypass path still does.
func TestVerifyProbeOnBypass(t *testing.T) {
	p := Paths[slices.IndexFunc(Paths, func(p Path) bool { return p.Name == PBypassNAT })]
	s := load.Spec{Mode: load.ModeConns}
	res := load.Result{Conns: 10}
	probe := serve.Stats{Tunnels: 1, OriginConns: 11, Requests: 10, OriginPeers: map[string]int64{"10.20.0.1": 10, ProxyAddr.Addr().String(): 1}}
	if msg := verify(p, s, res, probe); msg != "" {
		t.Fatalf("a bypass sample with one probe tunnel: %s", msg)
	}
	steered := probe
	steered.WithXFF = 1
	if verify(p, s, res, steered) == "" {
		t.Error("a bypass sample with a steered flow passed")
	}
}

// TestVisitOrderBinB checks the A/B rows of a second binary are each
// measured right beside their A row, with the second binary and the A
// row's cloud proxy.
func TestVisitOrderBinB(t *testing.T) {
	saved := Paths
	t.Cleanup(func() { Paths = saved })
	Paths = withBinB(Paths, "/tmp/b")
	TestVisitOrderCoversPaths(t)
	for round := range 2 {
		vs := visitOrder(round)
		for _, pair := range [][2]string{{PSteered, PSteeredB}, {PSteeredSq, PSteeredSqB}} {
			a := slices.IndexFunc(vs, func(v visit) bool { return slices.Contains(v.paths, pair[0]) })
			b := slices.IndexFunc(vs, func(v visit) bool { return slices.Contains(v.paths, pair[1]) })
			if a < 0 || b < 0 || (b != a+1 && b != a-1) {
				t.Errorf("round %d: %q at visit %d, %q at %d: want neighbours", round, pair[0], a, pair[1], b)
				continue
			}
			if vs[b].bin != "/tmp/b" || vs[a].bin != "" || vs[b].squid != vs[a].squid {
				t.Errorf("round %d: visits %+v and %+v", round, vs[a], vs[b])
			}
		}
	}
}

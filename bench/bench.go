// Package bench is `make bench`: it builds the namespace lab, runs the
// benchmark internet (bench/serve) in it, and measures the same flows
// through each gateway an admin could pick — plain routing, cloudsteer
// (bypass and steered), redsocks, Squid in intercept mode, an explicit
// proxy client, and the cloud proxy used from the gateway itself — then
// prints a table, writes JSON and a PNG chart, and judges the targets of
// issue 4 from ratios measured in the same run.
package bench

import (
	"net/netip"
	"slices"

	"github.com/cloudsteer/cloudsteer/lab"
)

// Benchmark addresses, all in the lab's internet namespace (on its lo).
var (
	// ProxyAddr is the lean benchmark cloud proxy.
	ProxyAddr = netip.MustParseAddrPort("198.51.100.20:8080")
	// Origins steered by the gateways under test.
	StreamAddr = netip.MustParseAddrPort("203.0.113.100:443")
	HTTPSAddr  = netip.MustParseAddrPort("203.0.113.101:443")
	SinkAddr   = netip.MustParseAddrPort("203.0.113.102:443")
	// Origins on cloudsteer's bypass list (BypassCIDR).
	BypassStreamAddr = netip.MustParseAddrPort("203.0.113.104:443")
	BypassHTTPSAddr  = netip.MustParseAddrPort("203.0.113.105:443")
	BypassCIDR       = netip.MustParsePrefix("203.0.113.104/30")
)

// Names the clients put in SNI and CONNECT, as the benchmark proxy
// resolves them.
const (
	StreamName       = "stream.bench.example"
	HTTPSName        = "tls.bench.example"
	SinkName         = "sink.bench.example"
	BypassStreamName = "bypass-stream.bench.example"
	BypassHTTPSName  = "bypass-tls.bench.example"
)

// Names maps every name the benchmark proxy resolves to its address,
// including the lab site www.example.com (for the lab proxy comparison).
func Names() map[string]netip.Addr {
	m := map[string]netip.Addr{
		StreamName:       StreamAddr.Addr(),
		HTTPSName:        HTTPSAddr.Addr(),
		SinkName:         SinkAddr.Addr(),
		BypassStreamName: BypassStreamAddr.Addr(),
		BypassHTTPSName:  BypassHTTPSAddr.Addr(),
	}
	for _, s := range lab.Sites {
		m[s.Name] = s.V4
	}
	return m
}

// ServiceAddrs are the addresses bench adds to the internet namespace.
func ServiceAddrs() []netip.Addr {
	return []netip.Addr{ProxyAddr.Addr(), StreamAddr.Addr(), HTTPSAddr.Addr(), SinkAddr.Addr(), BypassStreamAddr.Addr(), BypassHTTPSAddr.Addr()}
}

// Path is one way from the client to the origin.
type Path struct {
	Name     string // table row
	Gateway  string // what runs in the gateway namespace: none, cloudsteer, redsocks, squid
	Role     string // the client's namespace
	Explicit bool   // the client sends CONNECT to the cloud proxy itself
	Bypass   bool   // the flow goes to the bypass-listed origins
	ViaProxy bool   // the cloud proxy must carry the flow
	Client   string // the address the cloud proxy must see (ViaProxy) or the origin must see
	// NAT runs the path in an office-router gateway: the lab's
	// Options.NAT ruleset (masquerade, stateful forward filter) loaded
	// in the gateway namespace beside whatever runs there.
	NAT bool
	// SquidCloud chains the path to the lab's Squid (lab.SquidV4:3128,
	// the e2e tests' Squid cloud proxy) instead of the lean benchmark
	// proxy: a real cloud proxy rather than a splice.
	SquidCloud bool
	// Bin, when set, is the directory of the cloudsteer binary the path
	// runs instead of Options.BinDir's (the A/B rows).
	Bin string
}

// SquidCloudAddr is the lab's Squid as a cloud proxy, and SquidCloudAuth
// the Basic credentials it wants (Squid refuses an empty password).
var (
	SquidCloudAddr = netip.AddrPortFrom(lab.SquidV4, lab.SquidPort)
	SquidCloudAuth = lab.EntitlementCode + ":" + lab.SquidCodePassword
)

// Gateway kinds.
const (
	GWNone       = "none"
	GWConntrack  = "conntrack" // nothing but a stateful forward rule, as on any NAT router
	GWCloudsteer = "cloudsteer"
	GWRedsocks   = "redsocks"
	GWSquid      = "squid"
)

// Paths are the seven paths of issue 4, plus direct routing with connection
// tracking on (what the bypass path pays), then (issue 11) direct and
// bypass in an office router with NAT, and steered, redsocks, Squid
// intercept and the ceiling with Squid as the cloud proxy, in table order.
var Paths = []Path{
	{Name: "direct", Gateway: GWNone, Role: lab.RoleLAN, Client: "10.10.0.10"},
	{Name: "direct + conntrack", Gateway: GWConntrack, Role: lab.RoleLAN, Client: "10.10.0.10"},
	{Name: "cloudsteer bypass", Gateway: GWCloudsteer, Role: lab.RoleLAN, Bypass: true, Client: "10.10.0.10"},
	{Name: "cloudsteer steered", Gateway: GWCloudsteer, Role: lab.RoleLAN, ViaProxy: true, Client: "10.20.0.1"},
	{Name: "redsocks", Gateway: GWRedsocks, Role: lab.RoleLAN, ViaProxy: true, Client: "10.20.0.1"},
	{Name: "squid intercept", Gateway: GWSquid, Role: lab.RoleLAN, ViaProxy: true, Client: "10.20.0.1"},
	{Name: "agent-like", Gateway: GWNone, Role: lab.RoleLAN, Explicit: true, ViaProxy: true, Client: "10.10.0.10"},
	{Name: "ceiling", Gateway: GWNone, Role: lab.RoleGW, Explicit: true, ViaProxy: true, Client: "10.20.0.1"},
	// In an office router (NAT): the origin sees the gateway's WAN address.
	{Name: PDirectNAT, Gateway: GWNone, Role: lab.RoleLAN, NAT: true, Client: "10.20.0.1"},
	{Name: PBypassNAT, Gateway: GWCloudsteer, Role: lab.RoleLAN, NAT: true, Bypass: true, Client: "10.20.0.1"},
	// Squid as the cloud proxy: the lean proxy must carry nothing.
	{Name: PSteeredSq, Gateway: GWCloudsteer, Role: lab.RoleLAN, ViaProxy: true, SquidCloud: true},
	{Name: PRedsocksSq, Gateway: GWRedsocks, Role: lab.RoleLAN, ViaProxy: true, SquidCloud: true},
	{Name: PSquidSq, Gateway: GWSquid, Role: lab.RoleLAN, ViaProxy: true, SquidCloud: true},
	{Name: PCeilingSq, Gateway: GWNone, Role: lab.RoleGW, Explicit: true, ViaProxy: true, SquidCloud: true},
}

// Groups of paths --only takes by one name.
const (
	// OnlyNAT is the NAT rows: direct and cloudsteer bypass in an office router.
	OnlyNAT = "nat"
	// OnlySquidCloud is the Squid-as-cloud-proxy rows.
	OnlySquidCloud = "squidcloud"
)

// ExpandOnly replaces the group names OnlyNAT and OnlySquidCloud in an
// --only list with their paths' names.
func ExpandOnly(only []string) []string {
	var out []string
	for _, o := range only {
		switch o {
		case OnlyNAT, OnlySquidCloud:
			for _, p := range Paths {
				if (o == OnlyNAT && p.NAT) || (o == OnlySquidCloud && p.SquidCloud) {
					out = append(out, p.Name)
				}
			}
		default:
			out = append(out, o)
		}
	}
	return out
}

// Path names the verdicts refer to.
const (
	PDirect   = "direct"
	PDirectCT = "direct + conntrack"
	PBypass   = "cloudsteer bypass"
	PSteered  = "cloudsteer steered"
	PRedsocks = "redsocks"
	PSquid    = "squid intercept"
	PAgent    = "agent-like"
	PCeiling  = "ceiling"

	PDirectNAT  = "direct NAT"
	PBypassNAT  = "cloudsteer bypass NAT"
	PSteeredSq  = "steered → Squid"
	PRedsocksSq = "redsocks → Squid"
	PSquidSq    = "squid icpt → Squid"
	PCeilingSq  = "ceiling → Squid"

	// The A/B rows (CLOUDSTEER_BENCH_BIN_B): the same two steered paths
	// with a second cloudsteer binary, measured right beside the first.
	PSteeredB   = "cloudsteer steered B"
	PSteeredSqB = "steered B → Squid"
)

// BinBEnv names a directory holding a second cloudsteer binary: when set,
// every round also measures PSteeredB and PSteeredSqB with it, each right
// after (or, in the backward rounds, before) its A row, for side-by-side
// comparisons of two builds on a noisy machine.
const BinBEnv = "CLOUDSTEER_BENCH_BIN_B"

// withBinB returns paths plus the A/B rows when dir is not empty.
func withBinB(paths []Path, dir string) []Path {
	if dir == "" {
		return paths
	}
	out := slices.Clone(paths)
	for _, p := range paths {
		switch p.Name {
		case PSteered:
			p.Name, p.Bin = PSteeredB, dir
			out = append(out, p)
		case PSteeredSq:
			p.Name, p.Bin = PSteeredSqB, dir
			out = append(out, p)
		}
	}
	return out
}

func (p Path) streamTarget() (netip.AddrPort, string) {
	if p.Bypass {
		return BypassStreamAddr, BypassStreamName
	}
	return StreamAddr, StreamName
}

func (p Path) httpsTarget() (netip.AddrPort, string) {
	if p.Bypass {
		return BypassHTTPSAddr, BypassHTTPSName
	}
	return HTTPSAddr, HTTPSName
}

// Package lab builds cloudsteer's test and demo network from network
// namespaces: a LAN with a dual-stack client (and, with Options.LAN2, a
// second LAN host on a LAN interface of its own), the gateway with LAN and
// WAN interfaces (with Options.NAT a masquerading, stateful office router),
// and an "internet" holding origin web servers, a cloud proxy and cloud DNS
// that behave like the service. No namespace has a route out of the lab.
package lab

import "net/netip"

// Interface names inside the namespaces.
const (
	ClientIf = "eth0" // the LAN client's interface
	GWLANIf  = "lan0" // the gateway's LAN interface
	GWWANIf  = "wan0" // the gateway's WAN interface
	InetIf   = "eth0" // the internet namespace's interface towards the gateway
	// Client2If and GWLAN2If are the second LAN host's link (Options.LAN2).
	Client2If = "eth0"
	GWLAN2If  = "lan1"
)

// Link addresses.
var (
	ClientV4 = netip.MustParsePrefix("10.10.0.10/24")
	ClientV6 = netip.MustParsePrefix("fd00:10::10/64")
	GWLANV4  = netip.MustParsePrefix("10.10.0.1/24")
	GWLANV6  = netip.MustParsePrefix("fd00:10::1/64")
	GWWANV4  = netip.MustParsePrefix("10.20.0.1/24")
	GWWANV6  = netip.MustParsePrefix("fd00:20::1/64")
	InetV4   = netip.MustParsePrefix("10.20.0.2/24")
	InetV6   = netip.MustParsePrefix("fd00:20::2/64")
	// The second LAN host's link (Options.LAN2).
	Client2V4 = netip.MustParsePrefix("10.11.0.10/24")
	Client2V6 = netip.MustParsePrefix("fd00:11::10/64")
	GWLAN2V4  = netip.MustParsePrefix("10.11.0.1/24")
	GWLAN2V6  = netip.MustParsePrefix("fd00:11::1/64")
)

// Service addresses in the internet namespace (on its loopback).
var (
	CloudProxyV4 = netip.MustParseAddr("198.51.100.10") // lab cloud proxy: :8080 http, :8443 https
	CloudProxyV6 = netip.MustParseAddr("2001:db8:51::10")
	SquidV4      = netip.MustParseAddr("198.51.100.11") // Squid as the cloud proxy: :3128
	SquidV6      = netip.MustParseAddr("2001:db8:51::11")
	// CloudProxy2V4/V6 are for a second lab cloud proxy run on its own
	// (`cloudsteer-lab proxy`), the one failover tests kill: :8080, :8443.
	CloudProxy2V4 = netip.MustParseAddr("198.51.100.12")
	CloudProxy2V6 = netip.MustParseAddr("2001:db8:51::12")
	CloudDNSV4    = netip.MustParseAddr("198.51.100.53") // cloud resolver: :53, DoT tcp/853, DoH tcp+udp/443, DoQ udp/853 (servers.CloudDNSName)
	CloudDNSV6    = netip.MustParseAddr("2001:db8:51::53")
	AuthDNSV4     = netip.MustParseAddr("198.51.100.54") // authoritative for the lab names: :53
	AuthDNSV6     = netip.MustParseAddr("2001:db8:51::54")
	// NobodyDNSV4 is a resolver address nobody runs: LAN DNS sent there must
	// still be answered, by cloudsteer.
	NobodyDNSV4 = netip.MustParseAddr("192.0.2.53")
	NobodyDNSV6 = netip.MustParseAddr("2001:db8:2::53")
)

// Ports of the lab services.
const (
	CloudProxyHTTPPort  = 8080
	CloudProxyHTTPSPort = 8443
	SquidPort           = 3128
)

// Site is an origin web server in the lab: it answers HTTP on :80 and HTTPS
// (a certificate from the lab CA) on :443, and QUIC on UDP :443.
type Site struct {
	Name     string
	V4, V6   netip.Addr
	Category string // the cloud proxy blocks category "Sports"
}

// Sites are the lab's origin names, each on its own addresses.
var Sites = []Site{
	{Name: "www.example.com", V4: netip.MustParseAddr("203.0.113.10"), V6: netip.MustParseAddr("2001:db8:113::10")},
	{Name: "news.example.com", V4: netip.MustParseAddr("203.0.113.11"), V6: netip.MustParseAddr("2001:db8:113::11")},
	{Name: "scores.sports.example", V4: netip.MustParseAddr("203.0.113.20"), V6: netip.MustParseAddr("2001:db8:113::20"), Category: "Sports"},
	{Name: "gw1.akaetp.net", V4: netip.MustParseAddr("203.0.113.30"), V6: netip.MustParseAddr("2001:db8:113::30")},
	{Name: "bank.example", V4: netip.MustParseAddr("203.0.113.40"), V6: netip.MustParseAddr("2001:db8:113::40")},
	// www.akamai.com is cloudsteer's default health probe target
	// (config.DefaultProbeTarget): a gateway whose config names none, as
	// the appliance image's does, probes it through the cloud proxy.
	{Name: "www.akamai.com", V4: netip.MustParseAddr("203.0.113.50"), V6: netip.MustParseAddr("2001:db8:113::50")},
}

// SiteByName returns the lab site with that name.
func SiteByName(name string) (Site, bool) {
	for _, s := range Sites {
		if s.Name == name {
			return s, true
		}
	}
	return Site{}, false
}

// Tenant credentials the lab cloud proxy and Squid accept.
const (
	EntitlementCode = "3315471d-b831-48ed-a621-17042a74a8e3"
	// ChainUser and ChainPassword are the alternative proxy-chaining
	// credentials (user/password instead of the code as user name).
	ChainUser     = "branch01"
	ChainPassword = "s3cret-chain-pw"
)

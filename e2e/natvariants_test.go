package e2e

import (
	"net/netip"
	"testing"

	"github.com/cloudsteer/cloudsteer/lab"
)

// firewallFor is the lab gateway ruleset of an eachNAT variant.
func firewallFor(nat bool) lab.Firewall {
	if nat {
		return lab.FirewallRouter
	}
	return lab.FirewallNone
}

// eachNAT runs f twice, as subtests "routed" (the gateway routes the LAN's
// addresses as they are, lab.FirewallNone) and "nat" (the gateway
// namespace is also a masquerading office router, lab.FirewallRouter, the
// lab's default): issue 9 was found behind such a gateway, and cloudsteer
// must hold in both.
func eachNAT(t *testing.T, f func(t *testing.T, nat bool)) {
	for _, nat := range []bool{false, true} {
		name := "routed"
		if nat {
			name = "nat"
		}
		t.Run(name, func(t *testing.T) { f(t, nat) })
	}
}

// seenAs is lab.SeenAs for a textual address: what an origin sees as the
// source of a flow the gateway routes (not proxies) from LAN address a.
func (e *env) seenAs(a string) string {
	return e.lab.SeenAs(netip.MustParseAddr(a)).String()
}

package config

import (
	"fmt"
	"math/big"
	"net/netip"
	"slices"
)

// Broad-bypass limits: the union of the enabled bypass prefixes may take
// at most a /8's worth of IPv4 addresses and a /16's worth of IPv6
// addresses out of inspection unless forced (bypass.allow_broad_cidrs in
// the config file, force in the API).
const (
	MaxBypassBitsV4 = 24  // 2^24 addresses: one /8
	MaxBypassBitsV6 = 112 // 2^112 addresses: one /16
)

// BroadBypass returns a sentence saying why the union of prefixes takes
// too much of the internet out of inspection, or "" when it does not.
// Prefixes either nest or are disjoint, so the union's size is the sum of
// the sizes of the prefixes no other one contains: 0.0.0.0/1 +
// 128.0.0.0/1 count as all of IPv4, two /8s as twice the limit.
func BroadBypass(prefixes []netip.Prefix) string {
	var v4, v6 []netip.Prefix
	for _, p := range prefixes {
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		p = p.Masked()
		if p.Addr().Is4() {
			v4 = append(v4, p)
		} else {
			v6 = append(v6, p)
		}
	}
	if n := unionSize(v4, 32); n.Cmp(new(big.Int).Lsh(big.NewInt(1), MaxBypassBitsV4)) > 0 {
		return fmt.Sprintf("the bypass CIDRs together cover %s IPv4 addresses, more than a /8 (%d): that much of the internet would go uninspected",
			n, 1<<MaxBypassBitsV4)
	}
	if n := unionSize(v6, 128); n.Cmp(new(big.Int).Lsh(big.NewInt(1), MaxBypassBitsV6)) > 0 {
		return fmt.Sprintf("the bypass CIDRs together cover more than a /16 of IPv6 addresses (2^%d): that much of the internet would go uninspected",
			n.BitLen()-1)
	}
	return ""
}

func unionSize(ps []netip.Prefix, width int) *big.Int {
	// Shortest first: a prefix contained in an earlier one adds nothing.
	slices.SortFunc(ps, func(a, b netip.Prefix) int { return a.Bits() - b.Bits() })
	total := new(big.Int)
	var kept []netip.Prefix
	for _, p := range ps {
		covered := false
		for _, k := range kept {
			if k.Contains(p.Addr()) {
				covered = true
				break
			}
		}
		if covered {
			continue
		}
		kept = append(kept, p)
		total.Add(total, new(big.Int).Lsh(big.NewInt(1), uint(width-p.Bits())))
	}
	return total
}

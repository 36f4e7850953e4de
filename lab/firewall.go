package lab

import (
	"context"
	"fmt"
	"strings"
)

// Firewall names a ruleset the lab loads into the gateway namespace, the
// router's own firewall that cloudsteer runs beside (Options.Firewall).
type Firewall string

// The lab's gateway rulesets.
const (
	// FirewallRouter is the default: a small office router (table inet
	// RouterTable), masquerading IPv4 to the WAN, stateful forwarding.
	FirewallRouter Firewall = "router"
	// FirewallNone loads nothing: the gateway routes the LAN's addresses
	// as they are.
	FirewallNone Firewall = "none"
	// FirewallFW4 is a ruleset like OpenWrt's fw4 (table inet FW4Table):
	// input and forward policy drop, lan and wan zones by interface,
	// "ct status dnat accept" in the zone input chains (fw4's rule for
	// port forwards), established/related accepted, masquerade on wan.
	FirewallFW4 Firewall = "fw4"
	// FirewallDebian is FirewallRouter plus a Debian-style nftables.conf
	// (table inet DebianTable) whose input chain has policy drop and
	// accepts only lo, established/related and IPv6 neighbour discovery:
	// it drops what cloudsteer redirects to its listeners.
	FirewallDebian Firewall = "debian"
)

// Firewalls lists every lab ruleset.
var Firewalls = []Firewall{FirewallRouter, FirewallNone, FirewallFW4, FirewallDebian}

// Table names of the lab rulesets (all family inet).
const (
	RouterTable = "labrouter"
	FW4Table    = "fw4"
	DebianTable = "filter"
)

// NAT reports whether the ruleset masquerades IPv4 leaving the WAN.
func (f Firewall) NAT() bool { return f != FirewallNone }

func (f Firewall) valid() error {
	for _, k := range Firewalls {
		if f == k {
			return nil
		}
	}
	return fmt.Errorf("lab firewall %q: want one of %v", f, Firewalls)
}

// ruleset returns the nft script of f for a gateway with those LAN
// interfaces ("" for FirewallNone).
func (f Firewall) ruleset(lanIfs []string) string {
	switch f {
	case FirewallRouter, "":
		return routerRuleset(lanIfs)
	case FirewallFW4:
		return fw4Ruleset(lanIfs)
	case FirewallDebian:
		return routerRuleset(lanIfs) + debianRuleset()
	}
	return ""
}

// LoadFirewall loads the ruleset f into the running lab's gateway
// namespace, as an admin (or a boot script) loading another firewall
// while cloudsteer runs would; it does not flush what is there. Lab.NAT
// and SeenAs follow f from then on.
func (l *Lab) LoadFirewall(ctx context.Context, f Firewall) error {
	if err := f.valid(); err != nil {
		return err
	}
	if rs := f.ruleset(l.LANInterfaces()); rs != "" {
		if err := runStdin(ctx, rs, "ip", "netns", "exec", l.NS(RoleGW), "nft", "-f", "-"); err != nil {
			return fmt.Errorf("load %s firewall: %w", f, err)
		}
	}
	l.mu.Lock()
	l.fw = f
	l.mu.Unlock()
	return nil
}

// quotedList renders names as an nft set body: "a", "b".
func quotedList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}

// routerRuleset returns the office router's nftables table: IPv4 leaving
// the WAN interface is masqueraded (as a small office router does, for
// every source), and forwarding is stateful with policy drop: replies and
// related ICMP pass, new flows only from a LAN interface to the WAN.
// Traffic to and from the gateway itself (cloudsteer's listeners and its
// dials) is not forwarded and so not filtered here.
func routerRuleset(lanIfs []string) string {
	return fmt.Sprintf(`table inet %[1]s {
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		ct state invalid drop
		iifname { %[2]s } oifname %[3]q accept
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname %[3]q meta nfproto ipv4 masquerade
	}
}
`, RouterTable, quotedList(lanIfs), GWWANIf)
}

// fw4Ruleset is an OpenWrt fw4 table as `fw4 print` shows it for the
// default zones (lan: input/output/forward accept; wan: input and
// forward reject, masquerade), trimmed of helpers and MSS clamping. Like
// fw4's, the zone input chains accept "ct status dnat" (port forwards),
// which is what lets cloudsteer's redirects in.
func fw4Ruleset(lanIfs []string) string {
	return fmt.Sprintf(`table inet %[1]s {
	chain input {
		type filter hook input priority filter; policy drop;
		iif "lo" accept comment "!fw4: Accept traffic from loopback"
		ct state vmap { established : accept, related : accept } comment "!fw4: Handle inbound flows"
		tcp flags & (fin | syn | rst | ack) == syn jump syn_flood comment "!fw4: Rate limit TCP syn packets"
		iifname { %[2]s } jump input_lan comment "!fw4: Handle lan IPv4/IPv6 input traffic"
		iifname %[3]q jump input_wan comment "!fw4: Handle wan IPv4/IPv6 input traffic"
		jump handle_reject
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state vmap { established : accept, related : accept } comment "!fw4: Handle forwarded flows"
		iifname { %[2]s } jump forward_lan comment "!fw4: Handle lan IPv4/IPv6 forward traffic"
		iifname %[3]q jump forward_wan comment "!fw4: Handle wan IPv4/IPv6 forward traffic"
		jump handle_reject
	}
	chain output {
		type filter hook output priority filter; policy accept;
		oif "lo" accept comment "!fw4: Accept traffic towards loopback"
		ct state vmap { established : accept, related : accept } comment "!fw4: Handle outbound flows"
		oifname { %[2]s } jump output_lan comment "!fw4: Handle lan IPv4/IPv6 output traffic"
		oifname %[3]q jump output_wan comment "!fw4: Handle wan IPv4/IPv6 output traffic"
	}
	chain handle_reject {
		meta l4proto tcp reject with tcp reset comment "!fw4: Reject TCP traffic"
		reject comment "!fw4: Reject any other traffic"
	}
	chain syn_flood {
		limit rate 25/second burst 50 packets return comment "!fw4: Accept SYN packets below rate-limit"
		drop comment "!fw4: Drop excess packets"
	}
	chain input_lan {
		ct status dnat accept comment "!fw4: Accept port redirections"
		jump accept_from_lan
	}
	chain output_lan {
		jump accept_to_lan
	}
	chain forward_lan {
		jump accept_to_wan comment "!fw4: Accept lan to wan forwarding"
		ct status dnat accept comment "!fw4: Accept port forwards"
		jump accept_to_lan
	}
	chain input_wan {
		meta nfproto ipv4 udp dport 68 counter accept comment "!fw4: Allow-DHCP-Renew"
		icmp type echo-request counter accept comment "!fw4: Allow-Ping"
		meta nfproto ipv6 icmpv6 type { destination-unreachable, time-exceeded, echo-request, echo-reply, nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-report, parameter-problem, packet-too-big } limit rate 1000/second counter accept comment "!fw4: Allow-ICMPv6-Input"
		ct status dnat accept comment "!fw4: Accept port redirections"
		jump reject_from_wan
	}
	chain output_wan {
		jump accept_to_wan
	}
	chain forward_wan {
		meta nfproto ipv6 icmpv6 type { destination-unreachable, time-exceeded, echo-request, echo-reply, packet-too-big, parameter-problem } limit rate 1000/second counter accept comment "!fw4: Allow-ICMPv6-Forward"
		ct status dnat accept comment "!fw4: Accept port forwards"
		jump reject_to_wan
	}
	chain accept_from_lan {
		iifname { %[2]s } counter accept comment "!fw4: accept lan IPv4/IPv6 traffic"
	}
	chain accept_to_lan {
		oifname { %[2]s } counter accept comment "!fw4: accept lan IPv4/IPv6 traffic"
	}
	chain accept_to_wan {
		meta nfproto ipv4 oifname %[3]q ct state invalid counter drop comment "!fw4: Prevent NAT leakage"
		oifname %[3]q counter accept comment "!fw4: accept wan IPv4/IPv6 traffic"
	}
	chain reject_from_wan {
		iifname %[3]q counter jump handle_reject comment "!fw4: reject wan IPv4/IPv6 traffic"
	}
	chain reject_to_wan {
		oifname %[3]q counter jump handle_reject comment "!fw4: reject wan IPv4/IPv6 traffic"
	}
	chain dstnat {
		type nat hook prerouting priority dstnat; policy accept;
	}
	chain srcnat {
		type nat hook postrouting priority srcnat; policy accept;
		oifname %[3]q jump srcnat_wan comment "!fw4: Handle wan IPv4/IPv6 srcnat traffic"
	}
	chain srcnat_wan {
		meta nfproto ipv4 masquerade comment "!fw4: Masquerade IPv4 wan traffic"
	}
}
`, FW4Table, quotedList(lanIfs), GWWANIf)
}

// debianRuleset is a Debian-style /etc/nftables.conf hardened the usual
// way: input policy drop, accepting only lo, established/related and the
// IPv6 neighbour discovery any IPv6 host needs. Nothing accepts a new
// flow to a local port, so cloudsteer's redirected flows are dropped.
func debianRuleset() string {
	return fmt.Sprintf(`table inet %s {
	chain input {
		type filter hook input priority filter; policy drop;
		iif "lo" accept
		ct state established,related accept
		meta nfproto ipv6 icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } accept
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
	}
	chain output {
		type filter hook output priority filter; policy accept;
	}
}
`, DebianTable)
}

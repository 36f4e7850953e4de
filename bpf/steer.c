//go:build ignore

// steer.c is cloudsteer's TCX ingress classifier for LAN interfaces.
//
// For every IPv4/IPv6 packet it decides whether the flow is one the gateway
// steers (TCP 80, TCP 443, TCP+UDP 53, UDP 443), looks the destination up in
// the bypass LPM tries, checks the pause switch, and writes a mark that the
// nftables table "cloudsteer" acts on. It counts packets and bytes per
// verdict.
//
// Web TCP flows (80, 443) that start bypassed or paused are remembered from
// their SYN in an LRU map; every packet of such a flow gets MARK_UNTRACK,
// whatever the bypass list or the pause switch say later, so nftables can
// keep the whole flow out of connection tracking (dataplane/firewall,
// untrack.go). A flow that started steered is never remembered: it stays
// tracked, and conntrack keeps its redirect, even if its destination is
// bypassed later. It never drops and never redirects: it always returns TCX_NEXT so
// the next TCX program (or the stack) decides, which keeps the gateway
// fail-open when cloudsteer is gone.
//
// The second program, forward_ingress, goes on the WAN interfaces. While the
// fast path is on (Go turns it on only while nothing but cloudsteer uses
// netfilter or IPsec in the namespace, when the stack would do no more
// than route the packet), both programs forward the TCP that cloudsteer
// does not steer themselves: FIB lookup, TTL or hop limit down by one,
// new MAC header, redirect to the egress interface, skipping the IP stack.
// Anything the FIB cannot fully resolve (no neighbour entry yet, MTU
// exceeded, not forwarded, TTL about to expire) goes to the stack as before.
//
// The verdicts and marks below are the single source for Go: bpf2go exports
// enum verdict and enum mark with -type (see dataplane/steer/gen.go).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char __license[] SEC("license") = "Dual MIT/GPL";

// TCX_NEXT is -1 in linux/bpf.h since 6.6 (same value as TC_ACT_UNSPEC);
// Debian 12's UAPI headers are 6.1, so the value is spelled out here under a
// name that cannot clash with newer headers.
#define STEER_TCX_NEXT (-1)

// verdict is what the classifier decided; it is also the index into the
// counters map, so the values must stay dense and start at 0.
enum verdict {
	VERDICT_OTHER = 0,       // not a steered protocol/port, not IP, or unparsable
	VERDICT_BYPASS = 1,      // steered class, destination in the bypass map
	VERDICT_HTTP = 2,        // TCP 80
	VERDICT_TLS = 3,         // TCP 443
	VERDICT_DNS = 4,         // UDP or TCP 53
	VERDICT_QUIC_REJECT = 5, // UDP 443
	VERDICT_PAUSED = 6,      // steered class while the pause switch is on
	VERDICT_DOT_REJECT = 7,  // TCP or UDP 853 (DNS over TLS or QUIC)
	VERDICT_MAX = 8,         // number of verdicts (size of the counters map)
};

// mark is the skb->mark each verdict writes (see docs/design.md). Verdicts
// other and paused leave the mark untouched (MARK_NONE).
enum mark {
	MARK_NONE = 0,
	MARK_BYPASS = 0x0c570001,
	MARK_HTTP = 0x0c570002,
	MARK_TLS = 0x0c570003,
	MARK_DNS = 0x0c570004,
	MARK_QUIC = 0x0c570005,
	MARK_UNTRACK = 0x0c570006, // web TCP flow that started bypassed or paused
	MARK_DOT = 0x0c570007,
};

// counter is one CPU's packet and byte count for one verdict.
struct counter {
	__u64 packets;
	__u64 bytes;
};

// settings is the single entry of the settings map, written by Go.
struct settings {
	__u32 paused;   // non-zero: web classes (not DNS) get VERDICT_PAUSED and no mark
	__u32 fastpath; // non-zero: unsteered TCP is forwarded around the stack
};

// Indexes of the forwarded map: which side the fast path took a packet from.
enum fastpath_dir {
	FASTPATH_FROM_LAN = 0,
	FASTPATH_FROM_WAN = 1,
	FASTPATH_DIRS = 2,
};

// LPM trie keys: prefixlen first (the kernel's struct bpf_lpm_trie_key
// layout), then the address in network byte order.
struct bypass_v4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct bypass_v6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, VERDICT_MAX);
	__type(key, __u32);
	__type(value, struct counter);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct settings);
} settings SEC(".maps");

// forwarded counts the packets the fast path forwarded, per side.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FASTPATH_DIRS);
	__type(key, __u32);
	__type(value, struct counter);
} forwarded SEC(".maps");

#include "owner_lease.h"

// LPM tries must be created with BPF_F_NO_PREALLOC.
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct bypass_v4_key);
	__type(value, __u8);
} bypass_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct bypass_v6_key);
	__type(value, __u8);
} bypass_v6 SEC(".maps");

// flow_key names a TCP flow as the LAN client sends it.
struct flow_key {
	__u8 saddr[16]; // IPv4 in the first 4 bytes
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 is_v6;
	__u8 pad[3];
};

// untracked_flows holds the web TCP flows that started bypassed or paused,
// with the verdict they started with. LRU: when full, the oldest flow is
// forgotten, its next packets are tracked from mid-stream (conntrack picks
// them up and the SYN-only redirects leave them alone).
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct flow_key);
	__type(value, __u32);
} untracked_flows SEC(".maps");

// Upper bound of IPv6 extension headers walked before giving up; the
// verifier needs a constant bound on the loop.
#define IPV6_MAX_EXT_HDRS 6

#define IP_OFFSET_MASK 0x1fff  // IPv4 fragment offset bits of frag_off
#define IP6_OFFSET_MASK 0xfff8 // IPv6 fragment offset bits of frag_off

#define VLAN_HLEN 4

#define AF_INET 2
#define AF_INET6 10
#define PACKET_HOST 0
#define IP_MF 0x2000

#define TCP_FLAGS_OFF 13 // byte of the TCP header holding the flags
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_ACK 0x10

// packet is what the parser found: where the IP and L4 headers start,
// which L4 protocol it is, and the addresses (4 or 16 bytes used).
struct packet {
	__u32 l3_off;
	__u32 l4_off;
	__u8 l4_proto;
	__u8 is_v6;
	__u8 saddr[16];
	__u8 daddr[16];
};

// parse_ipv4 fills p from the IPv4 header at off. It returns 0 when the
// packet carries an L4 header we can read, -1 otherwise (too short, bad
// header length, or a non-first fragment whose payload has no ports).
static __always_inline int parse_ipv4(struct __sk_buff *skb, __u32 off, struct packet *p)
{
	struct iphdr ip;

	// bpf_skb_load_bytes instead of direct packet access: it also works
	// when the headers are not in the skb's linear part, and it fails
	// cleanly on a truncated packet.
	if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0)
		return -1;
	if (ip.version != 4 || ip.ihl < 5)
		return -1;
	if (bpf_ntohs(ip.frag_off) & IP_OFFSET_MASK)
		return -1;

	p->l4_off = off + ip.ihl * 4;
	p->l4_proto = ip.protocol;
	p->is_v6 = 0;
	__builtin_memcpy(p->saddr, &ip.saddr, 4);
	__builtin_memcpy(p->daddr, &ip.daddr, 4);
	return 0;
}

// ipv6_ext_hdr is the common start of hop-by-hop, routing and
// destination-options headers (and the fragment header's first byte).
struct ipv6_ext_hdr {
	__u8 nexthdr;
	__u8 hdrlen;
	__be16 frag_off; // only meaningful in a fragment header
};

// parse_ipv6 fills p from the IPv6 header at off, walking at most
// IPV6_MAX_EXT_HDRS extension headers. It returns 0 when an L4 header
// follows, -1 otherwise.
static __always_inline int parse_ipv6(struct __sk_buff *skb, __u32 off, struct packet *p)
{
	struct ipv6hdr ip6;

	if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)) < 0)
		return -1;
	if (ip6.version != 6)
		return -1;

	__builtin_memcpy(p->saddr, &ip6.saddr, 16);
	__builtin_memcpy(p->daddr, &ip6.daddr, 16);
	p->is_v6 = 1;

	__u8 nexthdr = ip6.nexthdr;
	off += sizeof(ip6);

	for (int i = 0; i < IPV6_MAX_EXT_HDRS; i++) {
		struct ipv6_ext_hdr ext;

		if (nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
		    nexthdr == IPPROTO_DSTOPTS) {
			if (bpf_skb_load_bytes(skb, off, &ext, 2) < 0)
				return -1;
			nexthdr = ext.nexthdr;
			// Length in 8-octet units, not counting the first 8.
			off += ((__u32)ext.hdrlen + 1) * 8;
		} else if (nexthdr == IPPROTO_FRAGMENT) {
			if (bpf_skb_load_bytes(skb, off, &ext, sizeof(ext)) < 0)
				return -1;
			// Only the first fragment (offset 0) carries the ports.
			if (bpf_ntohs(ext.frag_off) & IP6_OFFSET_MASK)
				return -1;
			nexthdr = ext.nexthdr;
			off += 8; // fixed size
		} else {
			break;
		}
	}
	// More extension headers than we walk (or AH/ESP, which we do not
	// parse): not classified.
	if (nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
	    nexthdr == IPPROTO_DSTOPTS || nexthdr == IPPROTO_FRAGMENT)
		return -1;

	p->l4_off = off;
	p->l4_proto = nexthdr;
	return 0;
}

// classify maps an L4 protocol and destination port to a verdict.
static __always_inline enum verdict classify(__u8 proto, __u16 dport)
{
	if (proto == IPPROTO_TCP) {
		switch (dport) {
		case 80:
			return VERDICT_HTTP;
		case 443:
			return VERDICT_TLS;
		case 53:
			return VERDICT_DNS;
		case 853:
			return VERDICT_DOT_REJECT;
		}
	} else if (proto == IPPROTO_UDP) {
		switch (dport) {
		case 53:
			return VERDICT_DNS;
		case 443:
			return VERDICT_QUIC_REJECT;
		case 853:
			return VERDICT_DOT_REJECT;
		}
	}
	return VERDICT_OTHER;
}

// mark_of is the mark a steered verdict writes. It is a real BPF subprogram
// (__noinline) so that its prototype, and with it enum mark, lands in the
// object's BTF: bpf2go -type mark needs the type there.
static __noinline enum mark mark_of(enum verdict v)
{
	switch (v) {
	case VERDICT_BYPASS:
		return MARK_BYPASS;
	case VERDICT_HTTP:
		return MARK_HTTP;
	case VERDICT_TLS:
		return MARK_TLS;
	case VERDICT_DNS:
		return MARK_DNS;
	case VERDICT_QUIC_REJECT:
		return MARK_QUIC;
	case VERDICT_DOT_REJECT:
		return MARK_DOT;
	default:
		return MARK_NONE;
	}
}

static __always_inline int bypassed(struct packet *p)
{
	if (p->is_v6) {
		struct bypass_v6_key k = {.prefixlen = 128};
		__builtin_memcpy(k.addr, p->daddr, 16);
		return bpf_map_lookup_elem(&bypass_v6, &k) != NULL;
	}
	struct bypass_v4_key k = {.prefixlen = 32};
	__builtin_memcpy(k.addr, p->daddr, 4);
	return bpf_map_lookup_elem(&bypass_v4, &k) != NULL;
}

static __always_inline int paused(void)
{
	__u32 zero = 0;
	struct settings *s = bpf_map_lookup_elem(&settings, &zero);

	// The verifier needs the NULL check even though an array map always
	// has entry 0.
	return s && s->paused;
}

// fastpath_on is the fast path switch, honoured only while the owner's
// lease holds: forwarding around the stack must stop when nobody watches
// for other rulesets any more.
static __always_inline int fastpath_on(void)
{
	__u32 zero = 0;
	struct settings *s = bpf_map_lookup_elem(&settings, &zero);

	return s && s->fastpath && owner_alive();
}

// fast_forward forwards the TCP packet whose IP header (v6 when is_v6) is
// at l3_off, right behind an Ethernet header, as the stack would, and
// returns TC_ACT_REDIRECT; it returns STEER_TCX_NEXT when the stack has to
// handle it: not TCP right behind the IP header (IPv4 options, IPv6
// extension headers), fragments, TTL or hop limit of 1 or less, link-local
// or multicast IPv6, not a packet for this host, no FIB result with a
// known neighbour, the MTU of the egress interface exceeded (the FIB lookup
// checks the skb, GSO included, against it), or egress on the interface it
// came in on (the stack may owe the sender a redirect). It reads the IP
// header once; callers need not have parsed it.
static __always_inline int fast_forward(struct __sk_buff *skb, __u32 l3_off, __u8 is_v6, enum fastpath_dir dir)
{
	struct bpf_fib_lookup fib = {};
	__be16 ports[2];
	__u32 l4_off;
	__u8 hops;      // TTL or hop limit as it came in
	__be16 ttl_old; // IPv4: the TTL and protocol word of the checksum

	if (l3_off != sizeof(struct ethhdr) || skb->pkt_type != PACKET_HOST)
		return STEER_TCX_NEXT;
	if (is_v6) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, l3_off, &ip6, sizeof(ip6)) < 0)
			return STEER_TCX_NEXT;
		if (ip6.version != 6 || ip6.nexthdr != IPPROTO_TCP || ip6.hop_limit <= 1)
			return STEER_TCX_NEXT;
		// fe80::/10 and ff00::/8 are never forwarded this way.
		if ((ip6.saddr.in6_u.u6_addr8[0] == 0xfe && (ip6.saddr.in6_u.u6_addr8[1] & 0xc0) == 0x80) ||
		    (ip6.daddr.in6_u.u6_addr8[0] == 0xfe && (ip6.daddr.in6_u.u6_addr8[1] & 0xc0) == 0x80) ||
		    ip6.daddr.in6_u.u6_addr8[0] == 0xff)
			return STEER_TCX_NEXT;
		fib.family = AF_INET6;
		fib.flowinfo = *(__be32 *)&ip6 & bpf_htonl(0x0fffffff);
		__builtin_memcpy(fib.ipv6_src, &ip6.saddr, 16);
		__builtin_memcpy(fib.ipv6_dst, &ip6.daddr, 16);
		hops = ip6.hop_limit;
		l4_off = l3_off + sizeof(ip6);
	} else {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, l3_off, &ip, sizeof(ip)) < 0)
			return STEER_TCX_NEXT;
		if (ip.version != 4 || ip.ihl != 5 || ip.protocol != IPPROTO_TCP || ip.ttl <= 1 ||
		    (bpf_ntohs(ip.frag_off) & (IP_MF | IP_OFFSET_MASK)))
			return STEER_TCX_NEXT;
		fib.family = AF_INET;
		fib.tos = ip.tos;
		fib.ipv4_src = ip.saddr;
		fib.ipv4_dst = ip.daddr;
		hops = ip.ttl;
		ttl_old = bpf_htons((__u16)ip.ttl << 8 | ip.protocol);
		l4_off = l3_off + sizeof(ip);
	}
	if (bpf_skb_load_bytes(skb, l4_off, ports, sizeof(ports)) < 0)
		return STEER_TCX_NEXT;
	fib.l4_protocol = IPPROTO_TCP;
	fib.sport = ports[0];
	fib.dport = ports[1];
	fib.ifindex = skb->ingress_ifindex;

	// tot_len 0: the lookup checks the skb itself against the egress MTU.
	if (bpf_fib_lookup(skb, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		return STEER_TCX_NEXT;
	if (fib.ifindex == skb->ingress_ifindex)
		return STEER_TCX_NEXT;

	hops--;
	if (is_v6) {
		if (bpf_skb_store_bytes(skb, l3_off + offsetof(struct ipv6hdr, hop_limit), &hops, 1, 0) < 0)
			return STEER_TCX_NEXT;
	} else {
		// TTL and protocol share one 16-bit word of the checksum.
		__be16 ttl_new = bpf_htons(bpf_ntohs(ttl_old) - 0x0100);
		if (bpf_l3_csum_replace(skb, l3_off + offsetof(struct iphdr, check), ttl_old, ttl_new, 2) < 0)
			return STEER_TCX_NEXT;
		if (bpf_skb_store_bytes(skb, l3_off + offsetof(struct iphdr, ttl), &hops, 1, 0) < 0)
			return STEER_TCX_NEXT;
	}
	if (bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_dest), fib.dmac, ETH_ALEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_source), fib.smac, ETH_ALEN, 0) < 0)
		return STEER_TCX_NEXT;

	__u32 key = dir;
	struct counter *c = bpf_map_lookup_elem(&forwarded, &key);
	if (c) {
		c->packets++;
		c->bytes += skb->len;
	}
	return bpf_redirect(fib.ifindex, 0);
}

static __always_inline void count(struct __sk_buff *skb, enum verdict v)
{
	__u32 key = v;
	struct counter *c = bpf_map_lookup_elem(&counters, &key);

	// Per-CPU values: no other CPU writes this slot, so plain adds are safe.
	if (c) {
		c->packets++;
		c->bytes += skb->len;
	}
}

// remember_flow applies the untracked-flow memory to a web TCP packet whose
// verdict is v. A SYN (without ACK) starts a flow: remembered when v is
// bypass or paused, forgotten otherwise (the 4-tuple may be reused). Any
// other packet of a remembered flow gets the verdict the flow started
// with. *untrack is set for packets of remembered flows.
static __always_inline enum verdict remember_flow(struct __sk_buff *skb, struct packet *p,
						  __be16 ports[2], enum verdict v, int *untrack)
{
	__u8 flags;

	if (bpf_skb_load_bytes(skb, p->l4_off + TCP_FLAGS_OFF, &flags, 1) < 0)
		return v;

	struct flow_key k = {.sport = ports[0], .dport = ports[1], .is_v6 = p->is_v6};
	__builtin_memcpy(k.saddr, p->saddr, 16);
	__builtin_memcpy(k.daddr, p->daddr, 16);

	if ((flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN) {
		if (v == VERDICT_BYPASS || v == VERDICT_PAUSED) {
			__u32 started = v;
			bpf_map_update_elem(&untracked_flows, &k, &started, BPF_ANY);
			*untrack = 1;
		} else {
			bpf_map_delete_elem(&untracked_flows, &k);
		}
		return v;
	}
	__u32 *started = bpf_map_lookup_elem(&untracked_flows, &k);
	if (!started)
		return v;
	*untrack = 1;
	return *started == VERDICT_PAUSED ? VERDICT_PAUSED : VERDICT_BYPASS;
}

// decide classifies the packet and fills p; *untrack is set for packets of
// flows that started bypassed or paused (and, as they are unsteered too,
// *fast for those and for TCP to other ports).
static __always_inline enum verdict decide(struct __sk_buff *skb, struct packet *pp, int *untrack, int *fast)
{
	struct packet p = {};
	__u32 off = 0;
	__be16 proto;

	// At TC ingress skb->data starts at the Ethernet header.
	if (bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, sizeof(proto)) < 0)
		return VERDICT_OTHER;
	off = sizeof(struct ethhdr);

	// One 802.1Q/802.1ad tag. The stack usually strips the tag into
	// skb->vlan_tci before TC ingress, but an in-band tag is still parsed.
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		if (bpf_skb_load_bytes(skb, off + 2, &proto, sizeof(proto)) < 0)
			return VERDICT_OTHER;
		off += VLAN_HLEN;
	}
	p.l3_off = off;

	if (proto == bpf_htons(ETH_P_IP)) {
		if (parse_ipv4(skb, off, &p) < 0)
			return VERDICT_OTHER;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		if (parse_ipv6(skb, off, &p) < 0)
			return VERDICT_OTHER;
	} else {
		return VERDICT_OTHER;
	}

	if (p.l4_proto != IPPROTO_TCP && p.l4_proto != IPPROTO_UDP)
		return VERDICT_OTHER;

	// Source and destination port are the first 4 bytes of both TCP and
	// UDP; a packet cut short before them is not classified.
	__be16 ports[2];
	if (bpf_skb_load_bytes(skb, p.l4_off, ports, sizeof(ports)) < 0)
		return VERDICT_OTHER;

	enum verdict class = classify(p.l4_proto, bpf_ntohs(ports[1]));
	enum verdict v = class;
	*pp = p;
	if (class == VERDICT_OTHER) {
		*fast = p.l4_proto == IPPROTO_TCP;
		return class;
	}
	if (bypassed(&p))
		v = VERDICT_BYPASS;
	// Pausing protection lets web traffic (HTTP, HTTPS, QUIC) flow
	// directly; DNS stays with the gateway's resolver, because LAN clients
	// that use the gateway as their DNS server would otherwise get no
	// answer at all, and DNS over TLS or QUIC stays rejected, so that DNS
	// is not resolved around that resolver either.
	else if (class != VERDICT_DNS && class != VERDICT_DOT_REJECT && paused())
		v = VERDICT_PAUSED;
	if (class == VERDICT_HTTP || class == VERDICT_TLS)
		v = remember_flow(skb, &p, ports, v, untrack);
	*fast = *untrack;
	return v;
}

SEC("tcx/ingress")
int steer_ingress(struct __sk_buff *skb)
{
	struct packet p = {};
	int untrack = 0, fast = 0;
	enum verdict v = decide(skb, &p, &untrack, &fast);
	enum mark mark = untrack ? MARK_UNTRACK : mark_of(v);

	if (mark)
		skb->mark = mark;
	count(skb, v);
	if (fast && fastpath_on())
		return fast_forward(skb, p.l3_off, p.is_v6, FASTPATH_FROM_LAN);
	return STEER_TCX_NEXT;
}

// forward_ingress runs at TCX ingress of the WAN interfaces: while the fast
// path is on, it forwards TCP (all of it is unsteered: cloudsteer's own
// connections end on the gateway, where the FIB sends them to the stack).
SEC("tcx/ingress")
int forward_ingress(struct __sk_buff *skb)
{
	__be16 proto;

	if (!fastpath_on())
		return STEER_TCX_NEXT;
	if (bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, sizeof(proto)) < 0)
		return STEER_TCX_NEXT;
	if (proto == bpf_htons(ETH_P_IP))
		return fast_forward(skb, sizeof(struct ethhdr), 0, FASTPATH_FROM_WAN);
	if (proto == bpf_htons(ETH_P_IPV6))
		return fast_forward(skb, sizeof(struct ethhdr), 1, FASTPATH_FROM_WAN);
	return STEER_TCX_NEXT;
}

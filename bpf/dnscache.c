//go:build ignore

// dnscache.c answers cached DNS queries at TCX ingress of LAN interfaces.
//
// A plain UDP DNS query (untagged Ethernet, IPv4 without options or IPv6
// without extension headers, one IN question, at most an empty EDNS0 OPT
// record without the DO bit) whose question is in the answers map is turned
// into its response in place: the client's ID, RD bit and question bytes
// (with their 0x20 case) stay, the rest of the header and the records come
// from the map value, addresses, ports and MACs are swapped, and the packet
// goes back out of the interface it came in on (bpf_redirect to egress).
// Everything else, and every cached answer that is expired or too large for
// the client, returns TCX_NEXT untouched, so the classifier and the Go
// resolver see it as they would without this program.
//
// The UDP checksum is updated incrementally with bpf_l4_csum_replace, which
// is right whatever the skb's checksum state: with CHECKSUM_PARTIAL (veth,
// virtio) it keeps the pseudo-header seed the device completes, otherwise it
// keeps the full checksum valid. An IPv4 query sent without a checksum (0)
// gets an answer without one.
//
// The map values are written by dataplane/dnscache (Go), which also decays
// the records' TTLs; this program never computes a TTL.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char __license[] SEC("license") = "Dual MIT/GPL";

// TCX verdicts (linux/bpf.h >= 6.6; Debian 12's UAPI headers are 6.1).
#define DNSCACHE_TCX_NEXT (-1)
#define DNSCACHE_TCX_DROP 2

// NAME_MAX_WIRE bounds the question name in wire form, root label
// included; longer names are not cached. It keys the map, zero-padded.
#define NAME_MAX_WIRE 128
// DATA_MAX bounds the records (answer, authority, additional and the OPT
// record) appended after the question.
#define DATA_MAX 512

// bound_1_to returns n, which the caller has checked is in 1..max (max a
// power of two), in a form older verifiers (Linux 6.1) can follow for a
// helper's size argument: they do not narrow a value on "n == 0", nor on
// the (n - 1) > max - 1 form clang gives the check, so they would see a
// size that may be 0 and refuse the call. dataplane/kernelcompat boots
// Debian's 6.1 kernel to check.
static __always_inline __u64 bound_1_to(__u64 n, __u64 max)
{
	asm volatile("" : "+r"(n));
	return ((n - 1) & (max - 1)) + 1;
}
// OPT_LEN is an OPT record with no options.
#define OPT_LEN 11
#define DNS_HDR_LEN 12
#define DNS_PORT 53
#define CLASS_IN 1
#define TYPE_OPT 41
// MIN_UDP_SIZE is what a client without EDNS0 accepts (RFC 1035).
#define MIN_UDP_SIZE 512
#define REPLY_HOP_LIMIT 64

// reason is why a UDP port 53 packet was or was not answered; it indexes
// the stats map, so values stay dense from 0.
enum reason {
	REASON_HIT = 0,      // answered from the map
	REASON_SHAPE = 1,    // not a plain query this program handles
	REASON_NAME = 2,     // name too long, compressed or malformed
	REASON_MISS = 3,     // no map entry for the question
	REASON_EXPIRED = 4,  // entry past its expiry (or its TTLs are stale, or the lease ran out)
	REASON_TOO_BIG = 5,  // answer larger than the client accepts
	REASON_ERROR = 6,    // a helper failed while rewriting: packet dropped
	REASON_MARK = 7,     // packet lacks the mark the settings require
	REASON_MAX = 8,
};

// The stats map also counts answers by rcode, in slots from RCODE_SLOT.
#define RCODE_SLOT REASON_MAX
#define RCODE_SLOTS 16

// qkey is the map key: the question name in wire form, ASCII-lowercased
// and zero-padded, and the question type as the two bytes on the wire.
struct qkey {
	__u8 name[NAME_MAX_WIRE];
	__u8 qtype[2];
};

// answer is the map value: what to append after the question and the
// header fields to set, in two variants: [0] for a query without EDNS0,
// [1] for one with (data then ends with an OPT record).
struct answer {
	// expires is the CLOCK_MONOTONIC time (bpf_ktime_get_ns) from which
	// the entry is not used: the answer expired, or its TTLs would be
	// above the Go resolver's and the refresher has not lowered them.
	__u64 expires;
	// len is how many bytes of data each variant appends.
	__u16 len[2];
	// csum is each variant's 16-bit one's complement sum of data[:len],
	// in memory order as csum_partial computes it, for even alignment.
	__u16 csum[2];
	// hdr is the response header from byte 2 (flags, counts) with RD
	// clear; the query's RD bit is ORed in.
	__u8 hdr[2][10];
	__u8 data[DATA_MAX];
};

// settings is the single entry of the config map, written by Go.
struct settings {
	__u32 mark; // non-zero: answer only packets whose skb->mark equals it
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct qkey);
	__type(value, struct answer);
} answers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, REASON_MAX + RCODE_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct settings);
} config SEC(".maps");

#include "owner_lease.h"

// scratch holds the key being built: too big for comfort on the stack.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct qkey);
} scratch SEC(".maps");

// count adds one to a reason's per-CPU counter. It is a real subprogram so
// that enum reason lands in the BTF that bpf2go -type reads.
static __noinline int count(enum reason r)
{
	__u32 k = r;
	__u64 *c = bpf_map_lookup_elem(&stats, &k);

	if (c)
		*c += 1; // per-CPU slot: no other writer
	return 0;
}

// count_rcode adds one to the answers sent with rcode.
static __always_inline void count_rcode(__u32 rcode)
{
	__u32 k = RCODE_SLOT + (rcode & (RCODE_SLOTS - 1));
	__u64 *c = bpf_map_lookup_elem(&stats, &k);

	if (c)
		*c += 1; // per-CPU slot: no other writer
}

static __always_inline __u32 csum_add(__u32 a, __u32 b)
{
	__u32 r = a + b;

	return r + (r < a);
}

static __always_inline __u16 csum_fold16(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return s;
}

// at_parity moves a folded sum computed for even alignment to odd
// alignment: one byte of shift swaps the bytes of a one's complement sum.
static __always_inline __u16 at_parity(__u16 s, __u32 odd)
{
	return odd ? (__u16)((s << 8) | (s >> 8)) : s;
}

// name_end walks the labels of the name at the start of k->name, of which
// avail bytes came from the packet, and returns the offset just past its
// root label, or 0 when the name is longer than avail, compressed or uses
// a reserved label type.
static __always_inline __u32 name_end(struct qkey *k, __u32 avail)
{
	__u64 off = 0;

	// Every label but the root takes at least two bytes.
	for (int i = 0; i < NAME_MAX_WIRE / 2 + 1; i++) {
		if (off >= avail)
			return 0;
		// off < avail <= NAME_MAX_WIRE already; the mask, in assembly so
		// clang keeps it, lets the verifier see the bound too.
		asm volatile("%0 &= %1" : "+r"(off) : "i"(NAME_MAX_WIRE - 1));
		__u8 l = k->name[off];
		if (l == 0)
			return off + 1;
		if (l > 63)
			return 0;
		off += l + 1;
	}
	return 0;
}

#define BYTES8(b) (0x0101010101010101ULL * (b))

// fold_name lowercases the ASCII letters of k->name before end, eight
// bytes at a time, and zeroes the bytes from end on, so the key holds only
// the name. Label length bytes (0-63) are below 'A' and stay as they are.
static __always_inline void fold_name(struct qkey *k, __u32 end)
{
	__u64 *w = (__u64 *)k->name;

#pragma unroll
	for (int i = 0; i < NAME_MAX_WIRE / 8; i++) {
		__u32 start = i * 8;
		__u64 x = w[i];

		if (start >= end) {
			w[i] = 0;
			continue;
		}
		if (end - start < 8) {
			__u32 keep = (end - start) * 8;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
			x &= (1ULL << keep) - 1;
#else
			x &= ~0ULL << (64 - keep);
#endif
		}
		// Per byte, with the top bit cleared: +0x3f sets it from 'A' up,
		// +0x25 from past 'Z' up; no carry crosses bytes.
		__u64 low7 = x & BYTES8(0x7f);
		__u64 upper = (low7 + BYTES8(0x80 - 'A')) & ~(low7 + BYTES8(0x7f - 'Z')) & ~x & BYTES8(0x80);
		w[i] = x | (upper >> 2);
	}
}

// hdrs4 is the start of an IPv4 query as the program reads and rewrites
// it. The leading pad aligns the IP header to 4 bytes; the packet's bytes
// start at eth (see PKT_OFF and PKT_LEN).
struct hdrs4 {
	__u16 pad;
	struct ethhdr eth;
	struct iphdr ip;
	struct udphdr udp;
	__u8 dns[DNS_HDR_LEN];
};

struct hdrs6 {
	__u16 pad;
	struct ethhdr eth;
	struct ipv6hdr ip;
	struct udphdr udp;
	__u8 dns[DNS_HDR_LEN];
};

// PKT_OFF is the packet offset of a hdrs field; PKT_LEN the packet bytes a
// hdrs struct holds.
#define PKT_OFF(type, field) (offsetof(struct type, field) - offsetof(struct type, eth))
#define PKT_LEN(type) (sizeof(struct type) - offsetof(struct type, eth))

// query is what the parser learned about a query packet.
struct query {
	__u32 dns_off;  // offset of the DNS header in the packet
	__u32 dns_len;  // DNS message length from the UDP header
	__u32 q_end;    // offset just past the question, relative to dns_off
	__u32 edns;     // the query has an OPT record
	__u32 udp_size; // the client's EDNS0 buffer size, or 512
	__u16 opt_sum;  // folded sum of the query's OPT record, even alignment
};

static __always_inline __u16 get16(const __u8 *p)
{
	return ((__u16)p[0] << 8) | p[1];
}

// parse_dns checks the DNS header and question at q->dns_off, builds the
// key in the scratch map and fills q. It returns a reason: REASON_HIT
// means the query has the right shape and the key is ready.
static __always_inline enum reason parse_dns(struct __sk_buff *skb, const __u8 *dns, struct query *q,
					      struct qkey **keyp)
{
	// QR clear and opcode QUERY; TC clear; CD clear (the Go resolver
	// keys answers by CD and only CD-clear ones come here).
	if ((dns[2] & 0xfa) != 0 || (dns[3] & 0x10) != 0)
		return REASON_SHAPE;
	// QDCOUNT 1, ANCOUNT 0, NSCOUNT 0, ARCOUNT 0 or 1.
	if (get16(dns + 4) != 1 || get16(dns + 6) != 0 || get16(dns + 8) != 0)
		return REASON_SHAPE;
	__u16 ar = get16(dns + 10);
	if (ar > 1)
		return REASON_SHAPE;
	if (q->dns_len < DNS_HDR_LEN + 1 + 4)
		return REASON_SHAPE;

	__u32 zero = 0;
	struct qkey *k = bpf_map_lookup_elem(&scratch, &zero);
	if (!k)
		return REASON_SHAPE; // cannot happen: an array map has entry 0
	__u64 avail = q->dns_len - DNS_HDR_LEN;
	if (avail > NAME_MAX_WIRE)
		avail = NAME_MAX_WIRE;
	// The verifier needs [1, NAME_MAX_WIRE] for the helper's size: the
	// empty asm hides what clang knows so that it keeps both checks.
	asm volatile("" : "+r"(avail));
	if (avail < 1 || avail > NAME_MAX_WIRE)
		return REASON_SHAPE;
	avail = bound_1_to(avail, NAME_MAX_WIRE);
	if (bpf_skb_load_bytes(skb, q->dns_off + DNS_HDR_LEN, k->name, avail) < 0)
		return REASON_SHAPE;

	__u32 end = name_end(k, avail);
	if (end == 0)
		return REASON_NAME;
	fold_name(k, end);

	__u32 qoff = DNS_HDR_LEN + end; // qtype and qclass
	__u8 tc[4];
	if (qoff + 4 > q->dns_len || bpf_skb_load_bytes(skb, q->dns_off + qoff, tc, 4) < 0)
		return REASON_SHAPE;
	if (get16(tc + 2) != CLASS_IN)
		return REASON_SHAPE;
	k->qtype[0] = tc[0];
	k->qtype[1] = tc[1];
	q->q_end = qoff + 4;
	q->udp_size = MIN_UDP_SIZE;
	q->edns = 0;
	q->opt_sum = 0;

	if (ar == 0) {
		if (q->dns_len != q->q_end)
			return REASON_SHAPE;
		*keyp = k;
		return REASON_HIT;
	}
	// One OPT record at the root, EDNS version 0, no DO or other flags,
	// extended rcode 0, no options, nothing after it. The buffer is 12
	// bytes with a zero pad so its sum can be taken in 4-byte words.
	__u8 opt[12] = {};
	if (q->dns_len != q->q_end + OPT_LEN ||
	    bpf_skb_load_bytes(skb, q->dns_off + q->q_end, opt, OPT_LEN) < 0)
		return REASON_SHAPE;
	if (opt[0] != 0 || get16(opt + 1) != TYPE_OPT || opt[5] != 0 || opt[6] != 0 ||
	    opt[7] != 0 || opt[8] != 0 || opt[9] != 0 || opt[10] != 0)
		return REASON_SHAPE;
	q->edns = 1;
	q->udp_size = get16(opt + 3);
	if (q->udp_size < MIN_UDP_SIZE)
		q->udp_size = MIN_UDP_SIZE;
	q->opt_sum = csum_fold16(bpf_csum_diff(NULL, 0, (__be32 *)opt, sizeof(opt), 0));
	*keyp = k;
	return REASON_HIT;
}

// lookup finds the answer for the key and checks it can be sent.
static __always_inline enum reason lookup(struct qkey *k, struct query *q, struct answer **ap)
{
	struct answer *a = bpf_map_lookup_elem(&answers, k);

	if (!a)
		return REASON_MISS;
	// Past its expiry, or nobody renews the lease: the process that keeps
	// the map is gone (or stalled), so the query goes on to the resolver
	// path, whoever serves it now.
	if (bpf_ktime_get_ns() >= a->expires || !owner_alive())
		return REASON_EXPIRED;
	__u32 len = a->len[q->edns & 1];
	if (len == 0 || len > DATA_MAX)
		return REASON_MISS; // an entry Go never writes
	if (q->q_end + len > q->udp_size)
		return REASON_TOO_BIG;
	*ap = a;
	return REASON_HIT;
}

// rewrite turns the query into the response: new tail, new DNS header,
// checksum updates. old_dns is the query's DNS header; new_dns receives
// the response's. It returns 0 or a negative helper error; after an error
// the packet may be half rewritten.
static __always_inline int rewrite(struct __sk_buff *skb, struct query *q, struct answer *a, __u32 csum_off,
				   __u16 old_ulen, __u16 new_ulen, const __u8 *old_dns, __u8 *new_dns)
{
	__u32 e = q->edns & 1;
	__u32 len = a->len[e];
	// Re-checked here so the verifier sees the bound next to the helper.
	if (len == 0 || len > DATA_MAX)
		return -1;

	__builtin_memcpy(new_dns, old_dns, DNS_HDR_LEN);
	new_dns[2] = a->hdr[e][0] | (old_dns[2] & 0x01); // keep RD
	new_dns[3] = a->hdr[e][1];
	// Bytes 4-5 (QDCOUNT 1) stay; the other counts come from the value.
	new_dns[6] = a->hdr[e][4];
	new_dns[7] = a->hdr[e][5];
	new_dns[8] = a->hdr[e][6];
	new_dns[9] = a->hdr[e][7];
	new_dns[10] = a->hdr[e][8];
	new_dns[11] = a->hdr[e][9];

	// Sum of what changes in the UDP segment, pseudo-header aside: the
	// DNS header, and the tail after the question (old OPT out, new
	// records in). The tail starts at q_end bytes into the DNS message,
	// which starts at an even offset of the segment.
	__u32 diff = bpf_csum_diff((__be32 *)old_dns, DNS_HDR_LEN, (__be32 *)new_dns, DNS_HDR_LEN, 0);
	__u32 odd = q->q_end & 1;
	diff = csum_add(diff, at_parity(a->csum[e], odd));
	diff = csum_add(diff, (__u16)~at_parity(q->opt_sum, odd));

	int err = bpf_skb_change_tail(skb, q->dns_off + q->q_end + len, 0);
	if (err < 0)
		return err;
	// The bound once more, on a value read after the helper call: older
	// verifiers (Linux 6.1) lose it on the copy the compiler keeps across
	// the call and then refuse the store ("R3 min value is outside of the
	// allowed memory range"; dataplane/kernelcompat boots 6.1 to check).
	__u32 n = a->len[e];
	if (n == 0 || n > DATA_MAX)
		return -1;
	n = bound_1_to(n, DATA_MAX);
	err = bpf_skb_store_bytes(skb, q->dns_off + q->q_end, a->data, n, 0);
	if (err < 0)
		return err;
	// UDP length: once in the pseudo-header, once in the UDP header. The
	// header part (no BPF_F_PSEUDO_HDR) is skipped by the kernel for
	// CHECKSUM_PARTIAL, where the device sums the header itself.
	__u64 flags = BPF_F_MARK_MANGLED_0;
	err = bpf_l4_csum_replace(skb, csum_off, bpf_htons(old_ulen), bpf_htons(new_ulen),
				  flags | BPF_F_PSEUDO_HDR | sizeof(__u16));
	if (err < 0)
		return err;
	err = bpf_l4_csum_replace(skb, csum_off, bpf_htons(old_ulen), bpf_htons(new_ulen), flags | sizeof(__u16));
	if (err < 0)
		return err;
	return bpf_l4_csum_replace(skb, csum_off, 0, diff, flags);
}

static __always_inline void swap_eth(struct ethhdr *eth)
{
	__u8 tmp[ETH_ALEN];

	__builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
}

static __always_inline void swap_ports(struct udphdr *udp, __u16 ulen)
{
	__be16 p = udp->source;

	udp->source = udp->dest;
	udp->dest = p;
	udp->len = bpf_htons(ulen);
}

static __always_inline __u16 ipv4_csum(struct iphdr *ip)
{
	__u16 *w = (__u16 *)ip;
	__u32 s = 0;

	ip->check = 0;
	for (int i = 0; i < (int)sizeof(*ip) / 2; i++)
		s += w[i];
	return ~csum_fold16(s);
}

static __always_inline int mark_ok(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct settings *s = bpf_map_lookup_elem(&config, &zero);

	return !s || s->mark == 0 || skb->mark == s->mark;
}

static __always_inline enum reason answer4(struct __sk_buff *skb, __u32 *rcode)
{
	struct hdrs4 h;
	struct query q = {.dns_off = sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct udphdr)};

	if (bpf_skb_load_bytes(skb, 0, &h.eth, PKT_LEN(hdrs4)) < 0)
		return REASON_MAX; // too short to be a query: not ours to count
	// No options, not a fragment, UDP to port 53.
	if (h.eth.h_proto != bpf_htons(ETH_P_IP) || h.ip.version != 4 || h.ip.ihl != 5 || h.ip.protocol != IPPROTO_UDP ||
	    h.udp.dest != bpf_htons(DNS_PORT))
		return REASON_MAX;
	if (bpf_ntohs(h.ip.frag_off) & 0x3fff)
		return REASON_SHAPE;
	if (!mark_ok(skb))
		return REASON_MARK;
	__u32 ulen = bpf_ntohs(h.udp.len);
	if (ulen < sizeof(struct udphdr) + DNS_HDR_LEN || bpf_ntohs(h.ip.tot_len) != sizeof(struct iphdr) + ulen ||
	    sizeof(struct ethhdr) + sizeof(struct iphdr) + ulen > skb->len)
		return REASON_SHAPE;
	q.dns_len = ulen - sizeof(struct udphdr);

	struct qkey *k = 0;
	enum reason r = parse_dns(skb, h.dns, &q, &k);
	if (r != REASON_HIT || !k)
		return r;
	struct answer *a = 0;
	r = lookup(k, &q, &a);
	if (r != REASON_HIT || !a)
		return r;

	__u16 new_ulen = sizeof(struct udphdr) + q.q_end + a->len[q.edns & 1];
	__u8 new_dns[DNS_HDR_LEN];
	if (rewrite(skb, &q, a, PKT_OFF(hdrs4, udp.check), ulen, new_ulen, h.dns, new_dns) < 0)
		return REASON_ERROR;

	// The header fields the checksum update did not touch: re-read the
	// UDP checksum it wrote, then store the headers in one go.
	if (bpf_skb_load_bytes(skb, PKT_OFF(hdrs4, udp.check), &h.udp.check, sizeof(h.udp.check)) < 0)
		return REASON_ERROR;
	swap_eth(&h.eth);
	__be32 a4 = h.ip.saddr;
	h.ip.saddr = h.ip.daddr;
	h.ip.daddr = a4;
	h.ip.tot_len = bpf_htons(sizeof(struct iphdr) + new_ulen);
	h.ip.ttl = REPLY_HOP_LIMIT;
	h.ip.check = ipv4_csum(&h.ip);
	swap_ports(&h.udp, new_ulen);
	__builtin_memcpy(h.dns, new_dns, DNS_HDR_LEN);
	if (bpf_skb_store_bytes(skb, 0, &h.eth, PKT_LEN(hdrs4), 0) < 0)
		return REASON_ERROR;
	*rcode = new_dns[3] & 0x0f;
	return REASON_HIT;
}

static __always_inline enum reason answer6(struct __sk_buff *skb, __u32 *rcode)
{
	struct hdrs6 h;
	struct query q = {.dns_off = sizeof(struct ethhdr) + sizeof(struct ipv6hdr) + sizeof(struct udphdr)};

	if (bpf_skb_load_bytes(skb, 0, &h.eth, PKT_LEN(hdrs6)) < 0)
		return REASON_MAX;
	if (h.eth.h_proto != bpf_htons(ETH_P_IPV6) || h.ip.version != 6 || h.ip.nexthdr != IPPROTO_UDP || h.udp.dest != bpf_htons(DNS_PORT))
		return REASON_MAX;
	if (!mark_ok(skb))
		return REASON_MARK;
	__u32 ulen = bpf_ntohs(h.udp.len);
	// A zero UDP checksum is invalid over IPv6 (and would keep
	// BPF_F_MARK_MANGLED_0 from updating it).
	if (ulen < sizeof(struct udphdr) + DNS_HDR_LEN || bpf_ntohs(h.ip.payload_len) != ulen ||
	    sizeof(struct ethhdr) + sizeof(struct ipv6hdr) + ulen > skb->len || h.udp.check == 0)
		return REASON_SHAPE;
	q.dns_len = ulen - sizeof(struct udphdr);

	struct qkey *k = 0;
	enum reason r = parse_dns(skb, h.dns, &q, &k);
	if (r != REASON_HIT || !k)
		return r;
	struct answer *a = 0;
	r = lookup(k, &q, &a);
	if (r != REASON_HIT || !a)
		return r;

	__u16 new_ulen = sizeof(struct udphdr) + q.q_end + a->len[q.edns & 1];
	__u8 new_dns[DNS_HDR_LEN];
	if (rewrite(skb, &q, a, PKT_OFF(hdrs6, udp.check), ulen, new_ulen, h.dns, new_dns) < 0)
		return REASON_ERROR;

	if (bpf_skb_load_bytes(skb, PKT_OFF(hdrs6, udp.check), &h.udp.check, sizeof(h.udp.check)) < 0)
		return REASON_ERROR;
	swap_eth(&h.eth);
	struct in6_addr a6 = h.ip.saddr;
	h.ip.saddr = h.ip.daddr;
	h.ip.daddr = a6;
	h.ip.payload_len = bpf_htons(new_ulen);
	h.ip.hop_limit = REPLY_HOP_LIMIT;
	swap_ports(&h.udp, new_ulen);
	__builtin_memcpy(h.dns, new_dns, DNS_HDR_LEN);
	if (bpf_skb_store_bytes(skb, 0, &h.eth, PKT_LEN(hdrs6), 0) < 0)
		return REASON_ERROR;
	*rcode = new_dns[3] & 0x0f;
	return REASON_HIT;
}

SEC("tcx/ingress")
int dnscache_ingress(struct __sk_buff *skb)
{
	enum reason r;
	__u32 rcode = 0;

	// Untagged Ethernet only: the answer goes out without a tag, and a
	// tag the stack did not strip leaves skb->protocol at the tag's type.
	if (skb->vlan_present)
		return DNSCACHE_TCX_NEXT;
	// Only frames addressed to this host: a promiscuous interface also
	// sees queries between other LAN hosts, which are not ours to answer.
	if (skb->pkt_type != PACKET_HOST)
		return DNSCACHE_TCX_NEXT;
	if (skb->protocol == bpf_htons(ETH_P_IP))
		r = answer4(skb, &rcode);
	else if (skb->protocol == bpf_htons(ETH_P_IPV6))
		r = answer6(skb, &rcode);
	else
		return DNSCACHE_TCX_NEXT;

	if (r == REASON_MAX)
		return DNSCACHE_TCX_NEXT;
	count(r);
	if (r == REASON_HIT) {
		count_rcode(rcode);
		return bpf_redirect(skb->ifindex, 0);
	}
	if (r == REASON_ERROR)
		return DNSCACHE_TCX_DROP;
	return DNSCACHE_TCX_NEXT;
}

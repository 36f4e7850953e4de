// Package dnscache answers cached DNS queries in the kernel: it loads
// bpf/dnscache.c, a TCX ingress program for the LAN interfaces that turns a
// UDP query whose answer is in its map into the response and sends it back
// out of the interface it came in on, and it keeps that map in step with
// the Go resolver's cache.
//
// # What the program answers
//
// A frame addressed to this host (not one a promiscuous interface merely
// sees), untagged Ethernet, IPv4 without options (not fragmented) or IPv6
// without extension headers, UDP to port 53, a DNS query with QR, TC and
// CD clear,
// opcode QUERY, one IN question whose name is at most NameMaxWire bytes in
// wire form (uncompressed), no answer or authority records, and either no
// additional record or one OPT record with version 0, no flags (no DO bit),
// no options. Everything else returns TCX_NEXT untouched and reaches the
// classifier (bpf/steer.c) and the Go resolver as before. With
// Options.Mark set, only packets that an earlier TCX program marked with it
// are answered: attached after dataplane/steer with steer's DNS mark, the
// program answers exactly the queries nftables would redirect to the Go
// resolver (not those to a bypassed resolver address).
//
// # The map
//
// The key is the question name in wire form, ASCII-lowercased and
// zero-padded, and the question type. The value holds the records that
// follow the question (compression pointers into the question stay valid
// because the response keeps the question bytes where they were), the
// header flags and counts, and an expiry on CLOCK_MONOTONIC. It holds two
// variants: without and with a trailing OPT record (UDP size 1232, no DO),
// so EDNS0 queries get an EDNS0 answer like the Go fast path gives. An
// answer larger than 512 bytes, or than the client's EDNS0 buffer, falls
// through to the Go resolver, which truncates it.
//
// The response keeps the client's ID, RD bit and question bytes exactly
// (so 0x20 mixed case is echoed), takes the rest of the header from the
// value, swaps MACs, addresses and ports, and fixes the IP lengths and
// checksum. The UDP checksum is updated incrementally, which stays right
// for CHECKSUM_PARTIAL skbs (veth, virtio) and full checksums alike.
//
// # TTLs
//
// The program never changes a TTL. Put records when an answer was stored;
// a refresher (every Options.Refresh) rewrites each value with its TTLs
// lowered by the whole seconds elapsed two refresh periods ahead, so a
// client never gets a TTL above what the Go resolver would give at the
// same moment (it may get one a second lower), and deletes expired answers.
// Each value also carries the moment its TTLs would exceed the Go
// resolver's (the next whole second since the answer was stored) or the
// answer expires, whichever is first; the program checks it on every
// lookup, so when the refresher is late the query falls through to the Go
// resolver instead of getting a TTL that is too high or an expired answer.
//
// # What the Go resolver no longer sees
//
// A query answered here never reaches the resolver: it is not in
// resolver.Stats (Stats.Hits and Stats.HitRcodes are, for metrics), and
// neither Snoop nor OnQuery is called for it. Sinkholed answers are never
// put here, so blocked-name events are unchanged. Snoop ran when the
// answer was stored, with its full TTL, so learned bypass addresses last
// as long as the answer does; but a name added to the bypass list later
// is only learned once its answer leaves this cache: Flush when the bypass
// names change.
//
// # When the process is gone
//
// In TCX mode every piece of kernel state is an unpinned bpf_link or map
// held by this process's file descriptors: when the process exits the
// program is gone. In legacy mode (a clsact cls_bpf filter, dataplane/tcx)
// the filter and its map stay after a SIGKILL, so the program answers only
// while the owner lease holds (renewed every 250 ms to 1 s ahead; Close
// ends it first): within a second of the process's death every query goes
// on to the resolver path again, whoever serves it. Each value's own
// expiry (at most two seconds ahead, see TTLs) bounds it too.
package dnscache

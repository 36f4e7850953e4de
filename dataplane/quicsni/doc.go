// Package quicsni reads the server name (SNI) from a client's QUIC Initial
// packets without terminating the connection: QUIC v1 (RFC 9000, RFC 9001)
// and v2 (RFC 9369) long headers, Initial keys derived from the client's
// Destination Connection ID, header protection removed, the payload
// decrypted (AES-128-GCM), the frames walked (PADDING, PING, ACK, CRYPTO;
// anything else is rejected), the CRYPTO stream reassembled across the
// Initials of several datagrams and packets coalesced in one, and the
// ClientHello parsed by dataplane/sniff.
//
// Initial keys protect against nothing but off-path tampering: anyone who
// sees the packet can derive them, which is what this package does. A name
// read here is client-asserted exactly as a TLS SNI is; it may decide only
// what the trust rule allows (a bypass name is let through only to an
// address cloudsteer's resolver holds for it).
//
// A Reassembler per flow holds at most Limits.MaxBytes of CRYPTO data and
// takes at most Limits.MaxDatagrams datagrams; its work is linear in the
// bytes fed. Malformed or truncated packets, unknown versions, Version
// Negotiation, Retry, 0-RTT or Handshake packets where an Initial belongs,
// short headers and packets that do not authenticate are errors (each
// wraps one of the Err* values), never panics.
package quicsni

// # Integration: QUIC by name (issue 13 §3)
//
// Today the classifier (bpf/steer.c) marks LAN UDP 443 M_QUIC unless the
// destination is in the bypass map, and the forward chain rejects new
// M_QUIC flows with ICMP port unreachable. The plan keeps the classifier
// as it is and changes only that rule, so that the first packets of a new
// flow go to Go through NFQUEUE and the verdict lives on in the conntrack
// mark (the lead's file INTEGRATION.md has the rules and the reasons):
//
//	set quic_no4 { type ipv4_addr . inet_service . ipv4_addr; flags timeout; timeout 30s; }
//	set quic_no6 { type ipv6_addr . inet_service . ipv6_addr; flags timeout; timeout 30s; }
//	chain forward { type filter hook forward priority filter; policy accept;
//	 meta mark M_QUIC meta l4proto udp ct mark & CTM == CT_OK counter accept
//	 meta mark M_QUIC ip saddr . udp sport . ip daddr @quic_no4 counter reject with icmpx port-unreachable
//	 meta mark M_QUIC ip6 saddr . udp sport . ip6 daddr @quic_no6 counter reject with icmpx port-unreachable
//	 meta mark M_QUIC_OK meta l4proto udp ct mark set ct mark & ~CTM | CT_OK counter accept
//	 meta mark M_QUIC_NO meta nfproto ipv4 add @quic_no4 { ip saddr . udp sport . ip daddr } counter reject with icmpx port-unreachable
//	 meta mark M_QUIC_NO meta nfproto ipv6 add @quic_no6 { ip6 saddr . udp sport . ip6 daddr } counter reject with icmpx port-unreachable
//	 meta mark M_QUIC meta l4proto udp ct state new counter queue num Q }
//
// Go holds a new flow's datagrams in the queue (no verdict yet), feeds
// them to a Reassembler keyed by the 5-tuple, and once the hello is whole
// (or broken, or after a timeout, or over a cap) re-injects every held
// packet with NF_REPEAT and the packet mark M_QUIC_OK or M_QUIC_NO: the
// chain runs again for them, stores the verdict (an accept in the
// conntrack mark; a reject in a timeout set, since a rejected packet never
// confirms its conntrack entry) and accepts or rejects; later packets of
// the flow match the first rules and never leave the kernel. A flow is accepted only when its SNI is a
// bypass name and Policy.BypassTarget(name, dst) returns dst itself (dst
// is an address cloudsteer's resolver holds, or now obtains, for the
// name); everything else is rejected and falls back to TCP, where the
// proxy inspects it or splices it to a right address.

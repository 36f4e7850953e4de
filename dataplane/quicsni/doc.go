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

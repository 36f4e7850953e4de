package resolver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/cloudsteer/cloudsteer/dataplane/resolver/transport"
	uphealth "github.com/cloudsteer/cloudsteer/dataplane/upstream"
)

// upstream is one cloud resolver and its health (health.go): plain DNS
// to addr, or an encrypted transport t (transport.go).
type upstream struct {
	name string
	addr netip.AddrPort      // plain only
	t    transport.Transport // encrypted only
	h    *uphealth.Health
}

// newUpstream makes s's upstream; an encrypted one gets its transport,
// which dials on the first query.
func (r *Resolver) newUpstream(s transport.Spec) (*upstream, error) {
	u := &upstream{name: s.String()}
	if s.Kind == transport.Plain {
		if len(s.Addrs) != 1 || s.Port == 0 {
			return nil, fmt.Errorf("plain upstream %s: want one address and a port", s)
		}
		u.addr = netip.AddrPortFrom(s.Addrs[0].Unmap(), s.Port)
		return u, nil
	}
	t, err := transport.New(s, transport.Options{RootCAs: r.cfg.RootCAs, IdleTimeout: r.cfg.IdleTimeout, Logger: r.cfg.Logger})
	if err != nil {
		return nil, err
	}
	u.t = t
	return u, nil
}

// Close closes the encrypted upstreams' connections; queries after it
// fail for those upstreams.
func (r *Resolver) Close() error {
	for _, u := range r.upstreams {
		if u.t != nil {
			u.t.Close()
		}
	}
	return nil
}

// order returns the upstreams in configured order, the down ones moved
// to the end (still tried when every up one fails).
func (r *Resolver) order() []*upstream {
	out := make([]*upstream, 0, len(r.upstreams))
	var down []*upstream
	for _, u := range r.upstreams {
		if !u.h.Up() {
			down = append(down, u)
			continue
		}
		out = append(out, u)
	}
	return append(out, down...)
}

// lookup returns the upstream answer for k, sharing one exchange among
// identical queries in flight, and caches it. The returned message must
// not be modified.
func (r *Resolver) lookup(ctx context.Context, k cacheKey) (*dns.Msg, error) {
	m, err, shared := r.flights.do(k, func() (*dns.Msg, error) {
		m, err := r.forward(ctx, k)
		if err != nil {
			return nil, err
		}
		ttl := prepareForCache(m, r.cfg.MinTTL, r.cfg.MaxTTL)
		if ttl > 0 {
			r.cache.putPacked(k, m, packAnswer(k, m), ttl, r.now())
		}
		return m, nil
	})
	if shared {
		r.coalesced.Add(1)
	}
	return m, err
}

// forward asks the upstreams in order for k and returns the first usable
// answer, without its OPT record.
func (r *Resolver) forward(ctx context.Context, k cacheKey) (*dns.Msg, error) {
	q := new(dns.Msg)
	q.Id = dns.Id()
	q.RecursionDesired = true
	q.CheckingDisabled = k.cd
	q.Question = []dns.Question{{Name: k.name, Qtype: k.qtype, Qclass: k.qclass}}
	q.SetEdns0(upstreamUDPSize, k.do)
	if z := r.split.zone(canonName(k.name)); z != nil {
		return r.forwardSplit(ctx, z, q)
	}
	var errs []error
	for _, u := range r.order() {
		m, err := r.exchangeOne(ctx, u, q)
		if err != nil {
			r.upErrors.Add(1)
			errs = append(errs, fmt.Errorf("%s: %w", u.name, err))
			if ctx.Err() != nil {
				break
			}
			u.h.Failure(time.Now(), err) // logged at the transition
			continue
		}
		u.h.Success(time.Now())
		stripOPT(m)
		return m, nil
	}
	return nil, fmt.Errorf("forward %s: %w", k.name, errors.Join(errs...))
}

// exchangeOne sends q to u: over its encrypted transport, within
// cfg.Timeout; or, for a plain upstream, over UDP, and again over TCP when
// the UDP answer is truncated. An answer that does not match q, or says
// SERVFAIL, REFUSED, NOTIMP or FORMERR, is an error.
func (r *Resolver) exchangeOne(ctx context.Context, u *upstream, q *dns.Msg) (*dns.Msg, error) {
	if u.t != nil {
		packed, err := packPadded(q)
		if err != nil {
			return nil, fmt.Errorf("pack query: %w", err)
		}
		// A stream transport carries the whole answer: TC means what the
		// server meant, and is never retried over plain TCP.
		ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
		defer cancel()
		raw, err := u.t.Exchange(ctx, packed)
		if err != nil {
			return nil, err
		}
		return parseReply(q, raw)
	}
	packed, err := q.Pack()
	if err != nil {
		return nil, fmt.Errorf("pack query: %w", err)
	}
	addr := u.addr
	raw, err := r.exchange(ctx, addr, packed, false)
	if err != nil {
		return nil, err
	}
	m, err := parseReply(q, raw)
	if err != nil {
		return nil, err
	}
	if m.Truncated {
		raw, err = r.exchange(ctx, addr, packed, true)
		if err != nil {
			return nil, fmt.Errorf("retry truncated answer over tcp: %w", err)
		}
		if m, err = parseReply(q, raw); err != nil {
			return nil, fmt.Errorf("tcp: %w", err)
		}
	}
	return m, nil
}

// paddingBlock is the size encrypted queries are padded to a multiple of
// (RFC 8467 4.1, the Block-Length Padding of 128 octets), so their length
// tells an observer little about the name.
const paddingBlock = 128

// packPadded packs q, which has an OPT record, with an EDNS(0) Padding
// option (RFC 7830) that makes its length a multiple of paddingBlock.
// q itself is not changed.
func packPadded(q *dns.Msg) ([]byte, error) {
	b, err := q.Pack()
	if err != nil {
		return nil, err
	}
	opt := q.IsEdns0()
	if opt == nil {
		return b, nil
	}
	// The option costs 4 bytes (code, length) besides its padding.
	n := (paddingBlock - (len(b)+4)%paddingBlock) % paddingBlock
	p := q.Copy()
	popt := p.IsEdns0()
	popt.Option = append(popt.Option, &dns.EDNS0_PADDING{Padding: make([]byte, n)})
	return p.Pack()
}

// parseReply unpacks an upstream answer and checks that it answers q.
func parseReply(q *dns.Msg, raw []byte) (*dns.Msg, error) {
	m := new(dns.Msg)
	if err := m.Unpack(raw); err != nil {
		return nil, fmt.Errorf("unpack answer: %w", err)
	}
	switch {
	case m.Id != q.Id:
		return nil, errors.New("answer id does not match")
	case !m.Response || m.Opcode != dns.OpcodeQuery:
		return nil, errors.New("answer is not a query response")
	case len(m.Question) != 1 || len(q.Question) != 1:
		return nil, errors.New("answer has no single question")
	}
	aq, qq := m.Question[0], q.Question[0]
	if aq.Qtype != qq.Qtype || aq.Qclass != qq.Qclass || !strings.EqualFold(aq.Name, qq.Name) {
		return nil, errors.New("answer is for another question")
	}
	switch m.Rcode {
	case dns.RcodeServerFailure, dns.RcodeRefused, dns.RcodeNotImplemented, dns.RcodeFormatError:
		return nil, fmt.Errorf("upstream answered %s", rcodeName(m.Rcode))
	}
	// Some records unpack from truncated RDATA (an SOA with RDLENGTH 0
	// unpacks as all zeroes) yet pack into bytes that do not unpack again:
	// such an answer would reach clients malformed, so refuse it here.
	if b, err := m.Pack(); err != nil {
		return nil, fmt.Errorf("repack answer: %w", err)
	} else if err := new(dns.Msg).Unpack(b); err != nil {
		return nil, fmt.Errorf("answer has malformed records: %w", err)
	}
	return m, nil
}

// stripOPT removes the OPT (and any TSIG) record from m's additional section.
func stripOPT(m *dns.Msg) {
	extra := m.Extra[:0]
	for _, rr := range m.Extra {
		switch rr.Header().Rrtype {
		case dns.TypeOPT, dns.TypeTSIG:
			continue
		}
		extra = append(extra, rr)
	}
	clear(m.Extra[len(extra):])
	m.Extra = extra
}

// dialExchange sends a packed query to addr over a new UDP socket (a fresh
// random source port each time) or TCP connection and returns the raw
// answer whose ID matches, within cfg.Timeout.
func (r *Resolver) dialExchange(ctx context.Context, addr netip.AddrPort, query []byte, tcp bool) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	var d net.Dialer
	d.SetMultipathTCP(false)
	network := "udp"
	if tcp {
		network = "tcp"
	}
	c, err := d.DialContext(ctx, network, addr.String())
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", network, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if tcp {
		out := make([]byte, 2+len(query))
		binary.BigEndian.PutUint16(out, uint16(len(query)))
		copy(out[2:], query)
		if _, err := c.Write(out); err != nil {
			return nil, fmt.Errorf("write tcp query: %w", err)
		}
		var lb [2]byte
		if _, err := readFull(c, lb[:]); err != nil {
			return nil, fmt.Errorf("read tcp answer: %w", err)
		}
		buf := make([]byte, binary.BigEndian.Uint16(lb[:]))
		if _, err := readFull(c, buf); err != nil {
			return nil, fmt.Errorf("read tcp answer: %w", err)
		}
		return buf, nil
	}
	if _, err := c.Write(query); err != nil {
		return nil, fmt.Errorf("write udp query: %w", err)
	}
	buf := make([]byte, dns.MaxMsgSize)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, fmt.Errorf("read udp answer: %w", err)
		}
		// A stray datagram with another ID (late answer, spoof attempt) is
		// skipped; the connected socket already filters the source.
		if n >= headerLen && buf[0] == query[0] && buf[1] == query[1] && buf[2]&0x80 != 0 {
			return append([]byte(nil), buf[:n]...), nil
		}
	}
}

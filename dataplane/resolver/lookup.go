package resolver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// LookupAddrs resolves name's A and AAAA records the way a client query
// is: from the cache, or through the cloud resolvers (sharing an exchange
// in flight), caching the answers. The answers go through Snoop as a
// client's would, so they count as the name's DNS evidence. It returns
// the addresses found (in answer order, IPv4 first), or an error when
// neither type gave any: the upstreams failed, or the name has no address
// (NXDOMAIN, NODATA).
func (r *Resolver) LookupAddrs(ctx context.Context, name string) ([]netip.Addr, error) {
	fqdn := dns.Fqdn(strings.ToLower(strings.TrimSuffix(name, ".")))
	if _, ok := dns.IsDomainName(fqdn); !ok || fqdn == "." {
		return nil, fmt.Errorf("lookup %q: not a domain name", name)
	}
	types := []uint16{dns.TypeA, dns.TypeAAAA}
	addrs := make([][]netip.Addr, len(types))
	errs := make([]error, len(types))
	var wg sync.WaitGroup
	for i, qt := range types {
		wg.Go(func() { addrs[i], errs[i] = r.lookupType(ctx, fqdn, qt) })
	}
	wg.Wait()
	out := append(addrs[0], addrs[1]...)
	if len(out) == 0 {
		return nil, fmt.Errorf("lookup %s: %w", canonName(fqdn), errors.Join(errs...))
	}
	return out, nil
}

// lookupType answers one question for LookupAddrs and snoops the answer.
func (r *Resolver) lookupType(ctx context.Context, fqdn string, qtype uint16) ([]netip.Addr, error) {
	k := cacheKey{name: fqdn, qtype: qtype, qclass: dns.ClassINET}
	ans, elapsed, ok := r.cache.get(k, r.now())
	if !ok {
		var err error
		if ans, err = r.lookup(ctx, k); err != nil {
			return nil, err
		}
	}
	q := new(dns.Msg)
	q.Question = []dns.Question{{Name: fqdn, Qtype: qtype, Qclass: dns.ClassINET}}
	out := reply(q, ans, elapsed)
	if out.Rcode != dns.RcodeSuccess {
		return nil, fmt.Errorf("%s %s: %s", dns.TypeToString[qtype], canonName(fqdn), rcodeName(out.Rcode))
	}
	r.snoop(out)
	var addrs []netip.Addr
	for _, s := range snoopReports(out) {
		if s.name == canonName(fqdn) {
			addrs = s.addrs
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%s %s: no records", dns.TypeToString[qtype], canonName(fqdn))
	}
	return addrs, nil
}

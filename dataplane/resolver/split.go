package resolver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// Split DNS: an office's internal names (a NAS, a printer, corp.example
// behind a VPN, the LAN's reverse zones) are answered by the office's own
// resolvers, which sit on the LAN or behind a VPN interface; the cloud
// resolvers cannot answer them and must not see them. Every name under a
// zone's suffixes goes to that zone's servers (plain DNS, UDP and TCP on
// truncation, in order), never to the cloud resolvers, whatever the
// answer. Answers are cached like the cloud's and go through Snoop, which
// learns only names on the bypass list: an internal name becomes bypass
// evidence only when it is listed.

// SplitZone is a set of domain suffixes and the resolvers that answer them.
type SplitZone struct {
	// Suffixes are domain names; each covers itself and every name under it.
	Suffixes []string
	// Servers are the internal resolvers, tried in order.
	Servers []netip.AddrPort
}

// splitZones finds the zone of a name: the longest suffix wins.
type splitZones map[string]*SplitZone

// newSplitZones indexes zones by suffix; a suffix in two zones is an error.
func newSplitZones(zones []SplitZone) (splitZones, error) {
	s := splitZones{}
	for i := range zones {
		z := &zones[i]
		if len(z.Servers) == 0 {
			return nil, fmt.Errorf("split zone %d: no servers", i)
		}
		for _, a := range z.Servers {
			if !a.IsValid() || a.Port() == 0 {
				return nil, fmt.Errorf("split zone %d: invalid server %q", i, a)
			}
		}
		for _, suf := range z.Suffixes {
			n := canonName(strings.TrimSpace(suf))
			if n == "." || n == "" {
				return nil, fmt.Errorf("split zone %d: empty suffix (the root would take every name from the cloud)", i)
			}
			if _, dup := s[n]; dup {
				return nil, fmt.Errorf("split zone %d: suffix %s is in two zones", i, n)
			}
			s[n] = z
		}
	}
	return s, nil
}

// zone returns the zone name (canonical: lowercase, no trailing dot)
// belongs to, or nil: walking from the whole name to its last label finds
// the longest suffix first.
func (s splitZones) zone(name string) *SplitZone {
	if len(s) == 0 {
		return nil
	}
	for {
		if z, ok := s[name]; ok {
			return z
		}
		i := strings.IndexByte(name, '.')
		if i < 0 {
			return nil
		}
		name = name[i+1:]
	}
}

// forwardSplit asks z's servers in order for q: the first answer that is
// not an error rcode wins. No health state: internal resolvers are few
// and near, and a failure costs one timeout each.
func (r *Resolver) forwardSplit(ctx context.Context, z *SplitZone, q *dns.Msg) (*dns.Msg, error) {
	var errs []error
	for _, a := range z.Servers {
		m, err := r.exchangeOne(ctx, &upstream{name: a.String(), addr: a}, q)
		if err != nil {
			r.splitErrors.Add(1)
			errs = append(errs, fmt.Errorf("%s: %w", a, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		r.splitQueries.Add(1)
		stripOPT(m)
		return m, nil
	}
	r.log.Debug("internal resolvers failed", "name", q.Question[0].Name, "err", errors.Join(errs...))
	return nil, fmt.Errorf("forward %s to the internal resolvers: %w", q.Question[0].Name, errors.Join(errs...))
}

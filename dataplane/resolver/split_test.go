package resolver

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// TestSplit: names under a split zone are answered by its servers (the
// longest suffix wins, a dead server is skipped) and never reach the
// cloud resolver, over UDP and TCP, also through LookupAddrs; a split zone
// wins over NXDomain; other names go to the cloud.
func TestSplit(t *testing.T) {
	cloud, corp, nas := newFakeUpstream(t), newFakeUpstream(t), newFakeUpstream(t)
	dead := deadUDPAddr(t)
	var sn snoopLog
	r := startResolver(t, Config{
		Upstreams: []netip.AddrPort{cloud.addr},
		Split: []SplitZone{
			{Suffixes: []string{"Example.COM.", "113.0.203.in-addr.arpa"}, Servers: []netip.AddrPort{dead, corp.addr}},
			{Suffixes: []string{"short.example.com"}, Servers: []netip.AddrPort{nas.addr}},
		},
		NXDomain: []string{"in-addr.arpa", "use-application-dns.net"},
		Snoop:    sn.snoop,
	})
	for _, network := range []string{"udp", "tcp"} {
		m := ask(t, r.addr, network, query("www.example.com.", dns.TypeA))
		if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 || !strings.Contains(m.Answer[0].String(), "203.0.113.10") {
			t.Fatalf("www.example.com over %s: %v", network, m)
		}
		m = ask(t, r.addr, network, query("nx.example.com.", dns.TypeA))
		if m.Rcode != dns.RcodeNameError {
			t.Fatalf("nx.example.com over %s: %s, want the internal NXDOMAIN", network, dns.RcodeToString[m.Rcode])
		}
		m = ask(t, r.addr, network, query("short.example.com.", dns.TypeAAAA))
		if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
			t.Fatalf("short.example.com over %s: %v", network, m)
		}
		// The reverse zone is split (NXDomain covers in-addr.arpa): asked
		// of the internal resolver, which has no such name.
		m = ask(t, r.addr, network, query("10.113.0.203.in-addr.arpa.", dns.TypePTR))
		if m.Rcode != dns.RcodeNameError {
			t.Fatalf("split reverse name over %s: %s", network, dns.RcodeToString[m.Rcode])
		}
		// Another reverse name is answered by NXDomain itself.
		m = ask(t, r.addr, network, query("1.0.168.192.in-addr.arpa.", dns.TypePTR))
		if m.Rcode != dns.RcodeNameError {
			t.Fatalf("local reverse name over %s: %s", network, dns.RcodeToString[m.Rcode])
		}
	}
	if _, err := r.LookupAddrs(t.Context(), "alias.example.com"); err != nil {
		t.Fatalf("LookupAddrs of a split name: %v", err)
	}
	for _, n := range []string{"www.example.com.", "nx.example.com.", "short.example.com.", "alias.example.com.", "10.113.0.203.in-addr.arpa.", "1.0.168.192.in-addr.arpa."} {
		if c := cloud.count(n); c != 0 {
			t.Errorf("the cloud resolver was asked %s %d times", n, c)
		}
	}
	if corp.count("www.example.com.") != 1 || corp.count("10.113.0.203.in-addr.arpa.") == 0 || corp.count("alias.example.com.") == 0 {
		t.Errorf("corp resolver counts: www %d, reverse %d, alias %d", corp.count("www.example.com."), corp.count("10.113.0.203.in-addr.arpa."), corp.count("alias.example.com."))
	}
	if nas.count("short.example.com.") != 1 || corp.count("short.example.com.") != 0 {
		t.Errorf("longest suffix: nas asked %d, corp asked %d", nas.count("short.example.com."), corp.count("short.example.com."))
	}
	if corp.count("1.0.168.192.in-addr.arpa.") != 0 {
		t.Error("an NXDomain reverse name outside the split zone went to the internal resolver")
	}
	st := r.Stats()
	if st.SplitQueries == 0 || st.SplitErrors == 0 {
		t.Errorf("stats %+v: want split queries and the dead server's errors", st)
	}
	// A cloud name still goes to the cloud.
	if m := ask(t, r.addr, "udp", query("www.example.net.", dns.TypeA)); cloud.count("www.example.net.") != 1 {
		t.Errorf("www.example.net: %v, cloud asked %d times", m, cloud.count("www.example.net."))
	}
}

func TestSplitBadConfig(t *testing.T) {
	up := netip.MustParseAddrPort("127.0.0.1:53")
	for name, zones := range map[string][]SplitZone{
		"no servers":   {{Suffixes: []string{"corp.example"}}},
		"root suffix":  {{Suffixes: []string{"."}, Servers: []netip.AddrPort{up}}},
		"twice":        {{Suffixes: []string{"corp.example"}, Servers: []netip.AddrPort{up}}, {Suffixes: []string{"Corp.Example."}, Servers: []netip.AddrPort{up}}},
		"invalid addr": {{Suffixes: []string{"corp.example"}, Servers: []netip.AddrPort{{}}}},
		"port zero":    {{Suffixes: []string{"corp.example"}, Servers: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}}},
	} {
		if _, err := New(Config{Upstreams: []netip.AddrPort{up}, Split: zones}); err == nil {
			t.Errorf("%s: New accepted %+v", name, zones)
		}
	}
}

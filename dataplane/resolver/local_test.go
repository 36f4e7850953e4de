package resolver

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// TestLocalNXDomain: names in Config.NXDomain (and under them) get
// NXDOMAIN over UDP and TCP without reaching the upstream, are not snooped
// and are not cached for the fast path; other names are forwarded.
func TestLocalNXDomain(t *testing.T) {
	up := newFakeUpstream(t)
	var sn snoopLog
	r := startResolver(t, Config{
		Upstreams: []netip.AddrPort{up.addr},
		NXDomain:  []string{"www.example.com", "use-application-dns.net"},
		Snoop:     sn.snoop,
	})
	for range 3 { // a second and third ask must not come from a cache either
		for _, network := range []string{"udp", "tcp"} {
			for _, q := range []*dns.Msg{
				query("WWW.example.com.", dns.TypeA),
				query("a.www.example.com.", dns.TypeAAAA),
				query("use-application-dns.net.", dns.TypeA),
			} {
				m := ask(t, r.addr, network, q)
				if m.Rcode != dns.RcodeNameError || len(m.Answer) != 0 {
					t.Fatalf("%s over %s: rcode %s with %d answers, want NXDOMAIN and none", q.Question[0].Name, network, dns.RcodeToString[m.Rcode], len(m.Answer))
				}
				if !m.RecursionAvailable || m.Question[0].Name != q.Question[0].Name {
					t.Errorf("%s: answer lacks RA or the client's question: %v", q.Question[0].Name, m)
				}
			}
		}
	}
	for _, n := range []string{"www.example.com.", "a.www.example.com.", "use-application-dns.net."} {
		if c := up.count(n); c != 0 {
			t.Errorf("the upstream was asked %q %d times, want never", n, c)
		}
	}
	if calls := sn.take(); len(calls) != 0 {
		t.Errorf("local answers were snooped: %v", calls)
	}
	if got := r.Stats().LocalNXDomain; got != 18 {
		t.Errorf("LocalNXDomain = %d, want 18", got)
	}
	// Another name is forwarded as usual.
	m := ask(t, r.addr, "udp", query("alias.example.com.", dns.TypeA))
	if m.Rcode != dns.RcodeSuccess || len(m.Answer) == 0 || up.count("alias.example.com.") != 1 {
		t.Fatalf("alias.example.com: rcode %s, %d answers, upstream asked %d times", dns.RcodeToString[m.Rcode], len(m.Answer), up.count("alias.example.com."))
	}
}

// TestLocalAddrs: the gateway's own names are answered from LocalAddrs by
// family (NODATA for other types), never forwarded; other names are.
func TestLocalAddrs(t *testing.T) {
	up := newFakeUpstream(t)
	gw := []netip.Addr{netip.MustParseAddr("192.168.77.1"), netip.MustParseAddr("fd00:77::1")}
	r := startResolver(t, Config{
		Upstreams: []netip.AddrPort{up.addr},
		LocalAddrs: func(name string) ([]netip.Addr, bool) {
			return gw, name == "gateway.lan" || name == "www.example.com"
		},
	})
	for _, network := range []string{"udp", "tcp"} {
		for _, tc := range []struct {
			name  string
			qtype uint16
			want  string
		}{{"Gateway.LAN.", dns.TypeA, "192.168.77.1"}, {"gateway.lan.", dns.TypeAAAA, "fd00:77::1"}, {"www.example.com.", dns.TypeA, "192.168.77.1"}, {"gateway.lan.", dns.TypeMX, ""}} {
			m := ask(t, r.addr, network, query(tc.name, tc.qtype))
			if m.Rcode != dns.RcodeSuccess {
				t.Fatalf("%s %s: %s", tc.name, dns.TypeToString[tc.qtype], dns.RcodeToString[m.Rcode])
			}
			if tc.want == "" {
				if len(m.Answer) != 0 {
					t.Errorf("%s MX: %v, want NODATA", tc.name, m.Answer)
				}
				continue
			}
			if len(m.Answer) != 1 || !strings.Contains(m.Answer[0].String(), tc.want) || m.Answer[0].Header().Name != tc.name {
				t.Errorf("%s %s over %s: %v, want %s", tc.name, dns.TypeToString[tc.qtype], network, m.Answer, tc.want)
			}
		}
	}
	if c := up.count("www.example.com."); c != 0 {
		t.Errorf("a local name went upstream %d times", c)
	}
	if m := ask(t, r.addr, "udp", query("alias.example.com.", dns.TypeA)); len(m.Answer) == 0 || up.count("alias.example.com.") != 1 {
		t.Errorf("another name: %v", m)
	}
}

// TestLocalPTR: PTR queries for local addresses (the LAN's DHCP leases)
// are answered from LocalPTR, ahead of the private reverse zones'
// NXDOMAIN; other reverse names go their usual way.
func TestLocalPTR(t *testing.T) {
	up := newFakeUpstream(t)
	names := map[netip.Addr]string{netip.MustParseAddr("192.168.77.23"): "nas.lan", netip.MustParseAddr("fd00:77::23"): "nas.lan"}
	r := startResolver(t, Config{
		Upstreams: []netip.AddrPort{up.addr},
		NXDomain:  []string{"168.192.in-addr.arpa"},
		LocalPTR: func(a netip.Addr) (string, bool) {
			n, ok := names[a]
			return n, ok
		},
	})
	for _, tc := range []struct{ qname, want string }{
		{"23.77.168.192.in-addr.arpa.", "nas.lan."},
		{"23.77.168.192.IN-ADDR.ARPA.", "nas.lan."},
		{mustReverse(t, "fd00:77::23"), "nas.lan."},
	} {
		m := ask(t, r.addr, "udp", query(tc.qname, dns.TypePTR))
		if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
			t.Fatalf("%s: %s %v", tc.qname, dns.RcodeToString[m.Rcode], m.Answer)
		}
		if p, ok := m.Answer[0].(*dns.PTR); !ok || p.Ptr != tc.want || p.Hdr.Name != tc.qname {
			t.Errorf("%s: %v, want %s", tc.qname, m.Answer[0], tc.want)
		}
	}
	// An address without a lease in the private zone: the zone's NXDOMAIN.
	if m := ask(t, r.addr, "udp", query("24.77.168.192.in-addr.arpa.", dns.TypePTR)); m.Rcode != dns.RcodeNameError {
		t.Errorf("unleased private address: %s", dns.RcodeToString[m.Rcode])
	}
	// A leased address asked for another type is not answered locally.
	if m := ask(t, r.addr, "udp", query("23.77.168.192.in-addr.arpa.", dns.TypeTXT)); m.Rcode != dns.RcodeNameError {
		t.Errorf("TXT of a leased address: %s", dns.RcodeToString[m.Rcode])
	}
	if up.count("23.77.168.192.in-addr.arpa.") != 0 {
		t.Error("a local PTR query went upstream")
	}
}

func mustReverse(t *testing.T, a string) string {
	t.Helper()
	n, err := dns.ReverseAddr(a)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestReverseAddr(t *testing.T) {
	for _, a := range []string{"192.168.77.23", "0.0.0.0", "255.255.255.255", "fd00:77::23", "2001:db8:1:2:3:4:5:6", "::"} {
		n, _ := dns.ReverseAddr(a)
		got, ok := reverseAddr(canonName(n))
		if !ok || got != netip.MustParseAddr(a) {
			t.Errorf("reverseAddr(%s) = %v, %v; want %s", n, got, ok, a)
		}
	}
	for _, n := range []string{"168.192.in-addr.arpa", "in-addr.arpa", "1.2.3.4.5.in-addr.arpa", "256.1.1.1.in-addr.arpa", "01.1.1.1.in-addr.arpa",
		"x.1.1.1.in-addr.arpa", ".1.1.1.in-addr.arpa", "1.0.ip6.arpa", "10.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa", "example.com"} {
		if a, ok := reverseAddr(n); ok {
			t.Errorf("reverseAddr(%q) = %v", n, a)
		}
	}
}

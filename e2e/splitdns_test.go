package e2e

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/cloudsteer/cloudsteer/lab/gateway"
)

// officeDNS is an office's internal resolver (miekg/dns, UDP and TCP) in
// the second LAN host's namespace: it knows corp.example and the LAN
// reverse zones 0.10.10.in-addr.arpa and (fd00:10::/64) lan6Reverse, and
// records every name it is asked.
type officeDNS struct {
	mu    sync.Mutex
	asked []string
}

func (o *officeDNS) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	m := new(dns.Msg).SetReply(q)
	m.Authoritative = true
	name := strings.ToLower(q.Question[0].Name)
	o.mu.Lock()
	o.asked = append(o.asked, name)
	o.mu.Unlock()
	rr := func(s string) {
		r, err := dns.NewRR(s)
		if err == nil {
			m.Answer = append(m.Answer, r)
		}
	}
	switch {
	case name == "nas.corp.example." && q.Question[0].Qtype == dns.TypeA:
		rr("nas.corp.example. 60 IN A 10.10.0.20")
	case name == "nas.corp.example." && q.Question[0].Qtype == dns.TypeAAAA:
		rr("nas.corp.example. 60 IN AAAA fd00:10::20")
	case name == "20.0.10.10.in-addr.arpa." && q.Question[0].Qtype == dns.TypePTR:
		rr("20.0.10.10.in-addr.arpa. 60 IN PTR nas.corp.example.")
	case name == nasPTR6 && q.Question[0].Qtype == dns.TypePTR:
		rr(nasPTR6 + " 60 IN PTR nas.corp.example.")
	case name == "nas.corp.example.", name == "20.0.10.10.in-addr.arpa.", name == nasPTR6:
	default:
		m.Rcode = dns.RcodeNameError
	}
	w.WriteMsg(m)
}

// lan6Reverse is the reverse zone of the lab LAN's fd00:10::/64, and
// nasPTR6 the reverse name of the office NAS's fd00:10::20 in it.
const (
	lan6Reverse = "0.0.0.0.0.0.0.0.0.1.0.0.0.0.d.f.ip6.arpa"
	nasPTR6     = "0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0." + lan6Reverse + "."
)

func (o *officeDNS) names() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.asked...)
}

// startOfficeDNS serves officeDNS on port 53 of addrs in role's namespace.
func startOfficeDNS(t *testing.T, e *env, role string, addrs ...netip.Addr) *officeDNS {
	t.Helper()
	o := &officeDNS{}
	for _, a := range addrs {
		var pc net.PacketConn
		var ln net.Listener
		err := privtest.Do(e.lab.NS(role), func() error {
			var err error
			if pc, err = net.ListenPacket("udp", netip.AddrPortFrom(a, 53).String()); err != nil {
				return err
			}
			ln, err = net.Listen("tcp", netip.AddrPortFrom(a, 53).String())
			return err
		})
		if err != nil {
			t.Fatalf("listen office dns on %s: %v", a, err)
		}
		for _, srv := range []*dns.Server{{PacketConn: pc, Handler: o}, {Listener: ln, Handler: o}} {
			go srv.ActivateAndServe()
			t.Cleanup(func() { srv.Shutdown() })
		}
	}
	return o
}

// TestSplitDNS: with dns.split, names of the office's internal zone and
// its LAN reverse zones (IPv4 and IPv6) are answered by the office's resolver (on a LAN
// host), over IPv4 and IPv6 and over UDP and TCP, and the cloud resolver
// sees none of them; other private reverse names get NXDOMAIN from the
// gateway itself, and public names still go to the cloud.
func TestSplitDNS(t *testing.T) {
	e := newLabEnv(t, lab.Options{LAN2: true})
	office := startOfficeDNS(t, e, lab.RoleLAN2, lab.Client2V4.Addr(), lab.Client2V6.Addr())
	e.startGateway(gateway.Options{
		AdminHostnames: []string{"gateway.office.example"},
		DNS: []string{"split: [{domains: [corp.example, 0.10.10.in-addr.arpa, " + lan6Reverse + "], servers: [\"" +
			lab.Client2V4.Addr().String() + "\", \"[" + lab.Client2V6.Addr().String() + "]:53\"]}]"},
	})
	start := time.Now()
	for _, server := range []string{lab.NobodyDNSV4.String(), lab.NobodyDNSV6.String()} {
		for _, proto := range []string{"+notcp", "+tcp"} {
			e.expectDig(server, proto,
				digCase{"nas.corp.example", "A", "10.10.0.20"},
				digCase{"NAS.corp.example", "AAAA", "fd00:10::20"},
				digCase{"10.10.0.20", "-x", "nas.corp.example."},
				digCase{"fd00:10::20", "-x", "nas.corp.example."},
			)
			for _, private := range []string{"192.168.7.7", "fd00:99::7"} {
				out, err := e.run(lab.RoleLAN, 10*time.Second, "dig", "+time=3", "+tries=1", proto, "@"+server, "-x", private)
				if err != nil || !strings.Contains(out, "status: NXDOMAIN") {
					t.Fatalf("private reverse name of %s @%s: want NXDOMAIN from the gateway: %v\n%s", private, server, err, out)
				}
			}
		}
	}
	// The gateway's own name (admin.hostnames) resolves to its LAN addresses.
	for _, q := range []struct{ qtype, want string }{{"A", lab.GWLANV4.Addr().String()}, {"AAAA", lab.GWLANV6.Addr().String()}} {
		ans, err := e.dig(lab.NobodyDNSV6.String(), "Gateway.Office.Example", q.qtype)
		if err != nil || !slices.Contains(strings.Fields(ans), q.want) {
			t.Fatalf("the gateway's own name %s = %q, %v; want %s among them", q.qtype, ans, err, q.want)
		}
	}
	if ans, err := e.dig(lab.NobodyDNSV4.String(), "www.example.com", "A"); err != nil || strings.TrimSpace(ans) != site(t, "www.example.com").V4.String() {
		t.Fatalf("a public name: %q, %v", ans, err)
	}
	var cloudSaw bool
	for _, r := range e.dnsLog(start) {
		n := strings.ToLower(r.Name)
		if strings.Contains(n, "corp.example") || strings.HasSuffix(n, "in-addr.arpa.") || strings.HasSuffix(n, "ip6.arpa.") || strings.Contains(n, "office.example") {
			t.Errorf("the cloud side saw %+v", r)
		}
		if r.Server == "cloud" && n == "www.example.com." {
			cloudSaw = true
		}
	}
	if !cloudSaw {
		t.Error("the cloud resolver did not see the public name")
	}
	asked := office.names()
	if len(asked) == 0 {
		t.Fatal("the office resolver was asked nothing")
	}
	for _, n := range asked {
		if !strings.HasSuffix(n, "corp.example.") && !strings.HasSuffix(n, "0.10.10.in-addr.arpa.") && !strings.HasSuffix(n, lan6Reverse+".") {
			t.Errorf("the office resolver was asked %s, outside its zones", n)
		}
	}
}

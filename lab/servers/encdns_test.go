package servers

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/cloudsteer/cloudsteer/dataplane/resolver/transport"
	"github.com/cloudsteer/cloudsteer/internal/privtest"
	"github.com/cloudsteer/cloudsteer/lab"
)

// The lab cloud resolver answers over DoT, DoH (HTTP/2 and HTTP/3) and DoQ, as
// dns.cloud.example verified by the lab CA, on both of its addresses,
// with the same answers (and sinkholes) as plain DNS, and logs the
// transport.
func TestCloudResolverEncrypted(t *testing.T) {
	tl := startTestLab(t)
	for _, a := range []netip.Addr{lab.CloudDNSV4, lab.CloudDNSV6} {
		for _, tc := range []struct {
			kind transport.Kind
			port uint16
			log  string
		}{{transport.TLS, DoTPort, "tls"}, {transport.HTTPS, DoHPort, "https"}, {transport.HTTP3, DoHPort, "h3"}, {transport.QUIC, DoQPort, "quic"}} {
			t.Run(tc.kind.String()+"/"+a.String(), func(t *testing.T) {
				sp := transport.Spec{Kind: tc.kind, Host: CloudDNSName, Port: tc.port, Path: DoHPath, Addrs: []netip.Addr{a}}
				tr, err := transport.New(sp, transport.Options{RootCAs: tl.lab.CAPool()})
				if err != nil {
					t.Fatal(err)
				}
				defer tr.Close()
				for _, q := range []struct {
					name string
					want string
				}{{"www.example.com.", "203.0.113.10"}, {"scores.sports.example.", "0.0.0.0"}} {
					m := new(dns.Msg).SetQuestion(q.name, dns.TypeA)
					packed, _ := m.Pack()
					var raw []byte
					err := tl.doNS(func() error {
						ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
						defer cancel()
						var err error
						raw, err = tr.Exchange(ctx, packed)
						return err
					})
					if err != nil {
						t.Fatalf("%s: %v", q.name, err)
					}
					ans := new(dns.Msg)
					if err := ans.Unpack(raw); err != nil {
						t.Fatal(err)
					}
					if len(ans.Answer) != 1 || ans.Answer[0].(*dns.A).A.String() != q.want || ans.Id != m.Id {
						t.Fatalf("%s: %v (id %d, want %d)", q.name, ans.Answer, ans.Id, m.Id)
					}
				}
				recs, err := ReadDNSLog(tl.path(DNSLogFile))
				if err != nil {
					t.Fatal(err)
				}
				last := recs[len(recs)-1]
				if last.Server != "cloud" || last.Transport != tc.log || !last.Blocked || last.Name != "scores.sports.example." {
					t.Fatalf("last record %+v, want a blocked cloud query over %s", last, tc.log)
				}
			})
		}
	}
}

func (tl *testLab) doNS(fn func() error) error { return privtest.Do(tl.ns, fn) }

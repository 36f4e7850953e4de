package servers

import (
	"strings"
	"testing"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
	"github.com/cloudsteer/cloudsteer/lab"
	"github.com/miekg/dns"
)

// dig runs dig inside the lab namespace and returns its output.
func (tl *testLab) dig(tb testing.TB, args ...string) string {
	tb.Helper()
	return privtest.Run(tb, tl.ns, append([]string{"dig", "+time=3", "+tries=1"}, args...)...)
}

func TestDNSWithDig(t *testing.T) {
	privtest.RequireCommand(t, "dig")
	tl := startTestLab(t)
	cloud4, cloud6 := "@"+lab.CloudDNSV4.String(), "@"+lab.CloudDNSV6.String()
	auth4, auth6 := "@"+lab.AuthDNSV4.String(), "@"+lab.AuthDNSV6.String()
	cases := []struct {
		name   string
		args   []string
		short  string // expected +short output, lines joined by spaces
		status string // expected status in the full output ("" to skip)
	}{
		{"cloud A", []string{cloud4, "www.example.com", "A", "+short"}, "203.0.113.10", ""},
		{"cloud AAAA over v6", []string{cloud6, "news.example.com", "AAAA", "+short"}, "2001:db8:113::11", ""},
		{"cloud AAAA over tcp", []string{cloud4, "bank.example", "AAAA", "+tcp", "+short"}, "2001:db8:113::40", ""},
		{"cloud CNAME chain", []string{cloud4, "alias.example.com", "A", "+short"}, "www.example.com. 203.0.113.10", ""},
		{"auth CNAME AAAA", []string{auth6, "alias.example.com", "AAAA", "+short"}, "www.example.com. 2001:db8:113::10", ""},
		{"auth CNAME query", []string{auth4, "alias.example.com", "CNAME", "+short"}, "www.example.com.", ""},
		{"cloud proxy name", []string{cloud4, ProxyName, "A", "+short"}, lab.CloudProxyV4.String(), ""},
		{"case-insensitive", []string{auth4, "WWW.Example.COM", "A", "+short"}, "203.0.113.10", ""},
		{"sports sinkholed A", []string{cloud4, "scores.sports.example", "A", "+short"}, "0.0.0.0", ""},
		{"sports sinkholed AAAA", []string{cloud6, "scores.sports.example", "AAAA", "+short"}, "::", ""},
		{"sports subdomain sinkholed", []string{cloud4, "live.scores.sports.example", "A", "+short"}, "0.0.0.0", ""},
		{"sports answered by auth", []string{auth4, "scores.sports.example", "A", "+short"}, "203.0.113.20", ""},
		{"nxdomain via cloud", []string{cloud4, "nope.example.com", "A"}, "", "NXDOMAIN"},
		{"nxdomain at auth", []string{auth4, "nope.example.org", "AAAA"}, "", "NXDOMAIN"},
		{"nodata", []string{auth4, "www.example.com", "MX"}, "", "NOERROR"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := tl.dig(t, tc.args...)
			if tc.status != "" {
				if !strings.Contains(out, "status: "+tc.status) {
					t.Fatalf("want status %s:\n%s", tc.status, out)
				}
				if !strings.Contains(out, "IN\tSOA") {
					t.Errorf("negative answer without SOA:\n%s", out)
				}
				return
			}
			if got := strings.Join(strings.Fields(out), " "); got != tc.short {
				t.Fatalf("got %q, want %q", got, tc.short)
			}
		})
	}

	t.Run("truncated over udp, complete over tcp", func(t *testing.T) {
		for _, server := range []string{auth4, cloud4} {
			// dig retries over TCP by itself after a truncated UDP answer.
			out := tl.dig(t, server, BigName, "A")
			if !strings.Contains(out, "Truncated, retrying in TCP mode") {
				t.Errorf("%s: no truncation:\n%s", server, out)
			}
			if n := strings.Count(out, "IN\tA\t198.18."); n != BigCount {
				t.Errorf("%s: %d A records after TCP retry, want %d", server, n, BigCount)
			}
			// Without EDNS0 even the TXT answer does not fit 512 bytes.
			out = tl.dig(t, server, BigName, "TXT", "+noedns", "+ignore")
			if !strings.Contains(out, " tc ") && !strings.Contains(out, " tc;") {
				t.Errorf("%s: TXT over UDP without EDNS0 not truncated:\n%s", server, out)
			}
		}
	})

	recs, err := ReadDNSLog(tl.path(DNSLogFile))
	if err != nil {
		t.Fatal(err)
	}
	var sawBlocked, sawTrunc, sawTCP, sawCloudNX, sawForward bool
	for _, r := range recs {
		sawBlocked = sawBlocked || (r.Server == "cloud" && r.Blocked && r.Name == "scores.sports.example." && r.Type == "A")
		sawTrunc = sawTrunc || (r.Server == "auth" && r.Truncated && r.Transport == "udp" && r.Name == BigName+".")
		sawTCP = sawTCP || (r.Server == "cloud" && r.Transport == "tcp" && r.Name == "bank.example." && r.Type == "AAAA")
		sawCloudNX = sawCloudNX || (r.Server == "cloud" && r.Rcode == "NXDOMAIN" && r.Name == "nope.example.com.")
		// The cloud resolver asks the authoritative server from its own address.
		sawForward = sawForward || (r.Server == "auth" && strings.HasPrefix(r.Remote, lab.CloudDNSV4.String()+":") && r.Name == "nope.example.com.")
		if r.Remote == "" || r.Time.IsZero() {
			t.Errorf("incomplete record %+v", r)
		}
	}
	if !sawBlocked || !sawTrunc || !sawTCP || !sawCloudNX || !sawForward {
		t.Errorf("dns log: blocked=%v truncated=%v tcp=%v cloud-nxdomain=%v forwarded=%v in %d records", sawBlocked, sawTrunc, sawTCP, sawCloudNX, sawForward, len(recs))
	}
}

// FuzzAuthAnswer feeds arbitrary DNS messages to the authoritative and
// cloud (blocked names only: no upstream) answer logic.
func FuzzAuthAnswer(f *testing.F) {
	for _, q := range []struct {
		name string
		t    uint16
	}{{"www.example.com.", dns.TypeA}, {"alias.example.com.", dns.TypeAAAA}, {"big.example.com.", dns.TypeTXT}, {"x.", dns.TypeANY}, {"scores.sports.example.", dns.TypeA}} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.t)
		m.SetEdns0(1232, false)
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	z := newAuthZone(Config{Dir: "x"})
	c := &cloudResolver{sites: newSiteTable(lab.Sites)}
	f.Fuzz(func(t *testing.T, b []byte) {
		req := new(dns.Msg)
		if err := req.Unpack(b); err != nil {
			return
		}
		resp := z.answer(req)
		resp.Truncate(dns.MinMsgSize)
		if _, err := resp.Pack(); err != nil {
			t.Fatalf("pack answer: %v", err)
		}
		if req.Opcode == dns.OpcodeQuery && len(req.Question) == 1 && c.blocked(req.Question[0].Name) {
			resp, blocked := c.answer(t.Context(), req)
			if !blocked {
				t.Fatal("blocked name not blocked")
			}
			if _, err := resp.Pack(); err != nil {
				t.Fatalf("pack blocked answer: %v", err)
			}
		}
	})
}

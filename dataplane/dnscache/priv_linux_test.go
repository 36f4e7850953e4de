package dnscache

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/cloudsteer/cloudsteer/dataplane/steer"
	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

// lab is a client namespace and a gateway namespace joined by a veth pair,
// the program attached at the gateway side, and a Go DNS server in the
// gateway namespace on the resolver addresses (on lo) that answers
// whatever falls through with A 198.51.100.99 / a TXT "go".
type lab struct {
	client, gw string
	gwIf       string
	cache      *Cache
}

const (
	labResolver4 = "192.0.2.53"
	labResolver6 = "2001:db8:2::53"
	goAnswerA    = "198.51.100.99"
)

func newLab(t *testing.T, opts Options) *lab {
	t.Helper()
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "ip", "dig")
	l := &lab{client: privtest.NewNetNS(t), gw: privtest.NewNetNS(t), gwIf: "lan0"}
	l.link(t)
	// Checksums in software on both sides: the client's stack then
	// verifies the UDP checksum of every answer, instead of trusting a
	// veth's CHECKSUM_PARTIAL/UNNECESSARY.
	setOffload(t, l.client, "eth0", ethtoolSTXCSUM, false)
	setOffload(t, l.client, "eth0", ethtoolSRXCSUM, false)
	setOffload(t, l.gw, l.gwIf, ethtoolSRXCSUM, false)
	l.serveGo(t)

	privtest.InNetNS(t, l.gw, func() {
		c, err := New(context.Background(), []string{l.gwIf}, opts)
		if err != nil {
			t.Fatal(err)
		}
		l.cache = c
	})
	t.Cleanup(func() {
		if err := l.cache.Close(); err != nil {
			t.Error(err)
		}
	})
	return l
}

// link joins the namespaces with a veth pair (lan0 in the gateway, eth0
// in the client), addresses them as the lab does, routes the client's
// default through the gateway and puts the resolver addresses on the
// gateway's lo.
func (l *lab) link(t testing.TB) {
	t.Helper()
	host := privtest.Unique("dcv")
	privtest.Run(t, "", "ip", "link", "add", host, "type", "veth", "peer", "name", host+"p")
	t.Cleanup(func() { _ = privtest.Command("", "ip", "link", "del", host).Run() })
	privtest.Run(t, "", "ip", "link", "set", host, "netns", l.gw, "name", l.gwIf)
	privtest.Run(t, "", "ip", "link", "set", host+"p", "netns", l.client, "name", "eth0")
	for _, c := range [][]string{
		{l.gw, "ip", "addr", "add", "10.10.0.1/24", "dev", l.gwIf},
		{l.gw, "ip", "addr", "add", "fd00:10::1/64", "dev", l.gwIf, "nodad"},
		{l.gw, "ip", "addr", "add", labResolver4 + "/32", "dev", "lo"},
		{l.gw, "ip", "addr", "add", labResolver6 + "/128", "dev", "lo"},
		{l.gw, "ip", "link", "set", l.gwIf, "up"},
		{l.client, "ip", "addr", "add", "10.10.0.10/24", "dev", "eth0"},
		{l.client, "ip", "addr", "add", "fd00:10::10/64", "dev", "eth0", "nodad"},
		{l.client, "ip", "link", "set", "eth0", "up"},
		{l.client, "ip", "route", "add", "default", "via", "10.10.0.1"},
		{l.client, "ip", "-6", "route", "add", "default", "via", "fd00:10::1"},
	} {
		privtest.Run(t, c[0], c[1:]...)
	}
}

// serveGo starts the fall-through DNS server in the gateway namespace.
func (l *lab) serveGo(t *testing.T) {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg).SetReply(r)
		m.RecursionAvailable = true
		q := r.Question[0]
		switch q.Qtype {
		case dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.ParseIP(goAnswerA)})
		default:
			m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 5}, Txt: []string{"go"}})
		}
		_ = w.WriteMsg(m)
	})
	for _, addr := range []string{labResolver4 + ":53", "[" + labResolver6 + "]:53"} {
		var pc net.PacketConn
		privtest.InNetNS(t, l.gw, func() {
			var err error
			if pc, err = net.ListenPacket("udp", addr); err != nil {
				t.Fatal(err)
			}
		})
		srv := &dns.Server{PacketConn: pc, Handler: h}
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { _ = srv.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
}

// Legacy ethtool ioctl commands (linux/ethtool.h).
const (
	ethtoolSRXCSUM = 0x15
	ethtoolSTXCSUM = 0x17
)

// setOffload switches one checksum offload of iface in namespace ns.
func setOffload(t testing.TB, ns, iface string, cmd uint32, on bool) {
	t.Helper()
	err := privtest.Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		val := struct{ cmd, data uint32 }{cmd: cmd}
		if on {
			val.data = 1
		}
		var ifr [40]byte // struct ifreq: name, then a pointer to the ethtool value
		copy(ifr[:unix.IFNAMSIZ], iface)
		*(*uintptr)(unsafe.Pointer(&ifr[unix.IFNAMSIZ])) = uintptr(unsafe.Pointer(&val))
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
			return errno
		}
		return nil
	})
	if err != nil {
		t.Fatalf("ethtool %#x on %s: %v", cmd, iface, err)
	}
}

// dig runs dig in the client namespace and returns its output.
func (l *lab) dig(t testing.TB, args ...string) string {
	t.Helper()
	out, _ := privtest.Command(l.client, append([]string{"dig", "+tries=1", "+time=2"}, args...)...).CombinedOutput()
	return string(out)
}

// section returns the record lines of one dig output section.
func section(out, name string) []string {
	var lines []string
	in := false
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, ";; "+name+" SECTION:"):
			in = true
		case in && strings.TrimSpace(line) == "":
			return lines
		case in:
			lines = append(lines, line)
		}
	}
	return lines
}

var ttlField = regexp.MustCompile(`^\S+\s+(\d+)\s+IN\s`)

func firstTTL(t *testing.T, out string) int {
	t.Helper()
	ans := section(out, "ANSWER")
	if len(ans) == 0 {
		t.Fatalf("no answer:\n%s", out)
	}
	m := ttlField.FindStringSubmatch(ans[0])
	if m == nil {
		t.Fatalf("no TTL in %q", ans[0])
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func TestDigAgainstProgram(t *testing.T) {
	l := newLab(t, Options{})
	put := func(name string, qtype uint16, rcode int, ans, ns []string, ttl time.Duration) {
		mustPut(t, l.cache, cachedWire(t, name, qtype, rcode, ans, ns), ttl)
	}
	put("www.example.com", dns.TypeA, 0, []string{"www.example.com. 300 IN CNAME edge.example.net.", "edge.example.net. 60 IN A 203.0.113.10"}, nil, time.Minute)
	put("www.example.com", dns.TypeAAAA, 0, []string{"www.example.com. 300 IN AAAA 2001:db8:113::10"}, nil, time.Minute)
	put("nope.example.com", dns.TypeA, dns.RcodeNameError, nil, []string{"example.com. 30 IN SOA ns.example.com. admin.example.com. 1 2 3 4 30"}, 30*time.Second)
	beforeDecay := time.Now()
	put("decay.example.com", dns.TypeA, 0, []string{"decay.example.com. 300 IN A 203.0.113.12"}, nil, 300*time.Second)
	afterDecay := time.Now()
	put("brief.example.com", dns.TypeA, 0, []string{"brief.example.com. 1 IN A 203.0.113.13"}, nil, time.Second)

	hits, fellThrough := 0, 0
	for _, server := range []string{labResolver4, labResolver6} {
		t.Run("A CNAME chain 0x20 via "+server, func(t *testing.T) {
			out := l.dig(t, "@"+server, "+noedns", "+qid=4660", "wWw.ExAmPlE.cOm", "A")
			hits++
			if !strings.Contains(out, "status: NOERROR, id: 4660") || !strings.Contains(out, "flags: qr rd ra;") {
				t.Fatalf("header:\n%s", out)
			}
			if q := section(out, "QUESTION"); len(q) != 1 || !strings.HasPrefix(q[0], ";wWw.ExAmPlE.cOm.") {
				t.Fatalf("question not echoed with its case: %q", q)
			}
			ans := section(out, "ANSWER")
			if len(ans) != 2 || !strings.Contains(ans[0], "CNAME\tedge.example.net.") || !strings.Contains(ans[1], "A\t203.0.113.10") {
				t.Fatalf("answer %q", ans)
			}
			if strings.Contains(out, "OPT PSEUDOSECTION") {
				t.Fatal("OPT record for a query without EDNS")
			}
		})
		t.Run("AAAA with EDNS via "+server, func(t *testing.T) {
			out := l.dig(t, "@"+server, "+edns=0", "+nocookie", "+bufsize=1232", "www.example.com", "AAAA")
			hits++
			if !strings.Contains(out, "status: NOERROR") || !strings.Contains(out, "; EDNS: version: 0, flags:; udp: 1232") {
				t.Fatalf("no EDNS answer:\n%s", out)
			}
			if ans := section(out, "ANSWER"); len(ans) != 1 || !strings.Contains(ans[0], "2001:db8:113::10") {
				t.Fatalf("answer %q", ans)
			}
		})
		t.Run("NXDOMAIN via "+server, func(t *testing.T) {
			out := l.dig(t, "@"+server, "+noedns", "NOPE.example.com", "A")
			hits++
			if !strings.Contains(out, "status: NXDOMAIN") {
				t.Fatalf("status:\n%s", out)
			}
			if ns := section(out, "AUTHORITY"); len(ns) != 1 || !strings.Contains(ns[0], "SOA\tns.example.com.") {
				t.Fatalf("authority %q", ns)
			}
		})
		t.Run("uncached qtype falls through via "+server, func(t *testing.T) {
			out := l.dig(t, "@"+server, "+noedns", "www.example.com", "MX")
			if !strings.Contains(out, `"go"`) {
				t.Fatalf("not answered by the Go server:\n%s", out)
			}
		})
		t.Run("cookie option falls through via "+server, func(t *testing.T) {
			out := l.dig(t, "@"+server, "+cookie", "www.example.com", "A")
			if !strings.Contains(out, goAnswerA) {
				t.Fatalf("not answered by the Go server:\n%s", out)
			}
		})
	}

	t.Run("TTL decays", func(t *testing.T) {
		time.Sleep(time.Until(beforeDecay.Add(2200 * time.Millisecond)))
		// A refresh that comes late sends the query on to the Go server
		// rather than serve a TTL that is too high: ask again then.
		for try := 0; ; try++ {
			t0 := time.Now()
			out := l.dig(t, "@"+labResolver4, "+noedns", "decay.example.com", "A")
			t1 := time.Now()
			if strings.Contains(out, goAnswerA) && try < 5 {
				fellThrough++
				continue
			}
			hits++
			ttl := firstTTL(t, out)
			// The Go resolver's TTL, or one less.
			most, least := 300-int(t0.Sub(afterDecay)/time.Second), 300-int(t1.Sub(beforeDecay)/time.Second)-1
			if ttl > most || ttl < least {
				t.Fatalf("TTL %d, want %d to %d", ttl, least, most)
			}
			return
		}
	})
	t.Run("expired falls through", func(t *testing.T) {
		out := l.dig(t, "@"+labResolver6, "+noedns", "brief.example.com", "A")
		if !strings.Contains(out, goAnswerA) {
			t.Fatalf("expired answer not sent on to the Go server:\n%s", out)
		}
	})

	s := mustStats(t, l.cache)
	// Two NXDOMAIN answers (v4, v6), the rest NOERROR.
	if s.HitRcodes[dns.RcodeNameError] != 2 || s.HitRcodes[dns.RcodeSuccess] != uint64(hits-2) {
		t.Errorf("hits by rcode %v", s.HitRcodes)
	}
	if s.Hits != uint64(hits) || s.Errors != 0 {
		t.Fatalf("stats %+v, want %d hits", s, hits)
	}
	// MX twice, and the expired answer (removed by the refresher, or
	// found expired by the program).
	if s.Misses+s.Expired != uint64(3+fellThrough) || s.Shape != 2 {
		t.Fatalf("stats %+v, want 3 misses or expired, 2 shape (cookie)", s)
	}
}

// TestAfterSteer attaches the program the way the daemon should: after
// dataplane/steer's classifier, answering only what it marked for DNS. A
// query to a bypassed resolver address gets no mark and must reach that
// resolver (here the Go fall-through server).
func TestAfterSteer(t *testing.T) {
	privtest.RequireRoot(t)
	privtest.RequireCommand(t, "ip", "dig")
	l := &lab{client: privtest.NewNetNS(t), gw: privtest.NewNetNS(t), gwIf: "lan0"}
	l.link(t)
	l.serveGo(t)
	var st *steer.Steer
	privtest.InNetNS(t, l.gw, func() {
		var err error
		if st, err = steer.New(context.Background(), steer.Config{Interfaces: []string{l.gwIf}}); err != nil {
			t.Fatal(err)
		}
		if l.cache, err = New(context.Background(), []string{l.gwIf}, Options{Mark: steer.MarkDNS, After: st.Program()}); err != nil {
			st.Close()
			t.Fatal(err)
		}
	})
	t.Cleanup(func() {
		if err := errors.Join(l.cache.Close(), st.Close()); err != nil {
			t.Error(err)
		}
	})
	mustPut(t, l.cache, cachedWire(t, "www.example.com", dns.TypeA, 0, []string{"www.example.com. 300 IN A 203.0.113.10"}, nil), time.Minute)

	if out := l.dig(t, "@"+labResolver4, "+noedns", "www.example.com", "A"); !strings.Contains(out, "203.0.113.10") {
		t.Fatalf("steered query not answered from the kernel:\n%s", out)
	}
	if err := st.AddBypass(netip.MustParsePrefix(labResolver4 + "/32")); err != nil {
		t.Fatal(err)
	}
	if out := l.dig(t, "@"+labResolver4, "+noedns", "www.example.com", "A"); !strings.Contains(out, goAnswerA) {
		t.Fatalf("query to a bypassed resolver not sent on to it:\n%s", out)
	}
	if s := mustStats(t, l.cache); s.Hits != 1 || s.Unmarked != 1 {
		t.Fatalf("stats %+v, want 1 hit, 1 unmarked", s)
	}
}

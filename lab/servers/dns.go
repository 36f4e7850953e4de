package servers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Lab DNS names beyond the sites.
const (
	AliasName = "alias.example.com" // CNAME to www.example.com
	BigName   = "big.example.com"   // A, AAAA and TXT answers too large for one UDP datagram
	// BigCount is how many A (and AAAA) records BigName has: enough that
	// the answer exceeds 1232 bytes, the usual EDNS0 buffer size.
	BigCount = 100
	dnsTTL   = 60
	// cloudUDPSize is the EDNS0 buffer size the resolvers advertise.
	cloudUDPSize = 1232
)

// startDNS runs the authoritative server and the cloud resolver, each on
// UDP and TCP :53 of its addresses.
func (l *Lab) startDNS(ctx context.Context, w *jsonlWriter) error {
	auth := newAuthZone(l.cfg)
	authH := dns.HandlerFunc(func(rw dns.ResponseWriter, req *dns.Msg) {
		resp := auth.answer(req)
		writeDNS(rw, req, resp, DNSRecord{Server: "auth"}, w)
	})
	cloud := &cloudResolver{sites: newSiteTable(l.cfg.Sites), upstream: l.cfg.AuthDNSUpstream, dial: l.cfg.Dial, sources: l.cfg.CloudDNSAddrs}
	cloudH := dns.HandlerFunc(func(rw dns.ResponseWriter, req *dns.Msg) {
		resp, blocked := cloud.answer(ctx, req)
		writeDNS(rw, req, resp, DNSRecord{Server: "cloud", Blocked: blocked}, w)
	})
	for _, set := range []struct {
		addrs []netip.Addr
		h     dns.Handler
	}{{l.cfg.AuthDNSAddrs, authH}, {l.cfg.CloudDNSAddrs, cloudH}} {
		for _, a := range set.addrs {
			ap := netip.AddrPortFrom(a, 53)
			pc, err := l.listenUDP(ctx, ap)
			if err != nil {
				return err
			}
			ln, err := l.listenTCP(ctx, ap)
			if err != nil {
				return err
			}
			for _, srv := range []*dns.Server{
				{PacketConn: pc, Handler: set.h, UDPSize: dns.MaxMsgSize},
				{Listener: ln, Handler: set.h, ReadTimeout: 10 * time.Second, IdleTimeout: func() time.Duration { return 10 * time.Second }},
			} {
				started := make(chan struct{})
				srv.NotifyStartedFunc = func() { close(started) }
				errc := make(chan error, 1)
				l.goServe(func() { errc <- srv.ActivateAndServe() })
				select {
				case <-started:
				case err := <-errc:
					return fmt.Errorf("serve dns %s: %w", ap, err)
				}
				l.onClose(func() error {
					sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					defer cancel()
					_ = srv.ShutdownContext(sctx)
					return nil
				})
			}
		}
	}
	// The cloud resolver also speaks DoT, DoH and DoQ (encdns.go), on
	// addresses the plain listeners proved usable.
	for _, a := range l.cfg.CloudDNSAddrs {
		e, err := StartEncryptedDNS(ctx, EncryptedDNSConfig{
			Addr: a, DoTPort: DoTPort, DoHPort: DoHPort, DoH3Port: DoHPort, DoQPort: DoQPort,
			Cert: l.dnsLeaf, Handler: cloudH, Logger: l.cfg.Logger,
		})
		if err != nil {
			return fmt.Errorf("serve encrypted dns on %s: %w", a, err)
		}
		l.onClose(e.Close)
	}
	return nil
}

// writeDNS fits resp to the client's transport, sends it and logs it.
func writeDNS(rw dns.ResponseWriter, req, resp *dns.Msg, rec DNSRecord, w *jsonlWriter) {
	rec.Time = time.Now().UTC()
	rec.Remote = rw.RemoteAddr().String()
	rec.Transport = rw.RemoteAddr().Network()
	if cs, ok := rw.(dns.ConnectionStater); ok && cs.ConnectionState() != nil {
		rec.Transport = "tls"
	}
	if len(req.Question) > 0 {
		rec.Name = req.Question[0].Name
		rec.Type = dns.TypeToString[req.Question[0].Qtype]
		if rec.Type == "" {
			rec.Type = fmt.Sprintf("TYPE%d", req.Question[0].Qtype)
		}
	}
	if opt := req.IsEdns0(); opt != nil && resp.IsEdns0() == nil && resp.Rcode <= 0xF {
		resp.SetEdns0(cloudUDPSize, false)
	}
	size := dns.MaxMsgSize
	if rec.Transport == "udp" {
		size = dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil && int(opt.UDPSize()) > size {
			size = int(opt.UDPSize())
		}
	}
	resp.Truncate(size)
	rec.Rcode = dns.RcodeToString[resp.Rcode]
	rec.Truncated = resp.Truncated
	w.write(rec) // before the answer, so a client holding it finds the line
	_ = rw.WriteMsg(resp)
}

// authZone is the lab's authoritative data for every lab name.
type authZone struct {
	rrs   map[string][]dns.RR // by lower-case FQDN
	zones []string            // apexes, FQDN
}

func newAuthZone(cfg Config) *authZone {
	z := &authZone{rrs: map[string][]dns.RR{}}
	hdr := func(name string, t uint16) dns.RR_Header {
		return dns.RR_Header{Name: dns.Fqdn(strings.ToLower(name)), Rrtype: t, Class: dns.ClassINET, Ttl: dnsTTL}
	}
	addAddr := func(name string, a netip.Addr) {
		var rr dns.RR
		if a.Is4() {
			rr = &dns.A{Hdr: hdr(name, dns.TypeA), A: a.AsSlice()}
		} else {
			rr = &dns.AAAA{Hdr: hdr(name, dns.TypeAAAA), AAAA: a.AsSlice()}
		}
		z.add(rr)
	}
	apex := map[string]bool{}
	for _, s := range cfg.Sites {
		addAddr(s.Name, s.V4)
		addAddr(s.Name, s.V6)
		apex[parentName(s.Name)] = true
	}
	for _, a := range cfg.ProxyAddrs {
		addAddr(ProxyName, a)
	}
	apex[parentName(ProxyName)] = true
	z.add(&dns.CNAME{Hdr: hdr(AliasName, dns.TypeCNAME), Target: dns.Fqdn("www.example.com")})
	for i := 1; i <= BigCount; i++ {
		addAddr(BigName, netip.AddrFrom4([4]byte{198, 18, byte(i / 256), byte(i % 256)}))
		addAddr(BigName, netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0xb1, 0x90, 14: byte(i / 256), 15: byte(i % 256)}))
	}
	var txt []string
	for i := range 8 {
		txt = append(txt, fmt.Sprintf("chunk %d %s", i, strings.Repeat("x", 200)))
	}
	z.add(&dns.TXT{Hdr: hdr(BigName, dns.TypeTXT), Txt: txt})
	for a := range apex {
		z.zones = append(z.zones, dns.Fqdn(a))
		z.add(z.soa(dns.Fqdn(a)))
	}
	return z
}

func parentName(n string) string {
	if _, rest, ok := strings.Cut(n, "."); ok {
		return rest
	}
	return n
}

func (z *authZone) add(rr dns.RR) {
	n := rr.Header().Name
	z.rrs[n] = append(z.rrs[n], rr)
}

func (z *authZone) soa(apex string) *dns.SOA {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: apex, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: dnsTTL},
		Ns:      "ns." + strings.TrimPrefix(apex, "."),
		Mbox:    "hostmaster." + strings.TrimPrefix(apex, "."),
		Serial:  2026010101,
		Refresh: 3600, Retry: 600, Expire: 86400,
		Minttl: dnsTTL,
	}
}

// zoneOf returns the apex of the lab zone holding name, "." when none does.
func (z *authZone) zoneOf(name string) string {
	best := "."
	for _, a := range z.zones {
		if dns.IsSubDomain(a, name) && len(a) > len(best) {
			best = a
		}
	}
	return best
}

// answer builds the authoritative response to req.
func (z *authZone) answer(req *dns.Msg) *dns.Msg {
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Authoritative = true
	resp.RecursionAvailable = false
	if req.Opcode != dns.OpcodeQuery {
		resp.SetRcode(req, dns.RcodeNotImplemented)
		return resp
	}
	if len(req.Question) != 1 {
		resp.SetRcode(req, dns.RcodeFormatError)
		return resp
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	for range 8 { // follow CNAMEs inside the lab data
		rrs, exists := z.rrs[name]
		var cname *dns.CNAME
		matched := false
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype || q.Qtype == dns.TypeANY {
				resp.Answer = append(resp.Answer, dns.Copy(rr))
				matched = true
			}
			if c, ok := rr.(*dns.CNAME); ok {
				cname = c
			}
		}
		switch {
		case matched:
			return resp
		case cname != nil:
			resp.Answer = append(resp.Answer, dns.Copy(cname))
			name = strings.ToLower(cname.Target)
			continue
		case exists:
			resp.Ns = []dns.RR{z.soa(z.zoneOf(name))} // NODATA
			return resp
		default:
			if len(resp.Answer) == 0 {
				resp.Rcode = dns.RcodeNameError
			}
			resp.Ns = []dns.RR{z.soa(z.zoneOf(name))}
			return resp
		}
	}
	return resp
}

// cloudResolver is the lab cloud DNS: it forwards to the authoritative
// server and sinkholes names of the blocked category.
type cloudResolver struct {
	sites    *siteTable
	upstream string
	dial     DialFunc
	sources  []netip.Addr
}

// blocked reports whether name is, or is under, a site of the blocked
// category.
func (c *cloudResolver) blocked(name string) bool {
	for n := canonicalName(name); n != ""; {
		if s, ok := c.sites.byName[n]; ok && s.Category == BlockedCategory {
			return true
		}
		_, rest, ok := strings.Cut(n, ".")
		if !ok {
			break
		}
		n = rest
	}
	return false
}

func (c *cloudResolver) answer(ctx context.Context, req *dns.Msg) (*dns.Msg, bool) {
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.RecursionAvailable = true
	if req.Opcode != dns.OpcodeQuery {
		resp.SetRcode(req, dns.RcodeNotImplemented)
		return resp, false
	}
	if len(req.Question) != 1 {
		resp.SetRcode(req, dns.RcodeFormatError)
		return resp, false
	}
	q := req.Question[0]
	if c.blocked(q.Name) {
		// Sinkhole: 0.0.0.0 / :: with NOERROR, as the cloud resolver does.
		h := dns.RR_Header{Name: q.Name, Rrtype: q.Qtype, Class: dns.ClassINET, Ttl: dnsTTL}
		switch q.Qtype {
		case dns.TypeA:
			resp.Answer = []dns.RR{&dns.A{Hdr: h, A: net.IPv4zero.To4()}}
		case dns.TypeAAAA:
			resp.Answer = []dns.RR{&dns.AAAA{Hdr: h, AAAA: net.IPv6zero}}
		}
		return resp, true
	}
	up, err := c.forward(ctx, q)
	if err != nil {
		resp.SetRcode(req, dns.RcodeServerFailure)
		return resp, false
	}
	resp.Rcode = up.Rcode
	resp.Answer, resp.Ns = up.Answer, up.Ns
	for _, rr := range up.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			resp.Extra = append(resp.Extra, rr)
		}
	}
	return resp, false
}

// forward asks the authoritative server over UDP, and again over TCP when
// the answer came back truncated.
func (c *cloudResolver) forward(ctx context.Context, q dns.Question) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	m := new(dns.Msg)
	m.SetQuestion(q.Name, q.Qtype)
	m.Question[0].Qclass = q.Qclass
	m.SetEdns0(cloudUDPSize, false)
	var lastErr error
	for _, network := range []string{"udp", "tcp"} {
		r, err := c.exchange(ctx, network, m)
		if err != nil {
			lastErr = err
			continue
		}
		if r.Truncated && network == "udp" {
			lastErr = errors.New("truncated over udp")
			continue
		}
		return r, nil
	}
	return nil, fmt.Errorf("forward %s: %w", q.Name, lastErr)
}

func (c *cloudResolver) exchange(ctx context.Context, network string, m *dns.Msg) (*dns.Msg, error) {
	var src netip.Addr
	if up, err := netip.ParseAddrPort(c.upstream); err == nil {
		src = sourceFor(c.sources, up.Addr())
	}
	conn, err := c.dial(ctx, network, src, c.upstream)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	cl := &dns.Client{Net: network, UDPSize: cloudUDPSize}
	r, _, err := cl.ExchangeWithConnContext(ctx, m, &dns.Conn{Conn: conn, UDPSize: cloudUDPSize})
	return r, err
}

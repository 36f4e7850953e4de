package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/cloudsteer/cloudsteer/lab/servers"
)

// testName is the servers' TLS name in these tests.
const testName = "dns.test"

func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(b []byte) (int, error) {
	w.tb.Helper()
	w.tb.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// addrFor is the A record the test handler gives name.
func addrFor(name string) netip.Addr {
	h := fnv.New32a()
	h.Write([]byte(strings.ToLower(name)))
	v := h.Sum32()
	return netip.AddrFrom4([4]byte{198, 18, byte(v >> 8), byte(v)})
}

// testHandler answers A queries with addrFor(name). Names starting with
// "slow." are answered after 400 ms — over DoT from a goroutine, so
// miekg/dns (which serves a connection's queries in turn) reads the next
// query meanwhile and answers it first.
type testHandler struct {
	mu   sync.Mutex
	seen []string
	got  chan string // each query name, when not nil
}

func (h *testHandler) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg).SetReply(r)
	q := r.Question[0]
	h.mu.Lock()
	h.seen = append(h.seen, q.Name)
	h.mu.Unlock()
	if h.got != nil {
		h.got <- q.Name
	}
	if q.Qtype == dns.TypeA {
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: addrFor(q.Name).AsSlice()}}
	}
	if strings.HasPrefix(q.Name, "slow.") {
		if _, ok := w.(dns.ConnectionStater); ok {
			go func() {
				time.Sleep(400 * time.Millisecond)
				w.WriteMsg(m)
			}()
			return
		}
		time.Sleep(400 * time.Millisecond)
	}
	w.WriteMsg(m)
}

type testServer struct {
	*servers.EncryptedDNS
	h    *testHandler
	pool *x509.CertPool
	addr netip.Addr
}

// startServers runs DoT, DoH and DoQ on addr (ephemeral ports) with a
// certificate for testName and addr from a CA made for the test.
func startServers(tb testing.TB, addr netip.Addr, idle time.Duration) *testServer {
	tb.Helper()
	ca, err := servers.LoadOrCreateCA(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	leaf, err := ca.Issue([]string{testName}, []net.IP{addr.AsSlice()})
	if err != nil {
		tb.Fatal(err)
	}
	h := &testHandler{}
	e, err := servers.StartEncryptedDNS(context.Background(), servers.EncryptedDNSConfig{
		Addr: addr, Cert: leaf, Handler: h, IdleTimeout: idle, Logger: testLogger(tb),
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { e.Close() })
	return &testServer{EncryptedDNS: e, h: h, pool: ca.Pool(), addr: addr}
}

func (s *testServer) spec(k Kind) Spec {
	var ap netip.AddrPort
	sp := Spec{Kind: k, Host: testName}
	switch k {
	case TLS:
		ap = s.DoT
	case HTTPS:
		ap, sp.Path = s.DoH, "/dns-query"
	case HTTP3:
		ap, sp.Path = s.DoH3, "/dns-query"
	case QUIC:
		ap = s.DoQ
	}
	sp.Port, sp.Addrs = ap.Port(), []netip.Addr{ap.Addr()}
	return sp
}

func (s *testServer) conns(k Kind) int64 {
	dot, doh, doh3, doq := s.Conns()
	return map[Kind]int64{TLS: dot, HTTPS: doh, HTTP3: doh3, QUIC: doq}[k]
}

func newTransport(tb testing.TB, sp Spec, o Options) Transport {
	tb.Helper()
	if o.Logger == nil {
		o.Logger = testLogger(tb)
	}
	tr, err := New(sp, o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { tr.Close() })
	return tr
}

// query packs an A question for name with a random ID.
func query(tb testing.TB, name string) (*dns.Msg, []byte) {
	tb.Helper()
	q := new(dns.Msg).SetQuestion(dns.Fqdn(name), dns.TypeA)
	b, err := q.Pack()
	if err != nil {
		tb.Fatal(err)
	}
	return q, b
}

// ask sends an A query for name and checks the answer: the query's ID,
// question and addrFor(name).
func ask(ctx context.Context, tr Transport, name string) error {
	q := new(dns.Msg).SetQuestion(dns.Fqdn(name), dns.TypeA)
	b, err := q.Pack()
	if err != nil {
		return err
	}
	raw, err := tr.Exchange(ctx, b)
	if err != nil {
		return err
	}
	m := new(dns.Msg)
	if err := m.Unpack(raw); err != nil {
		return fmt.Errorf("unpack answer: %w", err)
	}
	if m.Id != q.Id {
		return fmt.Errorf("answer id %d, query id %d", m.Id, q.Id)
	}
	if len(m.Question) != 1 || m.Question[0].Name != q.Question[0].Name {
		return fmt.Errorf("answer for %v, asked %s", m.Question, q.Question[0].Name)
	}
	if len(m.Answer) != 1 {
		return fmt.Errorf("%d answers for %s", len(m.Answer), name)
	}
	a, ok := m.Answer[0].(*dns.A)
	if !ok || a.A.String() != addrFor(q.Question[0].Name).String() {
		return fmt.Errorf("answer %v for %s, want %s", m.Answer[0], name, addrFor(q.Question[0].Name))
	}
	return nil
}

func timeout(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

var kinds = []Kind{TLS, HTTPS, HTTP3, QUIC}

// Sequential cache-miss queries share one connection: one handshake;
// over IPv4 and IPv6.
func TestSequentialQueriesOneHandshake(t *testing.T) {
	for _, addr := range []string{"127.0.0.1", "::1"} {
		t.Run(addr, func(t *testing.T) { testSequentialQueriesOneHandshake(t, netip.MustParseAddr(addr)) })
	}
}

func testSequentialQueriesOneHandshake(t *testing.T, addr netip.Addr) {
	s := startServers(t, addr, 0)
	for _, k := range kinds {
		t.Run(k.String(), func(t *testing.T) {
			tr := newTransport(t, s.spec(k), Options{RootCAs: s.pool})
			for i := range 25 {
				if err := ask(timeout(t, 5*time.Second), tr, fmt.Sprintf("q%d.%s.example", i, k)); err != nil {
					t.Fatalf("query %d: %v", i, err)
				}
			}
			if n := s.conns(k); n != 1 {
				t.Fatalf("%d connections accepted for 25 queries, want 1", n)
			}
		})
	}
}

// Concurrent queries share the one connection too, and an answer that
// comes first is handed over first: a slow query does not hold up a
// fast one sent after it (on DoT: pipelined, matched by message ID).
func TestConcurrentQueriesOneConnection(t *testing.T) {
	s := startServers(t, netip.MustParseAddr("127.0.0.1"), 0)
	for _, k := range kinds {
		t.Run(k.String(), func(t *testing.T) {
			tr := newTransport(t, s.spec(k), Options{RootCAs: s.pool})
			// Open the connection first, so the concurrent ones share it.
			if err := ask(timeout(t, 5*time.Second), tr, "first."+k.String()+".example"); err != nil {
				t.Fatal(err)
			}
			slowDone := make(chan error, 1)
			start := time.Now()
			go func() { slowDone <- ask(timeout(t, 5*time.Second), tr, "slow."+k.String()+".example") }()
			time.Sleep(50 * time.Millisecond) // the slow query is out
			var wg sync.WaitGroup
			errs := make(chan error, 40)
			for i := range 40 {
				wg.Go(func() { errs <- ask(timeout(t, 5*time.Second), tr, fmt.Sprintf("c%d.%s.example", i, k)) })
			}
			wg.Wait()
			fast := time.Since(start)
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			if fast >= 400*time.Millisecond {
				t.Errorf("40 fast queries took %v after a slow one: they waited for it", fast)
			}
			select {
			case err := <-slowDone:
				t.Fatalf("slow query done before the fast ones (%v)", err)
			default:
			}
			if err := <-slowDone; err != nil {
				t.Fatal(err)
			}
			if n := s.conns(k); n != 1 {
				t.Fatalf("%d connections accepted, want 1", n)
			}
		})
	}
}

// A connection the server closed when idle is replaced by the next query.
func TestReconnectAfterServerIdleClose(t *testing.T) {
	s := startServers(t, netip.MustParseAddr("127.0.0.1"), 300*time.Millisecond)
	for _, k := range kinds {
		t.Run(k.String(), func(t *testing.T) {
			tr := newTransport(t, s.spec(k), Options{RootCAs: s.pool})
			for i := range 2 {
				if err := ask(timeout(t, 5*time.Second), tr, fmt.Sprintf("idle%d.%s.example", i, k)); err != nil {
					t.Fatalf("query %d: %v", i, err)
				}
				time.Sleep(700 * time.Millisecond)
			}
			if n := s.conns(k); n != 2 {
				t.Fatalf("%d connections for two queries with an idle close between, want 2", n)
			}
		})
	}
}

// The client's own idle timeout closes the connection and the next query
// reconnects.
func TestClientIdleTimeout(t *testing.T) {
	s := startServers(t, netip.MustParseAddr("127.0.0.1"), 0)
	for _, k := range kinds {
		t.Run(k.String(), func(t *testing.T) {
			tr := newTransport(t, s.spec(k), Options{RootCAs: s.pool, IdleTimeout: 300 * time.Millisecond})
			for i := range 2 {
				if err := ask(timeout(t, 5*time.Second), tr, fmt.Sprintf("cidle%d.%s.example", i, k)); err != nil {
					t.Fatalf("query %d: %v", i, err)
				}
				time.Sleep(800 * time.Millisecond)
			}
			if n := s.conns(k); n != 2 {
				t.Fatalf("%d connections, want 2", n)
			}
		})
	}
}

// The server's name is verified: a wrong name or an unknown CA fails.
func TestCertificateVerified(t *testing.T) {
	s := startServers(t, netip.MustParseAddr("127.0.0.1"), 0)
	for _, k := range kinds {
		t.Run(k.String(), func(t *testing.T) {
			sp := s.spec(k)
			sp.Host = "other.test"
			tr := newTransport(t, sp, Options{RootCAs: s.pool})
			err := ask(timeout(t, 5*time.Second), tr, "x.example")
			var he x509.HostnameError
			if !errors.As(err, &he) {
				t.Fatalf("wrong name: got %v, want a hostname error", err)
			}
			tr = newTransport(t, s.spec(k), Options{RootCAs: x509.NewCertPool()})
			err = ask(timeout(t, 5*time.Second), tr, "x.example")
			var ua x509.UnknownAuthorityError
			if !errors.As(err, &ua) {
				t.Fatalf("unknown CA: got %v, want an unknown authority error", err)
			}
			// By IP address: the certificate holds 127.0.0.1.
			sp = s.spec(k)
			sp.Host = "127.0.0.1"
			tr = newTransport(t, sp, Options{RootCAs: s.pool})
			if err := ask(timeout(t, 5*time.Second), tr, "x.example"); err != nil {
				t.Fatalf("by address: %v", err)
			}
		})
	}
}

// A bootstrap address where nothing answers is skipped for the next one.
func TestNextBootstrapAddress(t *testing.T) {
	s := startServers(t, netip.MustParseAddr("127.0.0.1"), 0)
	for _, k := range kinds {
		t.Run(k.String(), func(t *testing.T) {
			sp := s.spec(k)
			sp.Addrs = []netip.Addr{netip.MustParseAddr("127.0.0.3"), sp.Addrs[0]}
			tr := newTransport(t, sp, Options{RootCAs: s.pool})
			if err := ask(timeout(t, 4*time.Second), tr, "next.example"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A server that is not listening fails within the query's time.
func TestDeadServerFailsInTime(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.String(), func(t *testing.T) {
			sp := Spec{Kind: k, Host: testName, Port: 1, Path: "/dns-query", Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}
			tr := newTransport(t, sp, Options{})
			start := time.Now()
			err := ask(timeout(t, 500*time.Millisecond), tr, "dead.example")
			if err == nil {
				t.Fatal("answer from a dead server")
			}
			if el := time.Since(start); el > time.Second {
				t.Fatalf("took %v", el)
			}
		})
	}
}

// rawDoT is a TLS server on loopback that writes what reply returns for
// the first query of a connection (framed or not), then closes it.
func rawDoT(tb testing.TB, reply func(q []byte) []byte) (Spec, *x509.CertPool) {
	tb.Helper()
	ca, err := servers.LoadOrCreateCA(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	leaf, err := ca.Issue([]string{testName}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{leaf}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for {
					q, err := ReadFrame(c, nil)
					if err != nil {
						return
					}
					// One reply, then the server hangs up.
					c.Write(reply(q))
					return
				}
			}()
		}
	}()
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	return Spec{Kind: TLS, Host: testName, Port: ap.Port(), Addrs: []netip.Addr{ap.Addr()}}, ca.Pool()
}

// Malformed framing from the server is a clear error, never a hang.
func TestDoTMalformedAnswers(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply func(q []byte) []byte
		want  string
	}{
		{"short frame", func(q []byte) []byte { return []byte{0, 4, 1, 2, 3, 4} }, "shorter than a dns header"},
		{"cut frame", func(q []byte) []byte { return append([]byte{0, 200}, q...) }, "unexpected EOF"},
		{"no frame", func(q []byte) []byte { return nil }, "connection lost"},
		{"other id", func(q []byte) []byte {
			a := append([]byte(nil), q...)
			a[0] ^= 0xff
			return appendFrame(nil, a)
		}, "connection lost"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sp, pool := rawDoT(t, tc.reply)
			tr := newTransport(t, sp, Options{RootCAs: pool})
			_, q := query(t, "bad.example")
			_, err := tr.Exchange(timeout(t, 5*time.Second), q)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		kind     Kind
		addrs    int
	}{
		{"192.0.2.1", "192.0.2.1:53", Plain, 1},
		{"[2001:db8::1]:5353", "[2001:db8::1]:5353", Plain, 1},
		{"2001:db8::1", "[2001:db8::1]:53", Plain, 1},
		{"tls://dns.example", "tls://dns.example:853", TLS, 0},
		{"TLS://DNS.Example.:8853", "tls://dns.example:8853", TLS, 0},
		{"tls://192.0.2.1", "tls://192.0.2.1:853", TLS, 1},
		{"tls://[2001:db8::1]:853", "tls://[2001:db8::1]:853", TLS, 1},
		{"https://dns.example/dns-query", "https://dns.example:443/dns-query", HTTPS, 0},
		{"https://dns.example", "https://dns.example:443/dns-query", HTTPS, 0},
		{"https://dns.example:8443/resolve", "https://dns.example:8443/resolve", HTTPS, 0},
		{"quic://dns.example", "quic://dns.example:853", QUIC, 0},
		{"h3://dns.example", "h3://dns.example:443/dns-query", HTTP3, 0},
		{"h3://192.0.2.1:8443/q", "h3://192.0.2.1:8443/q", HTTP3, 1},
		{"quic://192.0.2.1:8853", "quic://192.0.2.1:8853", QUIC, 1},
	} {
		sp, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if sp.String() != tc.want || sp.Kind != tc.kind || len(sp.Addrs) != tc.addrs {
			t.Errorf("Parse(%q) = %s kind %s addrs %v, want %s %s %d", tc.in, sp, sp.Kind, sp.Addrs, tc.want, tc.kind, tc.addrs)
		}
	}
	for _, in := range []string{
		"", "dns.example", "192.0.2.1:0", "udp://192.0.2.1", "ftp://x", "h3://dns.example/dns-query?x",
		"tls://", "tls://dns.example:0", "tls://dns.example:99999", "tls://dns.example:", "tls://user@dns.example",
		"tls://dns.example#192.0.2.1", "https://dns.example/dns-query?x=1", "tls://dns.example/path",
		"tls://bad_name!.example", "tls://[fe80::1%eth0]", "quic://-bad.example",
	} {
		if sp, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) = %s, want an error", in, sp)
		}
	}
}

func TestReadFrame(t *testing.T) {
	msg := make([]byte, 20)
	b := appendFrame(nil, msg)
	b = appendFrame(b, msg[:12])
	r := strings.NewReader(string(b))
	for _, want := range []int{20, 12} {
		got, err := ReadFrame(r, nil)
		if err != nil || len(got) != want {
			t.Fatalf("ReadFrame = %d bytes, %v; want %d", len(got), err, want)
		}
	}
	if _, err := ReadFrame(r, nil); err != io.EOF {
		t.Fatalf("at the end: %v, want io.EOF", err)
	}
	if _, err := ReadFrame(strings.NewReader("\x00\x05hello"), nil); !errors.Is(err, ErrShortMessage) {
		t.Fatalf("short: %v", err)
	}
	if _, err := ReadFrame(strings.NewReader("\x00\x20hello"), nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("cut: %v", err)
	}
}

func TestReadDoHAnswer(t *testing.T) {
	ok := string(make([]byte, 12))
	for _, tc := range []struct {
		status int
		ctype  string
		body   string
		want   string // "" for success
	}{
		{200, "application/dns-message", ok, ""},
		{200, "Application/DNS-Message; charset=x", ok, ""},
		{404, "application/dns-message", ok, "status 404"},
		{200, "text/html", ok, "content type"},
		{200, "", ok, "content type"},
		{200, "application/dns-message", "short", "shorter"},
		{200, "application/dns-message", strings.Repeat("x", MaxMessage+1), "larger"},
		{200, "application/dns-message", strings.Repeat("x", MaxMessage), ""},
	} {
		_, err := ReadDoHAnswer(tc.status, tc.ctype, strings.NewReader(tc.body))
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("ReadDoHAnswer(%d, %q, %d bytes) = %v, want %q", tc.status, tc.ctype, len(tc.body), err, tc.want)
		}
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{0, 12, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	f.Add([]byte{0, 3, 1, 2, 3})
	f.Add([]byte{0xff, 0xff, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := strings.NewReader(string(b))
		total := 0
		for {
			msg, err := ReadFrame(r, nil)
			if err != nil {
				if errors.Is(err, ErrShortMessage) || errors.Is(err, io.ErrUnexpectedEOF) || err == io.EOF {
					return
				}
				t.Fatalf("unexpected error %v", err)
			}
			if len(msg) < headerLen || len(msg) > MaxMessage {
				t.Fatalf("frame of %d bytes", len(msg))
			}
			want := int(binary.BigEndian.Uint16(b[total:]))
			if len(msg) != want || string(msg) != string(b[total+2:total+2+want]) {
				t.Fatalf("frame differs from its bytes")
			}
			total += 2 + want
		}
	})
}

func FuzzReadDoHAnswer(f *testing.F) {
	f.Add(200, "application/dns-message", make([]byte, 12))
	f.Add(200, "application/dns-message; q=1", []byte("x"))
	f.Add(500, "text/plain", []byte("oops"))
	f.Fuzz(func(t *testing.T, status int, ctype string, body []byte) {
		b, err := ReadDoHAnswer(status, ctype, strings.NewReader(string(body)))
		if err != nil {
			return
		}
		if status != 200 || len(b) < headerLen || len(b) > MaxMessage || string(b) != string(body) {
			t.Fatalf("accepted status %d, %d bytes (body %d)", status, len(b), len(body))
		}
	})
}

// A DoH server's answer that is not a DNS message (wrong status or type,
// too large, too short) is a clear error, on one connection, never
// retried.
func TestDoHMalformedAnswers(t *testing.T) {
	var reqs atomic.Int64
	body := map[string]func(w http.ResponseWriter){
		"/status": func(w http.ResponseWriter) { http.Error(w, "no", http.StatusBadGateway) },
		"/type": func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "text/html")
			w.Write(make([]byte, 40))
		},
		"/big": func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/dns-message")
			w.Write(make([]byte, MaxMessage+100))
		},
		"/short": func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/dns-message")
			w.Write([]byte{1, 2, 3})
		},
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqs.Add(1)
		if r.ProtoMajor != 2 || r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/dns-message" {
			http.Error(w, "want an HTTP/2 POST of application/dns-message", http.StatusBadRequest)
			return
		}
		body[r.URL.Path](w)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	ap := srv.Listener.Addr().(*net.TCPAddr).AddrPort()
	for path, want := range map[string]string{"/status": "status 502", "/type": "content type", "/big": "larger than", "/short": "shorter than"} {
		t.Run(path, func(t *testing.T) {
			before := reqs.Load()
			sp := Spec{Kind: HTTPS, Host: "127.0.0.1", Port: ap.Port(), Path: path, Addrs: []netip.Addr{ap.Addr()}}
			tr := newTransport(t, sp, Options{RootCAs: pool})
			_, q := query(t, "bad.example")
			_, err := tr.Exchange(timeout(t, 5*time.Second), q)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("got %v, want an error with %q", err, want)
			}
			if n := reqs.Load() - before; n != 1 {
				t.Fatalf("%d requests for one query, want 1 (no retry of an answer)", n)
			}
		})
	}
}

// Package serve runs the benchmark's internet side inside the lab's
// internet namespace: a lean cloud proxy (CONNECT with Basic auth, then
// splice between the two TCP sockets), TLS-shaped stream origins (read the
// ClientHello, then sendfile from memory until the client goes), real
// HTTPS origins for short exchanges; idle flows end at the proxy itself.
// Each counts what it carried; a control socket (HTTP over a Unix socket)
// returns and resets the counters, so every figure can be checked against
// what the proxy and the origins saw.
//
// The cloud proxy has to hold as many idle tunnels as the gateway under
// test holds idle flows (10 000), within the process's open file limit
// (20 000 here, and it cannot be raised). So its tunnels are
// dataplane/proxy Tunnels: two sockets each, a kernel pipe only while
// bytes move, no goroutine while idle. And a CONNECT to a target in
// Config.Hold (the idle-flow sink) is not dialed at all: the proxy
// answers 200 and holds the tunnel itself, reading and dropping what the
// client sends until it goes, as a sink origin would. That is one
// descriptor per idle flow instead of two here and one in a sink. The
// tunnel is counted like a dialed one (Tunnels, TunnelActive, the client
// address in ProxyClients, its bytes in ProxyUp) but no origin connection
// is, as there is none.
package serve

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cloudsteer/cloudsteer/dataplane/proxy"
)

// File names in Config.Dir.
const (
	CtlSocket   = "ctl.sock"
	CAFile      = "ca.pem"
	LeafFile    = "leaf.pem"
	LeafKeyFile = "leaf-key.pem"
)

// Config says what to serve.
type Config struct {
	Dir         string
	Proxy       netip.AddrPort        // the cloud proxy listener
	Code        string                // the Basic user the proxy accepts
	Stream      []netip.AddrPort      // stream origins
	HTTPS       []netip.AddrPort      // HTTPS origins
	Hold        []netip.AddrPort      // CONNECT targets the proxy holds itself (see the package doc)
	Names       map[string]netip.Addr // what the proxy resolves
	StreamBytes int                   // size of the in-memory file streamed; default 32 MiB
}

// Stats are the counters since the last reset.
type Stats struct {
	Tunnels      int64            `json:"tunnels"`       // CONNECTs answered 200
	Refused      int64            `json:"refused"`       // CONNECTs refused
	TunnelActive int64            `json:"tunnel_active"` // tunnels open now
	WithXFF      int64            `json:"with_xff"`      // tunnels that carried X-Forwarded-For
	ProxyUp      int64            `json:"proxy_up"`      // bytes client → origin (counted when a tunnel ends)
	ProxyDown    int64            `json:"proxy_down"`    // bytes origin → client (counted when a tunnel ends)
	ProxyClients map[string]int64 `json:"proxy_clients"` // tunnels per client address
	OriginConns  int64            `json:"origin_conns"`  // connections accepted by the origins
	OriginActive int64            `json:"origin_active"` // origin connections open now
	OriginBytes  int64            `json:"origin_bytes"`  // stream bytes sent (counted when a stream ends)
	Requests     int64            `json:"requests"`      // HTTPS requests answered
	OriginPeers  map[string]int64 `json:"origin_peers"`  // origin connections per peer address
}

// Server is the running benchmark internet.
type Server struct {
	cfg   Config
	log   *slog.Logger
	names map[string]netip.Addr
	data  *os.File // memfd streamed by sendfile

	mu         sync.Mutex
	clients    map[string]int64
	peers      map[string]int64
	closers    []io.Closer
	tunnels    atomic.Int64
	refused    atomic.Int64
	tunActive  atomic.Int64
	withXFF    atomic.Int64
	up, down   atomic.Int64
	oConns     atomic.Int64
	oActive    atomic.Int64
	oBytes     atomic.Int64
	requests   atomic.Int64
	sourceAddr netip.Addr
	proxyAddr  netip.AddrPort
	splices    *proxy.Tunnels
	held       map[*net.TCPConn]struct{} // tunnels held by the proxy; nil once closed
}

// Start writes the certificates, starts every listener and the control
// socket, and returns. Close stops them.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.StreamBytes <= 0 {
		cfg.StreamBytes = 32 << 20
	}
	s := &Server{
		cfg:        cfg,
		log:        slog.With("component", "bench-serve"),
		names:      cfg.Names,
		clients:    map[string]int64{},
		peers:      map[string]int64{},
		sourceAddr: cfg.Proxy.Addr(),
		held:       map[*net.TCPConn]struct{}{},
		// Benchmark flows must not time out during a run.
		splices: proxy.NewTunnels(proxy.TunnelConfig{IdleTimeout: time.Hour}),
	}
	leaf, err := writeCerts(cfg.Dir)
	if err != nil {
		return nil, err
	}
	if err := s.makeData(); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	lc := net.ListenConfig{}
	lc.SetMultipathTCP(false)
	listen := func(a netip.AddrPort) (*net.TCPListener, error) {
		ln, err := lc.Listen(ctx, "tcp", a.String())
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", a, err)
		}
		s.closers = append(s.closers, ln)
		return ln.(*net.TCPListener), nil
	}
	if cfg.Proxy.IsValid() {
		ln, err := listen(cfg.Proxy)
		if err != nil {
			return nil, err
		}
		s.proxyAddr = ln.Addr().(*net.TCPAddr).AddrPort()
		go s.acceptLoop(ln, s.proxyConn)
	}
	for _, a := range cfg.Stream {
		ln, err := listen(a)
		if err != nil {
			return nil, err
		}
		go s.acceptLoop(ln, s.streamConn)
	}
	for _, a := range cfg.HTTPS {
		ln, err := listen(a)
		if err != nil {
			return nil, err
		}
		srv := &http.Server{
			Handler:           http.HandlerFunc(s.serveHTTPS),
			ReadHeaderTimeout: 10 * time.Second,
			TLSConfig:         &tls.Config{Certificates: []tls.Certificate{leaf}, NextProtos: []string{"http/1.1"}},
			TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){},
			ConnState: func(c net.Conn, st http.ConnState) {
				if st == http.StateNew {
					s.countPeer(c)
				}
			},
			ErrorLog: nil,
		}
		s.closers = append(s.closers, srv)
		go srv.ServeTLS(ln, "", "")
	}
	ctl := filepath.Join(cfg.Dir, CtlSocket)
	os.Remove(ctl)
	uln, err := net.Listen("unix", ctl)
	if err != nil {
		return nil, fmt.Errorf("listen on control socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(s.Stats())
	})
	mux.HandleFunc("POST /reset", func(w http.ResponseWriter, r *http.Request) { s.Reset() })
	csrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	s.closers = append(s.closers, csrv)
	go csrv.Serve(uln)
	ok = true
	return s, nil
}

// ProxyAddr returns the address the cloud proxy listens on (with the
// port the kernel chose when Config.Proxy had port 0).
func (s *Server) ProxyAddr() netip.AddrPort { return s.proxyAddr }

// Close stops every listener and closes the proxy's tunnels.
func (s *Server) Close() error {
	var errs []error
	for _, c := range s.closers {
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	s.splices.Close()
	s.mu.Lock()
	held := s.held
	s.held = nil
	s.mu.Unlock()
	for c := range held {
		c.Close()
	}
	if s.data != nil {
		s.data.Close()
	}
	return errors.Join(errs...)
}

// makeData fills an in-memory file with the stream payload.
func (s *Server) makeData() error {
	fd, err := unix.MemfdCreate("bench-stream", 0)
	if err != nil {
		return fmt.Errorf("create memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "bench-stream")
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte('a' + i%26)
	}
	for n := 0; n < s.cfg.StreamBytes; n += len(chunk) {
		if _, err := f.Write(chunk); err != nil {
			f.Close()
			return fmt.Errorf("fill memfd: %w", err)
		}
	}
	s.data = f
	return nil
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	cl := make(map[string]int64, len(s.clients))
	for k, v := range s.clients {
		cl[k] = v
	}
	pe := make(map[string]int64, len(s.peers))
	for k, v := range s.peers {
		pe[k] = v
	}
	return Stats{
		Tunnels: s.tunnels.Load(), Refused: s.refused.Load(), TunnelActive: s.tunActive.Load(),
		WithXFF: s.withXFF.Load(), ProxyUp: s.up.Load(), ProxyDown: s.down.Load(), ProxyClients: cl,
		OriginConns: s.oConns.Load(), OriginActive: s.oActive.Load(), OriginBytes: s.oBytes.Load(),
		Requests: s.requests.Load(), OriginPeers: pe,
	}
}

// Reset zeroes the counters (not the gauges of open tunnels and flows).
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients, s.peers = map[string]int64{}, map[string]int64{}
	for _, c := range []*atomic.Int64{&s.tunnels, &s.refused, &s.withXFF, &s.up, &s.down, &s.oConns, &s.oBytes, &s.requests} {
		c.Store(0)
	}
}

func (s *Server) acceptLoop(ln *net.TCPListener, handle func(*net.TCPConn)) {
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		go handle(c)
	}
}

func (s *Server) countPeer(c net.Conn) {
	s.oConns.Add(1)
	ip := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap().String()
	s.mu.Lock()
	s.peers[ip]++
	s.mu.Unlock()
}

// readHello reads one TLS record (the ClientHello) from c.
func readHello(c *net.TCPConn) error {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	var h [5]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		return fmt.Errorf("read record header: %w", err)
	}
	if h[0] != 22 {
		return fmt.Errorf("record type %d: not a handshake", h[0])
	}
	n := int(h[3])<<8 | int(h[4])
	if _, err := io.CopyN(io.Discard, c, int64(n)); err != nil {
		return fmt.Errorf("read client hello: %w", err)
	}
	return nil
}

// streamConn reads the ClientHello, then sends the in-memory file over and
// over (sendfile) until the client goes.
func (s *Server) streamConn(c *net.TCPConn) {
	defer c.Close()
	s.countPeer(c)
	s.oActive.Add(1)
	defer s.oActive.Add(-1)
	if err := readHello(c); err != nil {
		return
	}
	var total int64
	defer func() { s.oBytes.Add(total) }()
	// Its own open file per flow (its own offset): TCPConn.ReadFrom of an
	// *os.File is sendfile(2).
	f, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", s.data.Fd()))
	if err != nil {
		s.log.Warn("open stream data", "err", err)
		return
	}
	defer f.Close()
	size := int64(s.cfg.StreamBytes)
	for {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return
		}
		n, err := c.ReadFrom(f)
		total += n
		if err != nil || n < size {
			return
		}
	}
}

func (s *Server) serveHTTPS(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Content-Length", "3")
	io.WriteString(w, "ok\n")
}

// proxyConn serves one cloud proxy connection: one CONNECT, then a tunnel
// (or a tunnel held by the proxy, for a Config.Hold target).
func (s *Server) proxyConn(c *net.TCPConn) {
	handed := false
	defer func() {
		if !handed {
			c.Close()
		}
	}()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReaderSize(c, 4096)
	head, err := readHead(br)
	if err != nil {
		s.refuse(c, 400, err)
		return
	}
	req, err := parseConnect(head)
	if err != nil {
		s.refuse(c, 400, err)
		return
	}
	if req.User != s.cfg.Code {
		s.refused.Add(1)
		io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"bench\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		return
	}
	addr, err := s.resolve(req.Host)
	if err != nil {
		s.refuse(c, 502, err)
		return
	}
	dst := netip.AddrPortFrom(addr, req.Port)
	if slices.Contains(s.cfg.Hold, dst) {
		handed = true
		s.hold(c, br, req)
		return
	}
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: s.sourceAddr.AsSlice()}}
	d.SetMultipathTCP(false)
	uc, err := d.Dial("tcp", dst.String())
	if err != nil {
		s.refuse(c, 502, err)
		return
	}
	up := uc.(*net.TCPConn)
	c.SetReadDeadline(time.Time{})
	if !s.answer(c, req) {
		up.Close()
		return
	}
	// Bytes the client sent right behind its CONNECT head.
	var ahead int64
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		if _, err := up.Write(b); err != nil {
			up.Close()
			s.tunActive.Add(-1)
			return
		}
		ahead = int64(n)
	}
	handed = true
	if !s.splices.Start(c, up, func(a, b int64) {
		s.up.Add(ahead + a)
		s.down.Add(b)
		s.tunActive.Add(-1)
	}) {
		s.tunActive.Add(-1) // closed meanwhile: Start closed both
	}
}

// answer sends the 200 for a tunnel and counts it; false when the client
// is gone (the tunnel is not counted then).
func (s *Server) answer(c *net.TCPConn, req connectReq) bool {
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return false
	}
	// The client and XFF counts first, the active count last, so a
	// reader that sees TunnelActive reach n sees the other counts of all
	// n (TestHeldTunnels read 1999 clients at 2000 active once).
	ip := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap().String()
	s.mu.Lock()
	s.clients[ip]++
	s.mu.Unlock()
	if req.XFF != "" {
		s.withXFF.Add(1)
	}
	s.tunnels.Add(1)
	s.tunActive.Add(1)
	return true
}

// hold answers a CONNECT to a Config.Hold target and holds the tunnel:
// it reads and drops what the client sends until the client goes (or
// Close). Only the client's socket stays open, and a small buffer.
func (s *Server) hold(c *net.TCPConn, br *bufio.Reader, req connectReq) {
	defer c.Close()
	c.SetReadDeadline(time.Time{})
	s.mu.Lock()
	open := s.held != nil
	if open {
		s.held[c] = struct{}{}
	}
	s.mu.Unlock()
	if !open {
		return
	}
	defer func() {
		s.mu.Lock()
		if s.held != nil {
			delete(s.held, c)
		}
		s.mu.Unlock()
	}()
	if !s.answer(c, req) {
		return
	}
	defer s.tunActive.Add(-1)
	n := int64(br.Buffered())
	br.Discard(int(n))
	br = nil
	buf := make([]byte, 512)
	for {
		m, err := c.Read(buf)
		n += int64(m)
		if err != nil {
			s.up.Add(n)
			return
		}
	}
}

func (s *Server) refuse(c *net.TCPConn, code int, err error) {
	s.refused.Add(1)
	s.log.Debug("refused", "code", code, "err", err)
	fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", code, http.StatusText(code))
}

// resolve maps a CONNECT host to a lab address: a configured name, or an
// address literal that one of the names resolves to (nothing else: the
// proxy only ever dials benchmark origins).
func (s *Server) resolve(host string) (netip.Addr, error) {
	if a, ok := s.names[host]; ok {
		return a, nil
	}
	if a, err := netip.ParseAddr(host); err == nil {
		for _, v := range s.names {
			if v == a.Unmap() {
				return v, nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("resolve %q: not a benchmark origin", host)
}

// readHead reads a request head up to the blank line, at most maxHead bytes.
func readHead(br *bufio.Reader) ([]byte, error) {
	var head []byte
	for {
		line, err := br.ReadSlice('\n')
		head = append(head, line...)
		if len(head) > maxHead {
			return nil, errors.New("request head too long")
		}
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			return nil, fmt.Errorf("read request head: %w", err)
		}
		if headEnd(head) >= 0 {
			return head, nil
		}
	}
}

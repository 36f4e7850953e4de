package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/cloudsteer/cloudsteer/lab"
)

func init() { commands["flood"] = runFlood }

// flooder is one run's state.
type flooder struct {
	start                                            time.Time
	tlsOpen, tlsMax, tlsOpened, tlsFailed, tlsClosed atomic.Int64
	dnsSent, dnsAnswered, dnsRefused, dnsSendErrs    atomic.Int64
	dnsTCPOpen, dnsTCPFailed                         atomic.Int64
	lastTLSErr                                       atomic.Value // string
}

func (f *flooder) stats() lab.FloodStats {
	s := lab.FloodStats{
		Elapsed:    time.Since(f.start).Seconds(),
		TLSOpen:    f.tlsOpen.Load(),
		TLSMaxOpen: f.tlsMax.Load(),
		TLSOpened:  f.tlsOpened.Load(), TLSFailed: f.tlsFailed.Load(), TLSClosed: f.tlsClosed.Load(),
		DNSSent: f.dnsSent.Load(), DNSAnswered: f.dnsAnswered.Load(), DNSRefused: f.dnsRefused.Load(), DNSSendErrs: f.dnsSendErrs.Load(),
		DNSTCPOpen: f.dnsTCPOpen.Load(), DNSTCPFailed: f.dnsTCPFailed.Load(),
	}
	if e, ok := f.lastTLSErr.Load().(string); ok {
		s.LastTLSError = e
	}
	return s
}

// runFlood is `cloudsteer-lab flood [--tls IP:443 --sni NAME] [--dns
// IP:53] [--dns-tcp N]`: a LAN host misbehaving on purpose, for the
// fairness tests. It opens TLS flows until refused and holds them idle
// (re-opening those the other side closes), sends DNS queries for random
// names as fast as it can, and holds idle DNS-over-TCP connections, until
// --duration passes or it is signalled. Run it only against the lab.
func runFlood(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("flood", flag.ContinueOnError)
	tlsAddr := fs.String("tls", "", "TLS target ip:port to open flows to, e.g. 203.0.113.11:443 (empty: none)")
	sni := fs.String("sni", "news.example.com", "server name of the TLS flows")
	hello := fs.String("hello", "handshake", "what each TLS flow sends before it idles: 'partial' (half a ClientHello), 'hello' (a ClientHello), 'handshake' (a whole handshake and one request, then idle keep-alive)")
	maxFlows := fs.Int("max", 10000, "most TLS flows held at once")
	workers := fs.Int("workers", 128, "TLS flows being opened at once")
	dialTimeout := fs.Duration("dial-timeout", 3*time.Second, "bound on establishing one TLS flow")
	dnsAddr := fs.String("dns", "", "DNS server ip:port to flood over UDP (empty: none)")
	dnsZone := fs.String("dns-zone", "flood.example.com", "random names are asked below this zone")
	dnsRate := fs.Int("dns-rate", 0, "DNS queries per second (0: as fast as it can)")
	dnsTCP := fs.Int("dns-tcp", 0, "idle DNS-over-TCP connections to hold to the --dns server")
	duration := fs.Duration("duration", 0, "stop after this long (0: until signalled)")
	every := fs.Duration("every", 500*time.Millisecond, "interval of the stats lines")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 || (*tlsAddr == "" && *dnsAddr == "") || *workers < 1 || *maxFlows < 0 {
		fs.Usage()
		return errors.New("usage: flood [--tls IP:PORT --sni NAME --hello handshake|hello|partial --max N] [--dns IP:PORT --dns-rate N --dns-tcp N] [--duration D]")
	}
	if *hello != "partial" && *hello != "hello" && *hello != "handshake" {
		return fmt.Errorf("flood: --hello %q: want partial, hello or handshake", *hello)
	}
	raiseNOFILE()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	f := &flooder{start: time.Now()}
	var wg sync.WaitGroup
	if *tlsAddr != "" {
		var ch []byte
		if *hello != "handshake" {
			var err error
			if ch, err = clientHello(*sni); err != nil {
				return err
			}
			if *hello == "partial" {
				ch = ch[:len(ch)/2]
			}
		}
		cfg := &tls.Config{ServerName: *sni, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}
		slots := make(chan struct{}, *maxFlows) // one token per held flow
		for range *workers {
			wg.Go(func() { f.tlsWorker(ctx, *tlsAddr, *sni, cfg, ch, *dialTimeout, slots) })
		}
	}
	if *dnsAddr != "" {
		wg.Go(func() { f.dnsUDP(ctx, *dnsAddr, *dnsZone, *dnsRate) })
		for range *dnsTCP {
			wg.Go(func() { f.dnsTCPHolder(ctx, *dnsAddr, *dialTimeout) })
		}
	}
	enc := json.NewEncoder(os.Stdout)
	tick := time.NewTicker(*every)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			_ = enc.Encode(f.stats())
		case <-ctx.Done():
			wg.Wait()
			_ = enc.Encode(f.stats())
			return nil
		}
	}
}

// raiseNOFILE lifts the soft descriptor limit to the hard one: each held
// flow is a descriptor.
func raiseNOFILE() {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}

// clientHello returns the first TLS record a Go client sends for sni.
func clientHello(sni string) ([]byte, error) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		c := tls.Client(a, &tls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}})
		_ = c.Handshake() // fails once b closes
	}()
	_ = b.SetDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(b, hdr); err != nil {
		return nil, fmt.Errorf("make client hello: %w", err)
	}
	rec := make([]byte, 5+int(binary.BigEndian.Uint16(hdr[3:5])))
	copy(rec, hdr)
	if _, err := io.ReadFull(b, rec[5:]); err != nil {
		return nil, fmt.Errorf("make client hello: %w", err)
	}
	return rec, nil
}

func dialer(timeout time.Duration) *net.Dialer {
	d := &net.Dialer{Timeout: timeout}
	d.SetMultipathTCP(false)
	return d
}

// tlsWorker opens flows one after another while fewer than the most are
// held, and hands each to a goroutine that holds it until the other side
// closes it or the run ends.
func (f *flooder) tlsWorker(ctx context.Context, addr, sni string, cfg *tls.Config, hello []byte, timeout time.Duration, slots chan struct{}) {
	d := dialer(timeout)
	for ctx.Err() == nil {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		c, err := f.openTLS(ctx, d, addr, sni, cfg, hello, timeout)
		if err != nil {
			<-slots
			f.tlsFailed.Add(1)
			f.lastTLSErr.Store(err.Error())
			select { // refused: a short pause, then press on
			case <-time.After(20 * time.Millisecond):
			case <-ctx.Done():
			}
			continue
		}
		f.tlsOpened.Add(1)
		n := f.tlsOpen.Add(1)
		for m := f.tlsMax.Load(); n > m && !f.tlsMax.CompareAndSwap(m, n); m = f.tlsMax.Load() {
		}
		go func() {
			stop := context.AfterFunc(ctx, func() { c.Close() })
			closed := make(chan struct{})
			if hello == nil {
				// A request now and then keeps the origin from closing
				// the flow as idle (the lab's origins: after 60s).
				go func() {
					t := time.NewTicker(keepAliveEvery)
					defer t.Stop()
					for {
						select {
						case <-t.C:
							if _, err := fmt.Fprintf(c, "GET /?case=flood-keep HTTP/1.1\r\nHost: %s\r\n\r\n", sni); err != nil {
								return
							}
						case <-closed:
							return
						}
					}
				}()
			}
			_, _ = io.Copy(io.Discard, c) // until closed by either side
			close(closed)
			c.Close()
			if stop() {
				f.tlsClosed.Add(1) // the other side ended it, not the run
			}
			f.tlsOpen.Add(-1)
			<-slots
		}()
	}
}

// keepAliveEvery is how often a held flow after a whole handshake sends
// a request, to stay under the origin's idle limit.
const keepAliveEvery = 30 * time.Second

// openTLS establishes one flow as --hello says.
func (f *flooder) openTLS(ctx context.Context, d *net.Dialer, addr, sni string, cfg *tls.Config, hello []byte, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if hello != nil {
		if _, err := c.Write(hello); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	// One request, so the origin keeps the connection for its keep-alive
	// idle time rather than its first-request timeout.
	_ = tc.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(tc, "GET /?case=flood HTTP/1.1\r\nHost: %s\r\nUser-Agent: cloudsteer-lab-flood\r\n\r\n", sni); err != nil {
		tc.Close()
		return nil, err
	}
	br := bufio.NewReader(tc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		tc.Close()
		return nil, fmt.Errorf("read response: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	_ = tc.SetDeadline(time.Time{})
	return tc, nil
}

// dnsUDP sends queries for random names below zone to addr from a few
// sockets, at rate per second (0: as fast as the sockets take them), and
// counts the answers.
func (f *flooder) dnsUDP(ctx context.Context, addr, zone string, rate int) {
	const socks = 4
	var conns []net.Conn
	for range socks {
		c, err := net.Dial("udp", addr)
		if err != nil {
			f.dnsSendErrs.Add(1)
			continue
		}
		conns = append(conns, c)
		go func() {
			buf := make([]byte, 1500)
			for {
				n, err := c.Read(buf)
				if err != nil {
					if errors.Is(err, net.ErrClosed) {
						return
					}
					continue // an ICMP error: go on reading
				}
				f.dnsAnswered.Add(1)
				// The RCODE is the low 4 bits of the header's 4th byte.
				if n >= 4 && buf[3]&0x0f == dns.RcodeRefused {
					f.dnsRefused.Add(1)
				}
			}
		}()
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if len(conns) == 0 {
		<-ctx.Done()
		return
	}
	var pace <-chan time.Time
	if rate > 0 {
		t := time.NewTicker(time.Second / time.Duration(rate))
		defer t.Stop()
		pace = t.C
	}
	var rnd [8]byte
	m := new(dns.Msg)
	for i := 0; ctx.Err() == nil; i++ {
		if pace != nil {
			select {
			case <-pace:
			case <-ctx.Done():
				return
			}
		}
		_, _ = rand.Read(rnd[:])
		m.SetQuestion(fmt.Sprintf("r%x.%s.", rnd, zone), dns.TypeA)
		m.Id = binary.BigEndian.Uint16(rnd[:2])
		b, err := m.Pack()
		if err != nil {
			continue
		}
		if _, err := conns[i%len(conns)].Write(b); err != nil {
			f.dnsSendErrs.Add(1)
			if errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.EAGAIN) {
				time.Sleep(time.Millisecond)
			}
			continue
		}
		f.dnsSent.Add(1)
	}
}

// dnsTCPHolder keeps one idle DNS-over-TCP connection to addr open,
// re-opening it when the server closes it.
func (f *flooder) dnsTCPHolder(ctx context.Context, addr string, timeout time.Duration) {
	d := dialer(timeout)
	for ctx.Err() == nil {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			f.dnsTCPFailed.Add(1)
			select {
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
			}
			continue
		}
		f.dnsTCPOpen.Add(1)
		stop := context.AfterFunc(ctx, func() { c.Close() })
		_, _ = io.Copy(io.Discard, c)
		stop()
		c.Close()
		f.dnsTCPOpen.Add(-1)
	}
}

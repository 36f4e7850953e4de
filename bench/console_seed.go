package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/lab"
)

// The figure's data: bypass entries added by the CLI, and block events
// the LAN hosts cause for real (as the e2e tests do: DNS queries for names
// under a blocked site, which the lab's cloud DNS sinkholes; HTTPS and
// plain HTTP to it, which the lab's cloud proxy refuses with 403), so the
// Events page has a full page of rows from two clients.
const (
	consoleBypassEntries = 50
	consoleDNSBlocks     = 300 // names live-0…live-299, alternating LAN hosts
	consoleTLSBlocks     = 60
	consoleHTTPBlocks    = 40
	consoleBlockedSite   = "scores.sports.example"
)

// consoleConfig writes the console figure's cloudsteer config (the
// lab's cloud proxy and DNS, which block the Sports category; the default
// limits; its own state directory and admin socket; the console on its
// default ports with a provider CA named, so /ca has something to offer)
// and returns its path and the admin socket.
func (r *runner) consoleConfig() (cfg, sock string, err error) {
	state := filepath.Join(r.dir, "console-state")
	sock = filepath.Join(r.dir, "console-admin.sock")
	ca := filepath.Join(r.dir, "console-cacert.cer")
	if err := writeBenchCA(ca); err != nil {
		return "", "", err
	}
	yaml := fmt.Sprintf(`lan_interfaces: [%s]
cloud_proxy:
  url: http://%s:%d
  entitlement_code: %q
dns:
  upstreams: [%q]
bypass:
  domains: []
  cidrs: []
log:
  level: info
state_dir: %s
admin:
  socket: %s
health:
  probe_target: %s:443
  interval: 2s
console:
  inspection_ca: %s
`, strings.Join(r.lab.LANInterfaces(), ", "), lab.CloudProxyV4, lab.CloudProxyHTTPPort, lab.EntitlementCode,
		lab.CloudDNSV4.String(), state, sock, lab.Sites[0].Name, ca)
	cfg = filepath.Join(r.dir, "console-cloudsteer.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		return "", "", fmt.Errorf("write console config: %w", err)
	}
	return cfg, sock, nil
}

// writeBenchCA writes a CA certificate (DER) as the provider's cacert.cer.
func writeBenchCA(path string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Bench Inspection CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("make bench CA: %w", err)
	}
	return os.WriteFile(path, der, 0o644)
}

// consoleCLI runs `cloudsteer --socket SOCK ...` in the gateway namespace,
// as the e2e tests and an admin do.
type consoleCLI struct {
	r    *runner
	sock string
}

func (c consoleCLI) run(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	full := append([]string{filepath.Join(c.r.opts.BinDir, "cloudsteer"), "--socket", c.sock}, args...)
	cmd := c.r.lab.Command(ctx, lab.RoleGW, full...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("cloudsteer %s: %w: %s", args[0], err, lastLines(errb.String(), 3))
	}
	return out.Bytes(), nil
}

func (c consoleCLI) json(ctx context.Context, v any, args ...string) error {
	out, err := c.run(ctx, append(args, "--json")...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("cloudsteer %s output: %w", args[0], err)
	}
	return nil
}

// consoleBypassValue is the i-th bypass entry of the figure: domains,
// "*." and "." patterns, and CIDRs of the benchmarking range 198.18/15
// (nothing in the lab lives there).
func consoleBypassValue(i int) string {
	switch i % 5 {
	case 0, 1:
		return fmt.Sprintf("app%02d.office.example", i)
	case 2:
		return fmt.Sprintf("*.cdn%02d.example", i)
	case 3:
		return fmt.Sprintf(".static%02d.example", i)
	}
	return fmt.Sprintf("198.18.%d.0/24", i)
}

// seedBypass adds the entries: every third with a comment, every seventh
// disabled afterwards.
func (c consoleCLI) seedBypass(ctx context.Context) error {
	for i := range consoleBypassEntries {
		v := consoleBypassValue(i)
		args := []string{"bypass", "add", v}
		if i%3 == 0 {
			args = append(args, "--comment", fmt.Sprintf("vendor portal %d (ticket %d)", i, 4000+i))
		}
		if _, err := c.run(ctx, args...); err != nil {
			return err
		}
		if i%7 == 6 {
			if _, err := c.run(ctx, "bypass", "disable", v); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c consoleCLI) bypassCount(ctx context.Context) (int, error) {
	var l api.BypassList
	if err := c.json(ctx, &l, "bypass", "list"); err != nil {
		return 0, err
	}
	return len(l.Entries), nil
}

// seedEvents causes the block events and waits until the gateway has
// stored them; it returns the count by reason.
func (r *runner) seedEvents(ctx context.Context, cs consoleCLI) (int, map[string]int, error) {
	site := consoleSite()
	var dnsOK, tlsOK, httpOK int
	// DNS: one socket per LAN host to the address nobody runs (steered to
	// cloudsteer's resolver), sequential queries.
	for _, role := range []string{lab.RoleLAN, lab.RoleLAN2} {
		conn, err := r.lab.DialContext(ctx, role, "udp", net.JoinHostPort(lab.NobodyDNSV4.String(), "53"))
		if err != nil {
			return 0, nil, err
		}
		dc := &dns.Conn{Conn: conn}
		for i := range consoleDNSBlocks {
			if (i%2 == 0) != (role == lab.RoleLAN) {
				continue
			}
			m := new(dns.Msg)
			m.SetQuestion(dns.Fqdn(fmt.Sprintf("live-%d.%s", i, consoleBlockedSite)), dns.TypeA)
			conn.SetDeadline(time.Now().Add(3 * time.Second))
			if err := dc.WriteMsg(m); err != nil {
				continue
			}
			if resp, err := dc.ReadMsg(); err == nil && sinkholed(resp) {
				dnsOK++
			}
		}
		conn.Close()
	}
	// HTTPS: the ClientHello names the blocked site; the cloud proxy
	// refuses the CONNECT and cloudsteer closes the flow.
	for range consoleTLSBlocks {
		conn, err := r.lab.DialContext(ctx, lab.RoleLAN, "tcp", net.JoinHostPort(site, "443"))
		if err != nil {
			return 0, nil, err
		}
		tc := tls.Client(conn, &tls.Config{ServerName: consoleBlockedSite, InsecureSkipVerify: true})
		hctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		if tc.HandshakeContext(hctx) != nil {
			tlsOK++ // refused, as it must be
		}
		cancel()
		tc.Close()
	}
	// Plain HTTP: the cloud proxy answers 403 with its block page.
	for range consoleHTTPBlocks {
		conn, err := r.lab.DialContext(ctx, lab.RoleLAN, "tcp", net.JoinHostPort(site, "80"))
		if err != nil {
			return 0, nil, err
		}
		conn.SetDeadline(time.Now().Add(3 * time.Second))
		fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", consoleBlockedSite)
		if resp, err := http.ReadResponse(bufio.NewReader(conn), nil); err == nil {
			if resp.StatusCode == http.StatusForbidden {
				httpOK++
			}
			resp.Body.Close()
		}
		conn.Close()
	}
	want := dnsOK + tlsOK + httpOK
	if dnsOK < consoleDNSBlocks*9/10 || tlsOK < consoleTLSBlocks*9/10 || httpOK < consoleHTTPBlocks*9/10 {
		return 0, nil, fmt.Errorf("blocks not as expected: %d/%d DNS sinkholed, %d/%d TLS refused, %d/%d HTTP 403",
			dnsOK, consoleDNSBlocks, tlsOK, consoleTLSBlocks, httpOK, consoleHTTPBlocks)
	}
	// The gateway stores events in batches: wait for them.
	var list api.EventList
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := cs.json(ctx, &list, "events", "--limit", strconv.Itoa(api.MaxEventLimit)); err != nil {
			return 0, nil, err
		}
		if len(list.Events) >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	by := map[string]int{}
	for _, e := range list.Events {
		by[e.Proto+"/"+e.Reason]++
	}
	if len(list.Events) < want {
		return len(list.Events), by, fmt.Errorf("gateway stored %d events, the clients saw %d blocks", len(list.Events), want)
	}
	return len(list.Events), by, nil
}

// consoleSite is the blocked site's IPv4 address.
func consoleSite() string {
	for _, s := range lab.Sites {
		if s.Name == consoleBlockedSite {
			return s.V4.String()
		}
	}
	panic("bench: no lab site " + consoleBlockedSite)
}

// sinkholed reports whether a DNS answer is the cloud DNS's block (A
// 0.0.0.0).
func sinkholed(m *dns.Msg) bool {
	for _, rr := range m.Answer {
		if a, ok := rr.(*dns.A); ok && a.A.IsUnspecified() {
			return true
		}
	}
	return false
}

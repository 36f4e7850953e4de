package proxy

import (
	"context"
	"errors"
	"fmt"
	"html"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy"
)

// Failure modes: what steered web traffic gets while no cloud proxy is
// healthy (cloudproxy.Client.Unavailable).
const (
	// FailOpen sends it straight to the destination the client dialed:
	// inspection is lost, work goes on.
	FailOpen = "open"
	// FailClosed refuses it: plain HTTP gets a local page saying why (in
	// English or Japanese, by Accept-Language), TLS an access_denied
	// alert. Bypass destinations still go direct, and DNS is untouched.
	FailClosed = "closed"
)

// cloudDown reports whether err (or, for a nil err, the client's state)
// says no cloud proxy is healthy.
func cloudDown(c *cloudproxy.Client, err error) bool {
	if err != nil {
		return errors.Is(err, cloudproxy.ErrUnavailable)
	}
	return c.Unavailable()
}

// failedClosedFlow counts a flow refused in FailClosed mode and, when the
// cloud proxy is down for refusing the credentials, records it as such
// (an auth_failed event, as when the proxy itself answered 407).
func (p *Proxy) failedClosedFlow(f *flow, ev Event) {
	p.failedClosed.Add(1)
	var re *cloudproxy.RefusedError
	if cause := p.Cloud().DownCause(); errors.As(cause, &re) {
		p.refused(f, ev, cause)
	}
}

// failOpenTLS dials dst for a TLS flow while the cloud is down and the
// mode is open; false means the flow was refused (and the client told).
func (p *Proxy) failOpenTLS(ctx context.Context, f *flow, ev Event, dst netip.AddrPort) (net.Conn, bool) {
	if ok, why := p.destAllowed(dst.Addr()); !ok {
		ev.Kind, ev.Detail = KindBadClient, "cloud proxy down (fail-open), and the destination is a "+why
		p.event(f, ev)
		sendAlert(f.client, alertAccessDenied)
		return nil, false
	}
	up, err := p.dialer.DialContext(ctx, "tcp", dst.String())
	if err != nil {
		if ctx.Err() == nil {
			p.refused(f, ev, fmt.Errorf("fail-open: dial %s: %w", dst, err))
			sendAlert(f.client, alertInternalError)
		}
		return nil, false
	}
	p.failedOpen.Add(1)
	p.openConns.add(up)
	return up, true
}

// CutFailedOpen ends the flows that went direct while no cloud proxy was
// healthy (FailOpen), so that their clients reconnect through the cloud
// proxy now that one is back: a long-lived connection does not stay
// uninspected. The daemon calls it when a cloud proxy is healthy again.
func (p *Proxy) CutFailedOpen() int { return p.openConns.cut() }

// connSet holds upstream connections to cut later; closed ones are swept
// out as it grows.
type connSet struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	sweep int
}

func (s *connSet) add(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		s.conns, s.sweep = map[net.Conn]struct{}{}, 64
	}
	s.conns[c] = struct{}{}
	if len(s.conns) < s.sweep {
		return
	}
	for c := range s.conns {
		if connClosed(c) {
			delete(s.conns, c)
		}
	}
	s.sweep = max(64, 2*len(s.conns))
}

// cut shuts every connection down (a tunnel parked on one wakes and ends)
// and returns how many were still open.
func (s *connSet) cut() int {
	s.mu.Lock()
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	n := 0
	for c := range conns {
		if connClosed(c) {
			continue
		}
		n++
		if tc, ok := c.(*net.TCPConn); ok {
			tc.CloseRead()
			tc.CloseWrite()
			continue
		}
		c.Close()
	}
	return n
}

// connClosed reports whether c was closed by its user.
func connClosed(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	return err != nil || rc.Control(func(uintptr) {}) != nil
}

// failClosedPage is the local page plain HTTP gets in FailClosed mode;
// ev, when not nil, is the request's event to record (nil: recorded
// already).
func (h *httpFlow) failClosedPage(acceptLanguage string, ev *Event) {
	if ev != nil {
		h.p.failedClosedFlow(h.f, *ev)
	} else {
		h.p.failedClosed.Add(1)
	}
	lang := pickLanguage(acceptLanguage)
	t := failTexts[lang]
	body := fmt.Sprintf(`<!doctype html>
<html lang="%s"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>%s</title></head>
<body><h1>%s</h1><p>%s</p><p>%s</p><p><small>cloudsteer: %s</small></p></body></html>
`, lang, html.EscapeString(t.title), html.EscapeString(t.title), html.EscapeString(t.why), html.EscapeString(t.what), ReasonFailedClosed)
	fmt.Fprintf(h.client, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html; charset=utf-8\r\nContent-Language: %s\r\n"+
		"Cache-Control: no-store\r\nRetry-After: 30\r\nX-Cloudsteer-Reason: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		lang, ReasonFailedClosed, len(body), body)
}

// ReasonFailedClosed is the reason code the fail-closed page names (the
// status reason of the same name).
const ReasonFailedClosed = "cloud_proxy_failed_closed"

type failText struct{ title, why, what string }

var failTexts = map[string]failText{
	"en": {
		title: "Web access is stopped: the cloud security service cannot be reached",
		why:   "This network sends web traffic through a cloud security service, which is not answering right now. For safety, only approved sites can be reached until it is back.",
		what:  "Please try again in a few minutes. If this lasts, tell your network administrator.",
	},
	"ja": {
		title: "Webアクセスを停止しています: クラウドのセキュリティサービスに接続できません",
		why:   "このネットワークのWeb通信はクラウドのセキュリティサービスを経由しますが、現在そのサービスが応答していません。安全のため、復旧するまでは許可されたサイトにだけアクセスできます。",
		what:  "数分後にもう一度お試しください。続く場合はネットワーク管理者にお知らせください。",
	},
}

// pickLanguage returns "ja" or "en", whichever Accept-Language prefers
// (by q value, then order); "en" when it names neither.
func pickLanguage(accept string) string {
	best, bestQ := "en", -1.0
	for _, part := range strings.Split(accept, ",") {
		tag, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		tag = strings.ToLower(strings.TrimSpace(tag))
		q := 1.0
		if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				q = f
			}
		}
		base, _, _ := strings.Cut(tag, "-")
		if (base == "en" || base == "ja") && q > bestQ && q > 0 {
			best, bestQ = base, q
		}
	}
	return best
}

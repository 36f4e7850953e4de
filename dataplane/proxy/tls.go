package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/cloudsteer/cloudsteer/dataplane/sniff"
)

// TLS alert descriptions sent to a client whose tunnel cannot be opened.
const (
	alertAccessDenied  = 49
	alertInternalError = 80
)

// handleTLS serves one redirected TLS flow.
func (p *Proxy) handleTLS(ctx context.Context, f *flow) {
	dst, err := p.cfg.OriginalDst(f.client)
	if err != nil {
		p.log.Warn("no original destination", "proto", "tls", "client", f.ip, "err", err)
		return
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	ev := Event{Target: dst}

	hello, raw, err := sniff.Peek(ctx, f.client, p.cfg.MaxHeaderBytes, p.cfg.PeekTimeout)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		ev.Kind, ev.Detail = KindBadClient, "read client hello: "+err.Error()
		p.log.Debug("bad tls client", "client", f.ip, "dst", dst, "bytes", len(raw), "err", err)
		p.event(f, ev)
		return
	}
	ev.Name = hello.ServerName

	var up net.Conn
	bypass := ev.Name != "" && p.cfg.Policy.BypassName(ev.Name)
	if !bypass && ev.Name != "" && p.cfg.RefuseName != nil && p.cfg.RefuseName(ev.Name) {
		// A DNS-over-HTTPS service: refused, so the browser falls back
		// to the system resolver (the gateway).
		p.dohRefused.Add(1)
		p.log.Debug("refused dns-over-https flow", "client", f.ip, "name", ev.Name, "dst", dst)
		sendAlert(f.client, alertAccessDenied)
		return
	}
	if bypass {
		target, ok := p.bypassTarget(ctx, f, ev)
		if !ok {
			sendAlert(f.client, alertAccessDenied)
			return
		}
		up, err = p.dialer.DialContext(ctx, "tcp", target.String())
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			ev.Target = target
			p.refused(f, ev, err)
			sendAlert(f.client, alertInternalError)
			return
		}
		p.bypassed.Add(1)
	} else {
		// Without a usable SNI the cloud proxy gets the address the
		// client dialed ("[v6]:443" for IPv6), if it is one that may be
		// dialed at all.
		target := dst.String()
		if ev.Name != "" {
			target = net.JoinHostPort(ev.Name, strconv.Itoa(int(dst.Port())))
		} else if ok, why := p.destAllowed(dst.Addr()); !ok {
			ev.Kind, ev.Detail = KindBadClient, "no server name, and the destination is a "+why
			p.log.Info("refused flow", "proto", "tls", "client", f.ip, "dst", dst, "why", ev.Detail)
			p.event(f, ev)
			sendAlert(f.client, alertAccessDenied)
			return
		}
		cloud := p.Cloud()
		if !cloudDown(cloud, nil) {
			cctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
			up, err = cloud.Connect(cctx, target, f.ip)
			cancel()
		}
		if up == nil && ctx.Err() == nil && cloudDown(cloud, err) {
			// No cloud proxy is healthy: the failure mode decides.
			if p.cfg.FailureMode == FailClosed {
				p.failedClosedFlow(f, ev)
				sendAlert(f.client, alertAccessDenied)
				return
			}
			var ok bool
			if up, ok = p.failOpenTLS(ctx, f, ev, dst); !ok {
				return
			}
			err = nil
		} else if err != nil {
			if ctx.Err() != nil {
				return
			}
			ev = p.refused(f, ev, err)
			alert := byte(alertInternalError)
			if ev.Kind == KindBlocked {
				alert = alertAccessDenied
			}
			sendAlert(f.client, alert)
			return
		} else {
			p.proxied.Add(1)
		}
	}
	f.add(up)

	up.SetWriteDeadline(time.Now().Add(p.cfg.DialTimeout))
	if _, err := up.Write(raw); err != nil {
		if ctx.Err() == nil {
			p.log.Debug("replay client hello", "client", f.ip, "name", ev.Name, "err", err)
		}
		return
	}
	p.bytesUp.Add(uint64(len(raw)))
	p.detach(f, f.client, up)
}

// sendAlert writes a fatal TLS alert so the client shows a TLS error
// ("access denied") instead of a bare reset.
func sendAlert(c net.Conn, desc byte) {
	c.SetWriteDeadline(time.Now().Add(time.Second))
	c.Write([]byte{21, 3, 3, 0, 2, 2, desc})
}

// bypassTarget asks the policy where a flow naming the bypass name
// ev.Name, sent to ev.Target, goes direct, and checks the answer may be
// dialed. When not, it emits a KindBypassRefused event and reports false.
// The policy's lookup (it may ask the cloud resolvers) is bounded by
// DialTimeout.
func (p *Proxy) bypassTarget(ctx context.Context, f *flow, ev Event) (netip.AddrPort, bool) {
	lctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	target, err := p.cfg.Policy.BypassTarget(lctx, ev.Name, ev.Target)
	cancel()
	if err == nil {
		if ok, why := p.destAllowed(target.Addr()); !ok {
			err = fmt.Errorf("bypass address %s of %s is a %s", target, ev.Name, why)
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return netip.AddrPort{}, false
		}
		ev.Kind, ev.Detail = KindBypassRefused, err.Error()
		if target.IsValid() {
			ev.Target = target
		}
		p.log.Warn("refused bypass flow", "proto", f.proto, "client", f.ip, "name", ev.Name, "dst", ev.Target, "err", err)
		p.event(f, ev)
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(target.Addr().Unmap(), target.Port()), true
}

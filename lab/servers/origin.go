package servers

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/cloudsteer/cloudsteer/lab"
)

// MaxBytes caps /bytes?n=N.
const MaxBytes = 10 << 30

// startOrigins runs, for every site, HTTP on :80, HTTPS on :443 and QUIC on
// UDP :443 on both of its addresses.
func (l *Lab) startOrigins(ctx context.Context, leaf tls.Certificate, w *jsonlWriter) error {
	for _, site := range l.cfg.Sites {
		for _, a := range []netip.Addr{site.V4, site.V6} {
			for _, proto := range []string{"http", "https"} {
				port := uint16(80)
				if proto == "https" {
					port = 443
				}
				ln, err := l.listenTCP(ctx, netip.AddrPortFrom(a, port))
				if err != nil {
					return err
				}
				srv := &http.Server{
					Handler:           &originHandler{site: site, proto: proto, log: w},
					ReadHeaderTimeout: 10 * time.Second,
					IdleTimeout:       60 * time.Second,
					MaxHeaderBytes:    64 << 10,
					ErrorLog:          nil,
				}
				l.onClose(srv.Close)
				if proto == "https" {
					srv.TLSConfig = tlsServerConfig(leaf, "h2", "http/1.1")
					l.goServe(func() { serveErr(l, srv.ServeTLS(ln, "", "")) })
				} else {
					l.goServe(func() { serveErr(l, srv.Serve(ln)) })
				}
			}
			if err := l.startQUIC(ctx, site, netip.AddrPortFrom(a, 443), leaf, w); err != nil {
				return err
			}
		}
	}
	return nil
}

func serveErr(l *Lab, err error) {
	if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		l.log.Error("serve", "err", err)
	}
}

// originHandler is one site's web server.
type originHandler struct {
	site  lab.Site
	proto string
	log   *jsonlWriter
}

func (h *originHandler) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	sw := &statusWriter{ResponseWriter: rw}
	rec := OriginRecord{
		Time:   time.Now().UTC(),
		Proto:  h.proto,
		Site:   h.site.Name,
		Remote: r.RemoteAddr,
		Host:   r.Host,
		Method: r.Method,
		Path:   r.URL.RequestURI(),
	}
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		rec.Local = la.String()
	}
	if r.TLS != nil {
		rec.SNI = r.TLS.ServerName
	}
	logged := false
	sw.onStatus = func(code int) {
		logged = true
		rec.Status = code
		h.log.write(rec)
	}
	defer func() {
		if !logged {
			sw.WriteHeader(sw.code())
		}
	}()
	switch r.URL.Path {
	case "/":
		sw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(sw, "hello from %s via %s\n", h.site.Name, h.proto)
	case "/bytes":
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 || n > MaxBytes {
			http.Error(sw, fmt.Sprintf("n must be 0..%d", int64(MaxBytes)), http.StatusBadRequest)
			return
		}
		sw.Header().Set("Content-Type", "application/octet-stream")
		sw.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		if r.Method == http.MethodHead {
			return
		}
		_ = writeN(sw, n)
	case "/echo":
		sw.Header().Set("Content-Type", "application/octet-stream")
		if r.ContentLength >= 0 {
			sw.Header().Set("Content-Length", strconv.FormatInt(r.ContentLength, 10))
		}
		_, _ = io.Copy(sw, io.LimitReader(r.Body, MaxBytes))
	default:
		http.NotFound(sw, r)
	}
}

// filler is the byte pattern /bytes sends.
var filler = bytes.Repeat([]byte{'x'}, 64<<10)

// writeN writes n filler bytes to w.
func writeN(w io.Writer, n int64) error {
	for n > 0 {
		chunk := filler
		if n < int64(len(chunk)) {
			chunk = chunk[:n]
		}
		k, err := w.Write(chunk)
		n -= int64(k)
		if err != nil {
			return err
		}
	}
	return nil
}

// statusWriter remembers the status code a handler sent, and calls
// onStatus with the final status just before it goes out, so a log line is
// written before the client can have the whole response.
type statusWriter struct {
	http.ResponseWriter
	status   int
	onStatus func(code int)
}

func (w *statusWriter) WriteHeader(code int) {
	if code >= 200 && w.status == 0 {
		w.status = code
		if w.onStatus != nil {
			w.onStatus(code)
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

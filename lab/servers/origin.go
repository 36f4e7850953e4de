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
	"sync/atomic"
	"time"

	"github.com/cloudsteer/cloudsteer/lab"
)

// MaxBytes caps /bytes?n=N.
const MaxBytes = 10 << 30

// MaxSlowDelay caps /slow?delay=D.
const MaxSlowDelay = time.Minute

// originIDs numbers the origins' requests, so a request's end line joins
// its start line in origin.jsonl. It starts from the clock so that the
// numbers of two serve runs writing one log do not meet.
var originIDs = func() *atomic.Uint64 {
	var n atomic.Uint64
	n.Store(uint64(time.Now().UnixNano()))
	return &n
}()

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

// originHandler is one site's web server. Paths:
//
//	/                 a line naming the site and protocol
//	/bytes?n=N        N filler bytes, streamed (Content-Length N)
//	/slow?delay=D&n=N waits D (a Go duration, at most MaxSlowDelay) before
//	                  the head, then answers like /bytes (n left out: a
//	                  line); a client that leaves while it waits ends it
//	/echo             the request body
//
// Each request gets a start line in the log when its head goes out and an
// end line when the handler is done (see OriginRecord).
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
		ID:     originIDs.Add(1),
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
	// err is why the response ended early: a write error, or the client
	// gone before the head. headless: nothing at all went out.
	var err error
	headless := false
	defer func() {
		if !logged && !headless {
			sw.WriteHeader(sw.code())
		}
		end := rec
		end.Event = OriginEventEnd
		end.End = time.Now().UTC()
		end.Bytes = sw.n
		end.Complete = err == nil
		if err != nil {
			end.Err = err.Error()
		}
		h.log.write(end)
	}()
	switch r.URL.Path {
	case "/":
		sw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(sw, "hello from %s via %s\n", h.site.Name, h.proto)
	case "/bytes":
		n, perr := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if perr != nil || n < 0 || n > MaxBytes {
			http.Error(sw, fmt.Sprintf("n must be 0..%d", int64(MaxBytes)), http.StatusBadRequest)
			return
		}
		err = h.sendBytes(r, sw, n)
	case "/slow":
		q := r.URL.Query()
		delay, derr := time.ParseDuration(q.Get("delay"))
		n := int64(-1)
		if v := q.Get("n"); v != "" {
			var perr error
			if n, perr = strconv.ParseInt(v, 10, 64); perr != nil || n < 0 || n > MaxBytes {
				derr = errors.New("bad n")
			}
		}
		if derr != nil || delay < 0 || delay > MaxSlowDelay {
			http.Error(sw, fmt.Sprintf("want delay=0..%s (a Go duration) and n=0..%d", MaxSlowDelay, int64(MaxBytes)), http.StatusBadRequest)
			return
		}
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			// The server cancels the context when it reads EOF from the
			// client: it went away before the head.
			headless = true
			err = fmt.Errorf("client gone while waiting for the head: %w", context.Cause(r.Context()))
			return
		}
		if n < 0 {
			sw.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, err = fmt.Fprintf(sw, "slow hello from %s via %s after %s\n", h.site.Name, h.proto, delay)
			return
		}
		err = h.sendBytes(r, sw, n)
	case "/echo":
		sw.Header().Set("Content-Type", "application/octet-stream")
		if r.ContentLength >= 0 {
			sw.Header().Set("Content-Length", strconv.FormatInt(r.ContentLength, 10))
		}
		_, err = io.Copy(sw, io.LimitReader(r.Body, MaxBytes))
	default:
		http.NotFound(sw, r)
	}
}

// sendBytes answers with n filler bytes and returns the write error that
// ended it early, if any. The last bytes are flushed so that a client gone
// by then counts as an early end too.
func (h *originHandler) sendBytes(r *http.Request, sw *statusWriter, n int64) error {
	sw.Header().Set("Content-Type", "application/octet-stream")
	sw.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	if r.Method == http.MethodHead {
		return nil
	}
	if err := writeN(r.Context(), sw, n); err != nil {
		return err
	}
	return http.NewResponseController(sw).Flush()
}

// filler is the byte pattern /bytes sends.
var filler = bytes.Repeat([]byte{'x'}, 64<<10)

// writeN writes n filler bytes to w; it stops early when ctx ends (the
// server cancels a request's context when its client goes away).
func writeN(ctx context.Context, w io.Writer, n int64) error {
	for n > 0 {
		if ctx.Err() != nil {
			return fmt.Errorf("client gone: %w", context.Cause(ctx))
		}
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
	n        int64 // body bytes the handler wrote
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
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
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

package servers

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"
)

// Log file names inside the serve directory.
const (
	ProxyLogFile  = "proxy.jsonl"
	OriginLogFile = "origin.jsonl"
	DNSLogFile    = "dns.jsonl"
	CAFile        = "ca.pem"
	CAKeyFile     = "ca-key.pem"
	ReadyFile     = "ready"
)

// ProxyRecord is one request the lab cloud proxy saw (one line of proxy.jsonl).
type ProxyRecord struct {
	Time   time.Time `json:"time"`
	Proxy  string    `json:"proxy"`  // always "lab"
	Remote string    `json:"remote"` // client ip:port as the proxy saw it
	Method string    `json:"method"`
	// Target is the CONNECT authority or the absolute URL's host:port
	// (default port filled in).
	Target string `json:"target"`
	// URL is the request-target as sent: "host:port" for CONNECT, the
	// absolute URL otherwise.
	URL      string `json:"url"`
	User     string `json:"user"` // Proxy-Authorization user name, "" without one
	AuthOK   bool   `json:"auth_ok"`
	XFF      string `json:"xff"` // X-Forwarded-For as received
	Status   int    `json:"status"`
	Category string `json:"category"` // the target's category ("" or "Sports")
	TLS      bool   `json:"tls"`      // the client spoke TLS to the proxy (:8443)
}

// OriginEventEnd marks the end line of an origin request in origin.jsonl.
const OriginEventEnd = "end"

// OriginRecord is one request an origin server saw. origin.jsonl holds a
// start line per request, written just before its head goes out (quic:
// when answered), and for HTTP(S) an end line (Event "end") when the
// handler is done, with the same ID and the End, Bytes, Complete and Err
// fields set. ReadOriginLog joins the two into one record; a request still
// running has a zero End, one whose client left before the head has only
// the end line (Status 0).
type OriginRecord struct {
	Time   time.Time `json:"time"`
	Proto  string    `json:"proto"`  // "http", "https" or "quic"
	Site   string    `json:"site"`   // the site whose address was hit
	Local  string    `json:"local"`  // listener ip:port
	Remote string    `json:"remote"` // client ip:port
	SNI    string    `json:"sni"`
	Host   string    `json:"host"`   // Host header (quic: the SNI)
	Method string    `json:"method"` // quic: "LINE"
	Path   string    `json:"path"`   // quic: the line the client sent
	Status int       `json:"status"` // quic: 200 when answered
	// ID joins a request's start and end lines (0 for quic).
	ID    uint64 `json:"id,omitempty"`
	Event string `json:"event,omitempty"` // "" for a start line, OriginEventEnd for an end line
	// End is when the handler finished (zero until the end line).
	End time.Time `json:"end,omitzero"`
	// Bytes counts the body bytes the handler wrote (handed to the
	// server; a client that left may not have had them all).
	Bytes int64 `json:"bytes,omitempty"`
	// Complete: the handler sent everything it meant to without a write
	// error. False with Err set when the transfer ended early (the client
	// or the proxy in front of it went away).
	Complete bool   `json:"complete,omitempty"`
	Err      string `json:"err,omitempty"`
}

// Ended reports whether the request's end line has been read.
func (r OriginRecord) Ended() bool { return !r.End.IsZero() }

// joinOrigin merges each end line into its request's start line, keeping
// the order of the start lines; an end line without a start line (the
// client left before the head) stays a record of its own.
func joinOrigin(lines []OriginRecord) []OriginRecord {
	out := make([]OriginRecord, 0, len(lines))
	byID := make(map[uint64]int)
	for _, l := range lines {
		if l.Event != OriginEventEnd {
			if l.ID != 0 {
				byID[l.ID] = len(out)
			}
			out = append(out, l)
			continue
		}
		i, ok := byID[l.ID]
		if !ok || l.ID == 0 {
			out = append(out, l)
			continue
		}
		r := &out[i]
		r.Event, r.End, r.Bytes, r.Complete, r.Err = l.Event, l.End, l.Bytes, l.Complete, l.Err
		delete(byID, l.ID)
	}
	return out
}

// DNSRecord is one query a lab DNS server saw (one line of dns.jsonl).
type DNSRecord struct {
	Time      time.Time `json:"time"`
	Server    string    `json:"server"` // "cloud" or "auth"
	Remote    string    `json:"remote"`
	Name      string    `json:"name"`  // query name, fully qualified ("www.example.com.")
	Type      string    `json:"type"`  // "A", "AAAA", ...
	Rcode     string    `json:"rcode"` // "NOERROR", "NXDOMAIN", ...
	Transport string    `json:"transport"`
	Blocked   bool      `json:"blocked"`   // the cloud resolver sinkholed the name
	Truncated bool      `json:"truncated"` // the answer went out with TC set
}

// jsonlWriter appends one JSON document per line to a file, one write(2)
// per line with O_APPEND, so lines from concurrent goroutines never mix.
type jsonlWriter struct {
	mu sync.Mutex
	f  *os.File
}

func openJSONL(path string) (*jsonlWriter, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	return &jsonlWriter{f: f}, nil
}

func (w *jsonlWriter) write(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	b = append(b, '\n')
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f != nil {
		_, _ = w.f.Write(b)
	}
}

func (w *jsonlWriter) close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}

// ReadProxyLog parses a proxy.jsonl file.
func ReadProxyLog(path string) ([]ProxyRecord, error) { return readJSONL[ProxyRecord](path) }

// ReadOriginLog parses an origin.jsonl file: one record per request, its
// end line joined in (see OriginRecord).
func ReadOriginLog(path string) ([]OriginRecord, error) {
	lines, err := readJSONL[OriginRecord](path)
	return joinOrigin(lines), err
}

// ReadDNSLog parses a dns.jsonl file.
func ReadDNSLog(path string) ([]DNSRecord, error) { return readJSONL[DNSRecord](path) }

// readJSONL parses every complete line of a JSON-lines file; a last line
// without its newline (a write in progress) is left out.
func readJSONL[T any](path string) ([]T, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read log: %w", err)
	}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i+1]
	} else {
		b = nil
	}
	var out []T
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	n := 0
	for sc.Scan() {
		n++
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var v T
		if err := json.Unmarshal(line, &v); err != nil {
			return out, fmt.Errorf("parse %s line %d: %w", path, n, err)
		}
		out = append(out, v)
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("scan %s: %w", path, err)
	}
	return out, nil
}

package serve

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// maxHead caps a CONNECT request head.
const maxHead = 8 << 10

// connectReq is a parsed CONNECT request head.
type connectReq struct {
	Host string // target host (name or address literal, no brackets)
	Port uint16
	User string // Basic user of Proxy-Authorization, "" without one
	XFF  string // X-Forwarded-For, "" without one
}

// parseConnect parses a complete request head (up to and including the
// blank line). Only CONNECT host:port is accepted.
func parseConnect(head []byte) (connectReq, error) {
	var r connectReq
	if len(head) > maxHead {
		return r, errors.New("request head too long")
	}
	lines := strings.Split(strings.TrimSuffix(string(head), "\r\n\r\n"), "\r\n")
	parts := strings.Split(lines[0], " ")
	if len(parts) != 3 || !strings.HasPrefix(parts[2], "HTTP/1.") {
		return r, fmt.Errorf("bad request line %q", lines[0])
	}
	if parts[0] != "CONNECT" {
		return r, fmt.Errorf("method %q: only CONNECT", parts[0])
	}
	host, port, err := net.SplitHostPort(parts[1])
	if err != nil || host == "" {
		return r, fmt.Errorf("connect target %q is not host:port", parts[1])
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return r, fmt.Errorf("connect target %q has a bad port", parts[1])
	}
	r.Host, r.Port = host, uint16(p)
	for _, l := range lines[1:] {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			return r, fmt.Errorf("bad header line %q", l)
		}
		v = strings.TrimSpace(v)
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "proxy-authorization":
			scheme, cred, _ := strings.Cut(v, " ")
			if !strings.EqualFold(scheme, "Basic") {
				continue
			}
			raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
			if err != nil {
				return r, errors.New("proxy-authorization: bad base64")
			}
			r.User, _, _ = strings.Cut(string(raw), ":")
		case "x-forwarded-for":
			r.XFF = v
		}
	}
	return r, nil
}

// headEnd returns the length of the request head in b (through the blank
// line), or -1 when b does not hold a whole head yet.
func headEnd(b []byte) int {
	i := bytes.Index(b, []byte("\r\n\r\n"))
	if i < 0 {
		return -1
	}
	return i + 4
}

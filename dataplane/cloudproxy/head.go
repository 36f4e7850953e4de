package cloudproxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
)

// errHeadTooLarge means the proxy's response head exceeds the limit.
var errHeadTooLarge = errors.New("response head too large")

// responseHead is a parsed HTTP/1.x response head.
type responseHead struct {
	StatusCode int
	Reason     string
	Header     http.Header
	Raw        []byte // the head bytes, blank line included
}

// readHead reads one HTTP/1.x response head (status line, header fields,
// blank line) of at most max bytes from br, leaving anything after it in
// br.
func readHead(br *bufio.Reader, max int) (*responseHead, error) {
	var raw []byte
	for {
		line, err := br.ReadSlice('\n')
		if len(raw)+len(line) > max {
			return nil, errHeadTooLarge
		}
		raw = append(raw, line...)
		if err == bufio.ErrBufferFull {
			continue // a line longer than the buffer: keep reading it
		}
		if err != nil {
			return nil, fmt.Errorf("read response head: %w", err)
		}
		if len(raw) > len(line) && (string(line) == "\r\n" || string(line) == "\n") {
			break
		}
	}
	return parseHead(raw)
}

// parseHead parses raw, a complete response head.
func parseHead(raw []byte) (*responseHead, error) {
	// A buffer the size of the head, not bufio's 4 KiB default: every
	// CONNECT parses one, and the garbage added up in bursts of flows.
	tp := textproto.NewReader(bufio.NewReaderSize(bytes.NewReader(raw), len(raw)))
	status, err := tp.ReadLine()
	if err != nil {
		return nil, fmt.Errorf("read status line: %w", err)
	}
	proto, rest, ok := strings.Cut(status, " ")
	if !ok || (proto != "HTTP/1.1" && proto != "HTTP/1.0") {
		return nil, fmt.Errorf("malformed status line %q", truncate(status))
	}
	codeText, reason, _ := strings.Cut(rest, " ")
	code, err := strconv.Atoi(codeText)
	if err != nil || len(codeText) != 3 || code < 100 {
		return nil, fmt.Errorf("malformed status code in %q", truncate(status))
	}
	mh, err := tp.ReadMIMEHeader()
	if err != nil {
		return nil, fmt.Errorf("read response header: %w", err)
	}
	return &responseHead{StatusCode: code, Reason: reason, Header: http.Header(mh), Raw: raw}, nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

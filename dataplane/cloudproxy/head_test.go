package cloudproxy

import (
	"bufio"
	"bytes"
	"io"
	"testing"
)

func FuzzReadHead(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nVia: 1.1 proxy\r\n\r\nTUNNEL"))
	f.Add([]byte("HTTP/1.0 403 Forbidden\r\nX-Block-Category: Sports\r\nContent-Length: 5\r\n\r\nhello"))
	f.Add([]byte("HTTP/1.1 407 Proxy Authentication Required\nProxy-Authenticate: Basic\n\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\n folded: x\r\n\r\n"))
	f.Add([]byte("\r\nHTTP/1.1 200\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(b), 16)
		h, err := readHead(br, 256)
		if err != nil {
			return
		}
		if h.StatusCode < 100 || h.StatusCode > 999 {
			t.Fatalf("status %d", h.StatusCode)
		}
		if len(h.Raw) > 256 || !bytes.HasPrefix(b, h.Raw) {
			t.Fatalf("raw head %q is not a prefix of the input", h.Raw)
		}
		rest, _ := io.ReadAll(br)
		if !bytes.Equal(append(bytes.Clone(h.Raw), rest...), b) {
			t.Fatal("head plus rest is not the input")
		}
		_ = BlockCategory(h.Header, rest)
	})
}

package cloudproxy_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/dataplane/cloudproxy"
)

// TestConnectEarlySendsBytesBeforeAnswer checks the early bytes reach the
// proxy with the CONNECT, before it answers (a proxy such as Squid then
// has the ClientHello in hand when its origin connection opens), and are
// not sent again after the answer.
func TestConnectEarlySendsBytesBeforeAnswer(t *testing.T) {
	early := []byte("\x16\x03\x01 a client hello")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		// Before answering: the early bytes must already be here.
		c.SetReadDeadline(time.Now().Add(time.Second))
		b := make([]byte, len(early))
		if _, err := io.ReadFull(br, b); err != nil {
			io.WriteString(c, "HTTP/1.1 502 No Early Bytes\r\nContent-Length: 0\r\n\r\n")
			got <- nil
			return
		}
		io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
		// Nothing more may follow until the client writes again.
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		var rest [64]byte
		n, _ := br.Read(rest[:])
		got <- append(b, rest[:n]...)
	}()
	c, err := cloudproxy.New(cloudproxy.Config{URL: &url.URL{Scheme: "http", Host: ln.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	conn, err := c.ConnectEarly(context.Background(), "tls.example:443", netip.Addr{}, early)
	if err != nil {
		t.Fatalf("ConnectEarly: %v", err)
	}
	defer conn.Close()
	if b := <-got; !bytes.Equal(b, early) {
		t.Fatalf("proxy read %q in the tunnel, want exactly the early bytes %q", b, early)
	}
}

// TestConnectEarlyRefused checks a refusal still comes back as a
// RefusedError when early bytes went with the CONNECT.
func TestConnectEarlyRefused(t *testing.T) {
	u := startScripted(t, func(c net.Conn) bool {
		io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
		return false
	})
	c, err := cloudproxy.New(cloudproxy.Config{URL: u})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.ConnectEarly(context.Background(), "tls.example:443", netip.Addr{}, []byte("hello"))
	var re *cloudproxy.RefusedError
	if !errors.As(err, &re) || re.StatusCode != 403 {
		t.Fatalf("err = %v, want a 403 RefusedError", err)
	}
}

package proxy_test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// cloudDies closes the env's cloud proxy and waits until the client has
// found it down.
func (e *env) cloudDies(t *testing.T) {
	t.Helper()
	e.cloud.Close()
	deadline := time.Now().Add(3 * time.Second)
	for !e.proxy.Cloud().Unavailable() {
		if time.Now().After(deadline) {
			t.Fatal("the cloud proxy was not found down within 3 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) httpGet(t *testing.T, host, acceptLanguage string) *http.Response {
	t.Helper()
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	al := ""
	if acceptLanguage != "" {
		al = "Accept-Language: " + acceptLanguage + "\r\n"
	}
	fmt.Fprintf(c, "GET /x HTTP/1.1\r\nHost: %s\r\n%sConnection: close\r\n\r\n", host, al)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestFailClosedHTTPPage(t *testing.T) {
	e := newEnv(t, envOpts{failureMode: "closed"})
	e.cloudDies(t)
	before := e.origin.Conns()
	for _, c := range []struct{ al, lang, text string }{
		{"", "en", "Web access is stopped"},
		{"ja-JP,ja;q=0.9,en;q=0.8", "ja", "Webアクセスを停止しています"},
		{"en;q=0.5, ja;q=0.7", "ja", "Webアクセスを停止しています"},
		{"de, en;q=0.5, ja;q=0.1", "en", "Web access is stopped"},
		{"ja;q=0", "en", "Web access is stopped"},
	} {
		resp := e.httpGet(t, "www.example.com", c.al)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 503 || resp.Header.Get("Content-Language") != c.lang || !strings.Contains(string(body), c.text) ||
			resp.Header.Get("X-Cloudsteer-Reason") != "cloud_proxy_failed_closed" {
			t.Errorf("Accept-Language %q: %d %s %q", c.al, resp.StatusCode, resp.Header.Get("Content-Language"), body)
		}
	}
	if e.origin.Conns() != before {
		t.Error("the origin was reached while failed closed")
	}
	if n := e.proxy.Stats().FailedClosed; n != 5 {
		t.Errorf("FailedClosed = %d, want 5", n)
	}
}

func TestFailClosedTLSAlertBypassStillWorks(t *testing.T) {
	e := newEnv(t, envOpts{tls: true, failureMode: "closed"})
	e.cloudDies(t)
	_, err := e.tlsGet(t, "www.example.com")
	if err == nil || !strings.Contains(err.Error(), "access denied") {
		t.Fatalf("tls while failed closed: %v, want an access_denied alert", err)
	}
	if body, err := e.tlsGet(t, "bank.example"); err != nil || !strings.Contains(body, "sni=bank.example") {
		t.Fatalf("bypass while failed closed: %q %v", body, err)
	}
}

func TestFailOpenGoesDirect(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls %v", tlsOn), func(t *testing.T) {
			e := newEnv(t, envOpts{tls: tlsOn, failureMode: "open"})
			e.cloudDies(t)
			before := len(e.cloud.Records())
			if tlsOn {
				body, err := e.tlsGet(t, "www.example.com")
				if err != nil || !strings.Contains(body, "sni=www.example.com") {
					t.Fatalf("tls while failed open: %q %v", body, err)
				}
			} else {
				resp := e.httpGet(t, "www.example.com", "")
				if resp.StatusCode != 200 {
					t.Fatalf("http while failed open: %d", resp.StatusCode)
				}
			}
			if len(e.cloud.Records()) != before {
				t.Error("the dead cloud proxy got a request")
			}
			if n := e.proxy.Stats().FailedOpen; n != 1 {
				t.Errorf("FailedOpen = %d, want 1", n)
			}
		})
	}
}

// The tunnels that went direct while the cloud was down are cut when the
// daemon says a cloud proxy is back, so they reconnect inspected.
func TestCutFailedOpen(t *testing.T) {
	e := newEnv(t, envOpts{tls: true, failureMode: "open"})
	e.cloudDies(t)
	c, err := tls.Dial("tcp", e.addr, &tls.Config{ServerName: "www.example.com", RootCAs: e.ca.Pool})
	if err != nil {
		t.Fatalf("tls while failed open: %v", err)
	}
	defer c.Close()
	if n := e.proxy.CutFailedOpen(); n != 1 {
		t.Fatalf("CutFailedOpen = %d, want the 1 direct tunnel", n)
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err = c.Read(make([]byte, 1))
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read on a cut tunnel: %v, want its end at once", err)
	}
	if n := e.proxy.CutFailedOpen(); n != 0 {
		t.Fatalf("second CutFailedOpen = %d", n)
	}
}

package serve

import (
	"encoding/base64"
	"testing"
)

func TestParseConnect(t *testing.T) {
	auth := "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("code:x")) + "\r\n"
	tests := []struct {
		name    string
		head    string
		want    connectReq
		wantErr bool
	}{
		{name: "name with auth and xff", head: "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n" + auth + "X-Forwarded-For: 10.10.0.10\r\n\r\n",
			want: connectReq{Host: "a.example", Port: 443, User: "code", XFF: "10.10.0.10"}},
		{name: "ipv6 literal, no auth", head: "CONNECT [2001:db8::1]:443 HTTP/1.0\r\n\r\n", want: connectReq{Host: "2001:db8::1", Port: 443}},
		{name: "get is refused", head: "GET http://a/ HTTP/1.1\r\n\r\n", wantErr: true},
		{name: "no port", head: "CONNECT a.example HTTP/1.1\r\n\r\n", wantErr: true},
		{name: "port zero", head: "CONNECT a.example:0 HTTP/1.1\r\n\r\n", wantErr: true},
		{name: "port too big", head: "CONNECT a.example:70000 HTTP/1.1\r\n\r\n", wantErr: true},
		{name: "bad base64", head: "CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: Basic !!!\r\n\r\n", wantErr: true},
		{name: "header without colon", head: "CONNECT a:1 HTTP/1.1\r\nbroken\r\n\r\n", wantErr: true},
		{name: "not http", head: "CONNECT a:1 SPDY/3\r\n\r\n", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseConnect([]byte(tc.head))
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseConnect err = %v, wantErr %v", err, tc.wantErr)
			}
			if err == nil && got != tc.want {
				t.Fatalf("parseConnect = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func FuzzParseConnect(f *testing.F) {
	f.Add([]byte("CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n"))
	f.Add([]byte("CONNECT [::1]:443 HTTP/1.1\r\nProxy-Authorization: Basic Y29kZTo=\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n"))
	f.Add([]byte("\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseConnect(b)
		if err == nil && (r.Host == "" || r.Port == 0) {
			t.Fatalf("accepted %q without host or port: %+v", b, r)
		}
		if n := headEnd(b); n > len(b) {
			t.Fatalf("headEnd %d beyond %d", n, len(b))
		}
	})
}

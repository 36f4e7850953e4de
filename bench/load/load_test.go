package load

import (
	"bufio"
	"strings"
	"testing"
)

func TestClientHello(t *testing.T) {
	b, err := ClientHello("stream.bench.example")
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 5 || b[0] != 22 || int(b[3])<<8|int(b[4]) != len(b)-5 {
		t.Fatalf("not one TLS handshake record: % x", b[:min(len(b), 8)])
	}
	if !strings.Contains(string(b), "stream.bench.example") {
		t.Fatal("SNI missing from the ClientHello")
	}
}

func TestPercentile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	tests := []struct {
		name string
		p    float64
		want float64
	}{
		{name: "p50", p: 50, want: 5},
		{name: "p90", p: 90, want: 9},
		{name: "p100", p: 100, want: 10},
		{name: "p0", p: 0, want: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percentile(xs, tc.p); got != tc.want {
				t.Fatalf("Percentile(%v) = %v, want %v", tc.p, got, tc.want)
			}
		})
	}
	if Percentile(nil, 50) != 0 {
		t.Fatal("empty input")
	}
}

func TestReadResponse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    int64
		wantErr bool
	}{
		{name: "ok", in: "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n", want: 3},
		{name: "no length", in: "HTTP/1.1 200 OK\r\n\r\nok\n", wantErr: true},
		{name: "404", in: "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", wantErr: true},
		{name: "short body", in: "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nok\n", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, err := readResponse(bufio.NewReader(strings.NewReader(tc.in)))
			if (err != nil) != tc.wantErr || (err == nil && n != tc.want) {
				t.Fatalf("readResponse = %d, %v; want %d, err %v", n, err, tc.want, tc.wantErr)
			}
		})
	}
}

func FuzzReadResponse(f *testing.F) {
	f.Add("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
	f.Add("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n")
	f.Fuzz(func(t *testing.T, s string) {
		n, err := readResponse(bufio.NewReader(strings.NewReader(s)))
		if err == nil && (n < 0 || n > int64(len(s))) {
			t.Fatalf("body length %d from %d input bytes", n, len(s))
		}
	})
}

package lab

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestParseSquidLine(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		want    SquidRecord
		wantErr string
	}{
		{
			name: "connect with code and xff",
			line: `1795637429.793 10.20.0.1 CONNECT www.example.com:443 3315471d-b831-48ed-a621-17042a74a8e3 200 4711 - 2025 "10.10.0.10"`,
			want: SquidRecord{Time: time.Unix(1795637429, 793e6), Client: netip.MustParseAddr("10.20.0.1"), Method: "CONNECT",
				URL: "www.example.com:443", User: EntitlementCode, Status: 200, Bytes: 4711, Duration: 2025 * time.Millisecond, XFF: "10.10.0.10"},
		},
		{
			name: "xff with spaces and escapes",
			line: `1795637429.793 10.20.0.1 CONNECT www.example.com:443 branch01 200 0 0 0 "10.10.0.10, 10.20.0.1 \"q\\\""`,
			want: SquidRecord{Time: time.Unix(1795637429, 793e6), Client: netip.MustParseAddr("10.20.0.1"), Method: "CONNECT",
				URL: "www.example.com:443", User: "branch01", Status: 200, XFF: `10.10.0.10, 10.20.0.1 "q\"`},
		},
		{
			name: "ipv6 client, encoded user, no xff",
			line: `1795637429.829 fd00:20::1 GET http://news.example.com/x?y=1 bra%20nch01 407 3960 1024 3 "-"`,
			want: SquidRecord{Time: time.Unix(1795637429, 829e6), Client: netip.MustParseAddr("fd00:20::1"), Method: "GET",
				URL: "http://news.example.com/x?y=1", User: "bra nch01", Status: 407, Bytes: 3960, UpstreamBytes: 1024, Duration: 3 * time.Millisecond},
		},
		{
			name: "no user, transaction without headers",
			line: `1795637429.722 198.51.100.11 - error:transaction-end-before-headers - 0 0 - 0 "-"`,
			want: SquidRecord{Time: time.Unix(1795637429, 722e6), Client: netip.MustParseAddr("198.51.100.11"), Method: "-",
				URL: "error:transaction-end-before-headers"},
		},
		{name: "too few fields", line: `1795637429.722 10.20.0.1 GET`, wantErr: "want 10 fields"},
		{name: "no xff field", line: `1795637429.722 10.20.0.1 GET http://a/ - 200 1 2 3`, wantErr: "want 10 fields"},
		{name: "old format without counts", line: `1795637429.722 10.20.0.1 GET http://a/ - 200 "-"`, wantErr: "want 10 fields"},
		{name: "bad time", line: `17956x7429.722 10.20.0.1 GET http://a/ - 200 1 2 3 "-"`, wantErr: "parse time"},
		{name: "time without millis", line: `1795637429 10.20.0.1 GET http://a/ - 200 1 2 3 "-"`, wantErr: "parse time"},
		{name: "bad client", line: `1795637429.722 nohost GET http://a/ - 200 1 2 3 "-"`, wantErr: "parse client"},
		{name: "bad status", line: `1795637429.722 10.20.0.1 GET http://a/ - OK 1 2 3 "-"`, wantErr: "parse status"},
		{name: "status too large", line: `1795637429.722 10.20.0.1 GET http://a/ - 1000 1 2 3 "-"`, wantErr: "parse status"},
		{name: "bad user encoding", line: `1795637429.722 10.20.0.1 GET http://a/ a%zz 200 1 2 3 "-"`, wantErr: "parse user"},
		{name: "bad bytes sent", line: `1795637429.722 10.20.0.1 GET http://a/ - 200 x 2 3 "-"`, wantErr: "parse bytes sent"},
		{name: "negative upstream bytes", line: `1795637429.722 10.20.0.1 GET http://a/ - 200 1 -2 3 "-"`, wantErr: "parse upstream bytes"},
		{name: "bad duration", line: `1795637429.722 10.20.0.1 GET http://a/ - 200 1 2 3.5 "-"`, wantErr: "parse duration"},
		{name: "unquoted xff", line: `1795637429.722 10.20.0.1 GET http://a/ - 200 1 2 3 10.10.0.10`, wantErr: "quoted string"},
		{name: "dangling escape", line: `1795637429.722 10.20.0.1 GET http://a/ - 200 1 2 3 "a\"`, wantErr: "dangling escape"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSquidLine(tt.line)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseSquidLine = %+v, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !got.Time.Equal(tt.want.Time) {
				t.Errorf("time %v, want %v", got.Time, tt.want.Time)
			}
			got.Time = tt.want.Time
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseSquidLog(t *testing.T) {
	log := `1795637429.722 198.51.100.11 - error:transaction-end-before-headers - 0 0 - 0 "-"

1795637429.793 10.20.0.1 CONNECT www.example.com:443 branch01 200 39 - 12 "10.10.0.10"
1795637429.800 10.20.0.1 CONNECT news.exa`
	recs, err := ParseSquidLog(strings.NewReader(log))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[1].URL != "www.example.com:443" {
		t.Fatalf("records %+v: want the two complete lines", recs)
	}
	_, err = ParseSquidLog(strings.NewReader("1795637429.722 x\n"))
	if err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("bad line: %v, want an error naming line 1", err)
	}
}

func TestListensOn(t *testing.T) {
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0B6433C6:0C38 00000000:0000 0A 00000000:00000000 00:00000000 00000000    13        0 1 1 0000000000000000 100 0 0 10 0
   1: 0B6433C6:1F90 0A140001:D2A6 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
`
	tests := []struct {
		name string
		port int
		want bool
	}{
		{"listening", 3128, true},
		{"established only", 8080, false},
		{"absent", 53, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := listensOn([]byte(table), tt.port); got != tt.want {
				t.Errorf("listensOn(%d) = %v, want %v", tt.port, got, tt.want)
			}
		})
	}
}

func TestSquidService(t *testing.T) {
	tests := []struct{ prefix, want string }{
		{"csdemo", "cslabcsdemo"},
		{"cs-lab_1", "cslabcslab1"},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			if got := squidService(tt.prefix); got != tt.want {
				t.Errorf("squidService(%q) = %q, want %q", tt.prefix, got, tt.want)
			}
		})
	}
}

func FuzzParseSquidLine(f *testing.F) {
	f.Add(`1795637429.793 10.20.0.1 CONNECT www.example.com:443 3315471d-b831-48ed-a621-17042a74a8e3 200 4711 - 2025 "10.10.0.10"`)
	f.Add(`1795637429.829 fd00:20::1 GET http://news.example.com/x?y=1 bra%20nch01 407 3960 1024 3 "-"`)
	f.Add(`1795637429.793 10.20.0.1 CONNECT a:443 b 200 0 0 0 "10.10.0.10, 10.20.0.1 \"q\\\""`)
	f.Add(`1795637429.722 198.51.100.11 - error:transaction-end-before-headers - 0 0 - 0 "-"`)
	f.Add(`0.000 ::ffff:1.2.3.4 X Y - 999 9223372036854775807 - 1 ""`)
	f.Fuzz(func(t *testing.T, line string) {
		rec, err := ParseSquidLine(line)
		if err != nil {
			return
		}
		if rec.Status < 0 || rec.Status > 999 {
			t.Fatalf("status %d out of range", rec.Status)
		}
		if !rec.Client.IsValid() || rec.Client.Is4In6() {
			t.Fatalf("client %v", rec.Client)
		}
		if strings.ContainsRune(rec.Method, ' ') || strings.ContainsRune(rec.URL, ' ') {
			t.Fatalf("field with a space: %+v", rec)
		}
		if rec.Bytes < 0 || rec.UpstreamBytes < 0 || rec.Duration < 0 {
			t.Fatalf("negative count: %+v", rec)
		}
	})
}

package servers

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestJSONLConcurrentAppendAndRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.jsonl")
	w, err := openJSONL(path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				w.write(ProxyRecord{Time: time.Unix(int64(i), 0), Proxy: "lab", Status: g, URL: string(make([]byte, 300))})
			}
		})
	}
	wg.Wait()
	if err := w.close(); err != nil {
		t.Fatal(err)
	}
	recs, err := ReadProxyLog(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1600 {
		t.Fatalf("%d records, want 1600", len(recs))
	}
	// A torn last line (a write in progress) is left out, not an error.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	_, _ = f.WriteString(`{"time":"2026-`)
	f.Close()
	if recs, err = ReadProxyLog(path); err != nil || len(recs) != 1600 {
		t.Fatalf("with torn line: %d records, %v", len(recs), err)
	}
}

func TestReadLogErrors(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name    string
		content *string
		wantN   int
		wantErr bool
	}{
		{"missing", nil, 0, true},
		{"empty", new(string), 0, false},
		{"blank lines", ptr("\n\n{\"server\":\"auth\"}\n\n"), 1, false},
		{"garbage", ptr("{\"server\":\"auth\"}\nnot json\n"), 1, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name)
			if tc.content != nil {
				if err := os.WriteFile(path, []byte(*tc.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			recs, err := ReadDNSLog(path)
			if (err != nil) != tc.wantErr || len(recs) != tc.wantN {
				t.Fatalf("%d records, err %v", len(recs), err)
			}
			if tc.content == nil && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("missing file error %v is not fs.ErrNotExist", err)
			}
		})
	}
}

func ptr(s string) *string { return &s }

func TestCAKeptAcrossStarts(t *testing.T) {
	dir := t.TempDir()
	ca1, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, CAKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("ca key mode %v, %v", st.Mode(), err)
	}
	ca2, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !ca1.Cert.Equal(ca2.Cert) {
		t.Fatal("second start made a new CA although ca.pem exists")
	}
	leaf, err := ca2.Issue([]string{"www.example.com", ProxyName}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.Leaf.VerifyHostname(ProxyName); err != nil {
		t.Error(err)
	}
	if _, err := leaf.Leaf.Verify(x509VerifyOptions(ca1)); err != nil {
		t.Errorf("leaf does not chain to the first CA: %v", err)
	}
	// ca.pem without its key is an error, not a silent new CA.
	if err := os.Remove(filepath.Join(dir, CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateCA(dir); err == nil {
		t.Error("ca.pem without key accepted")
	}
}

func TestJoinOrigin(t *testing.T) {
	t0 := time.Unix(1000, 0).UTC()
	end := t0.Add(time.Second)
	lines := []OriginRecord{
		{ID: 1, Path: "/a", Status: 200, Time: t0},
		{ID: 2, Path: "/b", Status: 200, Time: t0},
		{ID: 1, Path: "/a", Status: 200, Time: t0, Event: OriginEventEnd, End: end, Bytes: 5, Complete: true},
		{ID: 3, Path: "/slow", Time: t0, Event: OriginEventEnd, End: end, Err: "client gone"}, // no start line
		{Path: "quic line", Proto: "quic", Status: 200, Time: t0},                             // quic: no ID
	}
	got := joinOrigin(lines)
	want := []OriginRecord{
		{ID: 1, Path: "/a", Status: 200, Time: t0, Event: OriginEventEnd, End: end, Bytes: 5, Complete: true},
		{ID: 2, Path: "/b", Status: 200, Time: t0},
		{ID: 3, Path: "/slow", Time: t0, Event: OriginEventEnd, End: end, Err: "client gone"},
		{Path: "quic line", Proto: "quic", Status: 200, Time: t0},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d records %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("record %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	if got[1].Ended() || !got[0].Ended() {
		t.Errorf("Ended: %v %v", got[0].Ended(), got[1].Ended())
	}
}

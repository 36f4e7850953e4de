package dhcpnames

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
)

var now = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

func TestParseNetworkdFile(t *testing.T) {
	b, err := os.ReadFile("testdata/lan0.json")
	if err != nil {
		t.Fatal(err)
	}
	leases, skipped, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	// wpad (reserved), "bad name" and the lease without a host name are skipped.
	if skipped != 3 {
		t.Errorf("skipped %d, want 3", skipped)
	}
	var names []string
	for _, l := range leases {
		names = append(names, l.Name+"="+l.Addr.String())
	}
	want := []string{"nas=192.168.77.23", "printer-2f=192.168.77.24", "old-laptop=192.168.77.28"}
	if !slices.Equal(names, want) {
		t.Fatalf("leases %v, want %v", names, want)
	}
	if got := leases[0].Expires; !got.Equal(time.Unix(4102444800, 0)) {
		t.Errorf("expiry %v", got)
	}
}

func TestParseRefusesWhatIsNotALeaseFile(t *testing.T) {
	for _, in := range []string{"", "{", "[1,2]", `{"Leases": 3}`, `{"Leases":[{"Address":"x"}]`} {
		if _, _, err := Parse([]byte(in)); err == nil {
			t.Errorf("Parse(%q): no error", in)
		}
	}
	// Odd addresses are skipped, not errors.
	leases, skipped, err := Parse([]byte(`{"Leases":[{"Address":[1,2,3],"Hostname":"a"},{"Address":[1,2,3,300],"Hostname":"b"},{"Address":[0,0,0,0],"Hostname":"c"},{"Address":"fd00::5","Hostname":"d"}]}`))
	if err != nil || skipped != 3 || len(leases) != 1 || leases[0].Addr != netip.MustParseAddr("fd00::5") {
		t.Fatalf("leases %v skipped %d err %v", leases, skipped, err)
	}
}

func TestHostLabel(t *testing.T) {
	for in, want := range map[string]string{"nas": "nas", "NAS.": "nas", "a-1": "a-1", "-a": "", "a-": "", "a.b": "", "a_b": "", "": "", "WPAD": "", "isatap": "", "localhost": "",
		"x23456789012345678901234567890123456789012345678901234567890123":  "x23456789012345678901234567890123456789012345678901234567890123",
		"x234567890123456789012345678901234567890123456789012345678901234": ""} {
		got, ok := hostLabel(in)
		if got != want || ok != (want != "") {
			t.Errorf("hostLabel(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func TestTable(t *testing.T) {
	a := netip.MustParseAddr
	leases := []Lease{
		{Name: "nas", Addr: a("192.168.77.23"), Expires: now.Add(time.Hour)},
		{Name: "gw", Addr: a("192.168.77.30"), Expires: now.Add(time.Hour)},      // reserved: the gateway's name
		{Name: "gone", Addr: a("192.168.77.31"), Expires: now.Add(-time.Second)}, // expired
		// One address leased twice (a device renamed): the later expiry names it.
		{Name: "old", Addr: a("192.168.77.40"), Expires: now.Add(time.Minute)},
		{Name: "new", Addr: a("192.168.77.40"), Expires: now.Add(time.Hour)},
		{Name: "nas", Addr: a("192.168.77.50")}, // no expiry given: kept
	}
	tb := NewTable(leases, "LAN.", []string{"gw.lan"}, now)
	for name, want := range map[string][]string{
		"nas": {"192.168.77.23", "192.168.77.50"}, "nas.lan": {"192.168.77.23", "192.168.77.50"},
		"new.lan": {"192.168.77.40"}, "old.lan": nil, "old": nil, "gw": nil, "gw.lan": nil, "gone.lan": nil,
		"nas.example": nil, "x.nas.lan": nil, "lan": nil,
	} {
		got, ok := tb.Lookup(name)
		var gs []string
		for _, g := range got {
			gs = append(gs, g.String())
		}
		if ok != (want != nil) || !slices.Equal(gs, want) {
			t.Errorf("Lookup(%q) = %v, %v; want %v", name, gs, ok, want)
		}
	}
	if n, ok := tb.Reverse(a("192.168.77.40")); !ok || n != "new.lan" {
		t.Errorf("Reverse = %q, %v", n, ok)
	}
	if _, ok := tb.Reverse(a("192.168.77.31")); ok {
		t.Error("an expired lease answers PTR")
	}
	if tb.Len() != 2 {
		t.Errorf("Len %d, want 2", tb.Len())
	}
	var nilTable *Table
	if _, ok := nilTable.Lookup("nas"); ok {
		t.Error("nil table answers")
	}
}

func TestWatcherFollowsTheDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dhcp-server-lease")
	clock := now
	w := &Watcher{Dir: dir, Domain: "lan", Now: func() time.Time { return clock }}
	w.Refresh() // no directory yet: no DHCP server
	if w.Table().Len() != 0 {
		t.Fatal("names without a directory")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, body string, mtime time.Time) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	exp := func(d time.Duration) string { return itoa(now.Add(d).UnixMicro()) }
	write("lan0", `{"Leases":[{"Address":[192,168,77,23],"Hostname":"nas","ExpirationRealtimeUSec":`+exp(time.Hour)+`}]}`, now)
	write(".#lan0XXXX", `{"Leases":[{"Address":[192,168,77,99],"Hostname":"temp"}]}`, now)
	w.Refresh()
	if as, ok := w.Lookup("nas.lan"); !ok || as[0].String() != "192.168.77.23" {
		t.Fatalf("nas.lan = %v %v", as, ok)
	}
	if _, ok := w.Lookup("temp"); ok {
		t.Fatal("networkd's temporary file was read")
	}
	// A renewed lease with a new address, in a rewritten file.
	write("lan0", `{"Leases":[{"Address":[192,168,77,24],"Hostname":"nas","ExpirationRealtimeUSec":`+exp(2*time.Minute)+`}]}`, now.Add(time.Second))
	w.Refresh()
	if as, ok := w.Lookup("nas"); !ok || as[0].String() != "192.168.77.24" {
		t.Fatalf("after renewal nas = %v %v", as, ok)
	}
	// A file that does not parse keeps its last good leases.
	write("lan0", `{"Leases":[{"Addr`, now.Add(2*time.Second))
	w.Refresh()
	if _, ok := w.Lookup("nas"); !ok {
		t.Fatal("a torn file dropped the names")
	}
	// Time passes: the lease expires without the file changing.
	clock = now.Add(3 * time.Minute)
	w.Refresh()
	if _, ok := w.Lookup("nas"); ok {
		t.Fatal("an expired lease still answers")
	}
	// The file goes away: its names go with it.
	write("lan0", `{"Leases":[{"Address":[192,168,77,24],"Hostname":"nas"}]}`, now.Add(3*time.Second))
	w.Refresh()
	if _, ok := w.Lookup("nas"); !ok {
		t.Fatal("no name after the file came back")
	}
	if err := os.Remove(filepath.Join(dir, "lan0")); err != nil {
		t.Fatal(err)
	}
	w.Refresh()
	if _, ok := w.Lookup("nas"); ok {
		t.Fatal("a removed file's name still answers")
	}
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile("testdata/lan0.json"); err == nil {
		f.Add(b)
	}
	f.Add([]byte(`{"Leases":[{"Address":"fd00::1","Hostname":"a"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		leases, _, err := Parse(b)
		if err != nil && leases != nil {
			t.Fatal("leases with an error")
		}
		for _, l := range leases {
			if _, ok := hostLabel(l.Name); !ok || !l.Addr.IsValid() {
				t.Fatalf("bad lease %+v", l)
			}
		}
		NewTable(leases, "lan", nil, now)
	})
}

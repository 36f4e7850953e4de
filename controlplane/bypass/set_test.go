package bypass

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testSet is a Set over a fake map with a fake clock, a fake lookup and
// fake own addresses.
type testSet struct {
	*Set
	fm      *fakeMap
	now     *time.Time
	lookups atomic.Int32
}

var gwOwn = netip.MustParseAddr("10.20.0.1")

// newTestSet builds a Set with the admin domain "bank.example" and
// "*.shop.example"; dns answers the on-demand lookups (and snoops them
// the way the resolver does).
func newTestSet(t testing.TB, dns map[string][]netip.Addr) *testSet {
	t.Helper()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ts := &testSet{fm: &fakeMap{set: map[netip.Prefix]bool{}}, now: &now}
	s, err := NewSet(ts.fm, []string{"bank.example", "*.shop.example"}, nil, func() time.Time { return *ts.now }, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.SetOwnAddrs(func(a netip.Addr) bool { return a == gwOwn })
	s.SetLookup(func(_ context.Context, name string) ([]netip.Addr, error) {
		ts.lookups.Add(1)
		addrs, ok := dns[name]
		if !ok {
			return nil, fmt.Errorf("lookup %s: NXDOMAIN", name)
		}
		s.Snoop(name, addrs, time.Minute)
		return addrs, nil
	})
	ts.Set = s
	return ts
}

func (ts *testSet) inMap(a string) bool {
	ad := netip.MustParseAddr(a)
	return ts.fm.set[netip.PrefixFrom(ad, ad.BitLen())]
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestBypassTarget(t *testing.T) {
	dns := map[string][]netip.Addr{
		"gw1.akaetp.net": addrs("203.0.113.30", "2001:db8:113::30"),
		"www.akamai.com": addrs("203.0.113.31"),
		"v6.akamai.com":  addrs("2001:db8:113::32"),
		"rebind.akaetp.net": addrs("127.0.0.1", "10.20.0.1", "169.254.1.1", "224.0.0.1", "255.255.255.255",
			"0.1.2.3", "::1", "fe80::1", "ff02::1", "::ffff:203.0.113.10", "::"),
	}
	tests := []struct {
		name      string
		snoop     []netip.Addr // answered through the resolver before the flow
		flowName  string
		dst       string
		want      []string // one of these
		err       bool
		lookups   int32
		mapAfter  []string // in the kernel map afterwards
		notInMap  []string
		refusedAd uint64
	}{
		{name: "evidence hit", snoop: dns["gw1.akaetp.net"], flowName: "gw1.akaetp.net", dst: "203.0.113.30:443",
			want: []string{"203.0.113.30:443"}, lookups: 0, mapAfter: []string{"203.0.113.30"}},
		{name: "evidence hit v6", snoop: dns["gw1.akaetp.net"], flowName: "GW1.akaetp.net.", dst: "[2001:db8:113::30]:443",
			want: []string{"[2001:db8:113::30]:443"}, lookups: 0},
		{name: "mapped dst is the v4 address", snoop: dns["gw1.akaetp.net"], flowName: "gw1.akaetp.net", dst: "[::ffff:203.0.113.30]:443",
			want: []string{"203.0.113.30:443"}},
		{name: "on-demand lookup hit (agent with its own DoT)", flowName: "gw1.akaetp.net", dst: "203.0.113.30:8443",
			want: []string{"203.0.113.30:8443"}, lookups: 1, mapAfter: []string{"203.0.113.30", "2001:db8:113::30"}},
		{name: "client pick replaced, same family", flowName: "www.akamai.com", dst: "203.0.113.10:443",
			want: []string{"203.0.113.31:443"}, lookups: 1, mapAfter: []string{"203.0.113.31"}, notInMap: []string{"203.0.113.10"}},
		{name: "client pick replaced, family prefered", flowName: "gw1.akaetp.net", dst: "[2001:db8:113::10]:443",
			want: []string{"[2001:db8:113::30]:443"}, lookups: 1, notInMap: []string{"2001:db8:113::10"}},
		{name: "client pick replaced, other family when none", flowName: "v6.akamai.com", dst: "203.0.113.10:443",
			want: []string{"[2001:db8:113::32]:443"}, lookups: 1, notInMap: []string{"203.0.113.10"}},
		{name: "client picks the gateway", flowName: "www.akamai.com", dst: "10.20.0.1:443",
			want: []string{"203.0.113.31:443"}, lookups: 1, notInMap: []string{"10.20.0.1"}},
		{name: "no address: NXDOMAIN", flowName: "nosuch.akamai.com", dst: "203.0.113.10:443", err: true, lookups: 1,
			notInMap: []string{"203.0.113.10"}},
		{name: "rebinding answer ignored", flowName: "rebind.akaetp.net", dst: "127.0.0.1:443", err: true, lookups: 1,
			notInMap:  []string{"127.0.0.1", "10.20.0.1", "169.254.1.1", "224.0.0.1", "255.255.255.255", "0.1.2.3", "::1", "fe80::1", "ff02::1", "203.0.113.10"},
			refusedAd: 11},
		{name: "rebinding answer ignored, client dials a real address", flowName: "rebind.akaetp.net", dst: "203.0.113.10:443", err: true, lookups: 1,
			notInMap: []string{"203.0.113.10"}, refusedAd: 11},
		{name: "not a bypass name", flowName: "www.example.com", dst: "203.0.113.10:443", err: true, lookups: 0,
			notInMap: []string{"203.0.113.10"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestSet(t, dns)
			if tt.snoop != nil {
				ts.Snoop(tt.flowName, tt.snoop, time.Minute)
			}
			got, err := ts.BypassTarget(context.Background(), tt.flowName, netip.MustParseAddrPort(tt.dst))
			if tt.err {
				if err == nil {
					t.Fatalf("BypassTarget = %v, want an error", got)
				}
				if tt.flowName != "www.example.com" && !errors.Is(err, ErrNoAddress) {
					t.Fatalf("error %v is not ErrNoAddress", err)
				}
			} else if err != nil || !slices.Contains(tt.want, got.String()) {
				t.Fatalf("BypassTarget = %v, %v; want one of %v", got, err, tt.want)
			}
			if n := ts.lookups.Load(); n != tt.lookups {
				t.Errorf("%d on-demand lookups, want %d", n, tt.lookups)
			}
			for _, a := range tt.mapAfter {
				if !ts.inMap(a) {
					t.Errorf("%s not in the kernel map: %v", a, ts.fm.set)
				}
			}
			for _, a := range tt.notInMap {
				if ts.inMap(a) {
					t.Errorf("%s in the kernel map: %v", a, ts.fm.set)
				}
			}
			if st := ts.Stats(); st.LearnRefusedAddr != tt.refusedAd {
				t.Errorf("LearnRefusedAddr = %d, want %d", st.LearnRefusedAddr, tt.refusedAd)
			}
		})
	}
}

// TestBypassTargetHeldWithoutLookup: with no lookup function the held
// addresses still decide.
func TestBypassTargetHeldWithoutLookup(t *testing.T) {
	fm := &fakeMap{set: map[netip.Prefix]bool{}}
	s, err := NewSet(fm, nil, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Snoop("gw1.akaetp.net", addrs("203.0.113.30"), time.Minute)
	got, err := s.BypassTarget(context.Background(), "gw1.akaetp.net", netip.MustParseAddrPort("203.0.113.10:443"))
	if err != nil || got.String() != "203.0.113.30:443" {
		t.Fatalf("BypassTarget = %v, %v; want 203.0.113.30:443", got, err)
	}
	if _, err := s.BypassTarget(context.Background(), "www.akamai.com", netip.MustParseAddrPort("203.0.113.10:443")); !errors.Is(err, ErrNoAddress) {
		t.Fatalf("BypassTarget for a name without evidence = %v, want ErrNoAddress", err)
	}
}

// TestBypassTargetCoalesces: concurrent flows naming the same name share
// one on-demand lookup, and a flow whose context ends stops waiting.
func TestBypassTargetCoalesces(t *testing.T) {
	fm := &fakeMap{set: map[netip.Prefix]bool{}}
	s, err := NewSet(fm, nil, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var calls atomic.Int32
	s.SetLookup(func(ctx context.Context, name string) ([]netip.Addr, error) {
		calls.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return addrs("203.0.113.30"), nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.BypassTarget(ctx, "gw1.akaetp.net", netip.MustParseAddrPort("203.0.113.10:443")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a flow whose context ended got %v, want its deadline", err)
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			got, err := s.BypassTarget(context.Background(), "gw1.akaetp.net", netip.MustParseAddrPort("203.0.113.10:443"))
			if err != nil || got.String() != "203.0.113.30:443" {
				t.Errorf("BypassTarget = %v, %v", got, err)
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d lookups for 21 concurrent flows, want 1", n)
	}
	// The lookup's answer did not pass through Snoop here, so it is not
	// evidence held for later: nothing entered the kernel map.
	if len(fm.set) != 0 {
		t.Fatalf("kernel map = %v, want empty", fm.set)
	}
}

func TestLearnBounds(t *testing.T) {
	v4 := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}) }
	t.Run("per name", func(t *testing.T) {
		ts := newTestSet(t, nil)
		ts.SetLimits(4, 0)
		var many []netip.Addr
		for i := range 10 {
			many = append(many, v4(i))
		}
		ts.Snoop("gw1.akaetp.net", many, time.Minute)
		if len(ts.fm.set) != 4 {
			t.Fatalf("kernel map holds %d addresses of one name, want 4", len(ts.fm.set))
		}
		// a refreshed address is no new one
		ts.Snoop("gw1.akaetp.net", many[:4], time.Hour)
		// another name still learns
		ts.Snoop("www.akamai.com", addrs("203.0.113.31"), time.Minute)
		if st := ts.Stats(); st.LearnRefusedPerName != 6 || st.Learned != 5 || !ts.inMap("203.0.113.31") {
			t.Fatalf("stats %+v, map %v: want 6 refused per name, 5 learned", st, ts.fm.set)
		}
	})
	t.Run("map full: system names win", func(t *testing.T) {
		ts := newTestSet(t, nil)
		ts.SetLimits(0, 3)
		ts.Snoop("bank.example", addrs("198.18.0.1"), 2*time.Minute)    // admin, later
		ts.Snoop("a.shop.example", addrs("198.18.0.2"), time.Minute)    // admin, sooner
		ts.Snoop("gw1.akaetp.net", addrs("198.18.0.3"), time.Minute)    // system
		ts.Snoop("b.shop.example", addrs("198.18.0.4"), 10*time.Minute) // admin: refused
		if ts.inMap("198.18.0.4") {
			t.Fatal("an admin name's address evicted another when the map was full")
		}
		ts.Snoop("www.akamai.com", addrs("198.18.0.5"), time.Minute) // system: evicts 198.18.0.2
		if !ts.inMap("198.18.0.5") || ts.inMap("198.18.0.2") || !ts.inMap("198.18.0.1") || !ts.inMap("198.18.0.3") {
			t.Fatalf("map %v: want the system address in, the admin one soonest to expire out", ts.fm.set)
		}
		ts.Snoop("x.akamai-zt.com", addrs("198.18.0.6"), time.Minute) // system: evicts 198.18.0.1
		ts.Snoop("y.akamai-zt.com", addrs("198.18.0.7"), time.Minute) // system: nothing left to evict
		if ts.inMap("198.18.0.1") || !ts.inMap("198.18.0.6") || ts.inMap("198.18.0.7") || !ts.inMap("198.18.0.3") || !ts.inMap("198.18.0.5") {
			t.Fatalf("map %v: a system name evicted a system name's address, or the admin one stayed", ts.fm.set)
		}
		st := ts.Stats()
		if st.LearnRefusedFull != 2 || st.Evicted != 2 || st.Learned != 3 {
			t.Fatalf("stats %+v: want 2 refused (map full), 2 evicted, 3 learned", st)
		}
		// the evicted name's evidence is gone too: its flows are redirected or refused
		if _, err := ts.BypassTarget(context.Background(), "a.shop.example", netip.MustParseAddrPort("198.18.0.2:443")); err == nil {
			t.Fatal("an evicted address is still evidence")
		}
	})
	t.Run("shared address counts as system", func(t *testing.T) {
		ts := newTestSet(t, nil)
		ts.SetLimits(0, 1)
		ts.Snoop("bank.example", addrs("198.18.0.1"), time.Minute)
		ts.Snoop("gw1.akaetp.net", addrs("198.18.0.1"), time.Minute)
		ts.Snoop("www.akamai.com", addrs("198.18.0.2"), time.Minute)
		if !ts.inMap("198.18.0.1") || ts.inMap("198.18.0.2") {
			t.Fatalf("map %v: an address a system name holds was evicted", ts.fm.set)
		}
	})
}

func TestEvidenceExpires(t *testing.T) {
	ts := newTestSet(t, nil)
	ts.Snoop("gw1.akaetp.net", addrs("203.0.113.30"), 5*time.Second) // raised to MinDNSLearnTTL
	ts.Snoop("www.akamai.com", addrs("203.0.113.30", "203.0.113.31"), 10*time.Minute)
	dst := netip.MustParseAddrPort("203.0.113.30:443")
	*ts.now = ts.now.Add(MinDNSLearnTTL - time.Second)
	ts.Expire()
	if got, err := ts.BypassTarget(context.Background(), "gw1.akaetp.net", dst); err != nil || got != dst {
		t.Fatalf("before expiry: %v, %v", got, err)
	}
	*ts.now = ts.now.Add(2 * time.Second)
	// expired but not yet swept: no longer evidence
	if _, err := ts.BypassTarget(context.Background(), "gw1.akaetp.net", dst); !errors.Is(err, ErrNoAddress) {
		t.Fatalf("expired evidence still used: %v", err)
	}
	ts.Expire()
	// the other name still holds the shared address, so it stays in the map
	if !ts.inMap("203.0.113.30") || !ts.inMap("203.0.113.31") {
		t.Fatalf("map %v: an address another name holds left", ts.fm.set)
	}
	*ts.now = ts.now.Add(10 * time.Minute)
	if n := ts.Expire(); n != 2 || len(ts.fm.set) != 0 {
		t.Fatalf("expired %d, map %v; want 2 and empty", n, ts.fm.set)
	}
	if st := ts.Stats(); st.Learned != 0 {
		t.Fatalf("stats %+v after expiry", st)
	}
}

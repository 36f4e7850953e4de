package daemon

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/dataplane/firewall"
)

// fakeReach is a reachSource whose counters the test moves.
type fakeReach struct {
	r        firewall.Reach
	blockers []firewall.Blocker
	gen      uint32
}

func (f *fakeReach) Reach() (firewall.Reach, error)             { return f.r, nil }
func (f *fakeReach) InputBlockers() ([]firewall.Blocker, error) { return f.blockers, nil }
func (f *fakeReach) Generation() (uint32, error)                { return f.gen, nil }

// TestBlockWatch walks the detector through an idle LAN, a working one,
// a blocked one (held off, the rule named), a retry on a ruleset change
// that is still blocked, the admin's fix, and one's own limits refusing
// flows (no alarm).
func TestBlockWatch(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	src := &fakeReach{blockers: []firewall.Blocker{{Family: "inet", Table: "filter", Chain: "input"}}, gen: 7}
	var b blockWatch
	now := time.Unix(1000, 0)
	tick := func(f func(r *firewall.Reach)) bool {
		t.Helper()
		if f != nil {
			f(&src.r)
		}
		now = now.Add(blockPoll)
		changed, err := b.step(now, src, log)
		if err != nil {
			t.Fatal(err)
		}
		return changed
	}
	held := func() bool { h, _ := b.state(); return h }

	// Idle: nothing redirected, nothing arrives, for a long time.
	for range 60 {
		if tick(nil) || held() {
			t.Fatal("alarm on an idle LAN")
		}
	}
	// Working: every redirected flow arrives.
	for range 30 {
		if tick(func(r *firewall.Reach) {
			r.V4.WebEntered += 5
			r.V4.WebArrived += 5
			r.V6.WebEntered += 2
			r.V6.WebArrived += 2
			r.V4.DNSEntered += 2
			r.V4.DNSArrived += 3
		}) || held() {
			t.Fatal("alarm on a working LAN")
		}
	}
	// A flood over the limits, the counters read one after another: every
	// flooded packet is refused, but each poll reads the refusals a few
	// packets behind the entries (a skew that changes from poll to poll),
	// and nothing new is admitted.
	web0, dns0 := src.r.WebRefused, src.r.DNSRefused
	var webTrue, dnsTrue uint64
	for i := range 30 {
		if tick(func(r *firewall.Reach) {
			r.V4.WebEntered += 4000
			r.V4.DNSEntered += 30000
			webTrue += 4000
			dnsTrue += 30000
			r.WebRefused = web0 + webTrue - uint64(i%3)*4
			r.DNSRefused = dns0 + dnsTrue - uint64(i%2)*7
		}) || held() {
			_, msg := b.state()
			t.Fatalf("alarm for a flood refused by the limits (poll %d): %s", i, msg)
		}
	}
	src.r.WebRefused, src.r.DNSRefused = web0+webTrue, dns0+dnsTrue
	// Own limits refuse a flood's SYNs: redirected, refused, not arrived.
	for range 15 {
		if tick(func(r *firewall.Reach) { r.V4.WebEntered += 10; r.WebRefused += 10 }) || held() {
			t.Fatal("alarm for flows cloudsteer's own limits refused")
		}
	}
	// Refusals in the window raise the bar (a quarter of the entries must
	// be unexplained); let them age out.
	for range int(blockWindow/blockPoll) + 1 {
		tick(nil)
	}
	// Blocked: SYNs are redirected and none arrives.
	tick(func(r *firewall.Reach) { r.V4.WebEntered++ })
	tick(func(r *firewall.Reach) { r.V4.WebEntered++ })
	if held() {
		t.Fatal("held off after two redirects")
	}
	if !tick(func(r *firewall.Reach) { r.V4.WebEntered++ }) || !held() {
		t.Fatal("not held off after three redirects without an arrival")
	}
	_, msg := b.state()
	for _, want := range []string{"inet filter input", "nft add rule inet filter input ct status dnat accept", "direct"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	// Held off: the counters stand still; no retry before blockRecheck.
	for range 5 {
		if tick(nil) {
			t.Fatal("retried without a ruleset change before blockRecheck")
		}
	}
	// A ruleset change starts a trial (steering on, reason still shown).
	src.gen++
	if !tick(nil) || held() {
		t.Fatal("no trial after the ruleset changed")
	}
	if _, msg := b.state(); msg == "" {
		t.Error("reason gone during the trial")
	}
	// Still blocked: held off again.
	tick(func(r *firewall.Reach) { r.V4.WebEntered += 3 })
	if !held() {
		t.Fatal("not held off again when the trial saw only drops")
	}
	// Retry after blockRecheck without a ruleset change.
	ticks := 0
	for held() {
		if ticks++; ticks > int(blockRecheck/blockPoll)+1 {
			t.Fatal("no retry after blockRecheck")
		}
		tick(nil)
	}
	if ticks < int(blockRecheck/blockPoll)-1 {
		t.Errorf("retried after %d polls, before blockRecheck", ticks)
	}
	// The admin's rule is in: redirected packets arrive; the block ends.
	tick(func(r *firewall.Reach) { r.V4.WebEntered++; r.V4.WebArrived++; r.V4.DNSEntered++; r.V4.DNSArrived++ })
	if h, msg := b.state(); h || msg != "" {
		t.Fatalf("after arrivals: held %v, message %q", h, msg)
	}
	// One family blocked (an ip6 table's drop) while the other works is
	// a block too, and so is DNS alone.
	for range 3 {
		tick(func(r *firewall.Reach) { r.V6.WebEntered++; r.V4.WebEntered++; r.V4.WebArrived++ })
	}
	if _, msg := b.state(); !held() || !strings.Contains(msg, "IPv6 HTTP/TLS") {
		t.Fatalf("IPv6 redirects without arrivals beside working IPv4: held %v, %q", held(), msg)
	}
	src.gen++
	tick(nil) // trial
	tick(func(r *firewall.Reach) { r.V6.WebEntered++; r.V6.WebArrived++ })
	if h, _ := b.state(); h {
		t.Fatal("still held after IPv6 arrivals")
	}
	for range 3 {
		tick(func(r *firewall.Reach) { r.V4.DNSEntered++; r.V4.WebEntered++; r.V4.WebArrived++ })
	}
	if !held() {
		t.Fatal("DNS redirects without arrivals not detected")
	}
}

package bench

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/cloudsteer/cloudsteer/controlplane/console/auth"
)

func TestLatencyOf(t *testing.T) {
	// 1 ms … 200 ms, shuffled: nearest rank gives the k-th smallest.
	ds := make([]time.Duration, 200)
	for i := range ds {
		ds[i] = time.Duration(i+1) * time.Millisecond
	}
	rand.Shuffle(len(ds), func(i, j int) { ds[i], ds[j] = ds[j], ds[i] })
	got := latencyOf(ds)
	want := Latency{N: 200, P50: 100, P95: 190, P99: 198, Max: 200}
	if got != want {
		t.Fatalf("latencyOf = %+v, want %+v", got, want)
	}
	if got := latencyOf([]time.Duration{1500 * time.Microsecond}); got != (Latency{N: 1, P50: 1.5, P95: 1.5, P99: 1.5, Max: 1.5}) {
		t.Fatalf("one sample: %+v", got)
	}
	if got := latencyOf(nil); got != (Latency{}) {
		t.Fatalf("no sample: %+v", got)
	}
}

func TestConsolePageHolds(t *testing.T) {
	ok := ConsolePage{Latency: Latency{N: 200, P99: 100, Max: 250}}
	if !ok.Holds(100) {
		t.Error("p99 at the target must hold (the max is reported, not judged)")
	}
	if (ConsolePage{Latency: Latency{N: 200, P99: 100.01}}).Holds(100) {
		t.Error("p99 over the target holds")
	}
	if (ConsolePage{Latency: Latency{N: 200, P99: 1}, Problem: "request 3: 303 See Other"}).Holds(100) {
		t.Error("a row with a problem holds")
	}
	if (ConsolePage{}).Holds(100) {
		t.Error("a row without samples holds")
	}
	c := Console{TargetMS: 100, Pages: []ConsolePage{ok, {Name: "/slow", Latency: Latency{N: 200, P99: 120}}}}
	if c.holds() {
		t.Error("the figure holds with one page over the target")
	}
	if w, _ := c.worst(); w.Name != "/slow" {
		t.Errorf("worst = %q", w.Name)
	}
	c.Pages = c.Pages[:1]
	if !c.holds() {
		t.Error("the figure misses with every page within the target")
	}
}

// enrollPage is the shape of the console's enrol page (templates/enroll.html
// and layout.html).
const enrollPage = `<!doctype html><html><head><title>x</title></head>
<body data-csrf="tok-123" data-lang="en" data-page="enroll">
<nav><a href="/events">Events <span class="badge" data-test="badge">3</span></a></nav>
<form method="post" action="/lang"><input type="hidden" name="csrf" value="wrong"></form>
<p><code class="mono" data-test="enroll-secret">
  JBSWY3DPEHPK3PXP </code></p>
<form method="post" action="/enroll" class="auth-form" data-test="enroll-form">
  <input type="hidden" name="csrf" value="tok-123">
  <INPUT TYPE="HIDDEN" name="token" value="a&amp;b">
  <input type="text" name="code" value="ignored">
</form>
<table><tr data-test="events-row"></tr><tr data-test="events-row"></tr></table>
</body></html>`

func TestConsoleDoc(t *testing.T) {
	d, err := parseConsoleDoc(strings.NewReader(enrollPage))
	if err != nil {
		t.Fatal(err)
	}
	action, hidden, err := d.Form("enroll-form")
	if err != nil {
		t.Fatal(err)
	}
	if action != "/enroll" || len(hidden) != 2 || hidden["csrf"] != "tok-123" || hidden["token"] != "a&b" {
		t.Fatalf("form: action %q hidden %v", action, hidden)
	}
	if _, _, err := d.Form("setup-form"); err == nil {
		t.Error("a missing form was found")
	}
	if s, err := d.Text("enroll-secret"); err != nil || s != "JBSWY3DPEHPK3PXP" {
		t.Fatalf("secret %q, %v", s, err)
	}
	if _, err := d.Text("nothing"); err == nil {
		t.Error("a missing element was found")
	}
	if d.Body("data-csrf") != "tok-123" || d.Body("data-page") != "enroll" || d.Body("data-none") != "" {
		t.Fatalf("body attributes: csrf %q page %q", d.Body("data-csrf"), d.Body("data-page"))
	}
	if n := d.Count("events-row"); n != 2 {
		t.Fatalf("rows = %d", n)
	}
	// The code the figure computes from the shown secret is the RFC 6238
	// code for that key.
	key, err := auth.DecodeTOTPSecret("JBSWY3DPEHPK3PXP")
	if err != nil || string(key) != "Hello!\xde\xad\xbe\xef" {
		t.Fatalf("key %q, %v", key, err)
	}
}

func TestBenchPassword(t *testing.T) {
	for i := range 200 {
		b := make([]byte, 24)
		for j := range b {
			b[j] = byte(rand.IntN(256))
		}
		pw, err := benchPassword(b)
		if err != nil {
			continue
		}
		if v := auth.Check(pw, consoleAdmin, "it@office.example", nil); len(v) != 0 {
			t.Fatalf("draw %d: %q breaks %v", i, pw, v)
		}
	}
	// Repeats are dropped, and too short a result is refused.
	if _, err := benchPassword([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 50}); err == nil {
		t.Error("a password from repeated bytes was accepted")
	}
	pw, err := benchPassword([]byte("abcdefghijklmnopqrs0"))
	if err != nil || !strings.ContainsFunc(pw, unicode.IsDigit) {
		t.Fatalf("%q, %v", pw, err)
	}
}

func TestConsoleMarkdown(t *testing.T) {
	r := &Results{Console: &Console{TargetMS: 100, Samples: 200, Proto: "HTTP/2.0", Pages: []ConsolePage{
		{Name: "/events", Kind: consolePage, Status: 200, Bytes: 51234, Latency: Latency{N: 200, P50: 3.2, P95: 4.1, P99: 5.5, Max: 9}, LastByte: Latency{N: 200, P99: 6}, GatewayCPUms: 2.5},
		{Name: "/slow", Kind: consolePage, Status: 200, Latency: Latency{N: 200, P99: 150}},
	}, Fresh: &ConsolePage{Name: "/ (new connection each)", Kind: consoleFresh, Status: 200, Latency: Latency{N: 200, P99: 150}}}}
	md := r.ConsoleMarkdown()
	for _, want := range []string{
		"| URL | kind | status | bytes | p50 ms | p95 ms | p99 ms | max ms | last byte p99 ms | gw CPU ms/req | p99 ≤ 100 ms |",
		"| /events | page | 200 | 51234 | 3.20 | 4.10 | 5.50 | 9.00 | 6.00 | 2.50 | holds |",
		"| /slow | page | 200 | 0 | 0.00 | 0.00 | 150.00 | 0.00 | 0.00 | 0.00 | MISS |",
		"(scale) |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	var w strings.Builder
	r.writeConsole(&w)
	if !strings.Contains(w.String(), "MISS: every page and script call p99 ≤ 100 ms (worst p99 150.00 ms, /slow)") ||
		!strings.Contains(w.String(), "at most 2.50 ms (/events)") {
		t.Errorf("report:\n%s", w.String())
	}
}

package store

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// The crash test re-executes the test binary as a writer child: with
// envCrashDir set, TestMain runs crashChild instead of the tests.
const (
	envCrashDir   = "CLOUDSTEER_STORE_CRASH_DIR"
	envCrashRound = "CLOUDSTEER_STORE_CRASH_ROUND"
	crashMaxEvent = 300 // small, so that the rounds also trim under the kill
	crashWriters  = 4   // event writer goroutines in the child
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(envCrashDir); dir != "" {
		crashChild(dir, os.Getenv(envCrashRound))
		os.Exit(3) // crashChild never returns normally
	}
	os.Exit(m.Run())
}

// crashChild writes to the store in dir until killed, printing one line per
// committed write, after the write returned:
//
//	B <bypass value>
//	P <round> <i>     (pause with By "<round>-<i>" and code "code-<round>-<i>")
//	E <id> <name>
func crashChild(dir, round string) {
	s, err := Open(context.Background(), dir, WithMaxEvents(crashMaxEvent), WithLogger(quiet))
	if err != nil {
		fmt.Fprintf(os.Stderr, "child: %v\n", err)
		os.Exit(2)
	}
	fail := func(err error) {
		fmt.Fprintf(os.Stderr, "child: %v\n", err)
		os.Exit(2)
	}
	for w := range crashWriters {
		go func() {
			for i := 0; ; i++ {
				name := fmt.Sprintf("r%s-w%d-%d.example", round, w, i)
				e, err := s.AppendEvent(model.Event{Client: "192.168.50.10", Name: name, Proto: "dns", Reason: "dns_blocked"})
				if err != nil {
					fail(err)
				}
				fmt.Fprintf(os.Stdout, "E %d %s\n", e.ID, name)
			}
		}()
	}
	for i := 0; ; i++ {
		v := fmt.Sprintf("r%s-b%d.example", round, i)
		if err := s.PutBypass(model.BypassEntry{Value: v, Kind: model.BypassDomain, Enabled: i%2 == 0, Source: "api"}); err != nil {
			fail(err)
		}
		fmt.Fprintf(os.Stdout, "B %s\n", v)
		by := fmt.Sprintf("%s-%d", round, i)
		if err := s.PutPause(model.PauseState{Paused: true, Since: t0, Until: t0.Add(time.Hour), By: by}); err != nil {
			fail(err)
		}
		if err := s.PutCode("code-" + by); err != nil {
			fail(err)
		}
		fmt.Fprintf(os.Stdout, "P %s %d\n", round, i)
	}
}

// childReport is what a killed child said it had committed.
type childReport struct {
	bypass   []string
	events   map[uint64]string
	lastP    int // -1 when no pause was reported
	lines    int
	maxEvent uint64
}

// runChild starts a writer child for round, SIGKILLs it after it has
// reported killAfter commits, and returns everything it reported.
func runChild(tb testing.TB, dir string, round, killAfter int) childReport {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envCrashDir+"="+dir, envCrashRound+"="+strconv.Itoa(round))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	var once sync.Once
	kill := func() { once.Do(func() { cmd.Process.Signal(syscall.SIGKILL) }) }
	tb.Cleanup(func() { kill(); cmd.Wait() })

	r := childReport{events: map[uint64]string{}, lastP: -1}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		r.lines++
		if r.lines == killAfter {
			kill()
		}
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "B":
			r.bypass = append(r.bypass, f[1])
		case len(f) == 3 && f[0] == "P" && f[1] == strconv.Itoa(round):
			i, err := strconv.Atoi(f[2])
			if err != nil || i != r.lastP+1 {
				tb.Fatalf("child line %q out of sequence after pause %d", sc.Text(), r.lastP)
			}
			r.lastP = i
		case len(f) == 3 && f[0] == "E":
			id, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				tb.Fatalf("child line %q: %v", sc.Text(), err)
			}
			if _, dup := r.events[id]; dup {
				tb.Fatalf("child reported event ID %d twice", id)
			}
			r.events[id] = f[2]
			r.maxEvent = max(r.maxEvent, id)
		default:
			tb.Fatalf("child wrote %q", sc.Text())
		}
	}
	kill()
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		tb.Fatalf("child ended with %v, not by SIGKILL; stderr:\n%s", err, stderr.String())
	}
	if r.lines < killAfter {
		tb.Fatalf("child reported %d commits before dying, want at least %d; stderr:\n%s", r.lines, killAfter, stderr.String())
	}
	return r
}

// TestCrashSafety SIGKILLs a child that writes continuously, several times,
// and checks after each kill that the file is consistent and holds every
// write the child reported as committed.
func TestCrashSafety(t *testing.T) {
	dir := t.TempDir()
	var (
		allBypass []string
		allEvents = map[uint64]string{}
		maxEvent  uint64
	)
	const rounds = 8
	for round := range rounds {
		killAfter := 50 + (round*389)%700 // varied kill points, some before and some after the bound is reached
		rep := runChild(t, dir, round, killAfter)
		allBypass = append(allBypass, rep.bypass...)
		for id, name := range rep.events {
			allEvents[id] = name
		}
		if rep.maxEvent > 0 && rep.maxEvent <= maxEvent {
			t.Fatalf("round %d: event IDs went backwards: %d after %d", round, rep.maxEvent, maxEvent)
		}
		maxEvent = max(maxEvent, rep.maxEvent)
		t.Logf("round %d: child killed after %d reported commits (%d bypass, pause %d, %d events, max ID %d)",
			round, rep.lines, len(rep.bypass), rep.lastP, len(rep.events), rep.maxEvent)

		checkFile(t, dir) // before Open writes anything
		s := openStore(t, dir, WithMaxEvents(crashMaxEvent))
		verifyAfterCrash(t, s, round, rep, allBypass, allEvents, maxEvent)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if t.Failed() {
			return
		}
	}
}

func verifyAfterCrash(t *testing.T, s *Store, round int, rep childReport, allBypass []string, allEvents map[uint64]string, maxEvent uint64) {
	t.Helper()
	stored, err := s.Bypass()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, e := range stored {
		have[e.Value] = true
	}
	for _, v := range allBypass {
		if !have[v] {
			t.Errorf("round %d: committed bypass entry %s is missing", round, v)
		}
	}

	// The pause and code are written in order: the stored ones are the last
	// reported, or the next if the kill came between commit and report.
	p, err := s.Pause()
	if err != nil {
		t.Fatal(err)
	}
	code, err := s.Code()
	if err != nil {
		t.Fatal(err)
	}
	if rep.lastP >= 0 {
		// PutPause(i+1) then PutCode(i+1) then the report: three states.
		id := func(i int) string { return fmt.Sprintf("%d-%d", round, i) }
		last, next := id(rep.lastP), id(rep.lastP+1)
		valid := [][2]string{{last, last}, {next, last}, {next, next}}
		ok := false
		for _, v := range valid {
			if p.By == v[0] && code == "code-"+v[1] {
				ok = true
			}
		}
		if !ok || !p.Paused || !p.Until.Equal(t0.Add(time.Hour)) {
			t.Errorf("round %d: stored pause %+v and code %q; last reported commit was pause %d", round, p, code, rep.lastP)
		}
	}

	evs, err := s.Events(model.EventFilter{Limit: MaxEventLimit})
	if err != nil {
		t.Fatal(err)
	}
	n, err := s.EventCount()
	if err != nil {
		t.Fatal(err)
	}
	if n != len(evs) || n > crashMaxEvent || (maxEvent >= crashMaxEvent && n != crashMaxEvent) {
		t.Errorf("round %d: EventCount() = %d, %d events stored; bound %d, highest committed ID %d", round, n, len(evs), crashMaxEvent, maxEvent)
	}
	if len(evs) == 0 {
		if maxEvent > 0 {
			t.Errorf("round %d: no events stored; highest committed ID %d", round, maxEvent)
		}
		return
	}
	// Newest first, contiguous IDs, the newest not older than any committed.
	for i := 1; i < len(evs); i++ {
		if evs[i].ID != evs[i-1].ID-1 {
			t.Fatalf("round %d: stored event IDs not contiguous: %d after %d", round, evs[i].ID, evs[i-1].ID)
		}
	}
	newest, oldest := evs[0].ID, evs[len(evs)-1].ID
	if newest < maxEvent {
		t.Errorf("round %d: newest stored event %d; event %d was committed", round, newest, maxEvent)
	}
	byID := map[uint64]string{}
	for _, e := range evs {
		byID[e.ID] = e.Name
	}
	for id, name := range allEvents {
		if id < oldest {
			continue // trimmed
		}
		if got, ok := byID[id]; !ok || got != name {
			t.Errorf("round %d: committed event %d %s is stored as %q (present %v)", round, id, name, got, ok)
		}
	}
}

package boottest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// JournalEntry is one record of `journalctl -o json`, the fields the boot
// test reads.
type JournalEntry struct {
	BootID    string // _BOOT_ID (32 hex digits)
	Realtime  string // __REALTIME_TIMESTAMP (µs since the epoch, as text)
	Unit      string // _SYSTEMD_UNIT: the unit that logged it
	AboutUnit string // UNIT: the unit systemd logged about
	Transport string // _TRANSPORT (kernel, stdout, journal...)
	Message   string
}

// ParseJournalJSON reads `journalctl -o json` output (one object a line;
// other lines, such as a separator, are an error). A MESSAGE that is not
// UTF-8 comes as an array of bytes and is decoded.
func ParseJournalJSON(text string) ([]JournalEntry, error) {
	var out []JournalEntry
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var raw map[string]json.RawMessage
		if err := json.Unmarshal([]byte(line), &raw); err != nil {
			return nil, fmt.Errorf("parse journal line %d: %w", n, err)
		}
		e := JournalEntry{
			BootID:    journalField(raw["_BOOT_ID"]),
			Realtime:  journalField(raw["__REALTIME_TIMESTAMP"]),
			Unit:      journalField(raw["_SYSTEMD_UNIT"]),
			AboutUnit: journalField(raw["UNIT"]),
			Transport: journalField(raw["_TRANSPORT"]),
			Message:   journalField(raw["MESSAGE"]),
		}
		if e.BootID == "" {
			return nil, fmt.Errorf("parse journal line %d: no _BOOT_ID", n)
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// journalField decodes a journal JSON field: a string, an array of bytes
// (binary data), or null; a field seen several times in one entry comes
// as an array of those, and the first is kept.
func journalField(m json.RawMessage) string {
	if len(m) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(m, &s) == nil {
		return s
	}
	var bs []byte
	var nums []int
	if json.Unmarshal(m, &nums) == nil {
		for _, n := range nums {
			bs = append(bs, byte(n))
		}
		return string(bs)
	}
	var many []json.RawMessage
	if json.Unmarshal(m, &many) == nil && len(many) > 0 {
		return journalField(many[0])
	}
	return ""
}

// BootRecord is what the journal holds about one boot, for the rollback
// check.
type BootRecord struct {
	ID          string
	First, Last string   // the realtime stamps of its first and last entries read
	Cmdline     string   // the kernel's "Command line:" line
	Broken      []string // cloudsteer.service lines saying it is broken on purpose
	HealthFail  []string // systemd's and the gate's lines on cloudsteer-healthy.service failing
	HealthStart bool     // cloudsteer-healthy.service started in this boot
}

// brokenMarker is what the broken build's cloudsteer prints (makeBundles).
const brokenMarker = "this cloudsteer is broken on purpose"

// Boots groups entries by boot, oldest first (by their first entry).
func Boots(entries []JournalEntry) []*BootRecord {
	by := map[string]*BootRecord{}
	for _, e := range entries {
		b := by[e.BootID]
		if b == nil {
			b = &BootRecord{ID: e.BootID, First: e.Realtime, Last: e.Realtime}
			by[e.BootID] = b
		}
		if tsLess(e.Realtime, b.First) {
			b.First = e.Realtime
		}
		if tsLess(b.Last, e.Realtime) {
			b.Last = e.Realtime
		}
		switch {
		case e.Transport == "kernel" && strings.HasPrefix(e.Message, "Command line:"):
			b.Cmdline = e.Message
		case e.Unit == "cloudsteer.service" && strings.Contains(e.Message, brokenMarker):
			b.Broken = append(b.Broken, e.Message)
		case e.AboutUnit == "cloudsteer-healthy.service" || e.Unit == "cloudsteer-healthy.service":
			if strings.HasPrefix(e.Message, "Starting ") {
				b.HealthStart = true
			}
			if healthFailed(e.Message) {
				b.HealthFail = append(b.HealthFail, e.Message)
			}
		}
	}
	out := make([]*BootRecord, 0, len(by))
	for _, b := range by {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return tsLess(out[i].First, out[j].First) })
	return out
}

// healthFailed reports whether a line about cloudsteer-healthy.service
// says it failed (systemd's own wording, v257).
func healthFailed(msg string) bool {
	for _, s := range []string{"Failed with result", "Main process exited, code=exited, status=1", "Failed to start"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// tsLess compares two journal realtime stamps (decimal µs).
func tsLess(a, b string) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

// CheckRollbackJournal checks that the journal (all boots, read on the VM
// after the rollback) shows the broken build's boot: a boot before the
// current one, on slot a, whose cloudsteer said it was broken and whose
// health gate failed; and that the current boot (on slot b) has none of
// it. current is /proc/sys/kernel/random/boot_id (dashes are dropped).
func CheckRollbackJournal(entries []JournalEntry, current string) (*BootRecord, error) {
	current = strings.ReplaceAll(strings.TrimSpace(current), "-", "")
	boots := Boots(entries)
	var broken, cur *BootRecord
	for _, b := range boots {
		if b.ID == current {
			cur = b
		}
		if len(b.Broken) > 0 {
			if broken != nil {
				return nil, fmt.Errorf("two boots ran the broken build: %s and %s", broken.ID, b.ID)
			}
			broken = b
		}
	}
	switch {
	case broken == nil:
		return nil, fmt.Errorf("no boot in the journal (%d boots) logged %q from cloudsteer.service", len(boots), brokenMarker)
	case broken.ID == current:
		return nil, fmt.Errorf("the running boot %s is the broken build's", current)
	case !strings.Contains(broken.Cmdline, "cloudsteer.slot=a"):
		return nil, fmt.Errorf("the broken build's boot %s was not on slot a: kernel %q", broken.ID, broken.Cmdline)
	case len(broken.HealthFail) == 0:
		return nil, fmt.Errorf("the broken build's boot %s has no record of cloudsteer-healthy.service failing (started: %v)", broken.ID, broken.HealthStart)
	case cur == nil:
		return nil, fmt.Errorf("the running boot %s is not in the journal", current)
	case !strings.Contains(cur.Cmdline, "cloudsteer.slot=b"):
		return nil, fmt.Errorf("the running boot is not on slot b: kernel %q", cur.Cmdline)
	case len(cur.HealthFail) > 0:
		return nil, fmt.Errorf("the running boot's health gate failed too: %q", cur.HealthFail)
	case !tsLess(broken.Last, cur.First):
		return nil, fmt.Errorf("the broken boot (%s..%s) did not come before the running one (from %s)", broken.First, broken.Last, cur.First)
	}
	return broken, nil
}

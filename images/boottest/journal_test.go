package boottest

import (
	"fmt"
	"strings"
	"testing"
)

// journal builds journalctl -o json lines for the rollback tests.
type jl struct {
	boot, ts, transport, unit, about, msg string
}

func (j jl) String() string {
	f := fmt.Sprintf(`{"__CURSOR":"s=x;i=1","__REALTIME_TIMESTAMP":%q,"__MONOTONIC_TIMESTAMP":"1","_BOOT_ID":%q,"MESSAGE":%q`, j.ts, j.boot, j.msg)
	if j.transport != "" {
		f += fmt.Sprintf(`,"_TRANSPORT":%q`, j.transport)
	}
	if j.unit != "" {
		f += fmt.Sprintf(`,"_SYSTEMD_UNIT":%q`, j.unit)
	}
	if j.about != "" {
		f += fmt.Sprintf(`,"UNIT":%q`, j.about)
	}
	return f + "}"
}

const (
	bootA1 = "0f639eb25c59497ba5dc61338ad252c1" // first boot, slot a
	bootB1 = "0f639eb25c59497ba5dc61338ad252c2" // the good upgrade, slot b
	bootA2 = "0f639eb25c59497ba5dc61338ad252c3" // the broken upgrade, slot a
	bootB2 = "0f639eb25c59497ba5dc61338ad252c4" // back on slot b
)

func rollbackJournal() []jl {
	cl := func(boot, ts, slot string) jl {
		return jl{boot: boot, ts: ts, transport: "kernel", msg: `Command line: initrd=\` + slot + `\initrd.img root=PARTLABEL=root-` + slot + ` ro cloudsteer.slot=` + slot + ` console=ttyS0,115200`}
	}
	return []jl{
		cl(bootA1, "1764790000000000", "a"),
		cl(bootB1, "1764790300000000", "b"),
		cl(bootA2, "1764790600000000", "a"),
		cl(bootB2, "1764790900000000", "b"),
		{boot: bootA2, ts: "1764790660000000", transport: "stdout", unit: "cloudsteer.service", msg: "boottest: " + brokenMarker},
		{boot: bootB1, ts: "1764790360000000", transport: "journal", about: "cloudsteer-healthy.service", msg: "Starting cloudsteer-healthy.service - cloudsteer health gate..."},
		{boot: bootA2, ts: "1764790661000000", transport: "journal", about: "cloudsteer-healthy.service", msg: "Starting cloudsteer-healthy.service - cloudsteer health gate..."},
		{boot: bootA2, ts: "1764790692000000", transport: "journal", about: "cloudsteer-healthy.service", msg: "cloudsteer-healthy.service: Main process exited, code=exited, status=1/FAILURE"},
		{boot: bootA2, ts: "1764790692100000", transport: "journal", about: "cloudsteer-healthy.service", msg: "cloudsteer-healthy.service: Failed with result 'exit-code'."},
	}
}

func render(ls []jl) string {
	var b strings.Builder
	for _, l := range ls {
		b.WriteString(l.String())
		b.WriteByte('\n')
	}
	return b.String()
}

func TestCheckRollbackJournal(t *testing.T) {
	current := "0f639eb2-5c59-497b-a5dc-61338ad252c4\n" // as /proc/sys/kernel/random/boot_id
	entries, err := ParseJournalJSON(render(rollbackJournal()))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := CheckRollbackJournal(entries, current)
	if err != nil {
		t.Fatalf("a real rollback's journal: %v", err)
	}
	if rec.ID != bootA2 || len(rec.HealthFail) != 2 {
		t.Fatalf("broken boot %+v, want %s with two failure lines", rec, bootA2)
	}

	// Each piece of evidence, taken away or changed, fails the check.
	drop := func(pred func(jl) bool) func([]jl) []jl {
		return func(ls []jl) []jl {
			var out []jl
			for _, l := range ls {
				if !pred(l) {
					out = append(out, l)
				}
			}
			return out
		}
	}
	cases := map[string]struct {
		edit    func([]jl) []jl
		current string
		want    string
	}{
		"no broken line": {edit: drop(func(l jl) bool { return strings.Contains(l.msg, brokenMarker) }), want: "no boot in the journal"},
		"broken line from another unit": {edit: func(ls []jl) []jl {
			ls[4].unit = "cloudsteer-banner.service"
			return ls
		}, want: "no boot in the journal"},
		"health gate passed": {edit: drop(func(l jl) bool { return l.boot == bootA2 && l.about != "" && !strings.HasPrefix(l.msg, "Starting") }), want: "no record of cloudsteer-healthy.service failing"},
		"broken build on slot b": {edit: func(ls []jl) []jl {
			ls[2].msg = strings.ReplaceAll(ls[2].msg, "slot=a", "slot=b")
			return ls
		}, want: "was not on slot a"},
		"still running the broken boot": {current: bootA2, want: "is the broken build's"},
		"running boot on slot a": {edit: func(ls []jl) []jl {
			ls[3].msg = strings.ReplaceAll(ls[3].msg, "slot=b", "slot=a")
			return ls
		}, want: "not on slot b"},
		"running boot not in the journal": {current: "ffffffffffffffffffffffffffffffff", want: "not in the journal"},
		"broken boot after the running one": {edit: func(ls []jl) []jl {
			ls[3].ts = "1764790500000000"
			return ls
		}, want: "did not come before"},
		"two broken boots": {edit: func(ls []jl) []jl {
			return append(ls, jl{boot: bootB1, ts: "1764790400000000", unit: "cloudsteer.service", msg: "boottest: " + brokenMarker})
		}, want: "two boots ran the broken build"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			ls := rollbackJournal()
			if c.edit != nil {
				ls = c.edit(ls)
			}
			cur := current
			if c.current != "" {
				cur = c.current
			}
			entries, err := ParseJournalJSON(render(ls))
			if err != nil {
				t.Fatal(err)
			}
			_, err = CheckRollbackJournal(entries, cur)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error with %q", err, c.want)
			}
		})
	}
}

func TestParseJournalJSONBinaryMessage(t *testing.T) {
	// journalctl writes a MESSAGE that is not UTF-8 as an array of bytes.
	entries, err := ParseJournalJSON(`{"_BOOT_ID":"ab","__REALTIME_TIMESTAMP":"1","MESSAGE":[104,105,255]}` + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Message != "hi\xff" {
		t.Fatalf("entries %+v", entries)
	}
	if _, err := ParseJournalJSON("----\n"); err == nil {
		t.Fatal("a non-JSON line parsed")
	}
}

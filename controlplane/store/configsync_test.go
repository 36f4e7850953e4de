package store

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

func cfgEntry(v string) model.BypassEntry {
	kind := model.BypassDomain
	if slices.Contains([]byte(v), '/') {
		kind = model.BypassCIDR
	}
	return model.BypassEntry{Value: v, Kind: kind, Enabled: true, Source: SourceConfig}
}

// TestSyncConfigBypass walks the config through three versions with
// run-time changes between them and checks the stored list after each.
func TestSyncConfigBypass(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	list := func() map[string]string {
		t.Helper()
		got, err := s.Bypass()
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, e := range got {
			m[e.Value] = fmt.Sprintf("%s/%v/%s", e.Source, e.Enabled, e.Comment)
		}
		return m
	}
	sync := func(vals ...string) BypassSync {
		t.Helper()
		var es []model.BypassEntry
		for _, v := range vals {
			es = append(es, cfgEntry(v))
		}
		res, err := s.SyncConfigBypass(es)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}

	// Start 1: two config entries; the admin adds one and disables one.
	res := sync("shop.example", "10.1.0.0/16", "shop.example")
	if d := cmp.Diff([]string{"shop.example", "10.1.0.0/16"}, res.Added); d != "" || len(res.Removed)+len(res.Adopted) != 0 {
		t.Fatalf("first sync: %+v", res)
	}
	if err := s.PutBypass(model.BypassEntry{Value: "api.example", Kind: model.BypassDomain, Enabled: false, Source: SourceAPI, Comment: "mine"}); err != nil {
		t.Fatal(err)
	}
	e := cfgEntry("10.1.0.0/16")
	e.Enabled = false
	if err := s.PutBypass(e); err != nil {
		t.Fatal(err)
	}
	// Same config again (a restart): nothing changes, the override stands.
	s.Close()
	s = openStore(t, dir)
	if res := sync("shop.example", "10.1.0.0/16"); res.Changed() {
		t.Fatalf("unchanged config changed %+v", res)
	}
	want := map[string]string{"shop.example": "config/true/", "10.1.0.0/16": "config/false/", "api.example": "api/false/mine"}
	if d := cmp.Diff(want, list()); d != "" {
		t.Fatalf("after restart (-want +got):\n%s", d)
	}

	// Config 2: shop.example removed, api.example now in the config.
	res = sync("10.1.0.0/16", "api.example", "new.example")
	if d := cmp.Diff(BypassSync{Added: []string{"new.example"}, Removed: []string{"shop.example"}, Adopted: []string{"api.example"}}, res); d != "" {
		t.Fatalf("second sync (-want +got):\n%s", d)
	}
	want = map[string]string{"10.1.0.0/16": "config/false/", "api.example": "config/false/mine", "new.example": "config/true/"}
	if d := cmp.Diff(want, list()); d != "" {
		t.Fatalf("after config 2 (-want +got):\n%s", d)
	}

	// Config 3: empty. Every config entry goes, overrides and adopted ones
	// included; a run-time entry would stay.
	if err := s.PutBypass(model.BypassEntry{Value: "rt.example", Kind: model.BypassDomain, Enabled: true, Source: SourceAPI}); err != nil {
		t.Fatal(err)
	}
	sync()
	if d := cmp.Diff(map[string]string{"rt.example": "api/true/"}, list()); d != "" {
		t.Fatalf("after empty config (-want +got):\n%s", d)
	}
	// Re-adding the once-disabled entry: a fresh, enabled entry.
	sync("10.1.0.0/16")
	if got := list()["10.1.0.0/16"]; got != "config/true/" {
		t.Fatalf("re-added entry %q, want config/true/", got)
	}
}

func TestSyncConfigBypassInvalidChangesNothing(t *testing.T) {
	s := openStore(t, t.TempDir())
	if _, err := s.SyncConfigBypass([]model.BypassEntry{cfgEntry("a.example")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SyncConfigBypass([]model.BypassEntry{cfgEntry("b.example"), {Value: "", Kind: model.BypassDomain}}); err == nil {
		t.Fatal("an empty value was accepted")
	}
	got, _ := s.Bypass()
	if len(got) != 1 || got[0].Value != "a.example" {
		t.Fatalf("after a refused sync: %+v", got)
	}
}

func TestSyncConfigCode(t *testing.T) {
	const a, b, c = "aaaaaaaa-0000-4000-8000-000000000000", "bbbbbbbb-0000-4000-8000-000000000000", "cccccccc-0000-4000-8000-000000000000"
	type step struct {
		name     string
		activate string // `cloudsteer activate` first
		cfg      string
		want     CodeSync
		code     string
		source   string
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"config code, then an activation stands until the config changes", []step{
			{name: "start", cfg: a, want: CodeFromConfig, code: a, source: SourceConfig},
			{name: "activate, restart", activate: b, cfg: a, want: CodeUnchanged, code: b, source: SourceActivate},
			{name: "reload, same config", cfg: a, want: CodeUnchanged, code: b, source: SourceActivate},
			{name: "config changes", cfg: c, want: CodeFromConfig, code: c, source: SourceConfig},
			{name: "config drops it", cfg: "", want: CodeCleared, code: "", source: ""},
			{name: "again", cfg: "", want: CodeUnchanged, code: "", source: ""},
		}},
		{"an activation survives the config dropping its code", []step{
			{name: "start", cfg: a, want: CodeFromConfig, code: a, source: SourceConfig},
			{name: "activate, drop", activate: b, cfg: "", want: CodeUnchanged, code: b, source: SourceActivate},
			{name: "config gets a code", cfg: a, want: CodeFromConfig, code: a, source: SourceConfig},
		}},
		{"no config code: activation only", []step{
			{name: "start", cfg: "", want: CodeUnchanged},
			{name: "activate", activate: a, cfg: "", want: CodeUnchanged, code: a, source: SourceActivate},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, st := range tc.steps {
				s := openStore(t, dir)
				if st.activate != "" {
					if err := s.PutCodeFrom(st.activate, SourceActivate); err != nil {
						t.Fatal(err)
					}
				}
				got, err := s.SyncConfigCode(st.cfg)
				if err != nil {
					t.Fatal(err)
				}
				code, src, err := s.CodeWithSource()
				if err != nil {
					t.Fatal(err)
				}
				if got != st.want || code != st.code || src != st.source {
					t.Fatalf("%s: sync = %q, code %q from %q; want %q, %q from %q", st.name, got, code, src, st.want, st.code, st.source)
				}
				s.Close()
			}
		})
	}
}

// TestSyncConfigCodeMigration: a store written before sources were
// recorded holds a code without a source. Equal to the config's: the
// config's. Different: an earlier activation, which stands.
func TestSyncConfigCodeMigration(t *testing.T) {
	const a, b = "aaaaaaaa-0000-4000-8000-000000000000", "bbbbbbbb-0000-4000-8000-000000000000"
	for _, tc := range []struct{ stored, cfg, code, source string }{
		{a, a, a, SourceConfig},
		{b, a, b, SourceActivate},
		{b, "", b, SourceActivate},
	} {
		s := openStore(t, t.TempDir())
		if err := s.PutCode(tc.stored); err != nil {
			t.Fatal(err)
		}
		if _, err := s.SyncConfigCode(tc.cfg); err != nil {
			t.Fatal(err)
		}
		code, src, _ := s.CodeWithSource()
		if code != tc.code || src != tc.source {
			t.Errorf("stored %s, config %q: code %s from %s, want %s from %s", tc.stored[:1], tc.cfg, code, src, tc.code, tc.source)
		}
		s.Close()
	}
}

// TestAppendEventsBatch: one call, one transaction, every event stored.
func TestAppendEventsBatch(t *testing.T) {
	s := openStore(t, t.TempDir(), WithMaxEvents(500))
	var evs []model.Event
	for i := range 300 {
		evs = append(evs, model.Event{Client: "10.0.0.1", Name: fmt.Sprintf("n%d.example", i), Proto: "tls", Reason: "blocked", Time: time.Unix(int64(i), 0)})
	}
	for range 2 {
		if err := s.AppendEvents(evs); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.EventCommits(); n != 2 {
		t.Fatalf("%d commits for two batches", n)
	}
	if n, _ := s.EventCount(); n != 500 {
		t.Fatalf("%d events stored, want the bound 500", n)
	}
	got, err := s.Events(model.EventFilter{Limit: 1})
	if err != nil || len(got) != 1 || got[0].Name != "n299.example" || got[0].ID != 600 {
		t.Fatalf("newest = %+v, %v", got, err)
	}
}

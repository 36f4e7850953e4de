package firewall

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

// listing is what `nft -j list table inet NAME` shows of one table,
// rendered into short, readable strings.
type listing struct {
	chains map[string]chainInfo
	sets   map[string]setInfo
	rules  map[string][]ruleInfo // by chain, in order
}

type chainInfo struct {
	Type, Hook, Policy string
	Prio               int
}

type setInfo struct {
	Type  string
	Elems []string // sorted
}

type ruleInfo struct {
	text    string // e.g. "meta mark == 0x0c570004 meta l4proto == udp counter redirect :53"
	packets uint64 // from the rule's counter
}

// listTable runs nft -j inside ns and parses the table; ok is false when
// the table does not exist.
func listTable(tb testing.TB, ns, name string) (l listing, ok bool) {
	tb.Helper()
	out, err := privtest.Command(ns, "nft", "-j", "list", "table", "inet", name).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "No such file or directory") {
			return listing{}, false
		}
		tb.Fatalf("nft -j list table inet %s: %v\n%s", name, err, out)
	}
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		tb.Fatalf("parse nft json: %v\n%s", err, out)
	}
	l = listing{chains: map[string]chainInfo{}, sets: map[string]setInfo{}, rules: map[string][]ruleInfo{}}
	for _, item := range doc.Nftables {
		for kind, raw := range item {
			switch kind {
			case "chain":
				var c struct {
					Name string
					chainInfo
				}
				mustUnmarshal(tb, raw, &c)
				l.chains[c.Name] = c.chainInfo
			case "set":
				var s struct {
					Name, Type string
					Elem       []any
				}
				mustUnmarshal(tb, raw, &s)
				info := setInfo{Type: s.Type}
				for _, e := range s.Elem {
					info.Elems = append(info.Elems, fmt.Sprint(e))
				}
				slices.Sort(info.Elems)
				l.sets[s.Name] = info
			case "rule":
				var r struct {
					Chain string
					Expr  []map[string]json.RawMessage
				}
				mustUnmarshal(tb, raw, &r)
				l.rules[r.Chain] = append(l.rules[r.Chain], renderRule(tb, r.Expr))
			}
		}
	}
	return l, true
}

func mustUnmarshal(tb testing.TB, raw json.RawMessage, v any) {
	tb.Helper()
	if err := json.Unmarshal(raw, v); err != nil {
		tb.Fatalf("parse %s: %v", raw, err)
	}
}

// renderRule turns nft's JSON expressions into one line of words. Shapes
// it does not know are kept as raw JSON, so they show up in a diff.
func renderRule(tb testing.TB, exprs []map[string]json.RawMessage) ruleInfo {
	tb.Helper()
	var words []string
	var info ruleInfo
	for _, e := range exprs {
		for kind, raw := range e {
			switch kind {
			case "match":
				var m struct {
					Op    string
					Left  map[string]any
					Right any
				}
				mustUnmarshal(tb, raw, &m)
				left, isMark := renderLeft(m.Left)
				words = append(words, left, m.Op, renderValue(m.Right, isMark))
			case "counter":
				var c struct{ Packets uint64 }
				mustUnmarshal(tb, raw, &c)
				info.packets = c.Packets
				words = append(words, "counter")
			case "redirect":
				var r struct{ Port int }
				mustUnmarshal(tb, raw, &r)
				words = append(words, fmt.Sprintf("redirect :%d", r.Port))
			case "reject":
				var r struct{ Type, Expr string }
				mustUnmarshal(tb, raw, &r)
				words = append(words, "reject "+r.Type+" "+r.Expr)
			case "accept", "drop", "return", "notrack":
				words = append(words, kind)
			default:
				words = append(words, kind+":"+string(raw))
			}
		}
	}
	info.text = strings.Join(words, " ")
	return info
}

func renderLeft(left map[string]any) (s string, isMark bool) {
	for kind, raw := range left {
		if kind == "&" {
			// {"&": [LEFT, MASK]}: a bitwise and, e.g. tcp flags & (syn|ack).
			if pair, ok := raw.([]any); ok && len(pair) == 2 {
				if inner, ok := pair[0].(map[string]any); ok {
					l, _ := renderLeft(inner)
					return fmt.Sprintf("%s & %v", l, pair[1]), false
				}
			}
			continue
		}
		v, ok := raw.(map[string]any)
		if !ok {
			continue
		}
		switch kind {
		case "meta", "ct":
			return kind + " " + fmt.Sprint(v["key"]), kind == "meta" && v["key"] == "mark"
		case "payload":
			return fmt.Sprintf("%v %v", v["protocol"], v["field"]), false
		case "fib":
			return fmt.Sprintf("fib %v %v", v["flags"], v["result"]), false
		}
	}
	b, _ := json.Marshal(left)
	return string(b), false
}

func renderValue(v any, hex bool) string {
	switch x := v.(type) {
	case float64:
		if hex {
			return fmt.Sprintf("%#08x", uint32(x))
		}
		return fmt.Sprint(x)
	case map[string]any:
		if set, ok := x["set"].([]any); ok {
			var elems []string
			for _, e := range set {
				elems = append(elems, renderValue(e, hex))
			}
			slices.Sort(elems)
			return "{" + strings.Join(elems, ",") + "}"
		}
	}
	return fmt.Sprint(v)
}

func (l listing) ruleTexts(chain string) []string {
	var out []string
	for _, r := range l.rules[chain] {
		out = append(out, r.text)
	}
	return out
}

package firewall

import (
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Blocker is a base chain of another nft table on the input hook with
// policy drop: a candidate for what drops cloudsteer's redirected flows.
// Found read-only; cloudsteer never changes it.
type Blocker struct {
	Family, Table, Chain string
	// EndsInDrop is whether the chain's last rule drops or rejects, so a
	// rule appended after it would never be reached.
	EndsInDrop bool
	// AcceptsDNAT is whether one of the chain's own rules accepts "ct
	// status dnat" (jumps are not followed).
	AcceptsDNAT bool
}

// Fix is the one nft command that lets redirected flows through b:
// accept what conntrack destination-NATed, which is what cloudsteer's
// redirect does (and a port forward; nothing else).
func (b Blocker) Fix() string {
	verb := "add"
	if b.EndsInDrop {
		verb = "insert"
	}
	return fmt.Sprintf("nft %s rule %s %s %s ct status dnat accept", verb, b.Family, quoteName(b.Table), quoteName(b.Chain))
}

// String names the chain as nft does ("inet filter input").
func (b Blocker) String() string { return b.Family + " " + b.Table + " " + b.Chain }

// quoteName quotes an nft identifier that is not a plain word.
func quoteName(s string) string {
	for _, r := range s {
		if !(r == '_' || r == '-' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return fmt.Sprintf("%q", s)
		}
	}
	return s
}

// InputBlockers lists the input-hook base chains with policy drop in the
// namespace's other nft tables (ip, ip6 and inet), in the kernel's order.
// It reads only.
func (t *Table) InputBlockers() ([]Blocker, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, nil
	}
	chains, err := t.conn.ListChains()
	if err != nil {
		return nil, fmt.Errorf("list nft chains: %w", err)
	}
	var out []Blocker
	for _, c := range chains {
		fam := c.Table.Family
		if fam != nftables.TableFamilyINet && fam != nftables.TableFamilyIPv4 && fam != nftables.TableFamilyIPv6 {
			continue
		}
		if fam == nftables.TableFamilyINet && c.Table.Name == t.name {
			continue
		}
		if c.Hooknum == nil || *c.Hooknum != *nftables.ChainHookInput || c.Policy == nil || *c.Policy != nftables.ChainPolicyDrop {
			continue
		}
		b := Blocker{Family: familyName(fam), Table: c.Table.Name, Chain: c.Name}
		rules, err := t.conn.GetRules(c.Table, c)
		if err != nil {
			return nil, fmt.Errorf("list rules of %s: %w", b, err)
		}
		for i, r := range rules {
			v := ruleVerdict(r)
			if i == len(rules)-1 && (v == "drop" || v == "reject") {
				b.EndsInDrop = true
			}
			if v == "accept" && matchesDNAT(r) {
				b.AcceptsDNAT = true
			}
		}
		out = append(out, b)
	}
	return out, nil
}

// ruleVerdict is "accept", "drop" or "reject" for a rule ending so, else "".
func ruleVerdict(r *nftables.Rule) string {
	if len(r.Exprs) == 0 {
		return ""
	}
	switch e := r.Exprs[len(r.Exprs)-1].(type) {
	case *expr.Verdict:
		switch e.Kind {
		case expr.VerdictAccept:
			return "accept"
		case expr.VerdictDrop:
			return "drop"
		}
	case *expr.Reject:
		return "reject"
	}
	return ""
}

// matchesDNAT reports whether a rule tests the conntrack status's DNAT bit.
func matchesDNAT(r *nftables.Rule) bool {
	status := false
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Ct:
			status = e.Key == expr.CtKeySTATUS
		case *expr.Bitwise:
			if status && len(e.Mask) == 4 && (e.Mask[0]|e.Mask[3])&ctStatusDNAT != 0 {
				return true
			}
		}
	}
	return false
}

// BlockAdvice says what an admin should do about blockers: the command
// for each, or, when none was found, where to look.
func BlockAdvice(blockers []Blocker) string {
	var fixes []string
	for _, b := range blockers {
		if !b.AcceptsDNAT {
			fixes = append(fixes, b.Fix())
		}
	}
	if len(fixes) == 0 {
		for _, b := range blockers {
			fixes = append(fixes, b.Fix())
		}
	}
	if len(fixes) == 0 {
		return "a rule outside cloudsteer's table drops them on the input hook (an nft or iptables chain): accept conntrack status DNAT there, e.g. `iptables -I INPUT -m conntrack --ctstate DNAT -j ACCEPT`"
	}
	return "add this rule to your firewall (and to its config file, so a reload keeps it): " + strings.Join(fixes, "; ")
}

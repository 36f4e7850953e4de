package auth

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Password rule constants from the source manual.
const (
	// MinPasswordLength is the minimum length in characters (Unicode code
	// points, not bytes).
	MinPasswordLength = 8
	// PasswordHistoryDepth is how many previous passwords may not be reused.
	PasswordHistoryDepth = 4
)

// Rule identifies one password rule. The console maps it to a translated
// message; Violation.Message is the English text.
type Rule string

// The password rules, one code each.
const (
	RuleMinLength     Rule = "min_length"
	RuleLetter        Rule = "needs_letter"
	RuleDigit         Rule = "needs_digit"
	RuleRepeat        Rule = "repeated_char"
	RuleContainsUser  Rule = "contains_user"
	RuleContainsEmail Rule = "contains_email"
	RuleReused        Rule = "reused"
)

// Violation is one broken password rule.
type Violation struct {
	Rule    Rule
	Message string
}

// Error makes a Violation usable as an error.
func (v Violation) Error() string { return v.Message }

var ruleMessages = map[Rule]string{
	RuleMinLength:     fmt.Sprintf("The password must be at least %d characters long.", MinPasswordLength),
	RuleLetter:        "The password must contain at least one letter.",
	RuleDigit:         "The password must contain at least one digit.",
	RuleRepeat:        "The password must not repeat a character twice in a row.",
	RuleContainsUser:  "The password must not contain the user name.",
	RuleContainsEmail: "The password must not contain the e-mail address.",
	RuleReused:        fmt.Sprintf("The password must not be one of the last %d passwords.", PasswordHistoryDepth),
}

func violation(r Rule) Violation { return Violation{Rule: r, Message: ruleMessages[r]} }

// Check returns every rule pw breaks (nil when it is acceptable), in the
// order of the manual: length, letter, digit, repeat, user name, e-mail,
// history.
//
// Interpretations, decided here:
//   - "letter" and "digit" are Unicode letters and decimal digits
//     (unicode.IsLetter, unicode.IsDigit), so Japanese input counts;
//   - "no character repeated twice in a row" means no two identical
//     consecutive characters: "aa" and "11" are forbidden, "aba" and "aA"
//     are allowed (the comparison is exact, case-sensitive);
//   - the user name and the e-mail are matched case-insensitively as
//     substrings; for the e-mail both the whole address and its local part
//     (before the last '@') are forbidden. Empty values are not checked;
//   - history holds the hashes of previous passwords, newest first; only
//     the first PasswordHistoryDepth are consulted, and a hash that does
//     not decode is skipped (it cannot match).
func Check(pw, user, email string, history []Hash) []Violation {
	var vs []Violation
	if utf8.RuneCountInString(pw) < MinPasswordLength {
		vs = append(vs, violation(RuleMinLength))
	}
	var letter, digit, repeat bool
	prev, first := rune(0), true
	for _, r := range pw {
		letter = letter || unicode.IsLetter(r)
		digit = digit || unicode.IsDigit(r)
		if !first && r == prev {
			repeat = true
		}
		prev, first = r, false
	}
	if !letter {
		vs = append(vs, violation(RuleLetter))
	}
	if !digit {
		vs = append(vs, violation(RuleDigit))
	}
	if repeat {
		vs = append(vs, violation(RuleRepeat))
	}
	lpw := strings.ToLower(pw)
	if u := strings.ToLower(user); u != "" && strings.Contains(lpw, u) {
		vs = append(vs, violation(RuleContainsUser))
	}
	if e := strings.ToLower(email); e != "" {
		local := e
		if i := strings.LastIndexByte(e, '@'); i >= 0 {
			local = e[:i]
		}
		if strings.Contains(lpw, e) || (local != "" && strings.Contains(lpw, local)) {
			vs = append(vs, violation(RuleContainsEmail))
		}
	}
	if len(history) > PasswordHistoryDepth {
		history = history[:PasswordHistoryDepth]
	}
	for _, h := range history {
		if ok, err := Verify(pw, h); err == nil && ok {
			vs = append(vs, violation(RuleReused))
			break
		}
	}
	return vs
}

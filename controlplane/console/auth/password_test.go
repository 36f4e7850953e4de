package auth_test

import (
	"slices"
	"testing"

	"github.com/cloudsteer/cloudsteer/controlplane/console/auth"
)

func rules(vs []auth.Violation) []auth.Rule {
	var rs []auth.Rule
	for _, v := range vs {
		rs = append(rs, v.Rule)
	}
	return rs
}

func TestCheck(t *testing.T) {
	history := []auth.Hash{
		mustHash(t, "newest1pw", fastParams),
		mustHash(t, "second2pw", fastParams),
		mustHash(t, "third3pw!", fastParams),
		mustHash(t, "fourth4pw", fastParams),
		mustHash(t, "fifth5pwd", fastParams), // 5th: outside the history depth
		"not a hash",
	}
	tests := []struct {
		name        string
		pw, user, e string
		want        []auth.Rule
	}{
		{name: "good", pw: "tr7ck-Horse", user: "admin", e: "kei@example.jp"},
		{name: "good exactly 8", pw: "abcdefg1"},
		{name: "good japanese letters count", pw: "パスワード12ab"},
		{name: "good aA is not a repeat", pw: "aAbBcC12"},
		{name: "good 5th old password may be reused", pw: "fifth5pwd"},
		{name: "too short 7", pw: "abcdef1", want: []auth.Rule{auth.RuleMinLength}},
		{name: "short counts characters not bytes", pw: "パスワ1ド", want: []auth.Rule{auth.RuleMinLength}},
		{name: "no letter", pw: "12345678!", want: []auth.Rule{auth.RuleLetter}},
		{name: "no digit", pw: "abcdefgh!", want: []auth.Rule{auth.RuleDigit}},
		{name: "repeat letter", pw: "abccdef12", want: []auth.Rule{auth.RuleRepeat}},
		{name: "repeat digit at end", pw: "abcdef122", want: []auth.Rule{auth.RuleRepeat}},
		{name: "repeat symbol", pw: "ab!!cdef12", want: []auth.Rule{auth.RuleRepeat}},
		{name: "contains user", pw: "xAdmin9yz", user: "admin", want: []auth.Rule{auth.RuleContainsUser}},
		{name: "contains user other case", pw: "ADMIN-9xyz", user: "Admin", want: []auth.Rule{auth.RuleContainsUser}},
		{name: "contains whole email", pw: "1Kei@Example.jp", e: "kei@example.jp", want: []auth.Rule{auth.RuleContainsEmail}},
		{name: "contains email local part", pw: "zz1-KEI-x9", e: "kei@example.jp", want: []auth.Rule{auth.RuleRepeat, auth.RuleContainsEmail}},
		{name: "contains email with empty local part", pw: "x1@GW.lan9", e: "@gw.lan", want: []auth.Rule{auth.RuleContainsEmail}},
		{name: "email domain alone is fine", pw: "example7jp", e: "kei@example.jp"},
		{name: "reused newest", pw: "newest1pw", want: []auth.Rule{auth.RuleReused}},
		{name: "reused fourth", pw: "fourth4pw", want: []auth.Rule{auth.RuleReused}},
		{name: "empty breaks three rules", pw: "", want: []auth.Rule{auth.RuleMinLength, auth.RuleLetter, auth.RuleDigit}},
		{name: "all at once", pw: "admin", user: "admin", e: "admin@x.jp",
			want: []auth.Rule{auth.RuleMinLength, auth.RuleDigit, auth.RuleContainsUser, auth.RuleContainsEmail}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			vs := auth.Check(tc.pw, tc.user, tc.e, history)
			if got := rules(vs); !slices.Equal(got, tc.want) {
				t.Fatalf("Check(%q) rules = %v, want %v", tc.pw, got, tc.want)
			}
			for _, v := range vs {
				if v.Message == "" || v.Error() != v.Message {
					t.Errorf("rule %s has message %q", v.Rule, v.Message)
				}
			}
		})
	}
}

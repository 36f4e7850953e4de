package auth_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/cloudsteer/cloudsteer/controlplane/console/auth"
)

func TestRecoveryCodes(t *testing.T) {
	codes, hashes, err := auth.GenerateRecoveryCodes(auth.RecoveryCodeCount)
	if err != nil {
		t.Fatal(err)
	}
	if len(codes) != 10 || len(hashes) != 10 {
		t.Fatalf("got %d codes, %d hashes; want 10 each", len(codes), len(hashes))
	}
	shape := regexp.MustCompile(`^[2-9A-HJ-NP-Z]{4}-[2-9A-HJ-NP-Z]{4}$`)
	seen := map[string]bool{}
	for i, c := range codes {
		if !shape.MatchString(c) {
			t.Errorf("code %q is not xxxx-xxxx from the 32-symbol alphabet", c)
		}
		if seen[c] {
			t.Errorf("code %q twice", c)
		}
		seen[c] = true
		if strings.Contains(string(hashes[i]), strings.ReplaceAll(c, "-", "")) {
			t.Errorf("hash %d contains its code", i)
		}
	}

	steps := []struct {
		name     string
		code     string
		want     bool
		wantLeft int
	}{
		{"third code works", codes[2], true, 9},
		{"third code again refused", codes[2], false, 9},
		{"lower case without dash works", strings.ToLower(strings.ReplaceAll(codes[5], "-", "")), true, 8},
		{"it is then used up", codes[5], false, 8},
		{"wrong code refused", "2222-2222", false, 8},
		{"lookalike symbol refused", "0000-OOOO", false, 8},
		{"too long refused", codes[0] + "2", false, 8},
		{"empty refused", "", false, 8},
		{"first code works", codes[0], true, 7},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			var ok bool
			hashes, ok = auth.ConsumeRecoveryCode(st.code, hashes)
			if ok != st.want || len(hashes) != st.wantLeft {
				t.Fatalf("ConsumeRecoveryCode(%q) = %v with %d left; want %v with %d", st.code, ok, len(hashes), st.want, st.wantLeft)
			}
		})
	}
}

func TestRecoveryCodesWithParams(t *testing.T) {
	codes, hashes, err := auth.GenerateRecoveryCodesWith(2, fastParams)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(hashes[0]), "m=64,t=1,p=1") {
		t.Fatalf("hash %q not made with the given params", hashes[0])
	}
	if _, ok := auth.ConsumeRecoveryCode(codes[1], hashes); !ok {
		t.Fatal("code does not match its hash")
	}
}

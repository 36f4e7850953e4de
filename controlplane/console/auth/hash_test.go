package auth_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/cloudsteer/cloudsteer/controlplane/console/auth"
)

func TestHashRoundTripDefaultParams(t *testing.T) {
	h, err := auth.HashPassword("tr7ck-Horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(h), "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash %q does not carry the default parameters", h)
	}
	for _, tc := range []struct {
		name string
		pw   string
		want bool
	}{
		{"right password", "tr7ck-Horse", true},
		{"wrong password", "tr7ck-horse", false},
		{"empty password", "", false},
		{"prefix of password", "tr7ck-Hors", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, err := auth.Verify(tc.pw, h)
			if err != nil || ok != tc.want {
				t.Fatalf("Verify(%q) = %v, %v; want %v", tc.pw, ok, err, tc.want)
			}
		})
	}
	if auth.NeedsRehash(h) {
		t.Error("NeedsRehash of a default-parameter hash = true")
	}
}

func TestHashSaltIsRandom(t *testing.T) {
	a, b := mustHash(t, "same1pass", fastParams), mustHash(t, "same1pass", fastParams)
	if a == b {
		t.Fatalf("two hashes of one password are equal: %q", a)
	}
}

func TestNeedsRehash(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    auth.Hash
		want bool
	}{
		{"weaker params", mustHash(t, "x1yzabcd", fastParams), true},
		{"malformed", "$argon2id$garbage", true},
		{"empty", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := auth.NeedsRehash(tc.h); got != tc.want {
				t.Fatalf("NeedsRehash(%q) = %v, want %v", tc.h, got, tc.want)
			}
		})
	}
}

func TestVerifyTamperedEncoding(t *testing.T) {
	good := string(mustHash(t, "tr7ck-Horse", fastParams))
	parts := strings.Split(good, "$") // "", argon2id, v=19, m=..., salt, key
	join := func(p ...string) auth.Hash { return auth.Hash(strings.Join(p, "$")) }
	flip := func(s string) string { // change one base64 symbol, keep it canonical
		b := []byte(s)
		if b[0] == 'A' {
			b[0] = 'B'
		} else {
			b[0] = 'A'
		}
		return string(b)
	}
	tests := []struct {
		name      string
		h         auth.Hash
		malformed bool // else: decodes but must not match
	}{
		{"other salt", join(parts[0], parts[1], parts[2], parts[3], flip(parts[4]), parts[5]), false},
		{"other key", join(parts[0], parts[1], parts[2], parts[3], parts[4], flip(parts[5])), false},
		{"other time", join(parts[0], parts[1], parts[2], "m=64,t=2,p=1", parts[4], parts[5]), false},
		{"argon2i", join(parts[0], "argon2i", parts[2], parts[3], parts[4], parts[5]), true},
		{"bcrypt", "$2a$10$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz01234", true},
		{"version 16", join(parts[0], parts[1], "v=16", parts[3], parts[4], parts[5]), true},
		{"missing field", join(parts[0], parts[1], parts[2], parts[3], parts[4]), true},
		{"extra field", join(parts[0], parts[1], parts[2], parts[3], parts[4], parts[5], "x"), true},
		{"params reordered", join(parts[0], parts[1], parts[2], "t=1,m=64,p=1", parts[4], parts[5]), true},
		{"leading zero", join(parts[0], parts[1], parts[2], "m=064,t=1,p=1", parts[4], parts[5]), true},
		{"memory 4 GiB", join(parts[0], parts[1], parts[2], "m=4194304,t=1,p=1", parts[4], parts[5]), true},
		{"time huge", join(parts[0], parts[1], parts[2], "m=64,t=4000000000,p=1", parts[4], parts[5]), true},
		{"threads 0", join(parts[0], parts[1], parts[2], "m=64,t=1,p=0", parts[4], parts[5]), true},
		{"threads 257 would wrap uint8", join(parts[0], parts[1], parts[2], "m=64,t=1,p=257", parts[4], parts[5]), true},
		{"short salt", join(parts[0], parts[1], parts[2], parts[3], "AAAA", parts[5]), true},
		{"short key", join(parts[0], parts[1], parts[2], parts[3], parts[4], "AAAA"), true},
		{"padded base64", join(parts[0], parts[1], parts[2], parts[3], parts[4]+"==", parts[5]), true},
		{"bad base64", join(parts[0], parts[1], parts[2], parts[3], "!!!!"+parts[4][4:], parts[5]), true},
		{"empty", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ok, err := auth.Verify("tr7ck-Horse", tc.h)
			if ok {
				t.Fatalf("Verify(%q) matched", tc.h)
			}
			if tc.malformed != (err != nil) {
				t.Fatalf("Verify(%q) error = %v, want malformed=%v", tc.h, err, tc.malformed)
			}
			if err != nil && !errors.Is(err, auth.ErrMalformedHash) {
				t.Fatalf("Verify(%q) error %v is not ErrMalformedHash", tc.h, err)
			}
		})
	}
}

func TestHashPasswordWithRejectsBadParams(t *testing.T) {
	if _, err := auth.HashPasswordWith("x", auth.HashParams{Memory: 64, Time: 0, Threads: 1, SaltLen: 16, KeyLen: 32}); err == nil {
		t.Fatal("HashPasswordWith accepted t=0")
	}
}

// FuzzVerify feeds arbitrary encoded hashes to Verify: it must never panic
// and never match, and only argon2id v=19 strings may decode. Parameters
// are bounded by the decoder; without the bounds the fuzzer would run out
// of memory or time on inputs like the m=4194304 seed.
func FuzzVerify(f *testing.F) {
	f.Add(string(mustHash(f, "tr7ck-Horse", fastParams)))
	f.Add("$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U")
	f.Add("$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U")
	f.Add("$argon2id$v=19$m=64,t=1$$")
	f.Add("$$$$$")
	f.Add("")
	f.Fuzz(func(t *testing.T, h string) {
		ok, err := auth.Verify("fuzz-password-1", auth.Hash(h))
		if ok {
			t.Fatalf("Verify(%q) matched", h)
		}
		if err == nil && !strings.HasPrefix(h, "$argon2id$v=19$m=") {
			t.Fatalf("Verify(%q) decoded a hash that is not argon2id v=19", h)
		}
	})
}

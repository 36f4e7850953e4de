package auth_test

import (
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/console/auth"
)

var rfcKey = []byte("12345678901234567890") // RFC 4226 and RFC 6238 SHA-1 seed

func TestHOTPRFC4226AppendixD(t *testing.T) {
	want := []string{"755224", "287082", "359152", "969429", "338314",
		"254676", "287922", "162583", "399871", "520489"}
	for c, w := range want {
		t.Run(w, func(t *testing.T) {
			if got := auth.HOTP(rfcKey, uint64(c), 6); got != w {
				t.Fatalf("HOTP(counter %d) = %s, want %s", c, got, w)
			}
		})
	}
}

func TestTOTPRFC6238AppendixB(t *testing.T) {
	for _, tc := range []struct {
		unix int64
		step uint64
		want string
	}{
		{59, 0x1, "94287082"},
		{1111111109, 0x23523EC, "07081804"},
		{1111111111, 0x23523ED, "14050471"},
		{1234567890, 0x273EF07, "89005924"},
		{2000000000, 0x3F940AA, "69279037"},
		{20000000000, 0x27BC86AA, "65353130"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			at := time.Unix(tc.unix, 0)
			if got := auth.TOTPStep(at); got != tc.step {
				t.Errorf("TOTPStep(%d) = %#x, want %#x", tc.unix, got, tc.step)
			}
			if got := auth.TOTP(rfcKey, at, 8); got != tc.want {
				t.Errorf("TOTP(%d) = %s, want %s", tc.unix, got, tc.want)
			}
		})
	}
}

func TestTOTPSecretAndURI(t *testing.T) {
	s1, err := auth.NewTOTPSecret()
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := auth.NewTOTPSecret()
	if s1 == s2 || len(s1) != 32 {
		t.Fatalf("secrets %q %q: want two different 32-symbol base32 strings", s1, s2)
	}
	key, err := auth.DecodeTOTPSecret(s1)
	if err != nil || len(key) != 20 {
		t.Fatalf("DecodeTOTPSecret = %d bytes, %v; want 20", len(key), err)
	}
	u, err := url.Parse(auth.TOTPURI(s1, "admin@gw"))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if u.Scheme != "otpauth" || u.Host != "totp" || u.Path != "/cloudsteer:admin@gw" ||
		q.Get("secret") != s1 || q.Get("issuer") != "cloudsteer" || q.Get("algorithm") != "SHA1" ||
		q.Get("digits") != "6" || q.Get("period") != "30" {
		t.Fatalf("URI %s has the wrong parts", u)
	}
	if _, err := auth.DecodeTOTPSecret("not base32!"); err == nil {
		t.Error("DecodeTOTPSecret accepted garbage")
	}
}

func TestTOTPVerifierSkewAndReplay(t *testing.T) {
	// The RFC seed in base32: deterministic codes, so no case can collide
	// by chance (checked: none of them is 000000 at the fake clock's time).
	secret := "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
	key, err := auth.DecodeTOTPSecret(secret)
	if err != nil || string(key) != string(rfcKey) {
		t.Fatalf("DecodeTOTPSecret = %q, %v", key, err)
	}
	clock := newFakeClock()
	base := clock.Now()
	code := func(d time.Duration) string { return auth.TOTP(key, base.Add(d), auth.TOTPDigits) }

	tests := []struct {
		name    string
		account string
		code    string
		want    error
	}{
		{"previous step accepted (skew -1)", "a", code(-30 * time.Second), nil},
		{"same code again is a replay", "a", code(-30 * time.Second), auth.ErrTOTPReplayed},
		{"current step accepted", "a", code(0), nil},
		{"current again is a replay", "a", code(0), auth.ErrTOTPReplayed},
		{"older step after newer is a replay", "a", code(-30 * time.Second), auth.ErrTOTPReplayed},
		{"next step accepted (skew +1)", "a", code(30 * time.Second), nil},
		{"other account has its own state", "b", code(0), nil},
		{"two steps back refused", "c", code(-60 * time.Second), auth.ErrTOTPInvalid},
		{"two steps ahead refused", "c", code(60 * time.Second), auth.ErrTOTPInvalid},
		{"wrong code", "c", "000000", auth.ErrTOTPInvalid},
		{"too short", "c", "12345", auth.ErrTOTPInvalid},
		{"not digits", "c", "12345a", auth.ErrTOTPInvalid},
		{"eight digits", "c", auth.TOTP(key, base, 8), auth.ErrTOTPInvalid},
	}
	for _, d := range []time.Duration{-60, -30, 0, 30, 60} {
		if code(d*time.Second) == "000000" {
			t.Fatal("test premise: a nearby code is 000000")
		}
	}
	v := auth.NewTOTPVerifier(clock.Now)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := v.Verify(tc.account, secret, tc.code); !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
	// The next 30 s step brings a fresh code.
	clock.Advance(60 * time.Second)
	if err := v.Verify("a", secret, code(60*time.Second)); err != nil {
		t.Fatalf("code of a later step: %v", err)
	}
	// Replay state survives a restart through LastStep/SetLastStep.
	last, ok := v.LastStep("a")
	if !ok || last != auth.TOTPStep(base.Add(60*time.Second)) {
		t.Fatalf("LastStep = %d, %v", last, ok)
	}
	v2 := auth.NewTOTPVerifier(clock.Now)
	v2.SetLastStep("a", last)
	if err := v2.Verify("a", secret, code(60*time.Second)); !errors.Is(err, auth.ErrTOTPReplayed) {
		t.Fatalf("after SetLastStep: %v, want replay", err)
	}
	if err := v.Verify("a", "!!", "123456"); !errors.Is(err, auth.ErrTOTPSecret) {
		t.Fatalf("bad secret: %v", err)
	}
}

func TestTOTPVerifierForgetAll(t *testing.T) {
	secret := "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
	clock := newFakeClock()
	code := auth.TOTP(rfcKey, clock.Now(), auth.TOTPDigits)
	v := auth.NewTOTPVerifier(clock.Now)
	if err := v.Verify("a", secret, code); err != nil {
		t.Fatal(err)
	}
	v.ForgetAll()
	if _, ok := v.LastStep("a"); ok {
		t.Fatal("LastStep kept after ForgetAll")
	}
	if err := v.Verify("a", secret, code); err != nil {
		t.Fatalf("after ForgetAll: %v", err)
	}
}

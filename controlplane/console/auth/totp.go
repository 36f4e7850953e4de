package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"
)

// TOTP settings: the defaults of RFC 6238 and of every common
// authenticator app (SHA-1, 6 digits, 30 s steps).
const (
	TOTPIssuer     = "cloudsteer"
	TOTPDigits     = 6
	TOTPPeriod     = 30 * time.Second
	TOTPSkewSteps  = 1  // steps accepted either side of the current one
	TOTPSecretSize = 20 // bytes: 160 bits, as RFC 4226 recommends
)

// Errors of TOTPVerifier.Verify.
var (
	ErrTOTPInvalid  = errors.New("invalid one-time code")
	ErrTOTPReplayed = errors.New("one-time code already used")
	ErrTOTPSecret   = errors.New("invalid TOTP secret")
)

var totpB32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// HOTP computes the RFC 4226 HMAC-SHA-1 one-time code for counter with the
// given number of digits (6..9), zero-padded.
func HOTP(key []byte, counter uint64, digits int) string {
	var msg [8]byte
	binary.BigEndian.PutUint64(msg[:], counter)
	m := hmac.New(sha1.New, key)
	m.Write(msg[:])
	sum := m.Sum(nil)
	off := sum[len(sum)-1] & 0x0f
	bin := binary.BigEndian.Uint32(sum[off:off+4]) & 0x7fffffff
	mod := uint32(1)
	for range digits {
		mod *= 10
	}
	return fmt.Sprintf("%0*d", digits, bin%mod)
}

// TOTPStep is the RFC 6238 time step counter of t (T0 = 0, 30 s steps).
func TOTPStep(t time.Time) uint64 { return uint64(t.Unix()) / uint64(TOTPPeriod/time.Second) }

// TOTP computes the RFC 6238 code (HMAC-SHA-1) at time t.
func TOTP(key []byte, t time.Time, digits int) string { return HOTP(key, TOTPStep(t), digits) }

// NewTOTPSecret returns a new random 160-bit secret in unpadded base32, the
// form authenticator apps accept typed in or from the otpauth URI.
func NewTOTPSecret() (string, error) {
	b := make([]byte, TOTPSecretSize)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate totp secret: %w", err)
	}
	return totpB32.EncodeToString(b), nil
}

// DecodeTOTPSecret decodes a base32 secret, ignoring case, spaces and
// padding as apps print them.
func DecodeTOTPSecret(secret string) ([]byte, error) {
	s := strings.ToUpper(strings.ReplaceAll(secret, " ", ""))
	s = strings.TrimRight(s, "=")
	key, err := totpB32.DecodeString(s)
	if err != nil || len(key) < 10 {
		return nil, ErrTOTPSecret
	}
	return key, nil
}

// TOTPURI returns the otpauth:// key URI for a QR code
// (label "cloudsteer:account", issuer "cloudsteer", SHA1, 6 digits, 30 s).
func TOTPURI(secret, account string) string {
	q := url.Values{}
	q.Set("secret", secret)
	q.Set("issuer", TOTPIssuer)
	q.Set("algorithm", "SHA1")
	q.Set("digits", fmt.Sprint(TOTPDigits))
	q.Set("period", fmt.Sprint(int(TOTPPeriod/time.Second)))
	u := url.URL{Scheme: "otpauth", Host: "totp", Path: "/" + TOTPIssuer + ":" + account, RawQuery: q.Encode()}
	return u.String()
}

// TOTPVerifier checks codes with ±TOTPSkewSteps of clock skew and refuses a
// code whose time step is not newer than the last one accepted for the
// account (replay). The last step lives in memory only: a caller that
// wants replay refusal across restarts stores LastStep and calls
// SetLastStep at start.
type TOTPVerifier struct {
	now  func() time.Time
	mu   sync.Mutex
	last map[string]uint64 // account -> last accepted step + 1 (0: none)
}

// NewTOTPVerifier returns a verifier using clock now (time.Now if nil).
func NewTOTPVerifier(now func() time.Time) *TOTPVerifier {
	if now == nil {
		now = time.Now
	}
	return &TOTPVerifier{now: now, last: map[string]uint64{}}
}

// Verify checks code for account against the base32 secret. It returns nil
// and records the step on success, ErrTOTPReplayed for a valid code of a
// step already used (or older), ErrTOTPInvalid otherwise.
func (v *TOTPVerifier) Verify(account, secret, code string) error {
	key, err := DecodeTOTPSecret(secret)
	if err != nil {
		return fmt.Errorf("verify totp: %w", err)
	}
	if len(code) != TOTPDigits || strings.Trim(code, "0123456789") != "" {
		return ErrTOTPInvalid
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	now := TOTPStep(v.now())
	matched, replayed := uint64(0), false
	for d := -TOTPSkewSteps; d <= TOTPSkewSteps; d++ {
		step := now + uint64(d)
		if subtle.ConstantTimeCompare([]byte(HOTP(key, step, TOTPDigits)), []byte(code)) != 1 {
			continue
		}
		if last := v.last[account]; last != 0 && step < last {
			replayed = true
			continue
		}
		matched = step + 1
	}
	if matched != 0 {
		v.last[account] = matched
		return nil
	}
	if replayed {
		return ErrTOTPReplayed
	}
	return ErrTOTPInvalid
}

// LastStep returns the last accepted step for account and whether any.
func (v *TOTPVerifier) LastStep(account string) (uint64, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	l := v.last[account]
	return l - 1, l != 0
}

// SetLastStep restores a stored last accepted step for account.
func (v *TOTPVerifier) SetLastStep(account string, step uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.last[account] = step + 1
}

// Forget drops the replay state of account (after re-enrolment).
func (v *TOTPVerifier) Forget(account string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.last, account)
}

// ForgetAll drops the replay state of every account (after an admin reset).
func (v *TOTPVerifier) ForgetAll() {
	v.mu.Lock()
	defer v.mu.Unlock()
	clear(v.last)
}

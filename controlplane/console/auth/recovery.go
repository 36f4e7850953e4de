package auth

import (
	"crypto/rand"
	"fmt"
	"strings"
)

// Recovery code settings.
const (
	// RecoveryCodeCount is how many codes GenerateRecoveryCodes makes by default.
	RecoveryCodeCount = 10
	// recoveryAlphabet has 32 symbols without the lookalikes 0/O and 1/I
	// (digits 2-9 and A-Z less I and O); 32 divides 256 so byte&31 is uniform.
	recoveryAlphabet = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
	recoveryGroup    = 4 // xxxx-xxxx: 8 symbols, 40 bits
)

// GenerateRecoveryCodes returns n new codes (xxxx-xxxx, 40 random bits
// each) to show the admin once, and their argon2id hashes to store. The
// codes are hashed like passwords because 40 bits under a fast hash would
// fall to an offline search of a leaked store.
func GenerateRecoveryCodes(n int) (codes []string, hashes []Hash, err error) {
	return GenerateRecoveryCodesWith(n, DefaultHashParams)
}

// GenerateRecoveryCodesWith is GenerateRecoveryCodes hashing with p.
func GenerateRecoveryCodesWith(n int, p HashParams) (codes []string, hashes []Hash, err error) {
	for range n {
		b := make([]byte, 2*recoveryGroup)
		if _, err := rand.Read(b); err != nil {
			return nil, nil, fmt.Errorf("generate recovery codes: %w", err)
		}
		for i := range b {
			b[i] = recoveryAlphabet[b[i]&31]
		}
		code := string(b[:recoveryGroup]) + "-" + string(b[recoveryGroup:])
		h, err := HashPasswordWith(normalizeRecoveryCode(code), p)
		if err != nil {
			return nil, nil, fmt.Errorf("generate recovery codes: %w", err)
		}
		codes, hashes = append(codes, code), append(hashes, h)
	}
	return codes, hashes, nil
}

// normalizeRecoveryCode upper-cases and drops dashes and spaces, so
// "abcd efgh" and "ABCD-EFGH" are the same code.
func normalizeRecoveryCode(code string) string {
	return strings.Map(func(r rune) rune {
		if r == '-' || r == ' ' {
			return -1
		}
		return r
	}, strings.ToUpper(code))
}

// ConsumeRecoveryCode checks code against the stored hashes. On a match it
// returns the hashes without the matched one (the caller must store them
// before granting access, so the code works once) and true; otherwise
// hashes unchanged and false. Input that cannot be a code is refused
// without hashing.
func ConsumeRecoveryCode(code string, hashes []Hash) ([]Hash, bool) {
	c := normalizeRecoveryCode(code)
	if len(c) != 2*recoveryGroup || strings.Trim(c, recoveryAlphabet) != "" {
		return hashes, false
	}
	for i, h := range hashes {
		if ok, err := Verify(c, h); err == nil && ok {
			rest := make([]Hash, 0, len(hashes)-1)
			rest = append(rest, hashes[:i]...)
			return append(rest, hashes[i+1:]...), true
		}
	}
	return hashes, false
}

package model

import (
	"log/slog"
	"time"
)

// PasswordHistoryDepth is how many password hashes an AdminAccount keeps in
// PasswordHistory: the current one and the three before it, so that the
// console's rule "not one of the last 4 passwords" (auth.Check with
// auth.PasswordHistoryDepth) can be given PasswordHistory as it is.
const PasswordHistoryDepth = 4

// AdminAccount is the console's single administrator. Every field but User,
// Email and the times is a secret or derived from one: it lives only in the
// 0600 state file and is never logged (LogValue and String show User and
// flags only).
type AdminAccount struct {
	User  string `json:"user"`
	Email string `json:"email,omitempty"`
	// PasswordHash is the current password's encoded hash (auth.Hash).
	PasswordHash string `json:"password_hash"`
	// PasswordHistory holds the hashes of the last PasswordHistoryDepth
	// passwords, newest first, the current one included (SetPassword keeps
	// it so).
	PasswordHistory []string `json:"password_history,omitempty"`
	// TOTPSecret is the base32 TOTP secret; "" while two-factor is not
	// enrolled.
	TOTPSecret string `json:"totp_secret,omitempty"`
	// TOTPLastStep is the last accepted TOTP time step + 1 (0: none), kept
	// so that a code cannot be replayed across a restart
	// (auth.TOTPVerifier.SetLastStep).
	TOTPLastStep uint64 `json:"totp_last_step,omitempty"`
	// RecoveryHashes are the hashes of the unused recovery codes.
	RecoveryHashes  []string  `json:"recovery_hashes,omitempty"`
	Created         time.Time `json:"created"`
	PasswordChanged time.Time `json:"password_changed"`
}

// SetPassword makes hash the current password at time at: it becomes
// PasswordHash and the head of PasswordHistory, which is cut to
// PasswordHistoryDepth entries. The history is copied, never shared with
// the caller's slice.
func (a *AdminAccount) SetPassword(hash string, at time.Time) {
	h := make([]string, 0, PasswordHistoryDepth)
	h = append(h, hash)
	for _, old := range a.PasswordHistory {
		if len(h) == PasswordHistoryDepth {
			break
		}
		h = append(h, old)
	}
	a.PasswordHash = hash
	a.PasswordHistory = h
	a.PasswordChanged = at
}

// TOTPEnrolled reports whether two-factor authentication is set up.
func (a AdminAccount) TOTPEnrolled() bool { return a.TOTPSecret != "" }

// LogValue shows the account in logs without any secret.
func (a AdminAccount) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("user", a.User),
		slog.Bool("totp", a.TOTPEnrolled()),
		slog.Int("recovery_codes", len(a.RecoveryHashes)),
	)
}

// String shows the account without any secret, so that %v and %+v cannot
// print a hash or the TOTP secret by mistake.
func (a AdminAccount) String() string {
	return "admin " + a.User
}

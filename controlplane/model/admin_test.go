package model

import (
	"bytes"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSetPasswordKeepsHistoryDepth(t *testing.T) {
	at := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	var a AdminAccount
	for i := 1; i <= 6; i++ {
		a.SetPassword(fmt.Sprintf("h%d", i), at.Add(time.Duration(i)*time.Minute))
	}
	if want := []string{"h6", "h5", "h4", "h3"}; !slices.Equal(a.PasswordHistory, want) {
		t.Errorf("PasswordHistory = %q; want %q", a.PasswordHistory, want)
	}
	if a.PasswordHash != "h6" || !a.PasswordChanged.Equal(at.Add(6*time.Minute)) {
		t.Errorf("PasswordHash, PasswordChanged = %q, %s; want h6, %s", a.PasswordHash, a.PasswordChanged, at.Add(6*time.Minute))
	}
}

func TestSetPasswordDoesNotAliasHistory(t *testing.T) {
	old := []string{"h3", "h2", "h1", "h0"}
	a := AdminAccount{PasswordHash: "h3", PasswordHistory: old}
	a.SetPassword("h4", time.Time{})
	if want := []string{"h3", "h2", "h1", "h0"}; !slices.Equal(old, want) {
		t.Errorf("caller's slice changed to %q; want %q", old, want)
	}
}

func TestAdminAccountNeverPrintsSecrets(t *testing.T) {
	a := AdminAccount{
		User: "admin", PasswordHash: "$argon2id$secret-hash", PasswordHistory: []string{"$argon2id$secret-hash"},
		TOTPSecret: "JBSWY3DPEHPK3PXPSECRET", RecoveryHashes: []string{"$argon2id$recovery-secret"},
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("account", "admin", a)
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("account", "admin", a)
	fmt.Fprintf(&buf, "%v %+v\n", a, a)
	out := buf.String()
	for _, secret := range []string{"secret-hash", "PSECRET", "recovery-secret"} {
		if strings.Contains(out, secret) {
			t.Errorf("output shows secret %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "user=admin") || !strings.Contains(out, "totp=true") {
		t.Errorf("log lacks the user and flags:\n%s", out)
	}
}

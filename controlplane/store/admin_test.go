package store

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"

	"github.com/cloudsteer/cloudsteer/controlplane/console/auth"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// testAdmin is a filled-in account; the hashes are placeholders, the store
// does not decode them.
func testAdmin() model.AdminAccount {
	return model.AdminAccount{
		User:            "admin",
		Email:           "it@branch.example",
		PasswordHash:    "$argon2id$h2",
		PasswordHistory: []string{"$argon2id$h2", "$argon2id$h1"},
		TOTPSecret:      "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
		TOTPLastStep:    59000001,
		RecoveryHashes:  []string{"$argon2id$r1", "$argon2id$r2"},
		Created:         t0,
		PasswordChanged: t0.Add(time.Hour),
	}
}

// clock is a settable test clock for Store.now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func withClock(s *Store) *clock {
	c := &clock{t: t0}
	s.now = c.now
	return c
}

func TestAdminRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	if a, ok, err := s.Admin(); err != nil || ok || !cmp.Equal(a, model.AdminAccount{}) {
		t.Fatalf("Admin() on a new store = %+v, %v, %v; want zero, false, nil", a, ok, err)
	}
	want := testAdmin()
	if err := s.PutAdmin(want); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := s.Admin(); err != nil || !ok || !cmp.Equal(got, want) {
		t.Fatalf("Admin() = %v, %v; diff (-want +got):\n%s", ok, err, cmp.Diff(want, got))
	}

	// Reopen: the account was committed to the file.
	s.Close()
	checkFile(t, dir)
	s = openStore(t, dir)
	if got, ok, err := s.Admin(); err != nil || !ok || !cmp.Equal(got, want) {
		t.Fatalf("Admin() after reopen = %v, %v; diff (-want +got):\n%s", ok, err, cmp.Diff(want, got))
	}

	// Replace, then delete.
	want.TOTPSecret, want.RecoveryHashes = "", nil
	if err := s.PutAdmin(want); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := s.Admin(); !cmp.Equal(got, want) {
		t.Errorf("Admin() after replace: diff (-want +got):\n%s", cmp.Diff(want, got))
	}
	if found, err := s.DeleteAdmin(); err != nil || !found {
		t.Fatalf("DeleteAdmin() = %v, %v; want true, nil", found, err)
	}
	if found, err := s.DeleteAdmin(); err != nil || found {
		t.Fatalf("second DeleteAdmin() = %v, %v; want false, nil", found, err)
	}
	s.Close()
	s = openStore(t, dir)
	if a, ok, err := s.Admin(); err != nil || ok {
		t.Fatalf("Admin() after delete and reopen = %+v, %v, %v; want none", a, ok, err)
	}
}

func TestPutAdminInvalid(t *testing.T) {
	s := openStore(t, t.TempDir())
	good := testAdmin()
	if err := s.PutAdmin(good); err != nil {
		t.Fatal(err)
	}
	for name, a := range map[string]model.AdminAccount{
		"no user":     {PasswordHash: "$argon2id$x"},
		"long user":   {User: strings.Repeat("u", maxKeyLen+1), PasswordHash: "$argon2id$x"},
		"no password": {User: "admin"},
	} {
		if err := s.PutAdmin(a); !errors.Is(err, model.ErrInvalid) {
			t.Errorf("%s: PutAdmin() = %v; want ErrInvalid", name, err)
		}
	}
	if err := s.ChangePassword(""); !errors.Is(err, model.ErrInvalid) {
		t.Errorf("ChangePassword(\"\") = %v; want ErrInvalid", err)
	}
	if got, _, _ := s.Admin(); !cmp.Equal(got, good) {
		t.Errorf("a refused write changed the account: diff (-want +got):\n%s", cmp.Diff(good, got))
	}
}

// TestOldStoreWithoutAdminBucket opens a state file written before the
// console existed (schema 1 without the admin bucket): it opens, keeps its
// data, has no admin, and the admin can then be stored.
func TestOldStoreWithoutAdminBucket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketBypass, bucketState, bucketSecret, bucketSettings, bucketEvents} {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketMeta).Put(keyVersion, u64(1)); err != nil {
			return err
		}
		return tx.Bucket(bucketSecret).Put(keyCode, []byte("old-code-1234567890"))
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	s := openStore(t, dir)
	if code, err := s.Code(); err != nil || code != "old-code-1234567890" {
		t.Errorf("Code() = %q, %v; want the old code", code, err)
	}
	if _, ok, err := s.Admin(); err != nil || ok {
		t.Errorf("Admin() = %v, %v; want none, nil", ok, err)
	}
	if pending, err := s.SetupTokenPending(); err != nil || pending {
		t.Errorf("SetupTokenPending() = %v, %v; want false, nil", pending, err)
	}
	if err := s.PutAdmin(testAdmin()); err != nil {
		t.Fatalf("PutAdmin() on an old store: %v", err)
	}
	s.Close()
	checkFile(t, dir)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
}

func TestChangePasswordKeepsLastFour(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	c := withClock(s)
	if err := s.ChangePassword("$argon2id$x"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("ChangePassword() without admin = %v; want ErrNotFound", err)
	}
	a := model.AdminAccount{User: "admin", Created: t0}
	a.SetPassword("$argon2id$p0", t0)
	if err := s.PutAdmin(a); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 6; i++ {
		c.advance(time.Minute)
		if err := s.ChangePassword(fmt.Sprintf("$argon2id$p%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s = openStore(t, dir)
	got, _, err := s.Admin()
	if err != nil {
		t.Fatal(err)
	}
	wantHist := []string{"$argon2id$p6", "$argon2id$p5", "$argon2id$p4", "$argon2id$p3"}
	if !slices.Equal(got.PasswordHistory, wantHist) || got.PasswordHash != "$argon2id$p6" {
		t.Errorf("PasswordHash, PasswordHistory = %q, %q; want $argon2id$p6, %q", got.PasswordHash, got.PasswordHistory, wantHist)
	}
	if want := t0.Add(6 * time.Minute); !got.PasswordChanged.Equal(want) || !got.Created.Equal(t0) {
		t.Errorf("PasswordChanged, Created = %s, %s; want %s, %s", got.PasswordChanged, got.Created, want, t0)
	}

	// PutAdmin cuts an over-long history too.
	got.PasswordHistory = append(got.PasswordHistory, "$argon2id$p2", "$argon2id$p1")
	if err := s.PutAdmin(got); err != nil {
		t.Fatal(err)
	}
	if again, _, _ := s.Admin(); !slices.Equal(again.PasswordHistory, wantHist) {
		t.Errorf("PasswordHistory after PutAdmin with 6 = %q; want %q", again.PasswordHistory, wantHist)
	}
}

// TestChangePasswordFeedsCheck ties the stored history to the password
// rule: with real hashes, the last four passwords (current included) are
// refused by auth.Check and the fifth-newest is accepted.
func TestChangePasswordFeedsCheck(t *testing.T) {
	if model.PasswordHistoryDepth != auth.PasswordHistoryDepth {
		t.Fatalf("model.PasswordHistoryDepth = %d, auth.PasswordHistoryDepth = %d; want equal",
			model.PasswordHistoryDepth, auth.PasswordHistoryDepth)
	}
	fast := auth.HashParams{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}
	hash := func(pw string) string {
		h, err := auth.HashPasswordWith(pw, fast)
		if err != nil {
			t.Fatal(err)
		}
		return string(h)
	}
	s := openStore(t, t.TempDir())
	pws := []string{"first1pw", "second2pw", "third3pw", "fourth4pw", "fifth5pw"}
	a := model.AdminAccount{User: "admin"}
	a.SetPassword(hash(pws[0]), t0)
	if err := s.PutAdmin(a); err != nil {
		t.Fatal(err)
	}
	for _, pw := range pws[1:] {
		if err := s.ChangePassword(hash(pw)); err != nil {
			t.Fatal(err)
		}
	}
	got, _, err := s.Admin()
	if err != nil {
		t.Fatal(err)
	}
	hist := make([]auth.Hash, len(got.PasswordHistory))
	for i, h := range got.PasswordHistory {
		hist[i] = auth.Hash(h)
	}
	for i, pw := range pws {
		vs := auth.Check(pw, got.User, got.Email, hist)
		reused := slices.ContainsFunc(vs, func(v auth.Violation) bool { return v.Rule == auth.RuleReused })
		if want := i >= 1; reused != want { // pws[0] is the fifth-newest
			t.Errorf("Check(%q) reused = %v; want %v", pw, reused, want)
		}
	}
}

func TestSetupToken(t *testing.T) {
	s := openStore(t, t.TempDir())
	c := withClock(s)

	if err := s.ConsumeSetupToken("anything"); !errors.Is(err, ErrSetupToken) {
		t.Errorf("ConsumeSetupToken() with none made = %v; want ErrSetupToken", err)
	}
	tok, err := s.CreateSetupToken(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(raw) != 32 {
		t.Fatalf("token %q decodes to %d bytes, %v; want 32 bytes of URL-safe base64", tok, len(raw), err)
	}
	if pending, err := s.SetupTokenPending(); err != nil || !pending {
		t.Fatalf("SetupTokenPending() = %v, %v; want true", pending, err)
	}
	// The store keeps only the hash.
	if err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketAdmin).Get(keySetupToken); strings.Contains(string(v), tok) {
			return fmt.Errorf("stored value %q holds the token", v)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	for _, wrong := range []string{"", tok[:len(tok)-1], tok + "x", strings.ToUpper(tok), strings.Repeat("a", 10000)} {
		if err := s.ConsumeSetupToken(wrong); !errors.Is(err, ErrSetupToken) || !errors.Is(err, model.ErrForbidden) {
			t.Errorf("ConsumeSetupToken(wrong %.20q) = %v; want ErrSetupToken (ErrForbidden)", wrong, err)
		}
	}
	if err := s.ConsumeSetupToken(tok); err != nil {
		t.Fatalf("ConsumeSetupToken(right, after wrong tries) = %v; want nil", err)
	}
	if err := s.ConsumeSetupToken(tok); !errors.Is(err, ErrSetupToken) {
		t.Errorf("second ConsumeSetupToken() = %v; want ErrSetupToken", err)
	}
	if pending, _ := s.SetupTokenPending(); pending {
		t.Errorf("SetupTokenPending() after use = true; want false")
	}

	// Expiry.
	tok, err = s.CreateSetupToken(10 * time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	c.advance(10*time.Minute - time.Nanosecond)
	if pending, _ := s.SetupTokenPending(); !pending {
		t.Errorf("SetupTokenPending() just before expiry = false; want true")
	}
	c.advance(time.Nanosecond)
	if pending, _ := s.SetupTokenPending(); pending {
		t.Errorf("SetupTokenPending() at expiry = true; want false")
	}
	if err := s.ConsumeSetupToken(tok); !errors.Is(err, ErrSetupToken) {
		t.Errorf("ConsumeSetupToken(expired) = %v; want ErrSetupToken", err)
	}

	// A newer token replaces the older one.
	old, err := s.CreateSetupToken(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	newer, err := s.CreateSetupToken(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if old == newer {
		t.Fatal("two setup tokens are equal")
	}
	if err := s.ConsumeSetupToken(old); !errors.Is(err, ErrSetupToken) {
		t.Errorf("ConsumeSetupToken(replaced) = %v; want ErrSetupToken", err)
	}
	if err := s.ConsumeSetupToken(newer); err != nil {
		t.Errorf("ConsumeSetupToken(newer) = %v; want nil", err)
	}

	if _, err := s.CreateSetupToken(0); !errors.Is(err, model.ErrInvalid) {
		t.Errorf("CreateSetupToken(0) = %v; want ErrInvalid", err)
	}
}

func TestSetupTokenRefusedOnceAdminExists(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	tok, err := s.CreateSetupToken(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutAdmin(testAdmin()); err != nil {
		t.Fatal(err)
	}
	if pending, _ := s.SetupTokenPending(); pending {
		t.Error("SetupTokenPending() with an admin = true; want false")
	}
	if err := s.ConsumeSetupToken(tok); !errors.Is(err, ErrAdminExists) || !errors.Is(err, model.ErrConflict) {
		t.Errorf("ConsumeSetupToken() with an admin = %v; want ErrAdminExists (ErrConflict)", err)
	}
	if err := s.SetupAdmin(tok, model.AdminAccount{User: "guest", PasswordHash: "$argon2id$g"}); !errors.Is(err, ErrAdminExists) {
		t.Errorf("SetupAdmin() with an admin = %v; want ErrAdminExists", err)
	}
	if _, err := s.CreateSetupToken(time.Hour); !errors.Is(err, ErrAdminExists) {
		t.Errorf("CreateSetupToken() with an admin = %v; want ErrAdminExists", err)
	}
	if a, _, _ := s.Admin(); a.User != "admin" {
		t.Errorf("admin is now %q; want admin", a.User)
	}

	// reset-admin: deleting the admin also drops the old token; a new one works.
	if _, err := s.DeleteAdmin(); err != nil {
		t.Fatal(err)
	}
	if err := s.ConsumeSetupToken(tok); !errors.Is(err, ErrSetupToken) {
		t.Errorf("ConsumeSetupToken(token from before reset) = %v; want ErrSetupToken", err)
	}
	tok2, err := s.CreateSetupToken(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetupAdmin(tok2, testAdmin()); err != nil {
		t.Fatalf("SetupAdmin() after reset = %v", err)
	}
}

func TestSetupAdmin(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	tok, err := s.CreateSetupToken(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetupAdmin("wrong", testAdmin()); !errors.Is(err, ErrSetupToken) {
		t.Errorf("SetupAdmin(wrong) = %v; want ErrSetupToken", err)
	}
	// An invalid account neither spends the token nor stores anything.
	if err := s.SetupAdmin(tok, model.AdminAccount{User: "admin"}); !errors.Is(err, model.ErrInvalid) {
		t.Errorf("SetupAdmin(no password) = %v; want ErrInvalid", err)
	}
	if _, ok, _ := s.Admin(); ok {
		t.Fatal("a failed SetupAdmin stored an admin")
	}

	// Two racing browsers with the same link: exactly one wins.
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			errs[i] = s.SetupAdmin(tok, model.AdminAccount{User: fmt.Sprintf("user%d", i), PasswordHash: "$argon2id$x"})
		})
	}
	wg.Wait()
	var winners []string
	for i, err := range errs {
		switch {
		case err == nil:
			winners = append(winners, fmt.Sprintf("user%d", i))
		case !errors.Is(err, ErrAdminExists) && !errors.Is(err, ErrSetupToken):
			t.Errorf("SetupAdmin(user%d) = %v", i, err)
		}
	}
	if len(winners) != 1 {
		t.Fatalf("SetupAdmin winners = %q; want exactly one", winners)
	}
	s.Close()
	s = openStore(t, dir)
	if a, ok, err := s.Admin(); err != nil || !ok || a.User != winners[0] {
		t.Errorf("Admin() after reopen = %q, %v, %v; want %q", a.User, ok, err, winners[0])
	}
}

// TestAdminFileMode checks that writing the secrets leaves the file 0600 and
// that the TOTP secret is in no other file of the state dir.
func TestAdminFileMode(t *testing.T) {
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })
	dir := filepath.Join(t.TempDir(), "state")
	s := openStore(t, dir)
	if _, err := s.CreateSetupToken(time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.PutAdmin(testAdmin()); err != nil {
		t.Fatal(err)
	}
	if err := s.ChangePassword("$argon2id$h3"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if e.Name() != FileName {
			t.Errorf("unexpected file %s (%#o) in the state dir", e.Name(), fi.Mode().Perm())
			continue
		}
		if got := fi.Mode().Perm(); got != 0o600 {
			t.Errorf("mode of %s = %#o; want 0600", e.Name(), got)
		}
	}
}

// The admin crash test re-executes the test binary as a child that changes
// the admin's password until SIGKILLed (see crash_test.go for the pattern).
// init runs before TestMain, so crash_test.go needs no change.
const envAdminCrashDir = "CLOUDSTEER_STORE_ADMIN_CRASH_DIR"

func init() {
	dir := os.Getenv(envAdminCrashDir)
	if dir == "" {
		return
	}
	s, err := Open(context.Background(), dir, WithLogger(quiet))
	if err != nil {
		fmt.Fprintf(os.Stderr, "child: %v\n", err)
		os.Exit(2)
	}
	a, ok, err := s.Admin()
	if err != nil || !ok {
		fmt.Fprintf(os.Stderr, "child: admin %v %v\n", ok, err)
		os.Exit(2)
	}
	n, _ := strconv.Atoi(strings.TrimPrefix(a.PasswordHash, "p"))
	for i := n + 1; ; i++ {
		if err := s.ChangePassword(fmt.Sprintf("p%d", i)); err != nil {
			fmt.Fprintf(os.Stderr, "child: %v\n", err)
			os.Exit(2)
		}
		fmt.Fprintf(os.Stdout, "A %d\n", i) // after the commit returned
	}
}

// TestAdminCrashSafety SIGKILLs a child that keeps changing the password and
// checks after each kill that the file is consistent and the account holds
// at least the last change the child reported, with a history that matches.
// The kill delays vary so that kills land inside writes: with
// ChangePassword split into two transactions (hash, then history) the test
// failed in 4 of 5 runs; a kill cannot land at a chosen point, so it is a
// probabilistic check, and SIGKILL does not test fsync (the page cache
// survives it).
func TestAdminCrashSafety(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	a := model.AdminAccount{User: "admin", TOTPSecret: "JBSWY3DPEHPK3PXP", Created: t0}
	a.SetPassword("p0", t0)
	if err := s.PutAdmin(a); err != nil {
		t.Fatal(err)
	}
	s.Close()

	last := 0
	for round := range 64 {
		killAfter := 10 + round%5*7
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), envAdminCrashDir+"="+dir)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		reported, lines := last, 0
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var i int
			if _, err := fmt.Sscanf(sc.Text(), "A %d", &i); err == nil {
				reported = i
			}
			if lines++; lines == killAfter {
				// A varied delay so that the kill lands at different
				// points of a write, not always just after a report.
				time.AfterFunc(time.Duration(round%16)*100*time.Microsecond, func() { cmd.Process.Signal(syscall.SIGKILL) })
			}
		}
		cmd.Wait()
		if lines < killAfter {
			t.Fatalf("round %d: child stopped after %d lines: %s", round, lines, stderr.String())
		}

		checkFile(t, dir)
		s := openStore(t, dir)
		got, ok, err := s.Admin()
		s.Close()
		if err != nil || !ok {
			t.Fatalf("round %d: Admin() = %v, %v after kill", round, ok, err)
		}
		n, err := strconv.Atoi(strings.TrimPrefix(got.PasswordHash, "p"))
		if err != nil || n < reported {
			t.Fatalf("round %d: password %q after kill; child reported p%d committed", round, got.PasswordHash, reported)
		}
		var want []string
		for i := n; i >= 0 && len(want) < model.PasswordHistoryDepth; i-- {
			want = append(want, fmt.Sprintf("p%d", i))
		}
		if !slices.Equal(got.PasswordHistory, want) || got.TOTPSecret != a.TOTPSecret || got.User != "admin" {
			t.Fatalf("round %d: account after kill = %q %q %q; want history %q and the rest unchanged",
				round, got.User, got.PasswordHistory, got.TOTPSecret, want)
		}
		t.Logf("round %d: killed after %d reported changes (kill sent after %d), stored p%d", round, lines, killAfter, n)
		last = n
	}
}

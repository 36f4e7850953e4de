package store

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// The web console's administrator and its first-run setup token live in the
// "admin" bucket. Open creates the bucket, so a state file written before
// the console existed opens unchanged and simply has no admin.

var (
	keyAdmin      = []byte("account")
	keySetupToken = []byte("setup_token")
)

// SetupTokenBytes is the setup token's entropy: 256 random bits, shown as
// 43 characters of unpadded URL-safe base64.
const SetupTokenBytes = 32

// maxSetupTokenLen bounds what ConsumeSetupToken hashes; a real token has
// 43 characters.
const maxSetupTokenLen = 256

// ErrSetupToken is returned (wrapped) by ConsumeSetupToken and SetupAdmin
// for a token that is wrong, expired, already used or never made. It
// matches model.ErrForbidden.
var ErrSetupToken = model.Plain(model.ErrForbidden, "setup link is invalid, expired or already used")

// ErrAdminExists is returned (wrapped) when a first-run operation finds an
// admin already set up. It matches model.ErrConflict.
var ErrAdminExists = model.Plain(model.ErrConflict, "the console admin is already set up")

// setupToken is what the store keeps of a setup token: its SHA-256 and
// expiry, never the token itself.
type setupToken struct {
	Hash    []byte    `json:"sha256"`
	Expires time.Time `json:"expires"`
}

// Admin returns the console's admin account and whether one is set up.
func (s *Store) Admin() (model.AdminAccount, bool, error) {
	var (
		a     model.AdminAccount
		found bool
	)
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		a, found, err = getAdmin(tx)
		return err
	})
	if err != nil {
		return model.AdminAccount{}, false, fmt.Errorf("read admin account: %w", err)
	}
	return a, found, nil
}

// PutAdmin stores a as the admin account, replacing any, in one fsynced
// transaction. User and PasswordHash must be set; PasswordHistory is cut to
// model.PasswordHistoryDepth entries.
func (s *Store) PutAdmin(a model.AdminAccount) error {
	err := s.db.Update(func(tx *bolt.Tx) error { return putAdmin(tx, a) })
	if err != nil {
		return fmt.Errorf("store admin account: %w", err)
	}
	return nil
}

// DeleteAdmin removes the admin account (for `cloudsteer console
// reset-admin`) and any setup token, and reports whether there was an
// admin. The console is then back at first run: the caller makes a new
// setup token with CreateSetupToken.
func (s *Store) DeleteAdmin() (bool, error) {
	var found bool
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAdmin)
		found = b.Get(keyAdmin) != nil
		if err := b.Delete(keySetupToken); err != nil {
			return err
		}
		return b.Delete(keyAdmin)
	})
	if err != nil {
		return false, fmt.Errorf("delete admin account: %w", err)
	}
	if found {
		s.log.Info("console admin account deleted")
	}
	return found, nil
}

// ChangePassword makes hash (an encoded auth.Hash the caller has checked
// with auth.Check against the stored PasswordHistory) the admin's password,
// in one transaction: the history keeps the last model.PasswordHistoryDepth
// hashes, the new one first. It fails with model.ErrNotFound without an
// admin.
func (s *Store) ChangePassword(hash string) error {
	if hash == "" {
		return fmt.Errorf("change admin password: empty hash: %w", model.ErrInvalid)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		a, found, err := getAdmin(tx)
		if err != nil {
			return err
		}
		if !found {
			return model.Plain(model.ErrNotFound, "no console admin is set up")
		}
		a.SetPassword(hash, s.now().UTC())
		return putAdmin(tx, a)
	})
	if err != nil {
		return fmt.Errorf("change admin password: %w", err)
	}
	return nil
}

// CreateSetupToken makes a new one-time setup token valid for ttl and
// returns it (to print in the setup link; it is a secret until used). Only
// its SHA-256 and expiry are stored, replacing any older token, which stops
// working. It fails with ErrAdminExists once an admin is set up.
func (s *Store) CreateSetupToken(ttl time.Duration) (string, error) {
	if ttl <= 0 {
		return "", fmt.Errorf("create setup token: ttl %s must be positive: %w", ttl, model.ErrInvalid)
	}
	raw := make([]byte, SetupTokenBytes)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("create setup token: %w", err)
	}
	token := base64.RawURLEncoding.EncodeToString(raw)
	sum := sha256.Sum256([]byte(token))
	v, err := json.Marshal(setupToken{Hash: sum[:], Expires: s.now().UTC().Add(ttl)})
	if err != nil {
		return "", fmt.Errorf("create setup token: %w", err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAdmin)
		if b.Get(keyAdmin) != nil {
			return ErrAdminExists
		}
		return b.Put(keySetupToken, v)
	})
	if err != nil {
		return "", fmt.Errorf("create setup token: %w", err)
	}
	return token, nil
}

// SetupTokenPending reports whether a setup token is waiting to be used: one
// is stored, it has not expired, and no admin is set up.
func (s *Store) SetupTokenPending() (bool, error) {
	var pending bool
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAdmin)
		if b.Get(keyAdmin) != nil {
			return nil
		}
		t, ok, err := getSetupToken(b)
		if err != nil {
			return err
		}
		pending = ok && s.now().Before(t.Expires)
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("read setup token: %w", err)
	}
	return pending, nil
}

// ConsumeSetupToken uses up token: it succeeds once, while no admin is set
// up and before the token expires. A wrong or expired token fails with
// ErrSetupToken and changes nothing (a wrong guess does not spend the real
// token; 256 bits cannot be guessed, and the console limits attempts). Prefer
// SetupAdmin, which also stores the admin in the same transaction.
func (s *Store) ConsumeSetupToken(token string) error {
	err := s.db.Update(func(tx *bolt.Tx) error { return s.consumeSetupToken(tx, token) })
	if err != nil {
		return fmt.Errorf("use setup token: %w", err)
	}
	return nil
}

// SetupAdmin consumes the setup token and stores a as the first admin in one
// transaction, so that two browsers racing with the same link cannot both
// create an admin and a crash cannot use the token without storing the
// admin. Errors are those of ConsumeSetupToken and PutAdmin; on error
// nothing changes.
func (s *Store) SetupAdmin(token string, a model.AdminAccount) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := validAdmin(a); err != nil {
			return err
		}
		if err := s.consumeSetupToken(tx, token); err != nil {
			return err
		}
		return putAdmin(tx, a)
	})
	if err != nil {
		return fmt.Errorf("set up admin account: %w", err)
	}
	s.log.Info("console admin account created", "admin", a)
	return nil
}

// consumeSetupToken checks token against the stored hash in constant time
// and deletes the stored token on success.
func (s *Store) consumeSetupToken(tx *bolt.Tx, token string) error {
	b := tx.Bucket(bucketAdmin)
	if b.Get(keyAdmin) != nil {
		return ErrAdminExists
	}
	t, ok, err := getSetupToken(b)
	if err != nil {
		return err
	}
	if !ok || len(token) == 0 || len(token) > maxSetupTokenLen {
		return ErrSetupToken
	}
	if !s.now().Before(t.Expires) {
		return ErrSetupToken // left in place: harmless, and replaced by the next CreateSetupToken
	}
	sum := sha256.Sum256([]byte(token))
	if subtle.ConstantTimeCompare(sum[:], t.Hash) != 1 {
		return ErrSetupToken
	}
	return b.Delete(keySetupToken)
}

func getAdmin(tx *bolt.Tx) (model.AdminAccount, bool, error) {
	var a model.AdminAccount
	v := tx.Bucket(bucketAdmin).Get(keyAdmin)
	if v == nil {
		return a, false, nil
	}
	if err := json.Unmarshal(v, &a); err != nil {
		return model.AdminAccount{}, false, fmt.Errorf("decode admin account: %w", err)
	}
	return a, true, nil
}

func putAdmin(tx *bolt.Tx, a model.AdminAccount) error {
	if err := validAdmin(a); err != nil {
		return err
	}
	if len(a.PasswordHistory) > model.PasswordHistoryDepth {
		a.PasswordHistory = a.PasswordHistory[:model.PasswordHistoryDepth]
	}
	v, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("encode admin account: %w", err)
	}
	return tx.Bucket(bucketAdmin).Put(keyAdmin, v)
}

func validAdmin(a model.AdminAccount) error {
	switch {
	case a.User == "" || len(a.User) > maxKeyLen:
		return fmt.Errorf("user name must have 1 to %d bytes: %w", maxKeyLen, model.ErrInvalid)
	case a.PasswordHash == "":
		return fmt.Errorf("empty password hash: %w", model.ErrInvalid)
	}
	return nil
}

func getSetupToken(b *bolt.Bucket) (setupToken, bool, error) {
	var t setupToken
	v := b.Get(keySetupToken)
	if v == nil {
		return t, false, nil
	}
	if err := json.Unmarshal(v, &t); err != nil {
		return setupToken{}, false, fmt.Errorf("decode setup token: %w", err)
	}
	if len(t.Hash) != sha256.Size {
		return setupToken{}, false, fmt.Errorf("decode setup token: hash has %d bytes", len(t.Hash))
	}
	return t, true, nil
}

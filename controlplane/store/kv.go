package store

import (
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// maxKeyLen bounds bypass values and setting keys (bbolt allows 32 KiB; a
// domain pattern is at most 255 bytes and a setting key is a short name).
const maxKeyLen = 1024

// Bypass returns every stored bypass entry, ordered by Value.
func (s *Store) Bypass() ([]model.BypassEntry, error) {
	var out []model.BypassEntry
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketBypass).ForEach(func(k, v []byte) error {
			var e model.BypassEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("decode bypass entry %q: %w", k, err)
			}
			out = append(out, e)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read bypass entries: %w", err)
	}
	return out, nil
}

// PutBypass stores e under e.Value, replacing any entry with that value.
// Value must already be canonical (package bypass makes it so); the store
// checks only that it is present and that Kind is known.
func (s *Store) PutBypass(e model.BypassEntry) error {
	if err := validBypass(e); err != nil {
		return err
	}
	v, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode bypass entry: %w", err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketBypass).Put([]byte(e.Value), v)
	})
	if err != nil {
		return fmt.Errorf("store bypass entry: %w", err)
	}
	return nil
}

// DeleteBypass removes the entry with this value and reports whether there
// was one. It does not protect system entries: the controller does.
func (s *Store) DeleteBypass(value string) (bool, error) {
	var found bool
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketBypass)
		if b.Get([]byte(value)) == nil {
			return nil
		}
		found = true
		return b.Delete([]byte(value))
	})
	if err != nil {
		return false, fmt.Errorf("delete bypass entry: %w", err)
	}
	return found, nil
}

// SeedBypass inserts, in one transaction, those entries whose Value is not
// stored yet. Entries already present keep their stored form; later
// duplicates within entries are ignored too. (The daemon applies the
// config file with SyncConfigBypass, which also removes what the file
// dropped.)
func (s *Store) SeedBypass(entries []model.BypassEntry) error {
	vals := make([][]byte, len(entries))
	for i, e := range entries {
		if err := validBypass(e); err != nil {
			return err
		}
		v, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("encode bypass entry: %w", err)
		}
		vals[i] = v
	}
	var added int
	err := s.db.Update(func(tx *bolt.Tx) error {
		added = 0
		b := tx.Bucket(bucketBypass)
		for i, e := range entries {
			if b.Get([]byte(e.Value)) != nil {
				continue
			}
			if err := b.Put([]byte(e.Value), vals[i]); err != nil {
				return err
			}
			added++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("seed bypass entries: %w", err)
	}
	if added > 0 {
		s.log.Debug("seeded bypass entries", "added", added, "offered", len(entries))
	}
	return nil
}

func validBypass(e model.BypassEntry) error {
	switch {
	case e.Value == "":
		return fmt.Errorf("store bypass entry: empty value: %w", model.ErrInvalid)
	case len(e.Value) > maxKeyLen:
		return fmt.Errorf("store bypass entry: value longer than %d bytes: %w", maxKeyLen, model.ErrInvalid)
	case e.Kind != model.BypassDomain && e.Kind != model.BypassCIDR:
		return fmt.Errorf("store bypass entry %q: unknown kind %q: %w", e.Value, e.Kind, model.ErrInvalid)
	}
	return nil
}

// Pause returns the stored pause state; the zero value when never set.
func (s *Store) Pause() (model.PauseState, error) {
	var p model.PauseState
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketState).Get(keyPause)
		if v == nil {
			return nil
		}
		return json.Unmarshal(v, &p)
	})
	if err != nil {
		return model.PauseState{}, fmt.Errorf("read pause state: %w", err)
	}
	return p, nil
}

// PutPause stores the pause state.
func (s *Store) PutPause(p model.PauseState) error {
	v, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode pause state: %w", err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketState).Put(keyPause, v)
	})
	if err != nil {
		return fmt.Errorf("store pause state: %w", err)
	}
	return nil
}

// Code returns the stored entitlement code, "" when none. It is a secret:
// callers show it masked (model.MaskCode) and never log it.
func (s *Store) Code() (string, error) {
	var code string
	err := s.db.View(func(tx *bolt.Tx) error {
		code = string(tx.Bucket(bucketSecret).Get(keyCode))
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("read entitlement code: %w", err)
	}
	return code, nil
}

// PutCode stores the entitlement code; "" removes it.
func (s *Store) PutCode(code string) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSecret)
		if code == "" {
			return b.Delete(keyCode)
		}
		return b.Put(keyCode, []byte(code))
	})
	if err != nil {
		return fmt.Errorf("store entitlement code: %w", err)
	}
	return nil
}

// Setting returns the value stored under key and whether there is one.
func (s *Store) Setting(key string) (string, bool, error) {
	var (
		val   string
		found bool
	)
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketSettings).Get([]byte(key))
		if v != nil {
			val, found = string(v), true
		}
		return nil
	})
	if err != nil {
		return "", false, fmt.Errorf("read setting %q: %w", key, err)
	}
	return val, found, nil
}

// PutSetting stores value under key (non-empty, at most 1024 bytes).
func (s *Store) PutSetting(key, value string) error {
	if key == "" || len(key) > maxKeyLen {
		return fmt.Errorf("store setting: key must have 1 to %d bytes: %w", maxKeyLen, model.ErrInvalid)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSettings).Put([]byte(key), []byte(value))
	})
	if err != nil {
		return fmt.Errorf("store setting %q: %w", key, err)
	}
	return nil
}

// DeleteSetting removes key and reports whether it was set.
func (s *Store) DeleteSetting(key string) (bool, error) {
	var found bool
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSettings)
		found = b.Get([]byte(key)) != nil
		if !found {
			return nil
		}
		return b.Delete([]byte(key))
	})
	if err != nil {
		return false, fmt.Errorf("delete setting %q: %w", key, err)
	}
	return found, nil
}

package store

import (
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// Sources of stored entries and of the entitlement code.
const (
	SourceConfig   = "config"   // the config file
	SourceAPI      = "api"      // the admin API or CLI
	SourceActivate = "activate" // `cloudsteer activate` (the code)
)

var (
	keyCodeSource = []byte("entitlement_code_source")
	// keyConfigCode is the config file's code as last applied ("" or
	// absent: the config had none), so that a change can be told apart
	// from an unchanged config after an activation.
	keyConfigCode = []byte("config_entitlement_code")
)

// BypassSync says what SyncConfigBypass changed.
type BypassSync struct {
	Added   []string // new config entries
	Removed []string // config entries the config no longer has (with their override)
	Adopted []string // run-time entries the config now names: config-owned from now on
}

// Changed reports whether anything changed.
func (b BypassSync) Changed() bool {
	return len(b.Added)+len(b.Removed)+len(b.Adopted) > 0
}

// SyncConfigBypass makes the stored config-sourced entries exactly the
// entries given (the config file's bypass entries, Source "config"), in
// one transaction:
//   - a stored config entry the config no longer names is deleted, run-time
//     override (disabled) included;
//   - a stored config entry the config still names keeps its Enabled state
//     (an override made at run time stands) and its Added time;
//   - a stored run-time entry (any other source) the config now names
//     becomes config-owned, keeping its Enabled state and comment;
//   - a config entry not stored yet is added as given.
//
// Duplicate values in entries count once (the first wins).
func (s *Store) SyncConfigBypass(entries []model.BypassEntry) (BypassSync, error) {
	want := map[string]model.BypassEntry{}
	var order []string
	for _, e := range entries {
		if err := validBypass(e); err != nil {
			return BypassSync{}, err
		}
		if _, dup := want[e.Value]; dup {
			continue
		}
		e.Source = SourceConfig
		want[e.Value] = e
		order = append(order, e.Value)
	}
	var res BypassSync
	err := s.db.Update(func(tx *bolt.Tx) error {
		res = BypassSync{}
		b := tx.Bucket(bucketBypass)
		var drop []string
		err := b.ForEach(func(k, v []byte) error {
			var e model.BypassEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("decode bypass entry %q: %w", k, err)
			}
			if e.Source == SourceConfig {
				if _, ok := want[e.Value]; !ok {
					drop = append(drop, string(k))
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range drop {
			if err := b.Delete([]byte(k)); err != nil {
				return err
			}
			res.Removed = append(res.Removed, k)
		}
		for _, v := range order {
			e := want[v]
			if old := b.Get([]byte(v)); old != nil {
				var have model.BypassEntry
				if err := json.Unmarshal(old, &have); err != nil {
					return fmt.Errorf("decode bypass entry %q: %w", v, err)
				}
				if have.Source == SourceConfig {
					continue
				}
				// A run-time entry the config now names: config-owned,
				// with its enabled state and comment kept.
				have.Source = SourceConfig
				e = have
				res.Adopted = append(res.Adopted, v)
			} else {
				res.Added = append(res.Added, v)
			}
			enc, err := json.Marshal(e)
			if err != nil {
				return fmt.Errorf("encode bypass entry: %w", err)
			}
			if err := b.Put([]byte(v), enc); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return BypassSync{}, fmt.Errorf("sync config bypass entries: %w", err)
	}
	return res, nil
}

// CodeSync says what SyncConfigCode did.
type CodeSync string

// Outcomes of SyncConfigCode.
const (
	CodeUnchanged  CodeSync = ""        // the stored code stands
	CodeFromConfig CodeSync = "config"  // the config's (new) code replaced the stored one
	CodeCleared    CodeSync = "cleared" // the config dropped its code, which was in use: none now
)

// CodeWithSource returns the stored entitlement code and where it came
// from (SourceConfig or SourceActivate; "" when there is no code).
func (s *Store) CodeWithSource() (code, source string, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSecret)
		code = string(b.Get(keyCode))
		source = string(b.Get(keyCodeSource))
		return nil
	})
	if err != nil {
		return "", "", fmt.Errorf("read entitlement code: %w", err)
	}
	if code == "" {
		source = ""
	} else if source == "" {
		source = SourceActivate // written before sources were recorded
	}
	return code, source, nil
}

// PutCodeFrom stores the entitlement code with its source; "" removes both.
func (s *Store) PutCodeFrom(code, source string) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSecret)
		if code == "" {
			if err := b.Delete(keyCodeSource); err != nil {
				return err
			}
			return b.Delete(keyCode)
		}
		if err := b.Put(keyCode, []byte(code)); err != nil {
			return err
		}
		return b.Put(keyCodeSource, []byte(source))
	})
	if err != nil {
		return fmt.Errorf("store entitlement code: %w", err)
	}
	return nil
}

// SyncConfigCode applies the config file's entitlement code (cfgCode,
// canonical lowercase, "" for none) at start or reload, in one transaction:
//   - the config's code changed since it was last applied (or is applied
//     for the first time): it becomes the stored code, source config
//     (newest intent wins over an earlier activation);
//   - unchanged: the stored code stands (an activation after the last
//     change is kept);
//   - the config has no code and the stored one came from the config: the
//     stored code is cleared; one from `activate` is kept.
//
// A store written before sources were recorded has no record of the
// config's code: its code counts as the config's when equal, else as an
// activation, which then stands.
func (s *Store) SyncConfigCode(cfgCode string) (CodeSync, error) {
	var res CodeSync
	err := s.db.Update(func(tx *bolt.Tx) error {
		res = CodeUnchanged
		b := tx.Bucket(bucketSecret)
		have := string(b.Get(keyCode))
		src := string(b.Get(keyCodeSource))
		last, recorded := b.Get(keyConfigCode), b.Get(keyConfigCode) != nil
		if have != "" && src == "" { // written by an older cloudsteer
			src = SourceActivate
			if have == cfgCode {
				src = SourceConfig
			}
			if err := b.Put(keyCodeSource, []byte(src)); err != nil {
				return err
			}
			if !recorded {
				last, recorded = []byte(cfgCode), true
			}
		}
		switch {
		case cfgCode != "" && (!recorded || string(last) != cfgCode):
			if have != cfgCode || src != SourceConfig {
				res = CodeFromConfig
			}
			if err := b.Put(keyCode, []byte(cfgCode)); err != nil {
				return err
			}
			if err := b.Put(keyCodeSource, []byte(SourceConfig)); err != nil {
				return err
			}
		case cfgCode == "" && have != "" && src == SourceConfig:
			res = CodeCleared
			if err := b.Delete(keyCode); err != nil {
				return err
			}
			if err := b.Delete(keyCodeSource); err != nil {
				return err
			}
		}
		return b.Put(keyConfigCode, []byte(cfgCode))
	})
	if err != nil {
		return CodeUnchanged, fmt.Errorf("sync config entitlement code: %w", err)
	}
	return res, nil
}

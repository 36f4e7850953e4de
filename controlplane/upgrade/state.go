package upgrade

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// Inspect returns the image's state for status: the running version and
// slot, the slots' entries and what became of the last upgrade. It returns
// ErrNotImage (wrapped) when not running on the image. Entries it cannot
// read (the ESP is root-only) leave Boot and Other empty and say why in
// EntriesError.
func (s System) Inspect() (*model.ImageStatus, error) {
	slot, err := s.CurrentSlot()
	if err != nil {
		return nil, err
	}
	st := &model.ImageStatus{Slot: slot}
	if v, err := s.ImageVersion(); err == nil {
		st.Version = v
	}
	entries, err := s.Entries()
	if err != nil {
		// The ESP is root-only; cloudsteer-image-state.service (root)
		// leaves what it read there at boot in StateFile.
		if rec, rerr := ReadState(s.StateFile); rerr == nil && rec.Slot == slot {
			rec.Version = st.Version
			return rec, nil
		}
		st.EntriesError = err.Error()
		return st, nil
	}
	st.Boot, st.Other = entries[slot], entries[Other(slot)]
	running := st.Version
	if running == "" && st.Boot != nil {
		running = st.Boot.Version
	}
	switch o := st.Other; {
	case st.Boot != nil && st.Boot.State == model.SlotTrial:
		st.Upgrade = fmt.Sprintf("running %s on trial: not yet marked good (%d boot tries left)", orUnknown(running), st.Boot.TriesLeft)
	case o == nil:
	case o.State == model.SlotBad:
		st.RolledBack = true
		st.Upgrade = fmt.Sprintf("upgrade to %s failed to come up healthy; rolled back to %s", orUnknown(o.Version), orUnknown(running))
	case o.State == model.SlotTrial && o.TriesDone == 0:
		st.Upgrade = fmt.Sprintf("upgrade to %s installed in slot %s; it starts at the next reboot", orUnknown(o.Version), o.Slot)
	case o.State == model.SlotTrial:
		st.Upgrade = fmt.Sprintf("upgrade to %s in slot %s failed to come up %d times (%d tries left); running %s", orUnknown(o.Version), o.Slot, o.TriesDone, o.TriesLeft, orUnknown(running))
	}
	return st, nil
}

func orUnknown(v string) string {
	if v == "" {
		return "an unknown version"
	}
	return v
}

// Entries reads the cloudsteer entries in the ESP's loader/entries, by
// slot. Two entries for one slot (which Install never leaves) are an
// error.
func (s System) Entries() (map[string]*model.SlotEntry, error) {
	dir := filepath.Join(s.ESP, "loader", "entries")
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read boot entries: %w", err)
	}
	out := map[string]*model.SlotEntry{}
	for _, de := range des {
		m := entryRE.FindStringSubmatch(de.Name())
		if m == nil || !de.Type().IsRegular() {
			continue
		}
		e := &model.SlotEntry{Slot: m[1], State: model.SlotGood, File: de.Name()}
		if m[2] != "" {
			e.TriesLeft, _ = strconv.Atoi(m[2])
			if m[3] != "" {
				e.TriesDone, _ = strconv.Atoi(m[3])
			}
			e.State = model.SlotTrial
			if e.TriesLeft == 0 {
				e.State = model.SlotBad
			}
		}
		if prev := out[e.Slot]; prev != nil {
			return nil, fmt.Errorf("read boot entries: slot %s has two entries, %s and %s", e.Slot, prev.File, e.File)
		}
		if e.Version, err = entryVersion(filepath.Join(dir, de.Name())); err != nil {
			return nil, fmt.Errorf("read boot entries: %w", err)
		}
		out[e.Slot] = e
	}
	return out, nil
}

// entryVersion reads the version field of an entry.
func entryVersion(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 64<<10))
	for sc.Scan() {
		k, v, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		if k == "version" {
			return strings.TrimSpace(v), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", nil
}

// IsNotImage reports whether err says this is not the image.
func IsNotImage(err error) bool { return errors.Is(err, ErrNotImage) }

// WriteState records st in path (0644, written through a temporary file
// and renamed), for the daemon, which cannot read the ESP.
func WriteState(path string, st *model.ImageStatus) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write image state: %w", err)
	}
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	if err := writeNew(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write image state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write image state: %w", err)
	}
	return nil
}

// ReadState reads a state WriteState recorded.
func ReadState(path string) (*model.ImageStatus, error) {
	if path == "" {
		return nil, errors.New("read image state: no state file")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read image state: %w", err)
	}
	var st model.ImageStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("read image state: %w", err)
	}
	return &st, nil
}

package rsyncish

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"time"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// damageFile records what verify --read-data found rotten (format.Damage),
// so that the write path, which never re-hashes what it reuses, does not
// build new versions on it.
const damageFile = "damage.json"

// rotten is the damage record as sets: pack id -> blob ids.
type rotten map[string]map[format.ID]bool

// readDamage reads the damage record. A missing record is empty; an
// unreadable one is reported (verify names it) and counts as empty.
func (s *Store) readDamage() (rotten, time.Time, error) {
	data, err := readStoreFile(s.path(damageFile))
	if errors.Is(err, fs.ErrNotExist) {
		return rotten{}, time.Time{}, nil
	}
	if err != nil {
		return rotten{}, time.Time{}, fmt.Errorf("%s: %w", damageFile, err)
	}
	var d format.Damage
	if err := format.UnsealJSON(data, &d); err != nil {
		return rotten{}, time.Time{}, fmt.Errorf("%s: %w", damageFile, err)
	}
	out := rotten{}
	for pack, ids := range d.Packs {
		set := map[format.ID]bool{}
		for _, h := range ids {
			id, err := format.ParseID(h)
			if err != nil {
				return rotten{}, time.Time{}, fmt.Errorf("%s: pack %s: %w", damageFile, pack, err)
			}
			set[id] = true
		}
		if len(set) > 0 {
			out[pack] = set
		}
	}
	return out, d.Time, nil
}

// damagedAux returns the aux files the damage record names.
func (s *Store) damagedAux() []string {
	data, err := readStoreFile(s.path(damageFile))
	if err != nil {
		return nil
	}
	var d format.Damage
	if format.UnsealJSON(data, &d) != nil {
		return nil
	}
	return d.Aux
}

// writeDamage publishes the damage record's packs, keeping its aux list.
// The caller holds the lock.
func (s *Store) writeDamage(r rotten) error { return s.writeDamageAll(r, s.damagedAux()) }

// damagedSegments returns the journal segments the damage record names,
// by journal (file -> true).
func (s *Store) damagedSegments() map[string]map[string]bool {
	out := map[string]map[string]bool{}
	data, err := readStoreFile(s.path(damageFile))
	if err != nil {
		return out
	}
	var d format.Damage
	if format.UnsealJSON(data, &d) != nil {
		return out
	}
	for j, files := range d.Segments {
		for _, f := range files {
			if out[j] == nil {
				out[j] = map[string]bool{}
			}
			out[j][f] = true
		}
	}
	return out
}

// writeDamageAll publishes the damage record's packs and aux list, keeping
// its segments (removes it when empty).
func (s *Store) writeDamageAll(r rotten, aux []string) error {
	return s.writeDamageRecord(r, aux, s.damagedSegments())
}

// writeDamageRecord publishes the whole damage record (removes it when
// empty); Verify writes the segments it found.
func (s *Store) writeDamageRecord(r rotten, aux []string, segs map[string]map[string]bool) error {
	if len(r) == 0 && len(aux) == 0 && len(segs) == 0 {
		if err := os.Remove(s.path(damageFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing %s: %w", damageFile, err)
		}
		return nil
	}
	d := format.Damage{Time: time.Now().UTC(), Packs: map[string][]string{}, Aux: aux}
	for pack, set := range r {
		ids := make([]string, 0, len(set))
		for id := range set {
			ids = append(ids, id.String())
		}
		sort.Strings(ids)
		d.Packs[pack] = ids
	}
	for j, files := range segs {
		if len(files) > 0 {
			if d.Segments == nil {
				d.Segments = map[string][]string{}
			}
			d.Segments[j] = sortedKeys(files)
		}
	}
	data, err := format.SealJSON(d)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(s.path(damageFile), data, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", damageFile, err)
	}
	return nil
}

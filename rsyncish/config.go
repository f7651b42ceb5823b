package rsyncish

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// What config.json holds (the store's format, id and creation time) is also
// recorded in the header of every manifest (format.Header.Store), so that
// one changed byte in it locks nobody out: Open falls back on what the
// manifests say, with a warning, and Repair writes config.json again.

// recoverConfig rebuilds the store's config from its manifests: the id and
// creation time the newest manifest recorded, the newest format any
// manifest is written in. ok is false when there is no readable manifest.
func (s *Store) recoverConfig() (cfg format.Config, ok bool, err error) {
	ents, err := readStoreDir(s.path(versionsDir))
	if err != nil {
		return cfg, false, err
	}
	type seen struct {
		t   time.Time
		cfg *format.Config
	}
	var all []seen
	ids := map[string]bool{}
	var oldest time.Time
	for _, e := range ents {
		id, isManifest := strings.CutSuffix(e.Name(), manifestExt)
		if !isManifest {
			continue
		}
		h, err := s.readHeader(id)
		if err != nil {
			continue
		}
		ok = true
		cfg.Format = max(cfg.Format, h.ManifestFormat)
		if oldest.IsZero() || h.Time.Before(oldest) {
			oldest = h.Time
		}
		if h.Store != nil {
			all = append(all, seen{h.Time, h.Store})
			ids[h.Store.StoreID] = true
		}
	}
	if !ok {
		return cfg, false, nil
	}
	cfg.Created = oldest.UTC()
	if len(all) > 0 {
		sort.Slice(all, func(i, j int) bool { return all[i].t.Before(all[j].t) })
		newest := all[len(all)-1].cfg
		cfg.StoreID, cfg.Created = newest.StoreID, newest.Created
		cfg.Format = max(cfg.Format, newest.Format)
		if len(ids) > 1 {
			s.log.Warn("manifests record more than one store id; using the newest version's", "store", s.dir, "storeId", cfg.StoreID, "ids", sortedKeys(ids))
		}
	}
	cfg.Format = min(max(cfg.Format, 1), format.StoreFormat)
	return cfg, true, nil
}

// ConfigProblem is why config.json could not be used (Open then works from
// what the manifests record), nil when it is sound.
func (s *Store) ConfigProblem() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfgErr
}

// rebuildConfig writes config.json again when it is damaged, from what the
// manifests record (a new store id when none recorded one). It returns ""
// when config.json was sound, else what was wrong and what was written.
// The caller holds the lock.
func (s *Store) rebuildConfig() (string, error) {
	var cfg format.Config
	data, err := readStoreFile(s.path(configFile))
	if err == nil {
		if err = format.UnsealJSON(data, &cfg); err == nil {
			return "", nil
		}
	}
	why := err.Error()
	rec, ok, rerr := s.recoverConfig()
	if rerr != nil {
		return "", fmt.Errorf("rebuilding %s: %w", configFile, rerr)
	}
	how := "from the manifests"
	if !ok {
		rec = format.Config{Format: format.StoreFormat, Created: time.Now().UTC()}
		how = "from scratch (no readable manifest)"
	}
	if rec.StoreID == "" {
		rec.StoreID = randHex(16)
		how += ", with a new store id (no manifest recorded one)"
	}
	sealed, err := format.SealJSON(rec)
	if err != nil {
		return "", err
	}
	if err := writeFileAtomic(s.path(configFile), sealed, 0o600); err != nil {
		return "", fmt.Errorf("rebuilding %s: %w", configFile, err)
	}
	s.mu.Lock()
	s.cfg, s.cfgErr = rec, nil
	s.mu.Unlock()
	s.log.Warn("rebuilt "+configFile, "store", s.dir, "was", why, "storeId", rec.StoreID, "format", rec.Format)
	return fmt.Sprintf("%s (%s): rebuilt %s, store id %s, format %d", configFile, why, how, rec.StoreID, rec.Format), nil
}

// config is the store's config (what the manifests record when
// config.json is damaged).
func (s *Store) config() format.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

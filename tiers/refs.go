package tiers

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"
)

// VersionRefs is what one version in the tier needs there besides its
// manifest: the packs holding its blocks (with their indexes), the
// versions whose streams it reads (a journal version's base), and the
// etcd revision its state is replayed from (SnapshotRevision: the journal
// above it is what the version and point-in-time restores after it
// need). Sync records it, from the store, before the manifest goes up;
// the tier is sealed and the master cannot read it back, so this record
// is what Prune decides with (see Prune for when it is missing).
type VersionRefs struct {
	Version string    `json:"version"`
	Time    time.Time `json:"time"`
	Packs   []string  `json:"packs,omitempty"` // pack IDs
	// Requires are versions whose streams this one reads.
	Requires []string `json:"requires,omitempty"`
	// SnapshotRevision is the etcd revision of the snapshot the version's
	// etcd state starts from (0: no etcd part, or not known).
	SnapshotRevision int64 `json:"snapshotRevision,omitempty"`
	// Incomplete: some block's pack was not found when recorded; Prune
	// then deletes no pack at all.
	Incomplete bool `json:"incomplete,omitempty"`
}

// refsLine is one line of the refs file: a version's references, or
// ("pruned") the record that Prune removed the version from the tier, so
// that Sync does not upload it again while the store still holds it.
type refsLine struct {
	*VersionRefs
	Pruned string `json:"pruned,omitempty"`
}

func refsPath(cataloguePath string) string {
	return strings.TrimSuffix(cataloguePath, ".catalogue") + ".refs"
}

// loadRefs reads the refs file (a torn last line is ignored).
func (c *Catalogue) loadRefs() error {
	c.refs, c.pruned = map[string]*VersionRefs{}, map[string]bool{}
	f, err := os.Open(c.refsPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("tier refs %s: %w", c.refsPath, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var l refsLine
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		switch {
		case l.Pruned != "":
			c.pruned[l.Pruned] = true
		case l.VersionRefs != nil && l.Version != "":
			c.refs[l.Version] = l.VersionRefs
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("tier refs %s: %w", c.refsPath, err)
	}
	return nil
}

func (c *Catalogue) appendRefs(l refsLine) error {
	data, err := json.Marshal(l)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(c.refsPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("tier refs %s: %w", c.refsPath, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > 0 {
		// A torn line from a kill mid-write must not glue onto this one.
		last := make([]byte, 1)
		if r, err := os.Open(c.refsPath); err == nil {
			if _, err := r.ReadAt(last, fi.Size()-1); err == nil && last[0] != '\n' {
				_, _ = f.WriteString("\n")
			}
			r.Close()
		}
	}
	if _, err := f.Write(append(data, '\n')); err != nil {
		return fmt.Errorf("tier refs %s: %w", c.refsPath, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("tier refs %s: %w", c.refsPath, err)
	}
	return nil
}

// Refs returns what the version needs in the tier, as recorded (nil: no
// record).
func (c *Catalogue) Refs(version string) *VersionRefs {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refs[version]
}

// AddRefs records, durably, what a version needs in the tier.
func (c *Catalogue) AddRefs(r VersionRefs) error {
	slices.Sort(r.Packs)
	r.Packs = slices.Compact(r.Packs)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.appendRefs(refsLine{VersionRefs: &r}); err != nil {
		return err
	}
	c.refs[r.Version] = &r
	return nil
}

// Pruned says whether Prune removed the version from the tier (Sync does
// not upload it, nor its drill mark, again).
func (c *Catalogue) Pruned(version string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pruned[version]
}

// markPruned records, before the version's manifest is deleted, that the
// tier's retention dropped it.
func (c *Catalogue) markPruned(version string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pruned[version] {
		return nil
	}
	if err := c.appendRefs(refsLine{Pruned: version}); err != nil {
		return err
	}
	c.pruned[version] = true
	return nil
}

// forget drops objects from the catalogue (Prune deleted them), by
// rewriting it.
func (c *Catalogue) forget(hs map[string]bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for h := range c.have {
		if hs[h.String()] {
			delete(c.have, h)
		}
	}
	return c.rewrite()
}

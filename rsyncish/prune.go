package rsyncish

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// RetentionPolicy says which versions to keep; buckets are UTC hours, days,
// ISO weeks and months, and each bucket keeps its newest version (restic's
// rules).
type RetentionPolicy struct {
	KeepLast   int
	KeepHourly int
	KeepDaily  int
	KeepWeekly int
	// KeepMonthly is the off-site tiers' (the store's own retention has
	// no monthly bucket).
	KeepMonthly int
	// Needs, when set, names the versions a version cannot be read
	// without (an etcd journal version's base): each is kept while any
	// version it is needed by is, with the reason "base of <id>".
	Needs func(VersionInfo) []string
}

// PruneResult says what Prune did (or, dry, would do).
type PruneResult struct {
	DryRun bool          `json:"dryRun"`
	Keep   []KeepReason  `json:"keep"`
	Remove []VersionInfo `json:"remove"`
	// Packs deleted outright, packs rewritten to drop unused blobs, and
	// the bytes that frees (estimated on a dry run).
	PacksDeleted   int   `json:"packsDeleted"`
	PacksRewritten int   `json:"packsRewritten"`
	BytesFreed     int64 `json:"bytesFreed"`
}

// KeepReason is a kept version and why.
type KeepReason struct {
	ID      string    `json:"id"`
	Time    time.Time `json:"time"`
	Reasons []string  `json:"reasons"`
}

// Keep decides which versions of vs (oldest first) the policy keeps, with
// the reasons: the newest verified version always, and the versions Needs
// names for a kept one (one level; the store's Prune adds the rest). The
// off-site tiers' prune applies it to the versions a tier holds.
func (p RetentionPolicy) Keep(vs []VersionInfo) map[string][]string { return p.apply(vs) }

// Policy decides which versions to keep, newest verified always included.
// vs is sorted oldest first, as Versions returns it.
func (p RetentionPolicy) apply(vs []VersionInfo) (keep map[string][]string) {
	keep = map[string][]string{}
	newest := make([]VersionInfo, len(vs))
	for i := range vs {
		newest[i] = vs[len(vs)-1-i]
	}
	for i := 0; i < len(newest) && i < p.KeepLast; i++ {
		keep[newest[i].ID] = append(keep[newest[i].ID], "last")
	}
	bucket := func(n int, name string, key func(time.Time) string) {
		seen := map[string]bool{}
		for _, v := range newest {
			if len(seen) >= n {
				return
			}
			k := key(v.Time.UTC())
			if seen[k] {
				continue
			}
			seen[k] = true
			keep[v.ID] = append(keep[v.ID], name)
		}
	}
	bucket(p.KeepHourly, "hourly", func(t time.Time) string { return t.Format("2006-01-02T15") })
	bucket(p.KeepDaily, "daily", func(t time.Time) string { return t.Format("2006-01-02") })
	bucket(p.KeepWeekly, "weekly", func(t time.Time) string {
		y, w := t.ISOWeek()
		return fmt.Sprintf("%d-W%02d", y, w)
	})
	bucket(p.KeepMonthly, "monthly", func(t time.Time) string { return t.Format("2006-01") })
	for _, v := range newest {
		if v.Verified {
			keep[v.ID] = append(keep[v.ID], "newest verified")
			break
		}
	}
	if p.Needs != nil {
		present := map[string]bool{}
		for _, v := range vs {
			present[v.ID] = true
		}
		for _, v := range newest {
			if _, kept := keep[v.ID]; !kept {
				continue
			}
			for _, id := range p.Needs(v) {
				if present[id] && id != v.ID {
					keep[id] = append(keep[id], "base of "+v.ID)
				}
			}
		}
	}
	return keep
}

// keepRequired adds to keep every version a kept version requires
// (Requirement), and what those require in turn: a journal version's base
// goes only with the last version built on it. A version whose header
// cannot be read is kept by nothing here (Prune refuses to sweep then).
func (s *Store) keepRequired(vs []VersionInfo, keep map[string][]string) {
	present := map[string]bool{}
	for _, v := range vs {
		present[v.ID] = true
	}
	todo := make([]string, 0, len(keep))
	for id := range keep {
		todo = append(todo, id)
	}
	sort.Strings(todo)
	for len(todo) > 0 {
		id := todo[0]
		todo = todo[1:]
		h, err := s.readHeader(id)
		if err != nil {
			continue
		}
		for _, r := range h.Requires {
			if r.Version == "" || r.Version == id || !present[r.Version] {
				continue
			}
			if _, kept := keep[r.Version]; kept {
				continue // its own requirements are queued already
			}
			keep[r.Version] = []string{"required by " + id}
			todo = append(todo, r.Version)
		}
	}
}

// removalOrder orders the versions prune drops so that each goes only
// after every dropped version that requires it (DependentsFirst).
func (s *Store) removalOrder(drop []VersionInfo) []VersionInfo {
	return DependentsFirst(drop, func(id string) []string {
		h, err := s.readHeader(id)
		if err != nil {
			return nil
		}
		out := make([]string, 0, len(h.Requires))
		for _, r := range h.Requires {
			out = append(out, r.Version)
		}
		return out
	})
}

// DependentsFirst orders vs (oldest first, as Versions lists them) for
// removal: newest first, and each version only after every version of vs
// that requires it (requires names the versions one reads). A removal
// stopped at any point then never leaves a version whose base is gone.
// Dependents are newer than their bases, so this is newest first unless
// the clock was stepped back between a base and a version requiring it.
func DependentsFirst(vs []VersionInfo, requires func(id string) []string) []VersionInfo {
	byID := make(map[string]VersionInfo, len(vs))
	for _, v := range vs {
		byID[v.ID] = v
	}
	requiredBy := map[string][]string{}
	for _, v := range vs {
		for _, r := range requires(v.ID) {
			if _, in := byID[r]; in && r != v.ID {
				requiredBy[r] = append(requiredBy[r], v.ID)
			}
		}
	}
	out := make([]VersionInfo, 0, len(vs))
	done := map[string]bool{}
	var emit func(id string)
	emit = func(id string) {
		if done[id] {
			return
		}
		done[id] = true
		for _, d := range requiredBy[id] {
			emit(d)
		}
		out = append(out, byID[id])
	}
	for _, v := range slices.Backward(vs) {
		emit(v.ID)
	}
	return out
}

// repackThreshold: a pack is rewritten when at least this share of its
// bytes is unreferenced; below it the space is not worth the I/O.
const repackThreshold = 0.3

// Prune removes the versions the policy does not keep, then reclaims blobs
// no remaining version references (mark and sweep). The caller must hold
// the lock, which also keeps backups out while it runs. Crash-safe by
// order: manifests go first (each removal atomic); a pack's index goes
// before the pack; a rewritten pack is durable with its index before the
// old index goes. A crash leaves only orphans that the next Lock removes,
// or duplicate blobs that the next prune removes. If any manifest cannot be
// read, nothing is swept: its references are unknown. A real run holds the
// read lock exclusively (waiting for the readers that started before it),
// so no reader ever finds a pack gone that its index named.
func (s *Store) Prune(ctx context.Context, policy RetentionPolicy, dryRun bool) (*PruneResult, error) {
	if err := s.holdsLock(); err != nil {
		return nil, err
	}
	if policy.KeepLast <= 0 && policy.KeepHourly <= 0 && policy.KeepDaily <= 0 && policy.KeepWeekly <= 0 && policy.KeepMonthly <= 0 {
		return nil, errors.New("prune: the retention policy keeps nothing")
	}
	vs, err := s.Versions()
	if err != nil {
		return nil, err
	}
	keep := policy.apply(vs)
	s.keepRequired(vs, keep)
	res := &PruneResult{DryRun: dryRun, Keep: []KeepReason{}, Remove: []VersionInfo{}}
	for _, v := range vs {
		if r, ok := keep[v.ID]; ok {
			res.Keep = append(res.Keep, KeepReason{ID: v.ID, Time: v.Time, Reasons: r})
		} else {
			res.Remove = append(res.Remove, v)
		}
	}
	if !dryRun {
		// Readers that started before hold the read lock: wait for them,
		// and keep new ones out until every removal is done.
		release, err := s.exclusive(ctx)
		if err != nil {
			return res, fmt.Errorf("prune: %w", err)
		}
		defer release()
		for _, v := range s.removalOrder(res.Remove) {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			if err := os.Remove(s.path(versionsDir, v.ID+manifestExt)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return res, fmt.Errorf("prune: removing version %s: %w", v.ID, err)
			}
		}
		if err := syncDir(s.path(versionsDir)); err != nil {
			return res, err
		}
		for _, v := range res.Remove {
			if err := os.Remove(s.path(verifiedDir, v.ID)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return res, fmt.Errorf("prune: %w", err)
			}
			s.log.Info("pruned version", "store", s.dir, "version", v.ID, "time", v.Time)
		}
	}

	// Mark: every blob a kept version references.
	used := map[format.ID]bool{}
	ents, err := readStoreDir(s.path(versionsDir))
	if err != nil {
		return res, err
	}
	removed := map[string]bool{}
	for _, v := range res.Remove {
		removed[v.ID] = true
	}
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), manifestExt)
		if !ok || (dryRun && removed[id]) {
			continue
		}
		m, err := s.manifest(id)
		if err != nil {
			return res, fmt.Errorf("prune: not reclaiming space, version %s cannot be read (run verify): %w", id, err)
		}
		for _, en := range m.Entries {
			for _, x := range en.Extents {
				used[x.ID] = true
			}
		}
	}

	// Sweep, pack by pack. A copy that is known bad (its pack missing or
	// of the wrong size, or rotten per the damage record) never counts as
	// a blob's live home, so the good copy elsewhere is never swept for
	// it; a damaged pack that still holds referenced blobs is left to
	// repair.
	damage, _, err := s.readDamage()
	if err != nil {
		s.log.Warn("prune: ignoring the damage record", "err", err)
	}
	idxEnts, err := readStoreDir(s.path(indexDir))
	if err != nil {
		return res, err
	}
	type plan struct {
		id      string
		entries []format.IndexEntry
		live    int64
		size    int64
	}
	var rewrite []plan
	kept := map[format.ID]bool{} // blobs that already have a live home
	for _, e := range idxEnts {
		pid, ok := strings.CutSuffix(e.Name(), indexExt)
		if !ok {
			continue
		}
		data, err := readStoreFile(s.path(indexDir, e.Name()))
		if err != nil {
			s.log.Warn("prune: leaving an unreadable index and its pack alone", "pack", pid, "err", err)
			continue
		}
		entries, size, err := format.DecodeIndex(data)
		if err != nil {
			s.log.Warn("prune: leaving a damaged index and its pack alone", "pack", pid, "err", err)
			continue
		}
		fi, err := os.Lstat(s.path(packsDir, pid+packExt))
		packBad := err != nil || !fi.Mode().IsRegular() || fi.Size() != size
		rot := damage[pid]
		var live, referenced int64
		for _, b := range entries {
			if used[b.ID] {
				referenced++
				if !kept[b.ID] && !rot[b.ID] {
					live += int64(b.Len)
				}
			}
		}
		switch {
		case packBad && referenced > 0:
			s.log.Warn("prune: leaving a missing or damaged pack that versions refer to (kubekeep repair drops it)", "pack", pid)
			continue
		case live == 0:
			res.PacksDeleted++
			res.BytesFreed += size
			if !dryRun {
				if err := s.removePack(pid); err != nil {
					return res, err
				}
			}
			continue
		case float64(size-live) >= repackThreshold*float64(size):
			rewrite = append(rewrite, plan{pid, entries, live, size})
		}
		for _, b := range entries {
			if used[b.ID] && !rot[b.ID] {
				kept[b.ID] = true
			}
		}
	}
	for _, p := range rewrite {
		res.PacksRewritten++
		res.BytesFreed += p.size - p.live
		if dryRun {
			continue
		}
		if err := s.repack(ctx, p.id, p.entries, used); err != nil {
			return res, err
		}
	}
	s.mu.Lock()
	s.idx = nil
	s.mu.Unlock()
	return res, nil
}

// removePack removes a pack's index, then the pack: a crash in between
// leaves a pack without index, which the next Lock removes.
func (s *Store) removePack(id string) error {
	if err := os.Remove(s.path(indexDir, id+indexExt)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing pack %s: %w", id, err)
	}
	if err := syncDir(s.path(indexDir)); err != nil {
		return err
	}
	if err := os.Remove(s.path(packsDir, id+packExt)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing pack %s: %w", id, err)
	}
	return syncDir(s.path(packsDir))
}

// repack copies the used blobs of a pack into a new pack, checking each
// against its ID on the way (rot is not copied: a damaged blob is left out
// and stays reported by verify as missing), then deletes the old pack.
func (s *Store) repack(ctx context.Context, id string, entries []format.IndexEntry, used map[format.ID]bool) error {
	f, err := openStoreFile(s.path(packsDir, id+packExt))
	if err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	defer f.Close()
	x, err := s.index()
	if err != nil {
		return err
	}
	w := &packer{s: s, x: x, spaceLeft: 1 << 62}
	br := bufio.NewReaderSize(f, 1<<20)
	var buf []byte
	for _, b := range entries {
		if cap(buf) < int(b.Len) {
			buf = make([]byte, b.Len)
		}
		buf = buf[:b.Len]
		if _, err := io.ReadFull(br, buf); err != nil {
			w.abort()
			return fmt.Errorf("prune: reading pack %s: %w", id, err)
		}
		if !used[b.ID] {
			continue
		}
		if format.Sum(buf) != b.ID {
			s.log.Error("prune: blob damaged, not copied (verify reports what it breaks)", "pack", id, "blob", b.ID.Short())
			continue
		}
		if err := w.put(b.ID, buf); err != nil {
			w.abort()
			return fmt.Errorf("prune: rewriting pack %s: %w", id, err)
		}
	}
	if err := w.finish(); err != nil {
		w.abort()
		return fmt.Errorf("prune: rewriting pack %s: %w", id, err)
	}
	return s.removePack(id)
}

package tiers

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/rsyncish"
	"github.com/kubekeep/kubekeep/rsyncish/backend"
	"github.com/kubekeep/kubekeep/tiers/oss"
	"github.com/kubekeep/kubekeep/tiers/s3"
)

// PruneOptions tune a tier's prune.
type PruneOptions struct {
	Tier      string
	Retention config.OffsiteRetention
	DryRun    bool
	// Store is the local store the tier copies: nothing it holds is
	// deleted from the tier (the next sync would upload it again, and
	// the versions it is going to upload may need it).
	Store *backend.Local
	// Reader is the tier opened with an identity (nil: none): it reads
	// the manifests and indexes of versions whose references were never
	// recorded on this machine and that the store no longer has.
	Reader backend.Backend
	// LockWait bounds the wait for running syncs of the tier (0: as long
	// as ctx lasts).
	LockWait time.Duration
	Logger   *slog.Logger
}

// PruneResult is what `kubekeep offsite prune -o json` prints.
type PruneResult struct {
	Tier            string `json:"tier"`
	DryRun          bool   `json:"dryRun"`
	VersionsKept    int    `json:"versionsKept"`
	VersionsDeleted int    `json:"versionsDeleted"`
	ObjectsDeleted  int    `json:"objectsDeleted"`
	BytesDeleted    int64  `json:"bytesDeleted"`
	// LockedSkipped counts objects the bucket refused to delete because
	// their Object Lock / WORM retention still runs (the next prune
	// after it ends deletes them).
	LockedSkipped int                   `json:"lockedSkipped"`
	Kept          []rsyncish.KeepReason `json:"kept"`
	Deleted       []string              `json:"deleted"` // versions
}

// IsLocked says whether err is a tier's refusal to delete an object whose
// retention runs.
func IsLocked(err error) bool { return errors.Is(err, s3.ErrLocked) || errors.Is(err, oss.ErrLocked) }

// ErrNoRefs: versions in the tier whose references this machine never
// recorded, that the store no longer has, and no identity to read them.
var ErrNoRefs = errors.New("no reference record")

// Prune applies the tier's retention to the versions it holds and
// deletes what no kept version needs. See "Retention" in the package doc.
func Prune(ctx context.Context, t *Tier, opts PruneOptions) (PruneResult, error) {
	res := PruneResult{Tier: opts.Tier, DryRun: opts.DryRun, Kept: []rsyncish.KeepReason{}, Deleted: []string{}}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := opts.Retention
	if r.KeepLast <= 0 && r.KeepDaily <= 0 && r.KeepWeekly <= 0 && r.KeepMonthly <= 0 {
		return res, fmt.Errorf("tier %s: its retention keeps nothing: set retention {keepLast, keepDaily, keepWeekly, keepMonthly} in its offsite entry", opts.Tier)
	}
	cat := t.Catalogue
	if cat == nil {
		return res, fmt.Errorf("tier %s: prune runs on the master, with its store's catalogue of the tier", opts.Tier)
	}
	lctx := ctx
	if opts.LockWait > 0 {
		var cancel context.CancelFunc
		lctx, cancel = context.WithTimeout(ctx, opts.LockWait)
		defer cancel()
	}
	unlock, err := cat.lock(lctx, true)
	if err != nil {
		return res, fmt.Errorf("tier %s: %w", opts.Tier, err)
	}
	defer unlock()
	// What the tier holds, from the bucket itself: a lost catalogue, a
	// killed sync's unrecorded uploads and objects the tier lost all show.
	if _, err := cat.Reconcile(ctx, t.Sealed); err != nil {
		return res, fmt.Errorf("tier %s: list: %w", opts.Tier, err)
	}
	local := map[backend.FileType]map[string]bool{}
	for _, ft := range backend.Types {
		local[ft] = map[string]bool{}
		if err := opts.Store.List(ctx, ft, func(fi backend.FileInfo) error { local[ft][fi.Name] = true; return nil }); err != nil {
			return res, fmt.Errorf("tier %s: list the store: %w", opts.Tier, err)
		}
	}
	held := map[backend.FileType]map[string]int64{}
	for _, ft := range backend.Types {
		held[ft] = cat.Handles(ft)
	}
	refs, err := tierRefs(ctx, cat, held, opts)
	if err != nil {
		return res, fmt.Errorf("tier %s: %w", opts.Tier, err)
	}

	// The policy, over the versions the tier holds.
	var vs []rsyncish.VersionInfo
	for id, vr := range refs {
		_, verified := held[backend.VerifiedFile][id]
		vs = append(vs, rsyncish.VersionInfo{ID: id, Time: vr.Time, Verified: verified})
	}
	sort.Slice(vs, func(i, j int) bool {
		if !vs[i].Time.Equal(vs[j].Time) {
			return vs[i].Time.Before(vs[j].Time)
		}
		return vs[i].ID < vs[j].ID
	})
	keep := rsyncish.RetentionPolicy{KeepLast: r.KeepLast, KeepDaily: r.KeepDaily, KeepWeekly: r.KeepWeekly, KeepMonthly: r.KeepMonthly}.Keep(vs)
	// And what kept versions read, transitively (a journal version's base).
	todo := make([]string, 0, len(keep))
	for id := range keep {
		todo = append(todo, id)
	}
	sort.Strings(todo)
	for len(todo) > 0 {
		id := todo[0]
		todo = todo[1:]
		for _, base := range refs[id].Requires {
			if _, there := refs[base]; !there {
				continue
			}
			if _, kept := keep[base]; !kept {
				todo = append(todo, base)
			}
			keep[base] = append(keep[base], "base of "+id)
		}
	}

	deleted := map[string]bool{} // handle strings
	var remove func(h backend.Handle, size int64) (bool, error)
	remove = func(h backend.Handle, size int64) (bool, error) {
		if opts.DryRun {
			res.ObjectsDeleted++
			res.BytesDeleted += size
			deleted[h.String()] = true
			return true, nil
		}
		err := t.Sealed.Remove(ctx, h)
		switch {
		case err == nil, errors.Is(err, backend.ErrNotFound):
		case IsLocked(err):
			res.LockedSkipped++
			log.Debug("still locked; kept", "tier", opts.Tier, "object", h.String())
			return false, nil
		default:
			return false, err
		}
		res.ObjectsDeleted++
		res.BytesDeleted += size
		deleted[h.String()] = true
		return true, nil
	}
	finish := func(err error) (PruneResult, error) {
		if !opts.DryRun && len(deleted) > 0 {
			if ferr := cat.forget(deleted); ferr != nil && err == nil {
				err = ferr
			}
		}
		if err != nil {
			return res, fmt.Errorf("tier %s: %w", opts.Tier, err)
		}
		return res, nil
	}

	// Versions first (manifests, then drill marks): the tier never holds a
	// manifest whose data is gone. A manifest still locked keeps its
	// version, and what it needs, in the tier. Dependents go before their
	// bases, so a locked one keeps its base, and a prune stopped between
	// two removals leaves no version whose base is gone.
	live := map[string]bool{}
	// needed: a base the policy drops that a version staying reads, with
	// why (keep already holds what the policy's versions read).
	needed := map[string][]string{}
	stays := func(id, why string) {
		live[id] = true
		for _, base := range refs[id].Requires {
			if _, kept := keep[base]; !kept {
				needed[base] = append(needed[base], why+id)
			}
		}
	}
	for _, v := range rsyncish.DependentsFirst(vs, func(id string) []string { return refs[id].Requires }) {
		reasons, ok := keep[v.ID]
		if !ok && len(needed[v.ID]) > 0 {
			reasons, ok = needed[v.ID], true
		}
		if ok {
			res.Kept = append(res.Kept, rsyncish.KeepReason{ID: v.ID, Time: v.Time, Reasons: reasons})
			stays(v.ID, "base of ")
			continue
		}
		if !opts.DryRun {
			if err := cat.markPruned(v.ID); err != nil {
				return finish(err)
			}
		}
		name := v.ID + ".manifest"
		ok, err := remove(backend.Handle{Type: backend.ManifestFile, Name: name}, held[backend.ManifestFile][name])
		if err != nil {
			return finish(err)
		}
		if !ok {
			stays(v.ID, "base of locked ")
			continue
		}
		res.VersionsDeleted++
		res.Deleted = append(res.Deleted, v.ID)
		log.Info("pruned version from the tier", "tier", opts.Tier, "version", v.ID, "time", v.Time, "dryRun", opts.DryRun)
	}
	// Reported oldest first, as the policy lists them.
	pos := make(map[string]int, len(vs))
	for i, v := range vs {
		pos[v.ID] = i
	}
	sort.Slice(res.Kept, func(i, j int) bool { return pos[res.Kept[i].ID] < pos[res.Kept[j].ID] })
	sort.Slice(res.Deleted, func(i, j int) bool { return pos[res.Deleted[i]] < pos[res.Deleted[j]] })
	res.VersionsKept = len(res.Kept)
	for name, size := range held[backend.VerifiedFile] {
		if !live[name] {
			if _, err := remove(backend.Handle{Type: backend.VerifiedFile, Name: name}, size); err != nil {
				return finish(err)
			}
		}
	}

	// Data: packs (index first) no live version needs and the store does
	// not hold; journal segments below every live version's snapshot.
	need := map[string]bool{}
	all := false
	var cutoff int64
	for id := range live {
		vr := refs[id]
		all = all || vr.Incomplete
		for _, p := range vr.Packs {
			need[p] = true
		}
		if vr.SnapshotRevision > 0 && (cutoff == 0 || vr.SnapshotRevision < cutoff) {
			cutoff = vr.SnapshotRevision
		}
	}
	if len(live) == 0 {
		all = true // never reached with a policy that keeps something
	}
	if all {
		log.Warn("a kept version's blocks were not all found in packs when recorded: no pack is deleted", "tier", opts.Tier)
	} else {
		for _, ft := range []backend.FileType{backend.IndexFile, backend.PackFile} {
			for name, size := range held[ft] {
				p, ok := packOf(ft, name)
				if !ok || need[p] || local[backend.PackFile][p+".pack"] || local[backend.IndexFile][p+".idx"] {
					continue
				}
				if _, indexed := held[backend.IndexFile][p+".idx"]; ft == backend.PackFile && indexed && !deleted[backend.Handle{Type: backend.IndexFile, Name: p + ".idx"}.String()] {
					res.LockedSkipped++ // its index is still locked: the pack goes with it, later
					continue
				}
				if _, err := remove(backend.Handle{Type: ft, Name: name}, size); err != nil {
					return finish(err)
				}
			}
		}
	}
	if cutoff > 0 {
		for name, size := range held[backend.JournalFile] {
			last, ok := segmentLast(name)
			if !ok || last >= uint64(cutoff) || local[backend.JournalFile][name] {
				continue
			}
			if _, err := remove(backend.Handle{Type: backend.JournalFile, Name: name}, size); err != nil {
				return finish(err)
			}
		}
	}
	return finish(nil)
}

// segmentLast is the last revision of a delta journal segment's name
// ("etcd-deltas/<first>-<last>-<unixnano>.seg").
func segmentLast(name string) (uint64, bool) {
	j, file, ok := strings.Cut(name, "/")
	if !ok || j != versionread.DeltaJournal {
		return 0, false
	}
	base, ok := strings.CutSuffix(file, ".seg")
	parts := strings.Split(base, "-")
	if !ok || len(parts) != 3 {
		return 0, false
	}
	last, err := strconv.ParseUint(parts[1], 10, 64)
	return last, err == nil
}

// tierRefs is the references of every version the tier holds: as Sync
// recorded them; else from the store's manifest (a version uploaded by a
// kubekeep that did not record them); else from the tier's own manifest
// and indexes, read with the identity (opts.Reader).
func tierRefs(ctx context.Context, cat *Catalogue, held map[backend.FileType]map[string]int64, opts PruneOptions) (map[string]*VersionRefs, error) {
	out := map[string]*VersionRefs{}
	var localBP, tierBP blobPacks
	var lacking []string
	tierPack := func(p string) bool { _, ok := held[backend.PackFile][p+".pack"]; return ok }
	for name := range held[backend.ManifestFile] {
		id, ok := versionOf(backend.ManifestFile, name)
		if !ok {
			continue
		}
		if vr := cat.Refs(id); vr != nil {
			out[id] = vr
			continue
		}
		h := backend.Handle{Type: backend.ManifestFile, Name: name}
		var vr VersionRefs
		data, err := backend.LoadAll(ctx, opts.Store, h)
		switch {
		case err == nil:
			if localBP == nil {
				if localBP, err = readBlobPacks(ctx, opts.Store, tierPack); err != nil {
					return nil, err
				}
			}
			vr, err = refsOf(data, localBP)
		case (errors.Is(err, fs.ErrNotExist) || errors.Is(err, backend.ErrNotFound)) && opts.Reader != nil:
			if data, err = backend.LoadAll(ctx, opts.Reader, h); err != nil {
				return nil, err
			}
			if tierBP == nil {
				if tierBP, err = readBlobPacks(ctx, opts.Reader, tierPack); err != nil {
					return nil, err
				}
			}
			vr, err = refsOf(data, tierBP)
		case errors.Is(err, fs.ErrNotExist) || errors.Is(err, backend.ErrNotFound):
			lacking = append(lacking, id)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("version %s: %w", id, err)
		}
		if err := cat.AddRefs(vr); err != nil {
			return nil, err
		}
		out[id] = &vr
	}
	if len(lacking) > 0 {
		sort.Strings(lacking)
		return nil, fmt.Errorf("%w of what versions %s need in the tier (uploaded before kubekeep recorded it, or this store's offsite state was lost), and the store no longer has them: nothing was deleted; run prune again with --identity FILE to read them from the tier",
			ErrNoRefs, strings.Join(lacking, ", "))
	}
	return out, nil
}

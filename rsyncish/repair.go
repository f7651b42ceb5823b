package rsyncish

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// RepairOptions tune Repair.
type RepairOptions struct {
	// ReadData re-hashes every pack, not only those known to be damaged
	// (missing, of the wrong size, with a damaged index, or listed in the
	// damage record by an earlier verify --read-data).
	ReadData bool
}

// RepairResult says what Repair did and what stays damaged.
type RepairResult struct {
	// Config says what was wrong with config.json and what was written
	// instead; empty when it was sound.
	Config       string       `json:"config,omitempty"`
	PacksChecked int          `json:"packsChecked"`
	Packs        []PackRepair `json:"packs"`
	// BlobsSalvaged were copied out of damaged packs into new ones;
	// BlobsLost could not be read back from them.
	BlobsSalvaged int `json:"blobsSalvaged"`
	BlobsLost     int `json:"blobsLost"`
	// Damaged are the versions that still refer to data the store does not
	// hold. Their undamaged files still restore by path; the rest comes
	// back only if a later backup stores the very same content again (an
	// unchanged file does). Verify keeps naming them until they heal or
	// are pruned.
	Damaged []DamagedVersion `json:"damaged"`
	// MarksDropped are the verification marks of damaged versions, removed
	// so that "newest verified" never names a version that cannot be
	// restored whole.
	MarksDropped []string `json:"marksDropped,omitempty"`
}

// Clean reports whether the store is whole after the repair.
func (r *RepairResult) Clean() bool { return len(r.Damaged) == 0 }

// PackRepair is one damaged pack and what became of it: its readable blobs
// went to a new pack, then it and its index were removed.
type PackRepair struct {
	Pack    string `json:"pack"`
	Problem string `json:"problem"`
	// Salvaged blobs were copied to a new pack; Spare ones had a good copy
	// elsewhere already; Lost ones could not be read back from it (whether
	// a version lost data is RepairResult.Damaged).
	Salvaged int `json:"salvaged"`
	Spare    int `json:"spare"`
	Lost     int `json:"lost"`
}

// DamagedVersion is a version that refers to data the store does not hold.
type DamagedVersion struct {
	ID string `json:"id"`
	// Manifest is set when the manifest itself cannot be read.
	Manifest string `json:"manifest,omitempty"`
	// Paths are the host paths (or stream names) that lost data.
	Paths []string `json:"paths,omitempty"`
	Blobs int      `json:"blobs"`
	// Requires is what the version requires (Requirement) that is lost: a
	// stream of a damaged version, or journal revisions a segment of which
	// is missing or damaged.
	Requires []string `json:"requires,omitempty"`
}

// Repair makes the store consistent again after damage, like restic's
// repair index and repair packs: a damaged config.json is written again
// from what the manifests record; every damaged pack (missing, of the wrong
// size, with a damaged index, holding blobs verify found rotten, or with
// ReadData any blob that does not hash right) has its readable blobs
// copied to a new pack, each checked against its hash, and is then removed
// with its index, so no index refers to data the store cannot produce and
// the next backup stores what was lost again. It then lists the versions
// that still lack data, or whose requirements (Require) lack it: a
// required version's stream lost a block, a required journal segment is
// missing or damaged; and drops their verification marks. The caller
// holds the lock; Repair holds the read lock exclusively, as Prune does.
// Like every writer, it is crash-safe: a new pack and its index are durable
// before the old index goes.
func (s *Store) Repair(ctx context.Context, opts RepairOptions) (*RepairResult, error) {
	if err := s.holdsLock(); err != nil {
		return nil, err
	}
	release, err := s.exclusive(ctx)
	if err != nil {
		return nil, fmt.Errorf("repair: %w", err)
	}
	defer release()
	res := &RepairResult{Packs: []PackRepair{}, Damaged: []DamagedVersion{}}
	if res.Config, err = s.rebuildConfig(); err != nil {
		return res, err
	}
	damage, _, err := s.readDamage()
	if err != nil {
		s.log.Warn("repair: the damage record is unreadable; checking every pack", "err", err)
		opts.ReadData = true
	}
	x, err := s.loadIndex()
	if err != nil {
		return nil, err
	}
	idxEnts, err := readStoreDir(s.path(indexDir))
	if err != nil {
		return nil, fmt.Errorf("repair: %w", err)
	}
	type todo struct {
		pr      PackRepair
		entries []format.IndexEntry
	}
	var fixes []todo
	damaged := map[string]bool{}
	for _, e := range idxEnts {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		pid, ok := strings.CutSuffix(e.Name(), indexExt)
		if !ok {
			continue
		}
		res.PacksChecked++
		pr, entries := s.diagnosePack(pid, damage[pid], opts.ReadData)
		if pr.Problem != "" {
			fixes = append(fixes, todo{pr, entries})
			damaged[pid] = true
		}
	}
	// No copy in a damaged pack counts as good any more: a blob is spare
	// only with a copy in a healthy pack (or one salvaged meanwhile).
	x.markBad(damaged)
	pk := &packer{s: s, x: x, spaceLeft: 1 << 62}
	var fixed []PackRepair
	for _, f := range fixes {
		if err := s.salvage(ctx, pk, &f.pr, f.entries); err != nil {
			pk.abort()
			return res, err
		}
		fixed = append(fixed, f.pr)
	}
	// New packs are durable with their indexes before any old one goes.
	if err := pk.finish(); err != nil {
		pk.abort()
		return res, fmt.Errorf("repair: %w", err)
	}
	for _, pr := range fixed {
		if err := s.removePack(pr.Pack); err != nil {
			return res, fmt.Errorf("repair: %w", err)
		}
		s.log.Warn("repair: replaced a damaged pack", "pack", pr.Pack, "problem", pr.Problem, "salvaged", pr.Salvaged, "spare", pr.Spare, "lost", pr.Lost)
		res.Packs = append(res.Packs, pr)
		res.BlobsSalvaged += pr.Salvaged
		res.BlobsLost += pr.Lost
	}
	if err := s.writeDamage(nil); err != nil {
		return res, err
	}
	s.mu.Lock()
	s.idx = nil
	s.mu.Unlock()
	if err := s.listDamaged(ctx, res); err != nil {
		return res, err
	}
	return res, nil
}

// diagnosePack says what is wrong with one pack ("" when nothing) and
// returns the blob list to salvage from, read from a damaged index as well
// as can be.
func (s *Store) diagnosePack(pid string, rot map[format.ID]bool, readData bool) (PackRepair, []format.IndexEntry) {
	pr := PackRepair{Pack: pid}
	data, err := readStoreFile(s.path(indexDir, pid+indexExt))
	if err != nil {
		pr.Problem = "index unreadable: " + err.Error()
		return pr, nil
	}
	entries, size, err := format.DecodeIndex(data)
	if err != nil {
		pr.Problem = "index damaged: " + err.Error()
		return pr, format.SalvageIndex(data)
	}
	fi, err := os.Lstat(s.path(packsDir, pid+packExt))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		pr.Problem = "pack missing"
	case err != nil:
		pr.Problem = "pack: " + err.Error()
	case !fi.Mode().IsRegular():
		pr.Problem = "pack is " + fileKind(fi.Mode())
	case fi.Size() != size:
		pr.Problem = fmt.Sprintf("pack is %d bytes, its index says %d", fi.Size(), size)
	case len(rot) > 0:
		pr.Problem = fmt.Sprintf("%d blob(s) found rotten by verify --read-data", len(rot))
	case readData:
		f, err := openStoreFile(s.path(packsDir, pid+packExt))
		if err != nil {
			pr.Problem = "pack unreadable: " + err.Error()
			break
		}
		defer f.Close()
		var buf []byte
		bad := 0
		for _, b := range entries {
			if cap(buf) < int(b.Len) {
				buf = make([]byte, b.Len)
			}
			buf = buf[:b.Len]
			if _, err := f.ReadAt(buf, int64(b.Off)); err != nil || format.Sum(buf) != b.ID {
				bad++
			}
		}
		if bad > 0 {
			pr.Problem = fmt.Sprintf("%d blob(s) do not match their hash", bad)
		}
	}
	return pr, entries
}

// salvage copies what can be read of a damaged pack's blobs into pk, each
// checked against its ID. Bytes that hash to something else are kept
// under their own hash: the ID in a damaged index may be what rotted, and
// a content-addressed blob is whatever its bytes hash to (one no version
// refers to goes at the next prune).
func (s *Store) salvage(ctx context.Context, pk *packer, pr *PackRepair, entries []format.IndexEntry) error {
	f, err := openStoreFile(s.path(packsDir, pr.Pack+packExt))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("repair: cannot read the damaged pack; its blobs are lost", "pack", pr.Pack, "err", err)
	}
	if f != nil {
		defer f.Close()
	}
	var buf []byte
	for _, b := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		if pk.x.has(b.ID) {
			pr.Spare++
			continue
		}
		if f == nil || b.Len > 1<<30 {
			pr.Lost++
			continue
		}
		if cap(buf) < int(b.Len) {
			buf = make([]byte, b.Len)
		}
		buf = buf[:b.Len]
		if _, err := f.ReadAt(buf, int64(b.Off)); err != nil {
			pr.Lost++
			continue
		}
		id := format.Sum(buf)
		if id == b.ID {
			pr.Salvaged++
		} else {
			pr.Lost++
		}
		if pk.x.has(id) {
			continue
		}
		if err := pk.put(id, buf); err != nil {
			return fmt.Errorf("repair: salvaging pack %s: %w", pr.Pack, err)
		}
	}
	return nil
}

// listDamaged fills res.Damaged with the versions that refer to blobs the
// store does not hold, and drops their verification marks.
func (s *Store) listDamaged(ctx context.Context, res *RepairResult) error {
	x, err := s.index()
	if err != nil {
		return err
	}
	ents, err := readStoreDir(s.path(versionsDir))
	if err != nil {
		return fmt.Errorf("repair: %w", err)
	}
	// lostPaths: damaged version -> its paths that lost data (nil: its
	// manifest); reqs: each version's requirements.
	lostPaths := map[string][]string{}
	reqs := map[string][]Requirement{}
	present := map[string]bool{}
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return err
		}
		vid, ok := strings.CutSuffix(e.Name(), manifestExt)
		if !ok {
			continue
		}
		m, err := s.manifest(vid)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		present[vid] = true
		if err != nil {
			res.Damaged = append(res.Damaged, DamagedVersion{ID: vid, Manifest: err.Error()})
			lostPaths[vid] = nil
			continue
		}
		if len(m.Header.Requires) > 0 {
			reqs[vid] = m.Header.Requires
		}
		dv := DamagedVersion{ID: vid}
		paths := map[string]bool{}
		for _, en := range m.Entries {
			for _, xt := range en.Extents {
				if xt.ID.IsZero() {
					continue
				}
				if l, ok := x.get(xt.ID); ok && !l.bad && uint64(xt.Off)+uint64(xt.Len) <= uint64(l.len) {
					continue
				}
				dv.Blobs++
				paths[en.Path] = true
			}
		}
		if dv.Blobs > 0 {
			dv.Paths = sortedKeys(paths)
			res.Damaged = append(res.Damaged, dv)
			lostPaths[vid] = dv.Paths
		}
	}
	// The versions that require what is lost are damaged as well.
	lostReqs := dependents(lostPaths, reqs)
	for vid, rs := range reqs {
		for _, r := range rs {
			if r.Journal == "" && !present[r.Version] {
				lostReqs[vid] = append(lostReqs[vid], r.String()+": not in the store")
			}
			if r.Journal != "" {
				if err := s.journalReadable(r); err != nil {
					lostReqs[vid] = append(lostReqs[vid], r.String()+": "+err.Error())
				}
			}
		}
	}
	for i := range res.Damaged {
		if rs := lostReqs[res.Damaged[i].ID]; rs != nil {
			res.Damaged[i].Requires = rs
			delete(lostReqs, res.Damaged[i].ID)
		}
	}
	for vid, rs := range lostReqs {
		res.Damaged = append(res.Damaged, DamagedVersion{ID: vid, Requires: rs})
	}
	sort.Slice(res.Damaged, func(i, j int) bool { return res.Damaged[i].ID < res.Damaged[j].ID })
	for _, dv := range res.Damaged {
		err := os.Remove(s.path(verifiedDir, dv.ID))
		if err == nil {
			res.MarksDropped = append(res.MarksDropped, dv.ID)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("repair: dropping the verification mark of damaged version %s: %w", dv.ID, err)
		}
	}
	if len(res.MarksDropped) > 0 {
		return syncDir(s.path(verifiedDir))
	}
	return nil
}

package rsyncish

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// Trimming a journal from the middle.
//
// Prune keeps of a journal only what a kept version needs (a journal
// version: the revisions from its base's snapshot to its own) and a recent
// window for point-in-time reads; the segments in between go (TrimExcept).
// A hole prune made must not look like damage, so each one is recorded in
// a sealed <from>-<to>.trimmed file before the first of its segments is
// removed. The record only explains a hole: it never stands for segments
// (a reader that finds the segments reads them, so a record over segments
// still present, after a crash or in a store pulled back from an off-site
// tier that kept them, changes nothing), and it is not a break (Breaks):
// a chain over a trimmed range fails as over any hole, and the readers
// that explain a failure (verify's gaps, versionread.ChainIntact, a
// point-in-time read) say prune trimmed it. A declared break would
// instead make a tier's copy of the journal, shipped with it, unusable
// for the older versions the tier keeps.
//
// Crash safety: the record is durable (written, fsynced, renamed, the
// directory fsynced) before any segment of its range is removed, so at
// any moment every missing segment in the middle of the journal is
// covered by a record; a crash leaves a record over segments still there,
// which the next prune writes again and removes them. Leading segments
// (before every kept one) need no record: nothing follows them to make a
// hole, as with Trim. Records that no longer lie between segments are
// removed last.

// Range is the journal revisions From..To, both included.
type Range struct {
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
}

// TrimRecord is a recorded hole prune made in a journal: the segments
// holding revisions From..To were removed because no kept version needed
// them, at Time.
type TrimRecord struct {
	From, To uint64
	Time     time.Time
	File     string
}

// TrimResult says what TrimExcept removed (or, dry, would remove).
type TrimResult struct {
	Segments int   // segment files removed
	Bytes    int64 // their size
	// Holes are the ranges removed from between kept segments, each
	// recorded (TrimRecord); leading segments removed are not in it.
	Holes []Range
	// Skipped are ranges TrimExcept left although nothing needs them,
	// because a hole in them is no trim's (a lost segment): verify keeps
	// reporting it as it is.
	Skipped []Range
}

const trimExt = ".trimmed"

func trimName(from, to uint64) string { return rangeRecordName(from, to, trimExt) }

// TrimExcept removes every segment holding no revision in any of keep,
// except the last one (the tail, which the journal's writer continues),
// recording each hole it makes in
// the middle (see above). With dryRun it removes and records nothing and
// says what it would do. t is the time recorded.
func (j *Journal) TrimExcept(keep []Range, t time.Time, dryRun bool) (TrimResult, error) {
	var res TrimResult
	segs, err := j.List()
	if err != nil || len(segs) == 0 {
		return res, err
	}
	breaks, _ := j.Breaks() // a damaged one: verify reports it; its range counts as a hole here
	old, _ := j.Trimmed()
	needed := func(si SegmentInfo) bool {
		for _, k := range keep {
			if si.Last >= k.From && si.First <= k.To {
				return true
			}
		}
		return false
	}
	// The last segment stays whatever keep says: the journal's writer
	// continues from it (a progress mark there is the tail it vouches for).
	lastKept := len(segs) - 1
	type run struct {
		segs     []SegmentInfo
		hole     Range // revisions no kept segment holds (middle runs)
		leading  bool
		hasHoles bool
	}
	var runs []run
	var cur []SegmentInfo
	var covered uint64
	seenKept := false
	explained := func(from, to uint64) bool { // by a break or an earlier trim
		return covers(from, to, breakRanges(breaks), trimRanges(old))
	}
	for i, si := range segs {
		if i < lastKept && !needed(si) {
			cur = append(cur, si)
			continue
		}
		if len(cur) > 0 {
			r := run{segs: cur, leading: !seenKept}
			if !r.leading {
				r.hole = Range{From: covered + 1, To: si.First - 1}
				c := covered
				for _, x := range append(append([]SegmentInfo(nil), cur...), si) {
					if x.First > c+1 && !explained(c+1, x.First-1) {
						r.hasHoles = true
					}
					c = max(c, x.Last)
				}
			}
			runs = append(runs, r)
			cur = nil
		}
		seenKept = true
		covered = max(covered, si.Last)
	}
	var remove []SegmentInfo
	for _, r := range runs {
		if !r.leading && r.hasHoles {
			res.Skipped = append(res.Skipped, Range{From: r.segs[0].First, To: r.segs[len(r.segs)-1].Last})
			continue
		}
		if !r.leading && r.hole.To >= r.hole.From {
			res.Holes = append(res.Holes, r.hole)
			if !dryRun {
				// Durable before any segment of the range goes.
				if err := j.recordTrim(r.hole, t); err != nil {
					return res, err
				}
			}
		}
		remove = append(remove, r.segs...)
	}
	for _, si := range remove {
		if !dryRun {
			if err := os.Remove(filepath.Join(j.dir, si.File)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return res, fmt.Errorf("journal %s: %w", j.name, err)
			}
		}
		res.Segments++
		res.Bytes += si.Size
	}
	if dryRun || len(remove) == 0 {
		return res, nil
	}
	if err := syncDir(j.dir); err != nil {
		return res, err
	}
	return res, j.dropStaleRecords(res.Holes)
}

// recordTrim writes the record of a hole about to be made.
func (j *Journal) recordTrim(r Range, t time.Time) error {
	if err := j.writeRangeRecord(trimExt, r.From, r.To, t); err != nil {
		return fmt.Errorf("journal %s: recording the trim of revisions %d-%d: %w", j.name, r.From, r.To, err)
	}
	return nil
}

// dropStaleRecords removes the trim records and breaks that no longer lie
// between segments (all before the first one), and the trim records a
// new hole of holes holds whole (a trim next to an earlier one).
func (j *Journal) dropStaleRecords(holes []Range) error {
	segs, err := j.List()
	if err != nil || len(segs) == 0 {
		return err
	}
	first := segs[0].First
	recs, _ := j.Trimmed()
	var files []string
	for _, rec := range recs {
		stale := rec.To < first
		for _, h := range holes {
			if (h.From != rec.From || h.To != rec.To) && h.From <= rec.From && h.To >= rec.To {
				stale = true
			}
		}
		if stale {
			files = append(files, rec.File)
		}
	}
	breaks, _ := j.Breaks()
	for _, b := range breaks {
		if b.To < first {
			files = append(files, b.File)
		}
	}
	for _, f := range files {
		if err := os.Remove(filepath.Join(j.dir, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("journal %s: %w", j.name, err)
		}
	}
	if len(files) > 0 {
		return syncDir(j.dir)
	}
	return nil
}

// Trimmed lists the holes prune recorded, ordered by revision, each
// checked against its checksum and its name (a damaged one is returned as
// an error naming it, after the good ones).
func (j *Journal) Trimmed() ([]TrimRecord, error) {
	recs, err := j.rangeRecords(trimExt, "trim")
	out := make([]TrimRecord, len(recs))
	for i, r := range recs {
		out[i] = TrimRecord(r)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].From < out[b].From })
	return out, err
}

// TrimmedOverlapping returns the first recorded trim holding a revision in
// from..to, if any.
func TrimmedOverlapping(recs []TrimRecord, from, to uint64) (TrimRecord, bool) {
	for _, r := range recs {
		if r.To >= from && r.From <= to {
			return r, true
		}
	}
	return TrimRecord{}, false
}

// TrimCovers says whether the hole from..to is explained by trims alone,
// or by trims and declared breaks together (a restart inside a range
// prune trimmed), with at least one trim in it.
func TrimCovers(recs []TrimRecord, breaks []Break, from, to uint64) bool {
	if _, ok := TrimmedOverlapping(recs, from, to); !ok {
		return false
	}
	return covers(from, to, breakRanges(breaks), trimRanges(recs))
}

func breakRanges(bs []Break) []Range {
	out := make([]Range, len(bs))
	for i, b := range bs {
		out[i] = Range{From: b.From, To: b.To}
	}
	return out
}

func trimRanges(rs []TrimRecord) []Range {
	out := make([]Range, len(rs))
	for i, r := range rs {
		out[i] = Range{From: r.From, To: r.To}
	}
	return out
}

// covers says whether the ranges of sets together hold every revision of
// from..to.
func covers(from, to uint64, sets ...[]Range) bool {
	var all []Range
	for _, s := range sets {
		all = append(all, s...)
	}
	sort.Slice(all, func(a, b int) bool { return all[a].From < all[b].From })
	next := from
	for _, r := range all {
		if r.From > next {
			break
		}
		if r.To >= next {
			if r.To >= to {
				return true
			}
			next = r.To + 1
		}
	}
	return false
}

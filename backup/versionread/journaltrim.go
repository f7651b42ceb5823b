package versionread

import (
	"fmt"
	"time"

	"github.com/kubekeep/kubekeep/rsyncish"
)

// TrimmedChain explains a chain from..to that failed (err) over a hole
// prune made: prune trimmed those revisions because no version it kept
// needed them. Other errors come back as they are.
func TrimmedChain(j *rsyncish.Journal, from, to int64, err error) error {
	if err == nil || to <= from {
		return err
	}
	recs, _ := j.Trimmed()
	r, ok := rsyncish.TrimmedOverlapping(recs, uint64(from)+1, uint64(to))
	if !ok {
		return err
	}
	return fmt.Errorf("prune trimmed revisions %d to %d of the delta journal on %s (no version it kept needed them): %w",
		r.From, r.To, r.Time.UTC().Format(time.RFC3339), err)
}

// TrimmedAt explains a point-in-time replay from a snapshot at afterRev
// to untilRev or at (as rsyncish.Journal.Needed picks the segments) that
// failed with err: when the segments it reads have a hole prune made, the
// error says so, with the times the journal reaches before and after the
// hole and the versions around it (one of them can be read instead).
// Any other error comes back as it is.
func TrimmedAt(s *rsyncish.Store, afterRev, untilRev int64, at time.Time, err error) error {
	if err == nil {
		return nil
	}
	j, jerr := s.Journal(DeltaJournal)
	if jerr != nil {
		return err
	}
	recs, _ := j.Trimmed()
	if len(recs) == 0 {
		return err
	}
	segs, lerr := j.Needed(uint64(max(afterRev, 0)), uint64(max(untilRev, 0)), at)
	if lerr != nil {
		return err
	}
	covered := uint64(max(afterRev, 0))
	var before time.Time
	for _, si := range segs {
		if si.First > covered+1 {
			r, ok := rsyncish.TrimmedOverlapping(recs, covered+1, si.First-1)
			if !ok {
				return err
			}
			return trimmedAtError(s, r, before, si.Time, err)
		}
		covered, before = max(covered, si.Last), si.Time
	}
	return err
}

func trimmedAtError(s *rsyncish.Store, r rsyncish.TrimRecord, before, after time.Time, err error) error {
	msg := fmt.Sprintf("prune trimmed the etcd delta journal from revision %d to %d on %s, because no version it kept needed it", r.From, r.To, r.Time.UTC().Format(time.RFC3339))
	if !before.IsZero() && !after.IsZero() {
		msg += fmt.Sprintf(": no moment between %s and %s can be replayed", before.UTC().Format(time.RFC3339), after.UTC().Format(time.RFC3339))
	}
	var prev, next *rsyncish.VersionInfo
	if vs, verr := s.Versions(); verr == nil {
		for i := range vs {
			src, ok := EtcdSourceOf(vs[i])
			switch {
			case !ok:
			case src.Revision < int64(r.From):
				prev = &vs[i]
			case src.Revision >= int64(r.To) && next == nil:
				next = &vs[i]
			}
		}
	}
	name := func(v *rsyncish.VersionInfo) string {
		return fmt.Sprintf("%s (%s)", v.ID, v.Time.UTC().Format(time.RFC3339))
	}
	switch {
	case prev != nil && next != nil:
		msg += fmt.Sprintf("; the nearest versions are %s before it and %s after it", name(prev), name(next))
	case prev != nil:
		msg += fmt.Sprintf("; the nearest version is %s, before it", name(prev))
	case next != nil:
		msg += fmt.Sprintf("; the nearest version is %s, after it", name(next))
	}
	return fmt.Errorf("%s (%w)", msg, err)
}

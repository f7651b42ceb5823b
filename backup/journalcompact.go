package backup

import (
	"fmt"
	"log/slog"

	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// Compacting the delta journal.
//
// The delta stream makes each change durable within seconds, so it writes
// a segment every flush that saw a change: on a kubeadm control plane,
// whose components renew their leases every 2 to 10 s, ~20,000–40,000
// small files a day, each listed by every journal version, every `get` of
// one, verify and the drill (with 40,000, `kubekeep get` of latest took
// 301 ms instead of 49). The agent
// merges them: each journal version, once it has checked the journal up
// to the previous version, replaces the runs of small segments between the
// version before that and the previous one by one segment per run of up to
// compactBytes (rsyncish.Journal.Replace). The journal then holds about a
// file per version and per MiB of changes, whatever the flush cadence.
//
// A merged segment holds the events of the segments it replaces, each with
// its own time, from the first one's start to the last one's end, so a
// replay, `--at` and a chain read it as they read the run: the progress
// marks inside the run said only that nothing changed between events,
// which the merged segment's range says too. A catch-up segment (a
// restarted watch's, whose events' times are uncertain) is never merged,
// nor is the tail (the stream continues from it), nor what follows a gap.
//
// Journal key indexes of earlier versions name the segments they were
// written against; a name that is gone is found again by its revision
// (JournalValues), which is what the name stood for.

// compactBytes bounds a merged segment (about the stream's own
// MaxSegmentBytes, so one change read through a journal key index still
// reads at most about a MiB); a segment of at least half of it stays as
// it is.
const compactBytes = 1 << 20

// compactJournal merges the runs of small segments of segs (j's listing)
// whose revisions end in (from, to] and before the journal's tail. It
// returns the new name of each segment it replaced, and how many went.
func compactJournal(j *rsyncish.Journal, segs []rsyncish.SegmentInfo, from, to int64, log *slog.Logger) (map[string]string, int, error) {
	var tail uint64
	for _, si := range segs {
		tail = max(tail, si.Last)
	}
	renamed := map[string]string{}
	removed := 0
	var run []rsyncish.SegmentInfo
	var runSegs []*snapread.Segment
	var runBytes int64
	flush := func() error {
		defer func() { run, runSegs, runBytes = nil, nil, 0 }()
		if len(run) < 2 {
			return nil
		}
		lastSeg := run[len(run)-1]
		if lastSeg.First == run[0].First {
			return nil // one start (leftovers dominators did not settle): left as is
		}
		merged := mergeSegments(runSegs)
		si, gone, err := j.Replace(run, merged.Encode(), lastSeg.Time)
		if err != nil {
			return err
		}
		for _, o := range run {
			renamed[o.File] = si.File
		}
		if gone {
			removed += len(run)
		}
		log.Debug("etcd delta journal: segments merged", "segments", len(run), "into", si.File, "removed", gone)
		return nil
	}
	inWindow := func(si rsyncish.SegmentInfo) bool {
		return int64(si.Last) > from && int64(si.Last) <= to && si.Last < tail
	}
	dominator := dominators(segs)
	keepers := map[string]*snapread.Segment{}
	for i, si := range segs {
		if d := dominator[i]; d >= 0 {
			// A crash's leftover of a merge, or what a merge left while a
			// reader held the read lock: another segment holds its
			// revisions, as of no earlier. Dropped wherever it is, but at
			// the tail.
			if si.Last < tail {
				// By names alone, one revision's change and the progress
				// mark after it look alike: the keeper's content must hold
				// every change of the one dropped.
				if ok, err := holdsAll(j, keepers, segs[d], si); err != nil || !ok {
					if err != nil {
						log.Warn("etcd delta journal: a segment another seems to cover stays", "segment", si.File, "cover", segs[d].File, "err", err)
					} else {
						log.Warn("etcd delta journal: a segment another seems to cover holds changes that one does not; it stays", "segment", si.File, "cover", segs[d].File)
					}
					continue
				}
				if gone, err := j.DropCovered(segs[d], []rsyncish.SegmentInfo{si}); err != nil {
					return renamed, removed, err
				} else if gone {
					renamed[si.File] = segs[d].File
					removed++
				}
			}
			continue
		}
		eligible := inWindow(si) && si.Size < compactBytes/2
		if eligible && len(run) > 0 && si.First > run[len(run)-1].Last+1 {
			eligible = false // a gap: the run ends before it
		}
		var seg *snapread.Segment
		if eligible {
			data, err := j.Read(si)
			if err != nil {
				return renamed, removed, err
			}
			if seg, err = snapread.DecodeSegment(data); err != nil {
				return renamed, removed, fmt.Errorf("journal segment %s: %w", si.File, err)
			}
			eligible = !seg.CatchUp
		}
		if !eligible || runBytes+si.Size > compactBytes {
			if err := flush(); err != nil {
				return renamed, removed, err
			}
		}
		if eligible {
			run, runSegs, runBytes = append(run, si), append(runSegs, seg), runBytes+si.Size
		}
	}
	return renamed, removed, flush()
}

// holdsAll says whether keeper's content covers covered's revisions and
// holds each of its changes. keepers holds the keepers decoded so far (a
// merged segment is the keeper of every segment it replaced).
func holdsAll(j *rsyncish.Journal, keepers map[string]*snapread.Segment, keeper, covered rsyncish.SegmentInfo) (bool, error) {
	read := func(si rsyncish.SegmentInfo) (*snapread.Segment, error) {
		data, err := j.Read(si)
		if err != nil {
			return nil, err
		}
		seg, err := snapread.DecodeSegmentInPlace(data)
		if err != nil {
			return nil, fmt.Errorf("journal segment %s: %w", si.File, err)
		}
		return seg, nil
	}
	k := keepers[keeper.File]
	if k == nil {
		var err error
		if k, err = read(keeper); err != nil {
			return false, err
		}
		keepers[keeper.File] = k
	}
	c, err := read(covered)
	if err != nil {
		return false, err
	}
	if k.FromRev > c.FromRev || k.ToRev < c.ToRev {
		return false, nil
	}
	type change struct {
		rev int64
		key string
	}
	held := make(map[change]bool, len(k.Events))
	for _, e := range k.Events {
		held[change{e.ModRevision, e.Key}] = true
	}
	for _, e := range c.Events {
		if !held[change{e.ModRevision, e.Key}] {
			return false, nil
		}
	}
	return true, nil
}

// dominators says, for each segment of a listing (ordered by first
// revision, then time), one that holds all its revisions as of a later
// time, or -1: what a crash between Replace's write and its removals
// leaves (the merged segment over the ones it replaced). Segments whose
// ranges and times are equal dominate none of each other.
//
// Only a segment spanning more than one revision dominates: a merge's
// output always does (a run of one start is left as is), while a segment
// named R-R is either one revision's change or a progress mark at R, which
// the journal names as the empty range ending at R and which holds
// nothing. A mark after a one-revision change has the change's name range
// and a later time: taken for its cover, it dropped the change.
func dominators(segs []rsyncish.SegmentInfo) []int {
	out := make([]int, len(segs))
	best := -1 // of the segments starting before the current group: the one ending highest
	for g := 0; g < len(segs); {
		e := g
		for e < len(segs) && segs[e].First == segs[g].First {
			e++
		}
		for i := g; i < e; i++ {
			out[i] = -1
			dom := func(k int) bool {
				a, b := segs[k], segs[i]
				return k != i && a.First < a.Last && a.Last >= b.Last && !a.Time.Before(b.Time) && (a.Last > b.Last || a.First < b.First || a.Time.After(b.Time))
			}
			if best >= 0 && dom(best) {
				out[i] = best
				continue
			}
			for k := g; k < e; k++ {
				if dom(k) {
					out[i] = k
					break
				}
			}
		}
		for i := g; i < e; i++ {
			if segs[i].First == segs[i].Last {
				continue // may be a mark: dominates nothing
			}
			if best < 0 || segs[i].Last > segs[best].Last || segs[i].Last == segs[best].Last && segs[i].Time.After(segs[best].Time) {
				best = i
			}
		}
		g = e
	}
	return out
}

// mergeSegments is one segment holding what segs (a run in replay order,
// none a catch-up) hold: each revision's events once.
func mergeSegments(segs []*snapread.Segment) *snapread.Segment {
	out := &snapread.Segment{FromRev: segs[0].FromRev, ToRev: segs[0].FromRev, FromTime: segs[0].FromTime}
	for _, s := range segs {
		for _, e := range s.Events {
			if e.ModRevision > out.ToRev {
				out.Events = append(out.Events, e)
			}
		}
		out.ToRev = max(out.ToRev, s.ToRev)
		if s.ToTime.After(out.ToTime) {
			out.ToTime = s.ToTime
		}
	}
	return out
}

package backup

// Prune and the etcd delta journal.
//
// The store's retention (rsyncish.Store.Prune: keepLast, hourly, daily and
// weekly buckets, a journal version's base kept with it) decides which
// versions stay; the store knows nothing of etcd revisions, so Prune then
// trims the delta journal to what the kept versions and a recent window
// need, and no more:
//
//   - every kept journal version's chain: the segments holding the
//     revisions after its base's snapshot revision up to its own (a full
//     version needs none);
//   - from the newest version with a full snapshot of its own to the
//     journal's tail: the chain the next journal version is built on;
//   - the point-in-time window: the whole journal from the oldest version
//     kept by the keepLast or keepHourly rule (the window in which the
//     operator asked for versions at least hourly) to the tail, so `get
//     --at`, `restore etcd --at` and `--revision` reach any moment of it
//     (from that version's base on, for a journal version, whose chain is
//     kept anyway). With the defaults (keepLast 12, keepHourly 24 at a
//     version every 5 minutes) that is the last ~24 hours. There is no
//     knob of its own: an operator who wants --at further back keeps
//     more hourly versions.
//
// Older than the window, the journal between kept versions goes: a
// daily or weekly version still reads (its chain is kept, and a full one
// needs no journal), but no moment between two of them can be replayed.
// What that saves: the journal grows by the etcd changes, ~2.9 GB a day
// at 1 GiB with 1% of the keys rewritten every 5 minutes, and the oldest
// version kept by the defaults is ~4 weeks old; keeping only the window
// and each older kept version's chain (at most the journal since its
// base: one full-snapshot interval, etcd.fullSnapshot) keeps a day and a
// handful of partial ones instead of four weeks.
//
// The holes are recorded before their segments go (rsyncish
// Journal.TrimExcept), so verify does not report them as lost segments,
// and a read that needs one (only a moment between old kept versions)
// fails saying prune trimmed it and naming the versions around it
// (TrimmedAt). Segments before the oldest kept need are removed as
// before, without a record.

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// PruneResult is the store's prune result plus what it trimmed of the
// etcd delta journal.
type PruneResult struct {
	*rsyncish.PruneResult
	DeltaSegmentsTrimmed int   `json:"deltaSegmentsTrimmed"`
	DeltaBytesTrimmed    int64 `json:"deltaBytesTrimmed"`
	// DeltaHolesTrimmed are the revision ranges removed from between kept
	// segments (recorded, so verify does not call them lost).
	DeltaHolesTrimmed []rsyncish.Range `json:"deltaHolesTrimmed,omitempty"`
	// DeltaWindowFrom is the version from which the whole journal is kept
	// (point-in-time reads work from it on), and its time.
	DeltaWindowFrom     string    `json:"deltaWindowFrom,omitempty"`
	DeltaWindowFromTime time.Time `json:"deltaWindowFromTime,omitzero"`
}

// Prune applies the retention policy to the store (the caller holds the
// lock) and then trims the etcd delta journal to what the kept versions
// and the point-in-time window need (see the comment at the top of this
// file). A dry run says what it would trim.
func Prune(ctx context.Context, s *rsyncish.Store, r config.Retention, dryRun bool) (*PruneResult, error) {
	return PruneWith(ctx, s, rsyncish.RetentionPolicy{
		KeepLast: r.KeepLast, KeepHourly: r.KeepHourly, KeepDaily: r.KeepDaily, KeepWeekly: r.KeepWeekly,
	}, dryRun)
}

// PruneWith is Prune with a store policy of the caller's (tests keep
// versions of their choosing through its Needs). A journal version's base
// is kept with it whatever p.Needs says.
func PruneWith(ctx context.Context, s *rsyncish.Store, p rsyncish.RetentionPolicy, dryRun bool) (*PruneResult, error) {
	extra := p.Needs
	p.Needs = func(v rsyncish.VersionInfo) []string {
		out := needs(v)
		if extra != nil {
			out = append(out, extra(v)...)
		}
		return out
	}
	res, err := s.Prune(ctx, p, dryRun)
	if err != nil {
		return nil, err
	}
	out := &PruneResult{PruneResult: res}
	vs, err := s.Versions()
	if err != nil {
		return out, err
	}
	keep, window := journalKeep(vs, res.Keep)
	if keep == nil {
		return out, nil // no kept version holds etcd state: nothing is known to be unneeded
	}
	if window != nil {
		out.DeltaWindowFrom, out.DeltaWindowFromTime = window.ID, window.Time
	}
	j, err := s.Journal(versionread.DeltaJournal)
	if err != nil {
		return out, err
	}
	tr, err := j.TrimExcept(keep, time.Now(), dryRun)
	out.DeltaSegmentsTrimmed, out.DeltaBytesTrimmed, out.DeltaHolesTrimmed = tr.Segments, tr.Bytes, tr.Holes
	if err != nil {
		return out, fmt.Errorf("trim etcd deltas: %w", err)
	}
	return out, nil
}

// keepsWindow are the retention reasons that mark a version as inside the
// point-in-time window.
var keepsWindow = []string{"last", "hourly"}

// journalKeep returns the revision ranges of the delta journal the kept
// versions of vs (those kept names; vs oldest first) and the window need,
// and the version the window starts at; nil ranges when no kept version
// holds etcd state.
func journalKeep(vs []rsyncish.VersionInfo, kept []rsyncish.KeepReason) ([]rsyncish.Range, *rsyncish.VersionInfo) {
	reasons := map[string][]string{}
	for _, k := range kept {
		reasons[k.ID] = k.Reasons
	}
	var keep []rsyncish.Range
	var window, newestFull, newest *rsyncish.VersionInfo
	for i := range vs {
		v := &vs[i]
		rs, ok := reasons[v.ID]
		src, hasEtcd := versionread.EtcdSourceOf(*v)
		if !ok || !hasEtcd || src.Revision <= 0 {
			continue
		}
		newest = v
		if src.Journal {
			keep = append(keep, rsyncish.Range{From: uint64(max(src.SnapshotRevision, 0)) + 1, To: uint64(src.Revision)})
		} else if src.Info.Verified {
			newestFull = v
		}
		if window == nil && slices.ContainsFunc(rs, func(r string) bool { return slices.Contains(keepsWindow, r) }) {
			window = v
		}
	}
	if newest == nil {
		return nil, nil
	}
	if window == nil {
		window = newest
	}
	for _, v := range []*rsyncish.VersionInfo{window, newestFull} {
		if v != nil {
			src, _ := versionread.EtcdSourceOf(*v)
			keep = append(keep, rsyncish.Range{From: uint64(src.Revision) + 1, To: math.MaxUint64})
		}
	}
	return keep, window
}

// needs names the version a journal version is read from (its base):
// prune keeps a base while any kept version needs it.
func needs(v rsyncish.VersionInfo) []string {
	if src, ok := versionread.EtcdSourceOf(v); ok && src.Journal {
		return []string{src.Version}
	}
	return nil
}

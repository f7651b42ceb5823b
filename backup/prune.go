package backup

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// PruneResult is the store's prune result plus the delta segments dropped.
type PruneResult struct {
	*rsyncish.PruneResult
	DeltaSegmentsTrimmed int `json:"deltaSegmentsTrimmed"`
}

// Prune applies the retention policy to the store (the caller holds the
// lock) and then drops etcd delta segments that only versions already gone
// could replay: every segment up to the revision of the oldest remaining
// verified snapshot. The store itself cannot do that: it knows nothing of
// etcd revisions.
func Prune(ctx context.Context, s *rsyncish.Store, r config.Retention, dryRun bool) (*PruneResult, error) {
	res, err := s.Prune(ctx, rsyncish.RetentionPolicy{
		KeepLast: r.KeepLast, KeepHourly: r.KeepHourly, KeepDaily: r.KeepDaily, KeepWeekly: r.KeepWeekly,
	}, dryRun)
	if err != nil {
		return nil, err
	}
	out := &PruneResult{PruneResult: res}
	if dryRun {
		return out, nil
	}
	rev, err := oldestSnapshotRevision(s)
	if err != nil || rev <= 0 {
		return out, err
	}
	j, err := s.Journal(DeltaJournal)
	if err != nil {
		return out, err
	}
	if out.DeltaSegmentsTrimmed, err = j.Trim(uint64(rev)); err != nil {
		return out, fmt.Errorf("trim etcd deltas below revision %d: %w", rev, err)
	}
	return out, nil
}

// oldestSnapshotRevision is the etcd revision of the oldest version whose
// snapshot verified, or 0 when there is none (then nothing is trimmed).
func oldestSnapshotRevision(s *rsyncish.Store) (int64, error) {
	vs, err := s.Versions()
	if err != nil {
		return 0, err
	}
	for _, v := range vs {
		if info := VersionEtcd(v); info != nil && info.Verified && info.Revision > 0 {
			return info.Revision, nil
		}
	}
	return 0, nil
}

// VersionEtcd returns the etcd snapshot info recorded in a version, or nil.
func VersionEtcd(v rsyncish.VersionInfo) *etcdsnap.Info {
	raw, ok := v.Meta[MetaEtcd]
	if !ok {
		return nil
	}
	var info etcdsnap.Info
	if json.Unmarshal(raw, &info) != nil {
		return nil
	}
	return &info
}

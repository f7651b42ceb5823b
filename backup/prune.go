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
		Needs: needs,
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

// needs names the version a journal version is read from (its base):
// prune keeps a base while any kept version needs it.
func needs(v rsyncish.VersionInfo) []string {
	if src, ok := EtcdSourceOf(v); ok && src.Journal {
		return []string{src.Version}
	}
	return nil
}

// oldestSnapshotRevision is the lowest etcd revision a remaining version's
// state is replayed from: the snapshot revision of the oldest version
// whose etcd part verified (a journal version's base revision, its base
// being kept with it), or 0 when there is none (then nothing is trimmed).
// The journal above it is what every kept journal version needs.
func oldestSnapshotRevision(s *rsyncish.Store) (int64, error) {
	vs, err := s.Versions()
	if err != nil {
		return 0, err
	}
	var rev int64
	for _, v := range vs {
		src, ok := EtcdSourceOf(v)
		if !ok || !src.Info.Verified || src.SnapshotRevision <= 0 {
			continue
		}
		if rev == 0 || src.SnapshotRevision < rev {
			rev = src.SnapshotRevision
		}
	}
	return rev, nil
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

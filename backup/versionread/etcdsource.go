package versionread

import (
	"encoding/json"
	"fmt"

	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// EtcdSource says where a version's etcd state comes from. A full version
// holds a snapshot stream of its own; a journal version holds none and
// is the snapshot of an earlier version (its base) plus the delta journal
// up to its own revision. Every reader (restore, restore etcd, get,
// objects, diff, the drill) goes through this, so both kinds read alike.
type EtcdSource struct {
	// Version holds the snapshot stream (EtcdSnapshotStream, and the key
	// index EtcdKeyIndexStream when the backup wrote one): the version
	// itself for a full one, its base for a journal version.
	Version string
	// SnapshotRevision is the revision of that snapshot.
	SnapshotRevision int64
	// Revision is the revision of the version's etcd state:
	// SnapshotRevision for a full version, the journal's for a journal
	// version (reached by replaying DeltaJournal from SnapshotRevision).
	Revision int64
	// Journal: the state is the base snapshot plus the journal.
	Journal bool
	// Info is what the version recorded (MetaEtcd).
	Info *snapread.Info
}

// EtcdSourceOf reads where version v's etcd state comes from; false when
// v records no etcd state at all (files-only, or its etcd part failed).
func EtcdSourceOf(v rsyncish.VersionInfo) (EtcdSource, bool) {
	info := VersionEtcd(v)
	if info == nil {
		return EtcdSource{}, false
	}
	if info.Source == snapread.SourceJournal {
		if info.Base == "" || info.Revision < info.BaseRevision {
			return EtcdSource{}, false
		}
		return EtcdSource{Version: info.Base, SnapshotRevision: info.BaseRevision, Revision: info.Revision, Journal: true, Info: info}, true
	}
	has := false
	for _, sh := range v.Streams {
		has = has || sh.Name == EtcdSnapshotStream
	}
	if !has {
		return EtcdSource{}, false
	}
	return EtcdSource{Version: v.ID, SnapshotRevision: info.Revision, Revision: info.Revision, Info: info}, true
}

// Readable says whether version v's etcd state can still be read: a full
// version always can (its stream is checked when read); a journal version
// needs its base in the store with a verified full snapshot at
// BaseRevision and the delta journal covering (BaseRevision, Revision]
// with no gap or break (ChainIntact, from the segment names: a damaged
// segment is found when it is read). vs is the store's listing.
func Readable(s *rsyncish.Store, vs []rsyncish.VersionInfo, v rsyncish.VersionInfo) error {
	return readable(s, v, func(id string) *rsyncish.VersionInfo {
		for i := range vs {
			if vs[i].ID == id {
				return &vs[i]
			}
		}
		return nil
	})
}

// ReadableNow is Readable reading the base's header from the store rather
// than from a listing the caller holds.
func ReadableNow(s *rsyncish.Store, v rsyncish.VersionInfo) error {
	return readable(s, v, func(id string) *rsyncish.VersionInfo {
		vi, err := s.Version(id)
		if err != nil {
			return nil
		}
		return &vi
	})
}

func readable(s *rsyncish.Store, v rsyncish.VersionInfo, lookup func(id string) *rsyncish.VersionInfo) error {
	src, ok := EtcdSourceOf(v)
	if !ok || !src.Journal {
		return nil
	}
	base := lookup(src.Version)
	if base == nil {
		return fmt.Errorf("version %s is a journal version on base %s, which is not in the store", v.ID, src.Version)
	}
	bs, ok := EtcdSourceOf(*base)
	if !ok || bs.Journal || !bs.Info.Verified || bs.SnapshotRevision != src.SnapshotRevision {
		return fmt.Errorf("version %s is a journal version on base %s, which holds no verified full snapshot at revision %d", v.ID, src.Version, src.SnapshotRevision)
	}
	j, err := s.Journal(DeltaJournal)
	if err != nil {
		return err
	}
	if err := ChainIntact(j, src.SnapshotRevision, src.Revision); err != nil {
		return fmt.Errorf("version %s (journal on base %s): %w", v.ID, src.Version, err)
	}
	return nil
}

// Resolve is rsyncish.Store.Resolve, except that "latest" (or "") also
// passes over a journal version that is no longer Readable: the newest
// good version whose etcd state can be read. Every reader of a version's
// etcd state resolves through it.
func Resolve(s *rsyncish.Store, name string) (string, error) {
	if name != "" && name != rsyncish.Latest {
		return s.Resolve(name)
	}
	v, _, err := s.NewestGoodWhere(func(v rsyncish.VersionInfo) error { return ReadableNow(s, v) })
	if err != nil {
		return "", err
	}
	return v.ID, nil
}

// LatestOf is what "latest" resolves to among vs (the store's listing):
// the newest version "latest" may be (rsyncish.VersionInfo.Latest) that is
// Readable; passed says why newer good journal versions were passed over.
func LatestOf(s *rsyncish.Store, vs []rsyncish.VersionInfo) (v rsyncish.VersionInfo, passed []string, ok bool) {
	for i := len(vs) - 1; i >= 0; i-- {
		if !vs[i].Latest() {
			continue
		}
		if err := Readable(s, vs, vs[i]); err != nil {
			passed = append(passed, err.Error())
			continue
		}
		return vs[i], passed, true
	}
	return rsyncish.VersionInfo{}, passed, false
}

// EtcdKind is the kind of version v's etcd part: EtcdKindFull,
// EtcdKindJournal, or "" when it holds no etcd state.
func EtcdKind(v rsyncish.VersionInfo) string {
	src, ok := EtcdSourceOf(v)
	switch {
	case !ok:
		return ""
	case src.Journal:
		return EtcdKindJournal
	}
	return EtcdKindFull
}

// VersionEtcd returns the etcd snapshot info recorded in a version, or nil.
func VersionEtcd(v rsyncish.VersionInfo) *snapread.Info {
	raw, ok := v.Meta[MetaEtcd]
	if !ok {
		return nil
	}
	var info snapread.Info
	if json.Unmarshal(raw, &info) != nil {
		return nil
	}
	return &info
}

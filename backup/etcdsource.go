package backup

import (
	"github.com/kubekeep/kubekeep/etcdsnap"
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
	Info *etcdsnap.Info
}

// EtcdSourceOf reads where version v's etcd state comes from; false when
// v records no etcd state at all (files-only, or its etcd part failed).
func EtcdSourceOf(v rsyncish.VersionInfo) (EtcdSource, bool) {
	info := VersionEtcd(v)
	if info == nil {
		return EtcdSource{}, false
	}
	if info.Source == etcdsnap.SourceJournal {
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

package versionread

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/internal/ctxio"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// SnapshotFile is a version's etcd snapshot written out to a temp file on
// the store's filesystem (never the root disk, which may be the broken
// one), with its integrity checked against what the backup recorded.
type SnapshotFile struct {
	Path string
	Size int64
	// SHA256 of the image; empty for a raw copy, which has no trailer.
	SHA256 string
	// Raw: a member/snap/db copy, restored with SkipHashCheck.
	Raw bool
}

// Remove deletes the temp file; a crash leaves it as a leftover the
// store's next Lock cleans.
func (f *SnapshotFile) Remove() {
	if f != nil && f.Path != "" {
		_ = os.Remove(f.Path)
	}
}

// MaterializeSnapshot writes version id's etcd snapshot stream to a temp
// file in the store. An API snapshot's sha256 trailer is re-checked on the
// way and compared with the digest the backup recorded, so a damaged or
// truncated stream fails here, before anything uses it. The bbolt check is
// left to callers that need it (it is a full second pass).
func MaterializeSnapshot(ctx context.Context, store *rsyncish.Store, id string) (*SnapshotFile, error) {
	v, err := store.Version(id)
	if err != nil {
		return nil, err
	}
	info := VersionEtcd(v)
	rc, _, err := store.OpenStream(id, EtcdSnapshotStream)
	if err != nil {
		return nil, fmt.Errorf("version %s has no etcd snapshot: %w", id, err)
	}
	defer rc.Close()
	tmp, err := store.CreateTemp("snapshot-" + id + "-*.db")
	if err != nil {
		return nil, err
	}
	sf := &SnapshotFile{Path: tmp.Name(), Raw: info != nil && info.Source == snapread.SourceRaw}
	r := ctxio.Reader(ctx, rc)
	if sf.Raw {
		sf.Size, err = io.CopyBuffer(tmp, r, make([]byte, 1<<20))
	} else {
		sf.Size, sf.SHA256, err = snapread.CopyVerified(tmp, r)
		if err == nil && info != nil && info.SHA256 != "" && info.SHA256 != sf.SHA256 {
			err = fmt.Errorf("it hashes to %s, the backup recorded %s", sf.SHA256, info.SHA256)
		}
	}
	// No fsync: the file is scratch.
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		sf.Remove()
		return nil, fmt.Errorf("version %s: the stored etcd snapshot (%d bytes) is not intact: %w", id, sf.Size, err)
	}
	return sf, nil
}

package etcdsnap_test

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
	etcdutl "go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.uber.org/zap"

	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/internal/sandbox"
)

// sameAsEtcdutl restores snapshot with RestoreDataDir and with etcdutl's
// own library (the reference: `etcdutl snapshot restore --bump-revision
// --mark-compacted`) and requires the two data dirs to hold the same
// thing: every bucket and key of the db, the WAL's metadata, hard state
// and entries, and the raft snapshot. RestoreDataDir does etcdutl's steps
// itself to write the image once; this keeps it etcdutl's restore.
func sameAsEtcdutl(t *testing.T, r *sandbox.Root, snapshot, dir string) {
	t.Helper()
	ours := filepath.Join(dir, "ours")
	if _, err := etcdsnap.RestoreDataDir(ctxT(t), restoreConfig(r, snapshot, ours)); err != nil {
		t.Fatal(err)
	}
	ref := filepath.Join(dir, "etcdutl")
	cfg := restoreConfig(r, snapshot, ref)
	if err := etcdutl.NewV3(zap.NewNop()).Restore(etcdutl.RestoreConfig{
		SnapshotPath: snapshot, Name: cfg.Name, OutputDataDir: ref,
		PeerURLs: []string{cfg.InitialAdvertisePeerURLs}, InitialCluster: cfg.InitialCluster,
		InitialClusterToken: "etcd-cluster", RevisionBump: etcdsnap.RevisionBump, MarkCompacted: true,
	}); err != nil {
		t.Fatal(err)
	}

	a, b := dbDump(t, etcdsnap.DBPath(ours)), dbDump(t, etcdsnap.DBPath(ref))
	for k, v := range b {
		if got, ok := a[k]; !ok {
			t.Errorf("db: %s missing (etcdutl has %q)", k, clip(v))
		} else if !bytes.Equal(got, v) {
			t.Errorf("db: %s = %q, etcdutl has %q", k, clip(got), clip(v))
		}
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			t.Errorf("db: %s is not in etcdutl's", k)
		}
	}

	walA, walB := walDump(t, ours), walDump(t, ref)
	if walA != walB {
		t.Errorf("WAL differs:\nours:    %s\netcdutl: %s", walA, walB)
	}
	snapA, err := snap.New(zap.NewNop(), filepath.Join(ours, "member", "snap")).Load()
	if err != nil {
		t.Fatal(err)
	}
	snapB, err := snap.New(zap.NewNop(), filepath.Join(ref, "member", "snap")).Load()
	if err != nil {
		t.Fatal(err)
	}
	if snapA.String() != snapB.String() {
		t.Errorf("raft snapshot differs:\nours:    %s\netcdutl: %s", snapA, snapB)
	}
}

func clip(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// dbDump maps "bucket/key" to value for every key of every bucket.
func dbDump(t *testing.T, path string) map[string][]byte {
	t.Helper()
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out := map[string][]byte{}
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			out[string(name)+"/"] = nil
			return b.ForEach(func(k, v []byte) error {
				out[fmt.Sprintf("%s/%x", name, k)] = bytes.Clone(v)
				return nil
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func walDump(t *testing.T, dataDir string) string {
	t.Helper()
	w, err := wal.OpenForRead(zap.NewNop(), filepath.Join(dataDir, "member", "wal"), walpb.Snapshot{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	md, hs, ents, err := w.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("metadata %x hardstate %s entries %v", md, hs.String(), ents)
}

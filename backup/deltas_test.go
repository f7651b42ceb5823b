package backup

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/internal/testetcd"
)

// The seam between the writer of deltas (the agent, through DeltaSink)
// and their readers (restore, get --at, through DeltaSegments): changes
// streamed after a version land in the store's journal and replay on top
// of that version's snapshot to exactly the state at a chosen revision.
func TestDeltasThroughTheStoreReplayToARevision(t *testing.T) {
	root := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, root)
	cli := srv.ClientT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := cli.Put(ctx, "/k/a", "1"); err != nil {
		t.Fatal(err)
	}
	store := openStore(t)
	res, err := Run(ctx, Options{Root: root.Dir, Store: store, Etcd: config.Default().Etcd})
	if err != nil || res.Status != versionread.StatusOK {
		t.Fatalf("backup: %v %v", err, res)
	}
	base := res.Etcd.Revision

	sink, err := DeltaSink(store)
	if err != nil {
		t.Fatal(err)
	}
	streamCtx, stopStream := context.WithCancel(ctx)
	streamDone := make(chan error, 1)
	go func() {
		ds := etcdsnap.NewDeltaStreamer(cli, base, res.Time, sink, etcdsnap.DeltaConfig{Flush: 50 * time.Millisecond})
		streamDone <- ds.Run(streamCtx)
	}()
	put, _ := cli.Put(ctx, "/k/b", "2")
	del, _ := cli.Delete(ctx, "/k/a")
	last, err := cli.Put(ctx, "/k/c", "3")
	if err != nil || put == nil || del == nil {
		t.Fatal(err)
	}
	target, final := del.Header.Revision, last.Header.Revision
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, segs, err := DeltaSegments(store, base)
		if err != nil {
			t.Fatal(err)
		}
		if len(segs) > 0 && int64(segs[len(segs)-1].Last) >= final {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("changes up to revision %d never became durable in the journal (have %+v)", final, segs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopStream()
	<-streamDone

	snap, err := versionread.MaterializeSnapshot(ctx, store, res.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Remove()
	readers, _, err := DeltaSegments(store, base)
	if err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(t.TempDir(), "etcd")
	rr, err := etcdsnap.RestoreDataDir(ctx, etcdsnap.RestoreConfig{
		SnapshotPath: snap.Path, Segments: readers, UntilRevision: target, DataDir: dataDir,
		Name: "m", InitialCluster: "m=http://127.0.0.1:2380", InitialAdvertisePeerURLs: "http://127.0.0.1:2380",
	})
	if err != nil {
		t.Fatalf("restore at revision %d: %v", target, err)
	}
	if rr.ReplayedToRevision != target {
		t.Errorf("replayed to %d, want %d", rr.ReplayedToRevision, target)
	}
	kvs, err := snapread.ReadKeys(etcdsnap.DBPath(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, kv := range kvs {
		if len(kv.Key) > 3 && kv.Key[:3] == "/k/" {
			got[kv.Key] = string(kv.Value)
		}
	}
	if len(got) != 1 || got["/k/b"] != "2" {
		t.Errorf("state at revision %d: want only /k/b=2 (a deleted, c not yet written), got %v", target, got)
	}
}

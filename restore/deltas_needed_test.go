package restore

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/backup"
	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/internal/testetcd"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// A corrupt delta segment after the point asked for blocks nothing: a
// restore reads only the segments up to its target. Before, `restore etcd
// --revision 78` failed on a rotten segment holding revisions 80-82.
func TestRestoreEtcdReadsOnlyTheSegmentsItNeeds(t *testing.T) {
	root := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, root)
	cli := srv.ClientT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	store, err := rsyncish.Open(filepath.Join(t.TempDir(), "store"), rsyncish.Options{AllowSameFilesystem: true})
	if err != nil {
		t.Fatal(err)
	}
	res, err := backup.Run(ctx, backup.Options{Root: root.Dir, Store: store, Etcd: config.Default().Etcd})
	if err != nil || res.Status != versionread.StatusOK {
		t.Fatalf("backup: %v %+v", err, res)
	}
	sink, err := backup.DeltaSink(store)
	if err != nil {
		t.Fatal(err)
	}
	streamCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- etcdsnap.NewDeltaStreamer(cli, res.Etcd.Revision, res.Time, sink, etcdsnap.DeltaConfig{Flush: 20 * time.Millisecond}).Run(streamCtx)
	}()
	j, err := store.Journal(versionread.DeltaJournal)
	if err != nil {
		t.Fatal(err)
	}
	// Each put in a segment of its own: wait for it to be durable.
	var revs []int64
	for _, k := range []string{"/k/early", "/k/later", "/k/last"} {
		r, err := cli.Put(ctx, k, "v")
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, r.Header.Revision)
		deadline := time.Now().Add(30 * time.Second)
		for {
			segs, _ := j.List()
			if len(segs) > 0 && int64(segs[len(segs)-1].Last) >= r.Header.Revision {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("revision %d never became durable", r.Header.Revision)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	stop()
	<-done
	segs, err := j.List()
	if err != nil {
		t.Fatal(err)
	}
	// The first segment holding the last put: a progress mark written
	// after it (an idle stream under a loaded machine) also spans its
	// revision but holds no change, and a restore never reads it.
	var lastSeg rsyncish.SegmentInfo
	for _, si := range segs {
		if int64(si.First) <= revs[2] && revs[2] <= int64(si.Last) {
			lastSeg = si
			break
		}
	}
	if lastSeg.File == "" || int64(lastSeg.First) <= revs[0] {
		t.Fatalf("the last put is not in a segment of its own: %+v (revisions %v)", segs, revs)
	}
	p := filepath.Join(store.Dir(), "journals", versionread.DeltaJournal, lastSeg.File)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}

	to := filepath.Join(t.TempDir(), "etcd")
	got, err := RestoreEtcd(ctx, EtcdOptions{Store: store, Version: res.ID, Revision: revs[0], To: to})
	if err != nil {
		t.Fatalf("restore etcd --revision %d with a rotten segment after it: %v", revs[0], err)
	}
	keys, err := snapread.ReadKeys(filepath.Join(to, "member", "snap", "db"))
	if err != nil {
		t.Fatal(err)
	}
	has := map[string]bool{}
	for _, kv := range keys {
		has[string(kv.Key)] = true
	}
	if !has["/k/early"] || has["/k/later"] {
		t.Errorf("restored to revision %d: early=%v later=%v (%+v)", revs[0], has["/k/early"], has["/k/later"], got)
	}
	// The point after the damage is still refused.
	if _, err := RestoreEtcd(ctx, EtcdOptions{Store: store, Version: res.ID, Revision: revs[2], To: filepath.Join(t.TempDir(), "etcd2")}); err == nil {
		t.Errorf("restore etcd --revision %d read the rotten segment without an error", revs[2])
	}
}

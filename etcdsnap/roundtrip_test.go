package etcdsnap_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/internal/sandbox"
	"github.com/kubekeep/kubekeep/internal/testetcd"
)

func restoreConfig(r *sandbox.Root, snap, dataDir string) etcdsnap.RestoreConfig {
	return etcdsnap.RestoreConfig{
		SnapshotPath:             snap,
		DataDir:                  dataDir,
		Name:                     r.Opts.NodeName,
		InitialCluster:           r.Opts.NodeName + "=" + r.EtcdPeerURL(),
		InitialAdvertisePeerURLs: r.EtcdPeerURL(),
	}
}

func restoreAndRead(t *testing.T, cfg etcdsnap.RestoreConfig) (etcdsnap.RestoreResult, map[string]string) {
	t.Helper()
	res, err := etcdsnap.RestoreDataDir(ctxT(t), cfg)
	if err != nil {
		t.Fatalf("restore into %s: %v", cfg.DataDir, err)
	}
	if res.Revision < etcdsnap.RevisionBump {
		t.Errorf("restored revision %d not bumped", res.Revision)
	}
	return res, dbState(t, etcdsnap.DBPath(cfg.DataDir))
}

// TestRoundTripAndPointInTime backs up, changes, backs up again, streaming
// deltas all along, then restores each snapshot and two points in time
// between them, comparing every key with what etcd held at that revision.
func TestRoundTripAndPointInTime(t *testing.T) {
	r := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, r)
	ctx := ctxT(t)
	cli := srv.ClientT(t)
	if _, err := srv.LoadCluster(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		v := fmt.Sprintf("value-%d-%s", i, strings.Repeat("\x00\xff", i%7))
		if _, err := cli.Put(ctx, fmt.Sprintf("/plain/%04d", i), v); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 150 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/bulk/%04d", i), "b"); err != nil {
			t.Fatal(err)
		}
	}
	cc := clientConfig(r, srv.Endpoint())
	dir := t.TempDir()

	snapA := filepath.Join(dir, "a.db")
	infoA := snapshotToFile(t, cc, snapA)
	wantA := stateAt(t, cli, infoA.Revision)
	sameState(t, "snapshot A file", wantA, dbState(t, snapA))

	sink := &memSink{}
	ds := etcdsnap.NewDeltaStreamer(cli, infoA.Revision, infoA.Started, sink,
		etcdsnap.DeltaConfig{Flush: 50 * time.Millisecond, Heartbeat: 200 * time.Millisecond})
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ds.Run(sctx) }()
	waitCovered := func(rev int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for ds.Covered().ToRev < rev {
			if time.Now().After(deadline) {
				t.Fatalf("deltas cover %d, want %d", ds.Covered().ToRev, rev)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	// Phase 1: modify, delete, a multi-key transaction, a protobuf object
	// change and a prefix delete larger than one replay transaction.
	for i := 0; i < 300; i += 3 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/plain/%04d", i), fmt.Sprintf("changed-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Delete(ctx, "/plain/0001"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Txn(ctx).Then(clientv3.OpPut("/txn/a", "1"), clientv3.OpPut("/txn/b", "2"), clientv3.OpDelete("/plain/0002")).Commit(); err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "shop-settings", Namespace: "shop"}, Data: map[string]string{"currency": "USD"}}
	if _, err := testetcd.PutObject(ctx, cli, "configmaps", cm); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(ctx, testetcd.Key("secrets", "shop", "db-password")); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Delete(ctx, "/bulk/", clientv3.WithPrefix())
	if err != nil || resp.Deleted != 150 {
		t.Fatalf("bulk delete: %v %+v", err, resp)
	}
	midRev := resp.Header.Revision
	wantMid := stateAt(t, cli, midRev)
	waitCovered(midRev)
	time.Sleep(20 * time.Millisecond)
	midTime := time.Now()
	time.Sleep(20 * time.Millisecond)

	// Phase 2: more changes, then snapshot B.
	for i := 0; i < 300; i += 5 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/plain/%04d", i), fmt.Sprintf("phase2-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Delete(ctx, "/txn/a"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/late/key", "late"); err != nil {
		t.Fatal(err)
	}
	snapB := filepath.Join(dir, "b.db")
	infoB := snapshotToFile(t, cc, snapB)
	wantB := stateAt(t, cli, infoB.Revision)
	waitCovered(infoB.Revision)
	stop()
	if err := <-done; err != nil {
		t.Fatalf("delta streamer: %v", err)
	}
	if sink.err != nil {
		t.Fatal(sink.err)
	}
	cov := ds.Covered()
	if cov.FromRev != infoA.Revision || cov.ToRev < infoB.Revision || cov.Events == 0 {
		t.Fatalf("coverage %+v", cov)
	}
	t.Logf("A rev %d, mid rev %d, B rev %d; deltas %+v", infoA.Revision, midRev, infoB.Revision, cov)

	if infoA.Revision >= midRev || midRev >= infoB.Revision {
		t.Fatalf("revisions not ordered: %d %d %d", infoA.Revision, midRev, infoB.Revision)
	}
	_, got := restoreAndRead(t, restoreConfig(r, snapA, filepath.Join(dir, "restore-a")))
	sameState(t, "restore of A", wantA, got)
	_, got = restoreAndRead(t, restoreConfig(r, snapB, filepath.Join(dir, "restore-b")))
	sameState(t, "restore of B", wantB, got)

	cfg := restoreConfig(r, snapA, filepath.Join(dir, "pitr-rev"))
	cfg.Segments, cfg.UntilRevision = sink.readers(), midRev
	res, got := restoreAndRead(t, cfg)
	sameState(t, "A + deltas to mid revision", wantMid, got)
	if res.ReplayedToRevision != midRev || res.ReplayedEvents == 0 {
		t.Errorf("replay result %+v", res)
	}

	cfg = restoreConfig(r, snapA, filepath.Join(dir, "pitr-time"))
	cfg.Segments, cfg.UntilTime = sink.readers(), midTime
	_, got = restoreAndRead(t, cfg)
	sameState(t, "A + deltas to mid time", wantMid, got)

	cfg = restoreConfig(r, snapA, filepath.Join(dir, "pitr-all"))
	cfg.Segments = sink.readers()
	_, got = restoreAndRead(t, cfg)
	sameState(t, "A + all deltas", wantB, got)

	// The exported ClusterConfiguration survives a restore.
	if _, err := snapread.ExportClusterConfiguration(etcdsnap.DBPath(cfg.DataDir)); err != nil {
		t.Errorf("export from restored dir: %v", err)
	}

	t.Run("vouched image", func(t *testing.T) {
		st, err := snapread.CheckDB(snapA)
		if err != nil {
			t.Fatal(err)
		}
		// Vouched right: same data dir as the checked path, without the pre-check.
		cfg := restoreConfig(r, snapA, filepath.Join(dir, "vouched"))
		cfg.Verified = &etcdsnap.VerifiedImage{Revision: st.Revision, Trailer: true}
		res, got := restoreAndRead(t, cfg)
		sameState(t, "vouched A", dbState(t, etcdsnap.DBPath(filepath.Join(dir, "restore-a"))), got)
		if res.SnapshotRevision != st.Revision || res.Revision != st.Revision+etcdsnap.RevisionBump {
			t.Errorf("vouched restore: %+v", res)
		}
		// Vouched wrong: the restored db gives it away.
		cfg = restoreConfig(r, snapA, filepath.Join(dir, "vouched-wrong"))
		cfg.Verified = &etcdsnap.VerifiedImage{Revision: st.Revision - 1, Trailer: true}
		if _, err := etcdsnap.RestoreDataDir(ctx, cfg); err == nil || !strings.Contains(err.Error(), "not the image") {
			t.Fatalf("restore of a wrongly vouched image: %v", err)
		}
	})
	t.Run("same data dir as etcdutl", func(t *testing.T) {
		sameAsEtcdutl(t, r, snapB, filepath.Join(dir, "vs-etcdutl"))
	})
	t.Run("streamed image", func(t *testing.T) {
		img, err := os.ReadFile(snapA)
		if err != nil {
			t.Fatal(err)
		}
		st, err := snapread.CheckDB(snapA)
		if err != nil {
			t.Fatal(err)
		}
		streamed := func(name string, data []byte, size int64) etcdsnap.RestoreConfig {
			cfg := restoreConfig(r, "", filepath.Join(dir, name))
			cfg.Snapshot, cfg.SnapshotSize = bytes.NewReader(data), size
			// Trailer false: the trailer is checked on the way in.
			cfg.Verified = &etcdsnap.VerifiedImage{Revision: st.Revision, Keys: st.Keys}
			return cfg
		}
		res, got := restoreAndRead(t, streamed("streamed", img, int64(len(img))))
		sameState(t, "streamed A", dbState(t, etcdsnap.DBPath(filepath.Join(dir, "restore-a"))), got)
		// Keys is what the caller vouched for (st.Keys); hold it to what the
		// etcd started on the restored dir served, not to itself.
		if res.Revision != st.Revision+etcdsnap.RevisionBump || res.Keys != int64(len(got)) {
			t.Errorf("streamed restore: %+v, want revision %d and the %d keys etcd served", res, st.Revision+etcdsnap.RevisionBump, len(got))
		}

		flipped := bytes.Clone(img)
		flipped[len(flipped)/2] ^= 1
		if _, err := etcdsnap.RestoreDataDir(ctx, streamed("streamed-flipped", flipped, int64(len(flipped)))); !errors.Is(err, snapread.ErrBadTrailer) {
			t.Errorf("streamed image with a flipped bit: %v, want ErrBadTrailer", err)
		}
		if _, err := etcdsnap.RestoreDataDir(ctx, streamed("streamed-cut", img[:len(img)/3], int64(len(img)))); err == nil || !strings.Contains(err.Error(), "ended after") {
			t.Errorf("streamed image cut short: %v", err)
		}
		// Vouched for but cut at a page boundary: no trailer is checked, so
		// the damage reaches etcd's backend, which must fail, not crash.
		cut := img[:len(img)/2/4096*4096]
		cfg := streamed("streamed-vouched-cut", cut, int64(len(cut)))
		cfg.Verified.Trailer = true
		if _, err := etcdsnap.RestoreDataDir(ctx, cfg); !errors.Is(err, snapread.ErrCorruptDB) {
			t.Errorf("vouched image cut short: %v, want ErrCorruptDB", err)
		}
		// A restore that failed half-way (the db written, etcd's backend
		// refusing it) leaves no member dir etcd would start on, and a
		// rerun into the same dir, over what a killed run left, works.
		for _, name := range []string{"streamed-flipped", "streamed-cut", "streamed-vouched-cut"} {
			if _, err := os.Stat(filepath.Join(dir, name, "member")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("failed restore %s left a member dir: %v", name, err)
			}
		}
		if err := os.MkdirAll(filepath.Join(dir, "streamed-vouched-cut", ".kubekeep-restore.tmp-1-killed", "member", "snap"), 0o700); err != nil {
			t.Fatal(err)
		}
		if _, got := restoreAndRead(t, streamed("streamed-vouched-cut", img, int64(len(img)))); len(got) == 0 {
			t.Error("rerun after a failed restore restored no keys")
		}
		if ents, _ := os.ReadDir(filepath.Join(dir, "streamed-vouched-cut")); len(ents) != 1 || ents[0].Name() != "member" {
			t.Errorf("the rerun's data dir holds %v, want only member", ents)
		}
		cfg = streamed("streamed-unvouched", img, int64(len(img)))
		cfg.Verified = nil
		if _, err := etcdsnap.RestoreDataDir(ctx, cfg); err == nil || !strings.Contains(err.Error(), "Verified") {
			t.Errorf("streamed image nobody vouched for: %v", err)
		}
	})
	t.Run("refuses non-empty data dir", func(t *testing.T) {
		cfg := restoreConfig(r, snapA, filepath.Join(dir, "restore-a"))
		if _, err := etcdsnap.RestoreDataDir(ctx, cfg); err == nil || !strings.Contains(err.Error(), "not empty") {
			t.Fatalf("restore over a data dir: %v", err)
		}
	})
	t.Run("gap in deltas", func(t *testing.T) {
		segs := sink.readers()
		if len(segs) < 3 {
			t.Skipf("only %d segments", len(segs))
		}
		var withGap []io.Reader
		dropped := false
		for i, s := range segs {
			b, _ := io.ReadAll(s)
			seg, err := snapread.DecodeSegment(b)
			if err != nil {
				t.Fatal(err)
			}
			if !dropped && i < len(segs)-1 && seg.ToRev > seg.FromRev {
				dropped = true // drop the first segment holding changes
				continue
			}
			withGap = append(withGap, strings.NewReader(string(b)))
		}
		cfg := restoreConfig(r, snapA, filepath.Join(dir, "gap"))
		cfg.Segments = withGap
		_, err := etcdsnap.RestoreDataDir(ctx, cfg)
		if err == nil || !strings.Contains(err.Error(), "gap") {
			t.Fatalf("restore with a missing segment: %v", err)
		}
		if _, err := os.Stat(cfg.DataDir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("data dir touched before the plan was checked: %v", err)
		}
	})
	t.Run("target beyond deltas", func(t *testing.T) {
		cfg := restoreConfig(r, snapA, filepath.Join(dir, "beyond"))
		cfg.Segments, cfg.UntilRevision = sink.readers(), cov.ToRev+10
		if _, err := etcdsnap.RestoreDataDir(ctx, cfg); err == nil || !strings.Contains(err.Error(), "not covered") {
			t.Fatalf("restore past the deltas: %v", err)
		}
	})
}

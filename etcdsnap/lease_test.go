package etcdsnap_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/lease/leasepb"

	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/internal/testetcd"
)

// TestReplayKeepsLeases restores a snapshot plus deltas where Event-like
// keys hang on short leases: one the snapshot holds (a key put under it
// before and one after the snapshot), one granted after it (the watch sees
// the keys, never the grant), one revoked after it. etcd started on the
// restored dir serves every key with the lease ID it had, and the leased
// keys expire while the others stay. Before, replay dropped leases: keys
// replayed under a lease never expired.
func TestReplayKeepsLeases(t *testing.T) {
	const ttl = 6 // seconds
	r := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, r)
	ctx := ctxT(t)
	cli := srv.ClientT(t)
	// The source etcd keeps the leases alive until the deltas are taken.
	alive, stopAlive := context.WithCancel(ctx)
	defer stopAlive()
	grant := func() clientv3.LeaseID {
		t.Helper()
		l, err := cli.Grant(ctx, ttl)
		if err != nil {
			t.Fatal(err)
		}
		ch, err := cli.KeepAlive(alive, l.ID)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for range ch {
			}
		}()
		return l.ID
	}
	put := func(key string, lease clientv3.LeaseID) int64 {
		t.Helper()
		var opts []clientv3.OpOption
		if lease != 0 {
			opts = append(opts, clientv3.WithLease(lease))
		}
		resp, err := cli.Put(ctx, key, "v-"+key, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	inSnap, revokedLater := grant(), grant()
	put("/registry/events/shop/before-snapshot", inSnap)
	put("/registry/events/shop/revoked-later", revokedLater)
	put("/registry/configmaps/shop/kept", 0)

	dir := t.TempDir()
	snap := filepath.Join(dir, "snap.db")
	info := snapshotToFile(t, clientConfig(r, srv.Endpoint()), snap)
	sink := &memSink{}
	ds := etcdsnap.NewDeltaStreamer(cli, info.Revision, info.Started, sink,
		etcdsnap.DeltaConfig{Flush: 50 * time.Millisecond, Heartbeat: 200 * time.Millisecond})
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ds.Run(sctx) }()

	afterSnap := grant()
	put("/registry/events/shop/after-snapshot", afterSnap)
	put("/registry/masterleases/10.0.0.1", afterSnap)
	put("/registry/events/shop/snapshot-lease-later", inSnap)
	put("/registry/configmaps/shop/kept-later", 0)
	rv, err := cli.Revoke(ctx, revokedLater)
	if err != nil {
		t.Fatal(err)
	}
	last := rv.Header.Revision
	deadline := time.Now().Add(10 * time.Second)
	for ds.Covered().ToRev < last {
		if time.Now().After(deadline) {
			t.Fatalf("deltas cover %d, want %d", ds.Covered().ToRev, last)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil && ctx.Err() == nil && sctx.Err() == nil {
		t.Fatal(err)
	}
	if sink.err != nil {
		t.Fatal(sink.err)
	}
	wantLease := map[string]clientv3.LeaseID{
		"/registry/events/shop/before-snapshot":      inSnap,
		"/registry/events/shop/after-snapshot":       afterSnap,
		"/registry/masterleases/10.0.0.1":            afterSnap,
		"/registry/events/shop/snapshot-lease-later": inSnap,
		"/registry/configmaps/shop/kept":             0,
		"/registry/configmaps/shop/kept-later":       0,
	}
	for k, id := range wantLease {
		if resp, err := cli.Get(ctx, k); err != nil || len(resp.Kvs) != 1 || clientv3.LeaseID(resp.Kvs[0].Lease) != id {
			t.Fatalf("source etcd %s: %v %v, want lease %x", k, err, resp, id)
		}
	}
	stopAlive()

	// Without a LeaseTTL, the lease granted after the snapshot gets at
	// least --event-ttl's default (the snapshot's are shorter here).
	cfg := restoreConfig(r, snap, filepath.Join(t.TempDir(), "default-ttl"))
	cfg.Segments = sink.readers()
	if _, err := etcdsnap.RestoreDataDir(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	wantTTL := map[clientv3.LeaseID]int64{inSnap: ttl, revokedLater: ttl, afterSnap: int64(etcdsnap.DefaultReplayLeaseTTL / time.Second)}
	if got := leaseTTLs(t, etcdsnap.DBPath(cfg.DataDir)); len(got) != len(wantTTL) {
		t.Errorf("restored lease bucket %v, want %v", got, wantTTL)
	} else {
		for id, want := range wantTTL {
			if got[id] != want {
				t.Errorf("restored lease %x has TTL %d, want %d (all: %v)", id, got[id], want, got)
			}
		}
	}

	// Restore into the sandbox's data dir and run etcd on it, as the
	// static pod would.
	srv.Stop()
	if err := os.RemoveAll(srv.DataDir()); err != nil {
		t.Fatal(err)
	}
	cfg = restoreConfig(r, snap, srv.DataDir())
	cfg.Segments, cfg.LeaseTTL = sink.readers(), ttl*time.Second
	res, err := etcdsnap.RestoreDataDir(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.ReplayedToRevision != last || res.GrantedLeases != 1 {
		t.Errorf("replayed to %d granting %d leases, want %d granting 1 (the one granted after the snapshot)", res.ReplayedToRevision, res.GrantedLeases, last)
	}
	if err := srv.Restart(ctx); err != nil {
		t.Fatalf("etcd on the restored data dir: %v", err)
	}
	cli = srv.ClientT(t)
	for k, id := range wantLease {
		resp, err := cli.Get(ctx, k)
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("restored etcd %s: %v %v", k, err, resp)
		}
		if got := clientv3.LeaseID(resp.Kvs[0].Lease); got != id {
			t.Errorf("restored %s is under lease %x, want %x", k, got, id)
		}
	}
	if resp, err := cli.Get(ctx, "/registry/events/shop/revoked-later"); err != nil || len(resp.Kvs) != 0 {
		t.Errorf("a key of the lease revoked after the snapshot: %v %v, want gone", err, resp)
	}
	for _, id := range []clientv3.LeaseID{inSnap, afterSnap} {
		l, err := cli.TimeToLive(ctx, id)
		if err != nil || l.GrantedTTL != ttl {
			t.Errorf("restored lease %x: %v %+v, want granted TTL %d", id, err, l, ttl)
		}
	}
	if t.Failed() {
		return
	}

	// The leased keys expire, the others stay.
	deadline = time.Now().Add(10*ttl*time.Second + 10*time.Second)
	for {
		left := 0
		for k, id := range wantLease {
			resp, err := cli.Get(ctx, k)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case id == 0 && len(resp.Kvs) != 1:
				t.Fatalf("%s, under no lease, is gone from the restored etcd", k)
			case id != 0 && len(resp.Kvs) != 0:
				left++
			}
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d keys under %d s leases still in the restored etcd after %s", left, ttl, 10*ttl*time.Second+10*time.Second)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// leaseTTLs reads the lease bucket of a db file: lease ID -> granted TTL.
func leaseTTLs(t *testing.T, path string) map[clientv3.LeaseID]int64 {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	m := map[clientv3.LeaseID]int64{}
	if err := db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("lease"))
		if b == nil {
			return nil
		}
		return b.ForEach(func(_, v []byte) error {
			var l leasepb.Lease
			if err := l.Unmarshal(v); err != nil {
				return err
			}
			m[clientv3.LeaseID(l.ID)] = l.TTL
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return m
}

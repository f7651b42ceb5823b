package backup_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubekeep/kubekeep/backup"
	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/internal/testetcd"
	"github.com/kubekeep/kubekeep/objects"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// Every journal version's key index, read as get and objects read it (the
// base's index, then the journal key index, values out of the segments),
// gives what etcd itself held at the version's revision, key by key:
// value, mod and create revision, version and lease, and which keys are
// gone; whether the version was made by a process that kept the journal
// since the previous version (the agent's JournalCache) or read it all
// from the base (a one-shot backup). The keys are put, overwritten,
// deleted and put again, some with a lease, over several versions.
func TestJournalKeyIndexMatchesEtcd(t *testing.T) {
	root := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, root)
	cli := srv.ClientT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	store, err := rsyncish.Open(filepath.Join(t.TempDir(), "store"), rsyncish.Options{AllowSameFilesystem: true})
	if err != nil {
		t.Fatal(err)
	}
	// A base big enough for a key index (a tiny db's key bucket is inline).
	for i := range 300 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/filler/%03d", i), strings.Repeat("f", 64)); err != nil {
			t.Fatal(err)
		}
	}
	name := func(i int) string { return fmt.Sprintf("cm%02d", i) }
	key := func(i int) string { return testetcd.Key("configmaps", "ns", name(i)) }
	put := func(i, round int, lease clientv3.LeaseID) {
		t.Helper()
		b, err := testetcd.Encode(&corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
			ObjectMeta: metav1.ObjectMeta{Name: name(i), Namespace: "ns"}, Data: map[string]string{"round": fmt.Sprint(round)}})
		if err != nil {
			t.Fatal(err)
		}
		var opts []clientv3.OpOption
		if lease != 0 {
			opts = append(opts, clientv3.WithLease(lease))
		}
		if _, err := cli.Put(ctx, key(i), string(b), opts...); err != nil {
			t.Fatal(err)
		}
	}
	const n = 30
	for i := range n / 2 {
		put(i, 0, 0)
	}
	var cache backup.JournalCache
	run := func(c *backup.JournalCache) *backup.Result {
		t.Helper()
		res, err := backup.Run(ctx, backup.Options{Root: root.Dir, Store: store, Etcd: config.Default().Etcd, JournalCache: c})
		if err != nil || res.Status != versionread.StatusOK {
			t.Fatalf("backup: %v %+v", err, res)
		}
		return res
	}
	full := run(&cache)
	if full.EtcdKind != versionread.EtcdKindFull {
		t.Fatalf("first version: %q", full.EtcdKind)
	}
	inner, err := backup.DeltaSink(store)
	if err != nil {
		t.Fatal(err)
	}
	sink := &countingSink{inner: inner}
	j, err := store.Journal(versionread.DeltaJournal)
	if err != nil {
		t.Fatal(err)
	}
	streamCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- etcdsnap.NewDeltaStreamer(cli, full.Etcd.Revision, full.Time, sink,
			etcdsnap.DeltaConfig{Flush: 20 * time.Millisecond, Heartbeat: 200 * time.Millisecond}).Run(streamCtx)
	}()
	defer func() { stop(); <-done }()
	durable := func() {
		t.Helper()
		r, err := cli.Get(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if segs, _ := j.List(); len(segs) > 0 && int64(segs[len(segs)-1].Last) >= r.Header.Revision {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("revision %d never became durable", r.Header.Revision)
			}
		}
	}
	lease, err := cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(14, 20))
	var versions []*backup.Result
	for round := 1; round <= 5; round++ {
		for i := range n {
			if i%5 == 4 {
				time.Sleep(50 * time.Millisecond) // a flush: many small segments, as leases make on a control plane
			}
			switch rng.IntN(4) {
			case 0:
				put(i, round, 0)
			case 1:
				if _, err := cli.Delete(ctx, key(i)); err != nil {
					t.Fatal(err)
				}
			case 2:
				put(i, round, lease.ID)
			}
		}
		durable()
		c := &cache
		if round == 3 {
			c = nil // a one-shot backup: the journal read from the base
		}
		v := run(c)
		if v.EtcdKind != versionread.EtcdKindJournal {
			t.Fatalf("round %d: %q version (%s), want a journal version", round, v.EtcdKind, v.FullReason)
		}
		versions = append(versions, v)
	}

	// The agent's versions merged the small segments the 20 ms flushes
	// wrote: the journal holds fewer files than were appended, and the
	// first journal version's index names segments since merged, which
	// the reads below find by revision.
	segs, err := j.List()
	if err != nil {
		t.Fatal(err)
	}
	if appended := sink.n.Load(); len(segs) >= int(appended)/2 {
		t.Errorf("the journal holds %d segment files of the %d appended: small segments were not merged", len(segs), appended)
	}
	t.Logf("segments %d appended %d gone %d", len(segs), sink.n.Load(), goneSegments(t, store, j, versions[0].ID))
	if gone := goneSegments(t, store, j, versions[0].ID); gone == 0 {
		t.Errorf("version %s's journal key index names no merged segment: the read by revision is not exercised", versions[0].ID)
	}
	for _, v := range versions {
		r := openJournalVersion(t, store, j, v.ID, full.ID)
		rev := v.Etcd.Revision
		if r.Revision() != rev {
			t.Errorf("version %s: the view is at revision %d, the version at %d", v.ID, r.Revision(), rev)
		}
		for i := range n {
			k := key(i)
			resp, err := cli.Get(ctx, k, clientv3.WithRev(rev))
			if err != nil {
				t.Fatal(err)
			}
			obj, err := r.GetKey(k)
			var nf *objects.NotFoundError
			if len(resp.Kvs) == 0 {
				if !errors.As(err, &nf) {
					t.Errorf("version %s: %s is not in etcd at revision %d; read: %v %v", v.ID, k, rev, obj, err)
				}
				continue
			}
			kv := resp.Kvs[0]
			if err != nil {
				t.Errorf("version %s: %s: %v", v.ID, k, err)
				continue
			}
			if obj.ModRevision != kv.ModRevision || obj.CreateRevision != kv.CreateRevision || obj.Version != kv.Version || obj.Lease != kv.Lease {
				t.Errorf("version %s: %s read at mod %d create %d version %d lease %x; etcd: %d %d %d %x", v.ID, k,
					obj.ModRevision, obj.CreateRevision, obj.Version, obj.Lease, kv.ModRevision, kv.CreateRevision, kv.Version, kv.Lease)
			}
			if raw, err := r.RawValue(k); err != nil || string(raw) != string(kv.Value) {
				t.Errorf("version %s: %s value differs from etcd's at revision %d (%v)", v.ID, k, rev, err)
			}
		}
		items, err := r.Items(objects.Filter{Resource: "configmaps", Namespace: "ns"})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, it := range items {
			got = append(got, it.Key)
		}
		resp, err := cli.Get(ctx, testetcd.Key("configmaps", "ns", ""), clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithKeysOnly())
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, kv := range resp.Kvs {
			want = append(want, string(kv.Key))
		}
		sort.Strings(want)
		if !slices.Equal(got, want) {
			t.Errorf("version %s: objects lists %v, etcd held %v at revision %d", v.ID, got, want, rev)
		}
		r.Close()
	}
}

// openJournalVersion opens a journal version as get does: the base's key
// index and snapshot stream, then the version's journal key index.
func openJournalVersion(t *testing.T, store *rsyncish.Store, j *rsyncish.Journal, id, baseID string) *objects.Indexed {
	t.Helper()
	vr, err := store.OpenVersion(id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vr.Close() })
	base, err := vr.Version(baseID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { base.Close() })
	stream := func(v *rsyncish.VersionReader, name string) *rsyncish.StreamAt {
		s, err := v.Stream(name)
		if err != nil {
			t.Fatalf("version %s: %v", v.ID(), err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	idx, img := stream(base, versionread.EtcdKeyIndexStream), stream(base, versionread.EtcdSnapshotStream)
	r, err := objects.OpenIndexed(objects.IndexedConfig{Index: idx, IndexSize: idx.Size(), Image: img, Base: baseID})
	if err != nil {
		t.Fatal(err)
	}
	keys, segs := stream(vr, versionread.EtcdJournalKeysStream), stream(vr, versionread.EtcdJournalSegsStream)
	if err := r.UseJournal(objects.JournalConfig{Index: keys, IndexSize: keys.Size(), Value: versionread.JournalValues(j, segs, segs.Size(), nil)}); err != nil {
		t.Fatal(err)
	}
	return r
}

// countingSink counts the segments the delta stream appends.
type countingSink struct {
	inner etcdsnap.SegmentSink
	n     atomic.Int64
}

func (c *countingSink) AppendSegment(data []byte, firstRev, lastRev int64, t time.Time) error {
	c.n.Add(1)
	return c.inner.AppendSegment(data, firstRev, lastRev, t)
}

// goneSegments counts the segment names version id's journal key index
// table holds that the journal no longer has.
func goneSegments(t *testing.T, store *rsyncish.Store, j *rsyncish.Journal, id string) int {
	t.Helper()
	vr, err := store.OpenVersion(id)
	if err != nil {
		t.Fatal(err)
	}
	defer vr.Close()
	st, err := vr.Stream(versionread.EtcdJournalSegsStream)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	have := map[string]bool{}
	segs, err := j.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, si := range segs {
		have[si.File] = true
	}
	names, err := versionread.JournalSegmentNames(st, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	gone := 0
	for _, name := range names {
		if !have[name] {
			gone++
		}
	}
	return gone
}

package objects

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	etcdutl "go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/objects/internal/plainetcd"
)

// restoreWith writes a data dir from snapshot with kubekeep's own restore
// (what the restore phase and the drill run) or with etcdutl's library
// (`etcdutl snapshot restore --bump-revision --mark-compacted`, what an
// operator runs by hand), for a member called name at peer.
type restoreWith func(t *testing.T, snapshot, dataDir, name, peer string)

func kubekeepRestore(t *testing.T, snapshot, dataDir, name, peer string) {
	t.Helper()
	_, err := etcdsnap.RestoreDataDir(context.Background(), etcdsnap.RestoreConfig{
		SnapshotPath: snapshot, DataDir: dataDir, Name: name,
		InitialCluster: name + "=" + peer, InitialAdvertisePeerURLs: peer,
	})
	if err != nil {
		t.Fatal(err)
	}
}

func etcdutlRestore(t *testing.T, snapshot, dataDir, name, peer string) {
	t.Helper()
	err := etcdutl.NewV3(zap.NewNop()).Restore(etcdutl.RestoreConfig{
		SnapshotPath: snapshot, Name: name, OutputDataDir: dataDir,
		PeerURLs: []string{peer}, InitialCluster: name + "=" + peer, InitialClusterToken: "etcd-cluster",
		RevisionBump: etcdsnap.RevisionBump, MarkCompacted: true,
	})
	if err != nil {
		t.Fatal(err)
	}
}

// segmentSink keeps a DeltaStreamer's segments in memory, in order.
type segmentSink struct {
	mu   sync.Mutex
	segs [][]byte
}

func (s *segmentSink) AppendSegment(data []byte, _, _ int64, _ time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.segs = append(s.segs, append([]byte(nil), data...))
	return nil
}

// events decodes every segment, as `kubekeep get --at` reads the journal.
func (s *segmentSink) events(t *testing.T) []snapread.Event {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []snapread.Event
	for i, b := range s.segs {
		seg, err := snapread.DecodeSegment(b)
		if err != nil {
			t.Fatalf("segment %d: %v", i, err)
		}
		out = append(out, seg.Events...)
	}
	return out
}

// TestSnapshotsAfterRestore: a restore with a revision bump leaves a
// marker entry with no key in etcd's key bucket, which etcd keeps for
// good, so every snapshot taken after a restore holds it. Reading such a
// snapshot (objects, get, diff, --at) must skip the marker and show the
// objects written before the restore and after it, with their revisions;
// the backup check must pass it. Covered for the data dir kubekeep's
// restore writes and the one etcdutl writes, each started under a real etcd.
func TestSnapshotsAfterRestore(t *testing.T) {
	src := startEtcd(t)
	c := src.Client
	revKeep := put(t, c, "/registry/configmaps/shop/keep", configMap(t, "shop", "keep", map[string]string{"v": "before"}))
	revChange0 := put(t, c, "/registry/configmaps/shop/change", configMap(t, "shop", "change", map[string]string{"v": "before"}))
	sec := &corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"}, ObjectMeta: storedMeta("shop", "gone"),
		Data: map[string][]byte{"password": []byte("hunter2")}, Type: corev1.SecretTypeOpaque}
	revGone := put(t, c, "/registry/secrets/shop/gone", protoValue(t, sec))
	replicas := int32(3)
	dep := &appsv1.Deployment{TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"}, ObjectMeta: storedMeta("shop", "web"),
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx:1.27"}}}}}}
	revDep := put(t, c, "/registry/deployments/shop/web", protoValue(t, dep))
	beforePath := snapshotFile(t, src, "before.db")
	before, err := Open(beforePath)
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	if before.Revision() != revDep {
		t.Fatalf("snapshot before the restore at revision %d, want %d", before.Revision(), revDep)
	}
	// etcd's next revision after the restore is the marker's plus one.
	marker := revDep + etcdsnap.RevisionBump

	for _, tool := range []struct {
		name    string
		restore restoreWith
	}{{"kubekeep", kubekeepRestore}, {"etcdutl", etcdutlRestore}} {
		t.Run(tool.name, func(t *testing.T) {
			peer, err := plainetcd.FreeURL()
			if err != nil {
				t.Fatal(err)
			}
			dataDir := filepath.Join(t.TempDir(), "etcd")
			tool.restore(t, beforePath, dataDir, "restored", peer.String())
			e, err := plainetcd.Start(dataDir, plainetcd.Options{Name: "restored", PeerURL: peer})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Stop()
			c := e.Client

			// A backup right after the restore: the marker is the newest entry.
			freshPath := snapshotFile(t, e, "fresh.db")
			sink := &segmentSink{}
			ds := etcdsnap.NewDeltaStreamer(c, marker, time.Now(), sink, etcdsnap.DeltaConfig{Flush: 20 * time.Millisecond, Heartbeat: 100 * time.Millisecond})
			sctx, stop := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- ds.Run(sctx) }()

			revChange := put(t, c, "/registry/configmaps/shop/change", configMap(t, "shop", "change", map[string]string{"v": "after"}))
			revDel := del(t, c, "/registry/secrets/shop/gone")
			revNew := put(t, c, "/registry/configmaps/shop/new", configMap(t, "shop", "new", map[string]string{"v": "after"}))
			if revChange != marker+1 {
				t.Errorf("first write after the restore at revision %d, want %d (marker + 1)", revChange, marker+1)
			}
			afterPath := snapshotFile(t, e, "after.db")
			for deadline := time.Now().Add(10 * time.Second); ds.Covered().ToRev < revNew; {
				if time.Now().After(deadline) {
					t.Fatalf("deltas cover revision %d, want %d", ds.Covered().ToRev, revNew)
				}
				time.Sleep(10 * time.Millisecond)
			}
			stop()
			if err := <-done; err != nil {
				t.Fatalf("delta streamer: %v", err)
			}

			after, err := Open(afterPath)
			if err != nil {
				t.Fatalf("open a snapshot taken after the restore: %v", err)
			}
			defer after.Close()
			if after.Revision() != revNew || after.CompactRevision() != marker {
				t.Errorf("after: revision %d compacted at %d, want %d and %d", after.Revision(), after.CompactRevision(), revNew, marker)
			}

			t.Run("get", func(t *testing.T) {
				for _, tc := range []struct {
					ref      string
					mod, ver int64
					v        string
				}{
					{"cm/shop/keep", revKeep, 1, "before"},
					{"cm/shop/change", revChange, 2, "after"},
					{"cm/shop/new", revNew, 1, "after"},
				} {
					o, err := after.Get(mustRef(t, tc.ref))
					if err != nil {
						t.Fatalf("%s: %v", tc.ref, err)
					}
					if o.ModRevision != tc.mod || o.Version != tc.ver || o.Kind() != "ConfigMap" {
						t.Errorf("%s: %s at revision %d version %d, want ConfigMap at %d version %d", tc.ref, o.Kind(), o.ModRevision, o.Version, tc.mod, tc.ver)
					}
					if v := o.Content()["data"].(map[string]any)["v"]; v != tc.v {
						t.Errorf("%s: data.v = %v, want %q", tc.ref, v, tc.v)
					}
				}
				d, err := after.Get(mustRef(t, "deploy/shop/web"))
				if err != nil || d.ModRevision != revDep || d.Kind() != "Deployment" {
					t.Fatalf("deployment written before the restore: %+v %v", d, err)
				}
				if img := d.Manifest(ManifestOptions{})["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)["image"]; img != "nginx:1.27" {
					t.Errorf("deployment image %v", img)
				}
				var nf *NotFoundError
				if _, err := after.Get(mustRef(t, "secret/shop/gone")); !errors.As(err, &nf) || nf.DeletedAt != revDel {
					t.Errorf("secret deleted after the restore: %v, want deleted at %d", err, revDel)
				}
			})

			t.Run("objects", func(t *testing.T) {
				var got []string
				for _, it := range after.List(Filter{}) {
					got = append(got, it.Ref.String())
				}
				want := "configmaps/shop/change configmaps/shop/keep configmaps/shop/new deployments.apps/shop/web"
				if strings.Join(got, " ") != want {
					t.Errorf("List = %v, want %s", got, want)
				}
				if n := after.Len(); n != 4 {
					t.Errorf("Len = %d, want 4 (the marker is no key)", n)
				}
			})

			t.Run("diff", func(t *testing.T) {
				ch, err := Diff(before, after)
				if err != nil {
					t.Fatal(err)
				}
				want := []Change{
					{Type: Changed, Ref: mustRef(t, "cm/shop/change"), Key: "/registry/configmaps/shop/change", OldRevision: revChange0, NewRevision: revChange},
					{Type: Added, Ref: mustRef(t, "cm/shop/new"), Key: "/registry/configmaps/shop/new", NewRevision: revNew},
					{Type: Removed, Ref: mustRef(t, "secret/shop/gone"), Key: "/registry/secrets/shop/gone", OldRevision: revGone},
				}
				if !equalJSON(ch, want) {
					t.Errorf("Diff(before, after) =\n%s\nwant\n%s", toJSON(ch), toJSON(want))
				}
			})

			t.Run("snapshot with the marker newest", func(t *testing.T) {
				fresh, err := Open(freshPath)
				if err != nil {
					t.Fatal(err)
				}
				defer fresh.Close()
				if fresh.Revision() != marker || fresh.CompactRevision() != marker {
					t.Errorf("fresh: revision %d compacted at %d, want both %d", fresh.Revision(), fresh.CompactRevision(), marker)
				}
				if ch, err := Diff(before, fresh); err != nil || len(ch) != 0 {
					t.Errorf("a restore changed objects: %s %v", toJSON(ch), err)
				}
				at, err := OpenAt(afterPath, marker)
				if err != nil {
					t.Fatal(err)
				}
				defer at.Close()
				if ch, err := Diff(fresh, at); err != nil || len(ch) != 0 || at.Revision() != marker {
					t.Errorf("after as of the marker's revision (%d) differs from the fresh snapshot: %s %v", at.Revision(), toJSON(ch), err)
				}
				if _, err := OpenAt(afterPath, revDep); !errors.Is(err, ErrCompacted) {
					t.Errorf("revision of the old cluster after a restore: %v, want ErrCompacted", err)
				}
			})

			t.Run("delta journal", func(t *testing.T) {
				fresh, err := Open(freshPath)
				if err != nil {
					t.Fatal(err)
				}
				defer fresh.Close()
				evs := sink.events(t)
				if len(evs) != 3 || evs[0].ModRevision != marker+1 {
					t.Fatalf("journal after the restore: %d events from revision %d, want 3 from %d", len(evs), evs[0].ModRevision, marker+1)
				}
				if err := fresh.ApplyEvents(evs); err != nil {
					t.Fatal(err)
				}
				if ch, err := Diff(fresh, after); err != nil || len(ch) != 0 || fresh.Revision() != revNew {
					t.Errorf("fresh + journal (revision %d) differs from after: %s %v", fresh.Revision(), toJSON(ch), err)
				}
			})

			t.Run("check and etcdsnap readers", func(t *testing.T) {
				st, err := snapread.CheckDB(afterPath)
				if err != nil {
					t.Fatal(err)
				}
				if st.Revision != revNew || st.Keys != 4 {
					t.Errorf("check: revision %d, %d keys; want %d, 4", st.Revision, st.Keys, revNew)
				}
				kvs, err := snapread.ReadKeys(afterPath)
				if err != nil || len(kvs) != 4 {
					t.Errorf("ReadKeys: %d keys %v", len(kvs), err)
				}
			})
		})
	}
}

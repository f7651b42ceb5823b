package etcdsnap_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	etcdutl "go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/internal/sandbox"
	"github.com/kubekeep/kubekeep/internal/testetcd"
	"github.com/kubekeep/kubekeep/objects"
)

// etcdServer is what the test needs of the embedded etcd 3.6 and of the
// etcd 3.5 child process.
type etcdServer interface {
	Stop()
	Restart(context.Context) error
	ClientT(testing.TB) *clientv3.Client
	Endpoint() string
	DataDir() string
	LoadCluster(context.Context) ([]string, error)
}

// restoreTool writes a data dir from a snapshot for the sandbox's member.
type restoreTool func(t *testing.T, r *sandbox.Root, snapshot, dataDir string)

func restoreKubekeep(t *testing.T, r *sandbox.Root, snapshot, dataDir string) {
	t.Helper()
	if _, err := etcdsnap.RestoreDataDir(ctxT(t), restoreConfig(r, snapshot, dataDir)); err != nil {
		t.Fatal(err)
	}
}

// restoreEtcdutl is `etcdutl snapshot restore --bump-revision
// --mark-compacted`, through etcdutl's own library.
func restoreEtcdutl(t *testing.T, r *sandbox.Root, snapshot, dataDir string) {
	t.Helper()
	cfg := restoreConfig(r, snapshot, dataDir)
	if err := etcdutl.NewV3(zap.NewNop()).Restore(etcdutl.RestoreConfig{
		SnapshotPath: snapshot, Name: cfg.Name, OutputDataDir: dataDir,
		PeerURLs: []string{cfg.InitialAdvertisePeerURLs}, InitialCluster: cfg.InitialCluster,
		InitialClusterToken: "etcd-cluster", RevisionBump: etcdsnap.RevisionBump, MarkCompacted: true,
	}); err != nil {
		t.Fatal(err)
	}
}

// restoreInPlace stops srv, keeps its data dir aside, restores snapshot
// into its place with tool and starts srv again on it.
func restoreInPlace(t *testing.T, srv etcdServer, r *sandbox.Root, tool restoreTool, snapshot string) {
	t.Helper()
	srv.Stop()
	if err := os.Rename(srv.DataDir(), fmt.Sprintf("%s.%d", srv.DataDir(), time.Now().UnixNano())); err != nil {
		t.Fatal(err)
	}
	tool(t, r, snapshot, srv.DataDir())
	if err := srv.Restart(ctxT(t)); err != nil {
		t.Fatalf("start etcd on the restored data dir: %v", err)
	}
}

// served is what etcd serves right now: every key with its value and mod
// revision, and the store's revision.
type served struct {
	rev int64
	kvs map[string]*mvccpb.KeyValue
}

func serve(t *testing.T, cli *clientv3.Client) served {
	t.Helper()
	resp, err := cli.Get(ctxT(t), "", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	s := served{rev: resp.Header.Revision, kvs: map[string]*mvccpb.KeyValue{}}
	for _, kv := range resp.Kvs {
		s.kvs[string(kv.Key)] = kv
	}
	return s
}

// readLikeKubekeep reads a snapshot as `kubekeep objects`, `get` and
// `diff` do (package objects: index, list, get every object) and as
// etcdsnap's own readers do, and returns the first error.
func readLikeKubekeep(path string) error {
	s, err := objects.Open(path)
	if err != nil {
		return err
	}
	defer s.Close()
	for _, it := range s.List(objects.Filter{}) {
		if _, err := s.GetKey(it.Key); err != nil {
			return err
		}
	}
	if _, err := objects.Diff(s, s); err != nil {
		return err
	}
	_, err = snapread.ReadKeys(path)
	return err
}

// sameAsServed holds a snapshot to what etcd served when it was taken:
// the check's revision and key count, etcdsnap's keys and values, and
// every /registry object as package objects reads it.
func sameAsServed(t *testing.T, path string, want served) {
	t.Helper()
	st, err := snapread.CheckDB(path)
	if err != nil {
		t.Fatalf("check of a snapshot taken after a restore: %v", err)
	}
	if st.Revision != want.rev || st.Keys != int64(len(want.kvs)) {
		t.Errorf("check: revision %d, %d keys; etcd served revision %d, %d keys", st.Revision, st.Keys, want.rev, len(want.kvs))
	}
	wantState := map[string]string{}
	registry := 0
	for k, kv := range want.kvs {
		wantState[k] = string(kv.Value)
		if strings.HasPrefix(k, "/registry/") {
			registry++
		}
	}
	sameState(t, "ReadKeys", wantState, dbState(t, path))
	s, err := objects.Open(path)
	if err != nil {
		t.Fatalf("objects: %v", err)
	}
	defer s.Close()
	if s.Revision() != want.rev {
		t.Errorf("objects: revision %d, etcd served %d", s.Revision(), want.rev)
	}
	items := s.List(objects.Filter{})
	if len(items) != registry {
		t.Errorf("objects: %d objects listed, etcd served %d keys under /registry", len(items), registry)
	}
	for _, it := range items {
		kv := want.kvs[it.Key]
		if kv == nil {
			t.Errorf("objects: %s listed, etcd did not serve it", it.Key)
			continue
		}
		o, err := s.GetKey(it.Key)
		if err != nil {
			t.Errorf("objects: get %s: %v", it.Key, err)
			continue
		}
		raw, err := s.RawValue(it.Key)
		if err != nil || !bytes.Equal(raw, kv.Value) || o.ModRevision != kv.ModRevision || o.CreateRevision != kv.CreateRevision || o.Version != kv.Version {
			t.Errorf("objects: %s at revision %d (created %d, version %d), etcd served %d (%d, %d); same value: %v %v",
				it.Key, o.ModRevision, o.CreateRevision, o.Version, kv.ModRevision, kv.CreateRevision, kv.Version, bytes.Equal(raw, kv.Value), err)
		}
	}
}

// TestCheckAfterRestore: after a restore with a revision bump, by
// kubekeep or by etcdutl, under etcd 3.6 or 3.5, the snapshots etcd gives
// hold the bump marker (no key) for good, the newest restore's. The
// backup check passes them and every reader reads them as etcd served
// them, a replay of deltas onto one included. The check parses entries as
// the readers do: an entry a reader would stop at (a key-less entry that
// is not the marker, a second key, a negative revision, a compaction
// record that is no revision) fails the check, so the backup holding it
// is not taken for a good one.
func TestCheckAfterRestore(t *testing.T) {
	for _, server := range []string{"3.6", "3.5"} {
		for _, tool := range []struct {
			name string
			fn   restoreTool
		}{{"kubekeep", restoreKubekeep}, {"etcdutl", restoreEtcdutl}} {
			t.Run(server+"/"+tool.name, func(t *testing.T) {
				r := testetcd.SandboxT(t)
				var srv etcdServer
				if server == "3.5" {
					srv = testetcd.StartEtcd35T(t, r)
				} else {
					srv = testetcd.StartT(t, r)
				}
				checkAfterRestore(t, r, srv, tool.fn)
			})
		}
	}
}

func checkAfterRestore(t *testing.T, r *sandbox.Root, srv etcdServer, tool restoreTool) {
	ctx := ctxT(t)
	if _, err := srv.LoadCluster(ctx); err != nil {
		t.Fatal(err)
	}
	cc := clientConfig(r, srv.Endpoint())
	dir := t.TempDir()
	before := filepath.Join(dir, "before.db")
	beforeRev := snapshotToFile(t, cc, before).Revision

	// First restore; what is written after it lands after the marker.
	restoreInPlace(t, srv, r, tool, before)
	cli := srv.ClientT(t)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "after-restore", Namespace: "shop"}, Data: map[string]string{"v": "1"}}
	if _, err := testetcd.PutObject(ctx, cli, "configmaps", cm); err != nil {
		t.Fatal(err)
	}
	cm.Data["v"] = "2"
	if _, err := testetcd.PutObject(ctx, cli, "configmaps", cm); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(ctx, testetcd.Key("secrets", "shop", "db-password")); err != nil {
		t.Fatal(err)
	}
	once := serve(t, cli)
	if once.rev != beforeRev+etcdsnap.RevisionBump+3 {
		t.Fatalf("etcd at revision %d after three writes on a restore of revision %d, want %d", once.rev, beforeRev, beforeRev+etcdsnap.RevisionBump+3)
	}
	afterOne := filepath.Join(dir, "after-one.db")
	infoOne := snapshotToFile(t, cc, afterOne)
	t.Run("snapshot after a restore", func(t *testing.T) { sameAsServed(t, afterOne, once) })

	// Deltas after that snapshot, then a second restore of it.
	sink := &memSink{}
	ds := etcdsnap.NewDeltaStreamer(cli, infoOne.Revision, infoOne.Started, sink, etcdsnap.DeltaConfig{Flush: 20 * time.Millisecond, Heartbeat: 100 * time.Millisecond})
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ds.Run(sctx) }()
	cm.Data["v"] = "3"
	if _, err := testetcd.PutObject(ctx, cli, "configmaps", cm); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/plain/after-one", "x"); err != nil {
		t.Fatal(err)
	}
	replayed := serve(t, cli)
	for deadline := time.Now().Add(10 * time.Second); ds.Covered().ToRev < replayed.rev; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("deltas cover %d, want %d", ds.Covered().ToRev, replayed.rev)
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Run("delta replay onto a snapshot taken after a restore", func(t *testing.T) {
		cfg := restoreConfig(r, afterOne, filepath.Join(dir, "replayed"))
		cfg.Segments = sink.readers()
		res, err := etcdsnap.RestoreDataDir(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if res.ReplayedEvents != 2 || res.ReplayedToRevision != replayed.rev {
			t.Errorf("replayed %d events to revision %d, want 2 to %d", res.ReplayedEvents, res.ReplayedToRevision, replayed.rev)
		}
		want := map[string]string{}
		for k, kv := range replayed.kvs {
			want[k] = string(kv.Value)
		}
		db := etcdsnap.DBPath(cfg.DataDir)
		sameState(t, "replayed data dir", want, dbState(t, db))
		if err := readLikeKubekeep(db); err != nil {
			t.Errorf("read the replayed data dir: %v", err)
		}
		if _, err := snapread.CheckDB(db); err != nil {
			t.Errorf("check the replayed data dir: %v", err)
		}
	})

	restoreInPlace(t, srv, r, tool, afterOne)
	cli = srv.ClientT(t)
	cm.Data["v"] = "4"
	if _, err := testetcd.PutObject(ctx, cli, "configmaps", cm); err != nil {
		t.Fatal(err)
	}
	twice := serve(t, cli)
	afterTwo := filepath.Join(dir, "after-two.db")
	snapshotToFile(t, cc, afterTwo)
	t.Run("snapshot after two restores", func(t *testing.T) {
		sameAsServed(t, afterTwo, twice)
		// Markers all belong to the empty key: compaction keeps the
		// newest, the second restore's.
		if m := markers(t, afterTwo); len(m) != 1 || m[0] != once.rev+etcdsnap.RevisionBump {
			t.Errorf("bump markers in the image at %v, want one at %d", m, once.rev+etcdsnap.RevisionBump)
		}
	})

	t.Run("entries readers refuse fail the check", func(t *testing.T) {
		top := twice.rev
		good := mustMarshal(t, &mvccpb.KeyValue{Key: []byte("/registry/configmaps/shop/injected"), CreateRevision: top + 1, ModRevision: top + 1, Version: 1,
			Value: once.kvs[testetcd.Key("configmaps", "shop", "after-restore")].Value})
		put := revBytes(top+1, 0, false)
		for _, tc := range []struct {
			name    string
			bucket  string
			k, v    []byte
			mention string
		}{
			{"a value without a key", "key", put, mustMarshal(t, &mvccpb.KeyValue{ModRevision: top + 1, Value: []byte("v")}), "has no key"},
			{"an empty entry at a delete", "key", revBytes(top+1, 0, true), []byte{}, "has no key"},
			{"an empty entry at sub-revision 1", "key", revBytes(top+1, 1, false), []byte{}, "has no key"},
			{"an empty key", "key", put, append([]byte{0x0a, 0x00}, good[2+len("/registry/configmaps/shop/injected"):]...), "empty key"},
			{"a second key after the value", "key", put, append(bytes.Clone(good), 0x0a, 0x01, 'x'), "two key fields"},
			{"a negative revision", "key", revBytes(-1, 0, false), good, "negative revision"},
			{"a scheduled compaction that is no revision", "meta", []byte("scheduledCompactRev"), []byte{0, 1}, "scheduledCompactRev"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				p := injected(t, afterTwo, tc.bucket, tc.k, tc.v)
				if err := readLikeKubekeep(p); err == nil {
					t.Fatal("readers read the injected entry: the case tests nothing")
				}
				_, err := snapread.CheckDB(p)
				if !errors.Is(err, snapread.ErrCorruptDB) || !strings.Contains(err.Error(), tc.mention) {
					t.Fatalf("check: %v; want ErrCorruptDB saying %q", err, tc.mention)
				}
				t.Logf("check: %v", err)
			})
		}
		// The same injection with the entry whole reads, and passes.
		p := injected(t, afterTwo, "key", put, good)
		if err := readLikeKubekeep(p); err != nil {
			t.Fatal(err)
		}
		if st, err := snapread.CheckDB(p); err != nil || st.Keys != int64(len(twice.kvs))+1 {
			t.Fatalf("check of a well-formed injected entry: %+v %v", st, err)
		}
	})
}

// revBytes is a key of bucket "key" as etcd's mvcc writes it: big-endian
// main, '_', big-endian sub, 't' for a delete.
func revBytes(main, sub int64, tomb bool) []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(main))
	b = append(b, '_')
	b = binary.BigEndian.AppendUint64(b, uint64(sub))
	if tomb {
		b = append(b, 't')
	}
	return b
}

func mustMarshal(t *testing.T, kv *mvccpb.KeyValue) []byte {
	t.Helper()
	b, err := kv.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// injected copies the image at src (without its sha256 trailer) and puts
// k=v into bucket there, as damage or a foreign tool would.
func injected(t *testing.T, src, bucket string, k, v []byte) string {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "injected.db")
	if err := os.WriteFile(p, data[:len(data)-snapread.TrailerSize], 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(p, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte(bucket)).Put(k, v) }); err != nil {
		t.Fatal(err)
	}
	return p
}

// markers lists the main revisions of the key bucket's empty entries: the
// bump markers.
func markers(t *testing.T, path string) []int64 {
	t.Helper()
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var revs []int64
	if err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("key")).ForEach(func(k, v []byte) error {
			if len(v) == 0 {
				revs = append(revs, int64(binary.BigEndian.Uint64(k[:8])))
			}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return revs
}

// The check pass exports kubeadm's three configuration documents, each the
// newest stored value of its ConfigMap: the ClusterConfiguration, the
// kubelet's (kube-system/kubelet-config, key kubelet) and kube-proxy's
// (kube-system/kube-proxy, key config.conf). A ConfigMap deleted before the
// snapshot is not exported; an image without one says ErrNotFound.
func TestCheckExportsKubeadmDocuments(t *testing.T) {
	r := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, r)
	ctx := ctxT(t)
	if _, err := srv.LoadCluster(ctx); err != nil {
		t.Fatal(err)
	}
	cli := srv.ClientT(t)
	cm := func(name, key, doc string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kube-system"}, Data: map[string]string{key: doc}}
	}
	kubelet1 := "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nmaxPods: 110\n"
	kubelet2 := "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nmaxPods: 42\n"
	proxy := "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n"
	for _, o := range []*corev1.ConfigMap{cm("kubelet-config", "kubelet", kubelet1), cm("kube-proxy", "config.conf", proxy), cm("kubelet-config", "kubelet", kubelet2)} {
		if _, err := testetcd.PutObject(ctx, cli, "configmaps", o); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "snap.db")
	info := snapshotToFile(t, clientConfig(r, srv.Endpoint()), path)
	for kind, want := range map[string]string{
		snapread.KindClusterConfiguration:   testetcd.ClusterConfiguration(r.Opts.KubernetesVersion, r.Opts.AdvertiseAddress),
		snapread.KindKubeletConfiguration:   kubelet2,
		snapread.KindKubeProxyConfiguration: proxy,
	} {
		got, err := info.KubeadmDocument(kind)
		if err != nil || string(got) != want {
			t.Errorf("%s from the check: %v\n%s\nwant:\n%s", kind, err, got, want)
		}
		if got, err := snapread.ExportKubeadmDocument(path, kind); err != nil || string(got) != want {
			t.Errorf("ExportKubeadmDocument(%s): %v\n%s", kind, err, got)
		}
	}

	// kube-proxy's ConfigMap deleted (kubeadm's addon phase skipped, or
	// removed by hand): the next snapshot has no such document.
	if _, err := cli.Delete(ctx, testetcd.Key("configmaps", "kube-system", "kube-proxy")); err != nil {
		t.Fatal(err)
	}
	path2 := filepath.Join(t.TempDir(), "snap2.db")
	info2 := snapshotToFile(t, clientConfig(r, srv.Endpoint()), path2)
	if got, err := info2.KubeadmDocument(snapread.KindKubeProxyConfiguration); !errors.Is(err, snapread.ErrNotFound) {
		t.Errorf("KubeProxyConfiguration after its ConfigMap was deleted: %v %q", err, got)
	}
	if got, err := info2.KubeadmDocument(snapread.KindKubeletConfiguration); err != nil || string(got) != kubelet2 {
		t.Errorf("KubeletConfiguration: %v %q", err, got)
	}
	if _, err := info2.KubeadmDocument("InitConfiguration"); err == nil {
		t.Error("an unknown kind was exported")
	}
}

package backup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/internal/sandbox"
	"github.com/kubekeep/kubekeep/internal/testetcd"
	"github.com/kubekeep/kubekeep/rsyncish"
)

func openStore(t *testing.T) *rsyncish.Store {
	t.Helper()
	s, err := rsyncish.Open(filepath.Join(t.TempDir(), "store"), rsyncish.Options{AllowSameFilesystem: true})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func readStream(t *testing.T, s *rsyncish.Store, id, name string) []byte {
	t.Helper()
	rc, _, err := s.OpenStream(id, name)
	if err != nil {
		t.Fatalf("open stream %s: %v", name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A backup against a real TLS etcd on a kubeadm-like root: files from
// discovery, a verified snapshot whose keys match etcd, the kubeadm
// ClusterConfiguration, and never the live etcd data dir as files.
func TestRunStoresFilesAndVerifiedSnapshot(t *testing.T) {
	root := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, root)
	ctx := context.Background()
	if _, err := srv.LoadCluster(ctx); err != nil {
		t.Fatal(err)
	}
	store := openStore(t)

	res, err := Run(ctx, Options{Root: root.Dir, Store: store, Etcd: config.Default().Etcd})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != versionread.StatusOK || res.Etcd == nil || !res.Etcd.Verified || res.Etcd.Source != snapread.SourceAPI {
		t.Fatalf("want a verified API snapshot, got status %s etcd %+v", res.Status, res.Etcd)
	}
	c := srv.ClientT(t)
	resp, err := c.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if res.Etcd.Keys != resp.Count {
		t.Errorf("snapshot has %d keys, etcd has %d", res.Etcd.Keys, resp.Count)
	}
	if res.Etcd.Revision != resp.Header.Revision {
		t.Errorf("snapshot revision %d, etcd revision %d", res.Etcd.Revision, resp.Header.Revision)
	}

	entries, err := store.List(res.ID)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, e := range entries {
		have[e.Path] = true
		if strings.HasPrefix(e.Path, root.EtcdDataDir+"/") {
			t.Errorf("live etcd data dir file %s was copied", e.Path)
		}
	}
	for _, want := range []string{"/etc/kubernetes/pki/ca.key", "/etc/kubernetes/pki/etcd/ca.key", "/etc/kubernetes/admin.conf",
		"/etc/kubernetes/manifests/etcd.yaml", "/var/lib/kubelet/config.yaml", versionread.EtcdSnapshotStream, versionread.ClusterConfigurationStream} {
		if !have[want] {
			t.Errorf("version lacks %s", want)
		}
	}
	// The stored ClusterConfiguration is the one in etcd, byte for byte.
	cc := readStream(t, store, res.ID, versionread.ClusterConfigurationStream)
	if !bytes.Contains(cc, []byte("kind: ClusterConfiguration")) {
		t.Errorf("ClusterConfiguration stream: %q", cc)
	}
	// The stored ca.key is the file on disk.
	rc, _, err := store.OpenFile(res.ID, "/etc/kubernetes/pki/ca.key")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	want, _ := os.ReadFile(root.Path("/etc/kubernetes/pki/ca.key"))
	if !bytes.Equal(got, want) {
		t.Error("stored ca.key differs from the source")
	}
	vi, err := store.Version(res.ID)
	if err != nil {
		t.Fatal(err)
	}
	var meta snapread.Info
	if err := json.Unmarshal(vi.Meta[versionread.MetaEtcd], &meta); err != nil || meta.Revision != res.Etcd.Revision || !meta.Verified {
		t.Errorf("etcd meta in the manifest: %s (%v)", vi.Meta[versionread.MetaEtcd], err)
	}
}

// etcd reachable but refusing our CA: the data dir is held by the running
// etcd, so no raw copy; the files are still committed, marked etcd-failed,
// with an error that names what failed.
func TestRunCommitsFilesWhenEtcdFails(t *testing.T) {
	root := testetcd.SandboxT(t)
	testetcd.StartT(t, root)
	other, err := sandbox.Build(t.TempDir(), sandbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	store := openStore(t)
	etcdCfg := config.Default().Etcd
	// Override paths are host paths under the root: place a CA that did not
	// sign etcd's certificate inside the root and point the override at it.
	foreign, _ := os.ReadFile(other.Path(other.EtcdCAFile))
	if err := os.WriteFile(root.Path("/etc/kubernetes/pki/etcd/foreign-ca.crt"), foreign, 0o600); err != nil {
		t.Fatal(err)
	}
	etcdCfg.CAFile = "/etc/kubernetes/pki/etcd/foreign-ca.crt"

	res, err := Run(context.Background(), Options{Root: root.Dir, Store: store, Etcd: etcdCfg})
	if err != nil {
		t.Fatalf("an etcd failure must not fail the file backup: %v", err)
	}
	if res.Status != versionread.StatusEtcdFailed || res.EtcdError == nil {
		t.Fatalf("want etcd-failed, got %s", res.Status)
	}
	if !errors.Is(res.EtcdError, snapread.ErrUnknownAuthority) {
		t.Errorf("error should say unknown authority: %v", res.EtcdError)
	}
	if res.Etcd.Verified {
		t.Error("a failed snapshot must never be verified")
	}
	entries, _ := store.List(res.ID)
	for _, e := range entries {
		if e.Path == versionread.EtcdSnapshotStream {
			t.Error("a failed snapshot stream must not be in the version")
		}
	}
	if res.Files == 0 {
		t.Error("files were not committed")
	}
}

// etcd stopped cleanly: nothing holds the data dir, so the db is copied raw,
// checked, and marked as such.
func TestRunFallsBackToRawCopyWhenEtcdIsDown(t *testing.T) {
	root := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, root)
	if _, err := srv.LoadCluster(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	store := openStore(t)
	etcdCfg := config.Default().Etcd
	etcdCfg.DialTimeout = 500 * time.Millisecond
	res, err := Run(context.Background(), Options{Root: root.Dir, Store: store, Etcd: etcdCfg})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != versionread.StatusOK || res.Etcd.Source != snapread.SourceRaw || !res.Etcd.Verified || res.Etcd.Keys == 0 {
		t.Fatalf("want a verified raw copy, got %s %+v", res.Status, res.Etcd)
	}
	raw := readStream(t, store, res.ID, versionread.EtcdSnapshotStream)
	onDisk, _ := os.ReadFile(etcdsnap.DBPath(srv.DataDir()))
	if !bytes.Equal(raw, onDisk) {
		t.Error("raw copy differs from the stopped etcd's db file")
	}
}

func TestRunRefusesNothingToBackUp(t *testing.T) {
	store := openStore(t)
	_, err := Run(context.Background(), Options{Root: t.TempDir(), Store: store, NoDiscover: true})
	if err == nil || !strings.Contains(err.Error(), "nothing to back up") {
		t.Fatalf("want 'nothing to back up', got %v", err)
	}
}

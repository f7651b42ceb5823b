package restore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubekeep/kubekeep/backup"
	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/internal/testetcd"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// TestRestoreStartsUnderEtcd35: kubeadm up to 1.33 runs etcd 3.5, so the
// data dir restore writes must start under a real etcd 3.5 server, not
// only under the 3.6 one the other tests embed. A v1.31 sandbox (etcd
// 3.5.15 in its manifest) is served by the etcd 3.5 binary, backed up,
// restored (files and etcd phases) into an empty root, and the 3.5 server
// started on the restored data dir with the manifest's member and peer
// URL must serve every key of the source at the backup revision, at that
// revision plus the bump, with everything below it compacted.
func TestRestoreStartsUnderEtcd35(t *testing.T) {
	bin := testetcd.Etcd35BinaryT(t) // before ctxT: a cold build takes minutes
	ctx := ctxT(t)
	root := testetcd.SandboxT(t) // v1.31.1, advertise 127.0.0.1: the manifest's peer URL is local
	src, err := testetcd.StartEtcd35(ctx, bin, root, testetcd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Stop)
	if _, err := src.LoadCluster(ctx); err != nil {
		t.Fatal(err)
	}
	cli := src.ClientT(t)
	for i := range 100 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/configmaps/load/cm-%03d", i), strings.Repeat("v", i)); err != nil {
			t.Fatal(err)
		}
	}
	// History before the snapshot: an overwrite and a delete.
	if _, err := cli.Put(ctx, "/registry/configmaps/load/cm-001", "second value"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(ctx, "/registry/configmaps/load/cm-007"); err != nil {
		t.Fatal(err)
	}
	st, err := cli.Status(ctx, src.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(st.Version, "3.5.") {
		t.Fatalf("the source etcd reports version %q, want 3.5.x", st.Version)
	}

	store, err := rsyncish.Open(filepath.Join(t.TempDir(), "store"), rsyncish.Options{AllowSameFilesystem: true})
	if err != nil {
		t.Fatal(err)
	}
	res, err := backup.Run(ctx, backup.Options{Root: root.Dir, Store: store, Etcd: config.Default().Etcd})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != versionread.StatusOK || res.Etcd == nil {
		t.Fatalf("backup status %s: %v", res.Status, res.EtcdError)
	}
	if res.Etcd.EtcdVersion != st.Version {
		t.Errorf("backup result records etcd version %q, the server reported %q", res.Etcd.EtcdVersion, st.Version)
	}
	// What `kubekeep versions` shows comes from the stored manifest.
	recorded := storedEtcdInfo(t, store, res.ID)
	if recorded.EtcdVersion != st.Version || recorded.Revision != res.Etcd.Revision {
		t.Errorf("version %s records etcd %q at revision %d; the server reported %q, the backup revision %d",
			res.ID, recorded.EtcdVersion, recorded.Revision, st.Version, res.Etcd.Revision)
	}
	t.Logf("backed up etcd %s (storage version %q) at revision %d, %d keys", recorded.EtcdVersion, recorded.StorageVersion, recorded.Revision, recorded.Keys)

	want := map[string]string{}
	resp, err := cli.Get(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithRev(res.Etcd.Revision))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range resp.Kvs {
		want[string(e.Key)] = string(e.Value)
	}
	if len(want) < 100 {
		t.Fatalf("source holds only %d keys at the backup revision", len(want))
	}
	if _, err := cli.Put(ctx, "/registry/configmaps/load/after-backup", "x"); err != nil {
		t.Fatal(err)
	}
	src.Stop()

	// Restore into an empty root, as on a wiped node.
	dir := filepath.Join(t.TempDir(), "node")
	var out bytes.Buffer
	if _, err := Run(ctx, Options{Root: dir, Store: store, Version: res.ID, Phases: []string{PhaseFiles, PhaseEtcd},
		Hostname: root.Opts.NodeName, HostIPs: []net.IP{net.ParseIP(root.Opts.AdvertiseAddress)}, Out: &out}); err != nil {
		t.Fatalf("restore: %v\n%s", err, out.String())
	}

	// The kubelet's part: the etcd 3.5 server on the restored data dir,
	// same member name, peer URL and certificates as the manifest.
	restored := *root
	restored.Dir = dir
	dst, err := testetcd.StartEtcd35(ctx, bin, &restored, testetcd.Options{})
	if err != nil {
		t.Fatalf("etcd 3.5 refused the restored data dir: %v", err)
	}
	t.Cleanup(dst.Stop)
	rc := dst.ClientT(t)

	kv, rev := readAll(t, rc)
	bumped := res.Etcd.Revision + etcdsnap.RevisionBump
	if rev != bumped {
		t.Errorf("restored etcd 3.5 at revision %d, want %d (backup revision %d + bump)", rev, bumped, res.Etcd.Revision)
	}
	if len(kv) != len(want) {
		t.Errorf("restored etcd 3.5 has %d keys, the source had %d at the backup revision", len(kv), len(want))
	}
	for _, k := range sortedKeys(want) {
		if kv[k] != want[k] {
			t.Errorf("key %s: restored %q, source %q", k, trunc(kv[k]), trunc(want[k]))
		}
	}
	if _, ok := kv["/registry/configmaps/load/after-backup"]; ok {
		t.Error("a key written after the backup was restored")
	}
	if _, ok := kv["/registry/configmaps/load/cm-007"]; ok {
		t.Error("a key deleted before the backup came back")
	}

	// Mark-compacted: every revision below the bumped one is gone, so
	// a client (an apiserver's informer) that held an old revision must
	// relist instead of reading or watching history that never happened.
	for _, old := range []int64{res.Etcd.Revision, bumped - 1} {
		_, err := rc.Get(ctx, "/registry/configmaps/load/cm-001", clientv3.WithRev(old))
		if !errors.Is(err, rpctypes.ErrCompacted) {
			t.Errorf("read at revision %d on the restored etcd 3.5: %v, want %v", old, err, rpctypes.ErrCompacted)
		}
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	wr, ok := <-rc.Watch(wctx, "/registry/", clientv3.WithPrefix(), clientv3.WithRev(res.Etcd.Revision+1))
	wcancel()
	if !ok || wr.CompactRevision != bumped {
		t.Errorf("watch from revision %d on the restored etcd 3.5: compact revision %d (err %v), want %d",
			res.Etcd.Revision+1, wr.CompactRevision, wr.Err(), bumped)
	}

	// The member is the manifest's.
	ml, err := rc.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ml.Members) != 1 || ml.Members[0].Name != root.Opts.NodeName ||
		len(ml.Members[0].PeerURLs) != 1 || ml.Members[0].PeerURLs[0] != root.EtcdPeerURL() {
		t.Errorf("restored membership %+v, want one member %s at %s", ml.Members, root.Opts.NodeName, root.EtcdPeerURL())
	}

	// It goes on as a normal etcd 3.5: a write, a restart from its own
	// WAL and snapshot, the write still there.
	pr, err := rc.Put(ctx, "/registry/configmaps/load/after-restore", "y")
	if err != nil {
		t.Fatal(err)
	}
	if pr.Header.Revision != bumped+1 {
		t.Errorf("first write after the restore at revision %d, want %d", pr.Header.Revision, bumped+1)
	}
	if err := dst.Restart(ctx); err != nil {
		t.Fatalf("restart etcd 3.5 on the restored data dir: %v", err)
	}
	kv, rev = readAll(t, dst.ClientT(t))
	if rev != bumped+1 || kv["/registry/configmaps/load/after-restore"] != "y" || len(kv) != len(want)+1 {
		t.Errorf("after restart: revision %d, %d keys, after-restore=%q", rev, len(kv), kv["/registry/configmaps/load/after-restore"])
	}
	dst.Stop()
	if err := dst.ExitError(); err != nil {
		t.Errorf("etcd 3.5 on the restored data dir did not stop cleanly: %v", err)
	}
	if t.Failed() {
		t.Logf("etcd 3.5 log on the restored data dir:\n%s", dst.Log())
	}
}

// storedEtcdInfo is the etcd part of a version's meta, as `kubekeep
// versions` reads it.
func storedEtcdInfo(t *testing.T, s *rsyncish.Store, id string) snapread.Info {
	t.Helper()
	vs, err := s.Versions()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		if v.ID != id {
			continue
		}
		raw, ok := v.Meta[versionread.MetaEtcd]
		if !ok {
			t.Fatalf("version %s has no %q meta", id, versionread.MetaEtcd)
		}
		var info snapread.Info
		if err := json.Unmarshal(raw, &info); err != nil {
			t.Fatalf("version %s etcd meta: %v", id, err)
		}
		return info
	}
	t.Fatalf("version %s not listed", id)
	return snapread.Info{}
}

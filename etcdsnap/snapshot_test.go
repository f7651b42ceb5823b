package etcdsnap_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/internal/sandbox"
	"github.com/kubekeep/kubekeep/internal/testetcd"
)

func clientConfig(r *sandbox.Root, endpoint string) etcdsnap.ClientConfig {
	return etcdsnap.ClientConfig{
		Endpoints:   []string{endpoint},
		CAFile:      r.Path(r.EtcdCAFile),
		CertFile:    r.Path(r.EtcdClientCert),
		KeyFile:     r.Path(r.EtcdClientKey),
		DialTimeout: 2 * time.Second,
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// snapshotToFile takes an API snapshot into path and checks it the way the
// integrator does: stream, materialise, Info.Check.
func snapshotToFile(t *testing.T, cc etcdsnap.ClientConfig, path string) snapread.Info {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, err := etcdsnap.Snapshot(ctxT(t), cc, f)
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if _, err := info.Check(path); err != nil {
		t.Fatalf("check: %v", err)
	}
	if !info.Verified || !info.TrailerVerified || info.Source != snapread.SourceAPI {
		t.Fatalf("snapshot not verified: %+v", info)
	}
	return info
}

func TestSnapshotCheckAndExport(t *testing.T) {
	r := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, r)
	ctx := ctxT(t)
	if _, err := srv.LoadCluster(ctx); err != nil {
		t.Fatal(err)
	}
	cli := srv.ClientT(t)
	for i := range 50 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/plain/%03d", i), strings.Repeat("v", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Delete(ctx, "/plain/007"); err != nil {
		t.Fatal(err)
	}
	st, err := cli.Status(ctx, srv.Endpoint())
	if err != nil {
		t.Fatal(err)
	}

	path := filepath.Join(t.TempDir(), "snap.db")
	info := snapshotToFile(t, clientConfig(r, srv.Endpoint()), path)
	if info.Revision != st.Header.Revision {
		t.Errorf("revision %d, etcd says %d", info.Revision, st.Header.Revision)
	}
	want := int64(7 + 49) // LoadCluster objects + plain keys minus the deleted one
	if info.Keys != want {
		t.Errorf("keys %d, want %d", info.Keys, want)
	}
	fi, _ := os.Stat(path)
	if info.StreamBytes != fi.Size() || info.DBSize != fi.Size()-snapread.TrailerSize {
		t.Errorf("sizes: stream %d db %d file %d", info.StreamBytes, info.DBSize, fi.Size())
	}
	if info.EtcdVersion == "" || info.ClusterID == 0 || info.MemberID == 0 || len(info.SHA256) != 64 {
		t.Errorf("metadata missing: %+v", info)
	}

	doc, err := snapread.ExportClusterConfiguration(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(doc) != testetcd.ClusterConfiguration(r.Opts.KubernetesVersion, r.Opts.AdvertiseAddress) {
		t.Errorf("exported ClusterConfiguration differs:\n%s", doc)
	}
	kv, found, err := snapread.Get(path, "/plain/007")
	if err != nil || found {
		t.Errorf("deleted key found=%v err=%v %+v", found, err, kv)
	}
	kv, found, err = snapread.Get(path, "/plain/010")
	if err != nil || !found || string(kv.Value) != strings.Repeat("v", 10) {
		t.Errorf("Get /plain/010: found=%v err=%v value=%q", found, err, kv.Value)
	}
	obj, err := snapread.DecodeObject(mustGet(t, path, testetcd.Key("deployments", "shop", "shop")).Value)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprintf("%T", obj); got != "*v1.Deployment" {
		t.Errorf("decoded %s", got)
	}
}

func mustGet(t *testing.T, path, key string) snapread.KeyValue {
	t.Helper()
	kv, found, err := snapread.Get(path, key)
	if err != nil || !found {
		t.Fatalf("get %s: found=%v err=%v", key, found, err)
	}
	return kv
}

func TestCheckDBRejectsCorruption(t *testing.T) {
	r := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, r)
	ctx := ctxT(t)
	cli := srv.ClientT(t)
	for i := range 200 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/k/%04d", i), strings.Repeat("x", 200)); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "snap.db")
	snapshotToFile(t, clientConfig(r, srv.Endpoint()), path)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Zero a page past the two meta pages: a branch or leaf of the tree.
	bad := bytes.Clone(data)
	for p := 2; (p+1)*4096 <= len(bad); p++ {
		if bad[p*4096+8] != 0 || bad[p*4096+9] != 0 { // page flags set: a live page
			clear(bad[p*4096 : (p+1)*4096])
			break
		}
	}
	badPath := filepath.Join(t.TempDir(), "bad.db")
	if err := os.WriteFile(badPath, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	info := snapread.Info{Source: snapread.SourceAPI, TrailerVerified: true}
	_, err = info.Check(badPath)
	t.Logf("zeroed page: %v", err)
	if !errors.Is(err, snapread.ErrCorruptDB) {
		t.Fatalf("check of a zeroed page: %v, want ErrCorruptDB", err)
	}
	if info.Verified {
		t.Fatal("corrupt image marked verified")
	}
	// And the trailer catches the same damage on the stream.
	if _, _, err := snapread.CopyVerified(new(bytes.Buffer), bytes.NewReader(bad)); !errors.Is(err, snapread.ErrBadTrailer) {
		t.Fatalf("CopyVerified of damaged stream: %v", err)
	}
}

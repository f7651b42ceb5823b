package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/internal/s3test"
	"github.com/kubekeep/kubekeep/rsyncish/backend"
)

// pullJSON is `offsite pull -o json`.
type pullJSON struct {
	Tier        string   `json:"tier"`
	Objects     int      `json:"objects"`
	Bytes       int64    `json:"bytes"`
	AlreadyHad  int      `json:"alreadyHad"`
	Destination string   `json:"destination"`
	Version     string   `json:"version"`
	Versions    []string `json:"versions"`
	ObjectsLeft int      `json:"objectsLeft"`
	BytesLeft   int64    `json:"bytesLeft"`
}

// storeObjects is what a store holds that a tier copies (its objects,
// not its local state), counted from its files.
func storeObjects(t *testing.T, dir string) (objects int, size int64) {
	t.Helper()
	b, err := backend.OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, ft := range backend.Types {
		if err := b.List(context.Background(), ft, func(fi backend.FileInfo) error {
			if ft != backend.ConfigFile || fi.Name == "config.json" {
				objects++
				size += fi.Size
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	return objects, size
}

// regularFiles maps the regular files under dir (relative, slash
// separated) to their content.
func regularFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		b, err := os.ReadFile(p)
		out[filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The second-site rebuild of a journal version, through the CLI, on a
// real S3 server and a real etcd: the tier holds an old full version
// with a 40 MiB file of its own, a newer full version (the base), a
// journal version on it and the delta journal past it. `offsite pull
// --version latest` makes a store of the journal version and its base
// only: the old version's packs stay in the tier (the pull copies
// megabytes less than the tier holds), `versions` lists the two,
// `verify --read-data` is clean, `restore files --to` gives the files
// as they were at the journal version and `restore etcd --to` what
// etcd held at its revision, and at a revision after it (the journal
// after the version came too). A pull killed before its manifests is
// finished by a rerun; --all copies everything. Before, every pull
// copied every object of the tier.
func TestOffsitePullOneVersion(t *testing.T) {
	w := newJournalWorld(t, 4*time.Minute)
	root, cli, ctx, storeDir := w.root, w.cli, w.ctx, w.storeDir
	kk, backupJSON := w.must, w.backup
	pki := filepath.Join(root.Dir, "etc/kubernetes/pki")
	random := func(n int) []byte { b := make([]byte, n); rand.Read(b); return b }

	// The old version: a big file only it holds.
	oldBundle := filepath.Join(pki, "old-bundle.bin")
	if err := os.WriteFile(oldBundle, random(40<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/pull/old", "o"); err != nil {
		t.Fatal(err)
	}
	old := backupJSON()
	// The base: the big file gone, another one.
	if err := os.Remove(oldBundle); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pki, "base.bin"), random(1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/pull/base", "b"); err != nil {
		t.Fatal(err)
	}
	base := backupJSON("--full")
	if old.EtcdKind != versionread.EtcdKindFull || base.EtcdKind != versionread.EtcdKindFull {
		t.Fatalf("old %+v, base %+v: want two full versions", old, base)
	}

	// The delta stream, as the agent runs it, then the journal version.
	stopStream := w.startStream(base.Etcd.Revision)
	waitJournal := w.waitJournal
	put, err := cli.Put(ctx, "/pull/journal", "j")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(ctx, "/pull/old"); err != nil {
		t.Fatal(err)
	}
	waitJournal(put.Header.Revision)
	if err := os.WriteFile(filepath.Join(pki, "journal-era.txt"), []byte("written between the base and the journal version\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	jv := backupJSON()
	if jv.EtcdKind != versionread.EtcdKindJournal || jv.Etcd.Base != base.ID {
		t.Fatalf("backup with the delta stream running: %+v %+v, want a journal version on %s", jv, jv.Etcd, base.ID)
	}
	want := regularFiles(t, filepath.Join(root.Dir, "etc/kubernetes"))
	// The journal after the version.
	after, err := cli.Put(ctx, "/pull/after", "a")
	if err != nil {
		t.Fatal(err)
	}
	waitJournal(after.Header.Revision)
	stopStream()

	// The tier, on a real S3 server.
	s3 := s3test.StartT(t)
	mc, err := minio.New(s3.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(s3.AccessKey, s3.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	if err := mc.MakeBucket(ctx, "kk-dr", minio.MakeBucketOptions{ObjectLocking: true}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", s3.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3.SecretKey)
	idFile := filepath.Join(t.TempDir(), "dr.agekey")
	recipient, err := runCLI(t, "offsite", "keygen", "--out", idFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "kubekeep.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`offsite:
  - name: dr
    url: s3://kk-dr/cp1
    endpoint: http://%s
    region: us-east-1
    recipients: [%s]
    lockDays: 1
`, s3.Endpoint, strings.TrimSpace(recipient))), 0o600); err != nil {
		t.Fatal(err)
	}
	kk("offsite", "sync", "--config", cfg)
	tierObjects, tierBytes := storeObjects(t, storeDir)

	// A new machine: the config and the identity.
	pulledDir := filepath.Join(t.TempDir(), "pulled")
	pull := func(dir string, args ...string) pullJSON {
		t.Helper()
		out, err := runCLI(t, append([]string{"offsite", "pull", "--config", cfg, "--identity", idFile, "--store", dir, "--log-level", "error", "-o", "json"}, args...)...)
		if err != nil {
			t.Fatalf("offsite pull %v: %v\n%s", args, err, out)
		}
		var r pullJSON
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("pull -o json: %v\n%s", err, out)
		}
		return r
	}
	res := pull(pulledDir, "--version", "latest")
	pulledObjects, pulledBytes := storeObjects(t, pulledDir)
	t.Logf("tier: %d objects, %d bytes; the pull of %s copied %d objects, %d bytes (%d on disk); left %d objects, %d bytes",
		tierObjects, tierBytes, jv.ID, res.Objects, res.Bytes, pulledBytes, res.ObjectsLeft, res.BytesLeft)
	if res.Tier != "dr" || res.Version != jv.ID || !slices.Equal(res.Versions, []string{base.ID, jv.ID}) || res.Destination != pulledDir {
		t.Errorf("pull -o json: %+v, want version %s with its base %s", res, jv.ID, base.ID)
	}
	if res.Objects != pulledObjects || res.Bytes != pulledBytes || res.AlreadyHad != 0 {
		t.Errorf("pull says %d objects, %d bytes; the pulled store holds %d objects, %d bytes", res.Objects, res.Bytes, pulledObjects, pulledBytes)
	}
	// The old version's 40 MiB fill at least one 16 MiB pack (packs are
	// closed before 16 MiB) with nothing else: it stays in the tier.
	if pulledBytes > tierBytes-15<<20 || res.ObjectsLeft+pulledObjects != tierObjects || res.BytesLeft+pulledBytes != tierBytes {
		t.Errorf("pulled %d objects, %d bytes, left %d, %d; the tier holds %d objects, %d bytes", pulledObjects, pulledBytes, res.ObjectsLeft, res.BytesLeft, tierObjects, tierBytes)
	}

	on := func(args ...string) string {
		t.Helper()
		out, err := runCLI(t, append(args, "--store", pulledDir, "--log-level", "error")...)
		if err != nil {
			t.Fatalf("kubekeep %v on the pulled store: %v\n%s", args, err, out)
		}
		return out
	}
	var listed []struct {
		ID       string `json:"id"`
		EtcdKind string `json:"etcdKind"`
		Latest   bool   `json:"latest"`
	}
	if err := json.Unmarshal([]byte(on("versions", "-o", "json")), &listed); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 2 || listed[0].ID != base.ID || listed[1].ID != jv.ID || listed[1].EtcdKind != "journal" || !listed[1].Latest {
		t.Errorf("versions on the pulled store: %+v, want %s and the journal version %s (latest)", listed, base.ID, jv.ID)
	}
	on("verify", "--read-data")

	to := filepath.Join(t.TempDir(), "files")
	on("restore", "files", "--version", "latest", "--to", to)
	got := regularFiles(t, filepath.Join(to, "etc/kubernetes"))
	for name, b := range got {
		if w, ok := want[name]; !ok || !bytes.Equal(b, w) {
			t.Errorf("restored etc/kubernetes/%s (%d bytes) is not what the source held at the journal version (%d bytes, there %v)", name, len(b), len(w), ok)
		}
	}
	for name := range want {
		if _, ok := got[name]; !ok && strings.HasPrefix(name, "pki/") {
			t.Errorf("etc/kubernetes/%s was not restored", name)
		}
	}
	if _, ok := got["pki/journal-era.txt"]; !ok {
		t.Error("the journal version's own file was not restored")
	}
	if _, ok := got["pki/old-bundle.bin"]; ok {
		t.Error("the old version's file was restored into the journal version's tree")
	}

	etcdAt := func(rev int64, args ...string) {
		t.Helper()
		dir := filepath.Join(t.TempDir(), "etcd")
		on(append([]string{"restore", "etcd", "--version", jv.ID, "--to", dir}, args...)...)
		kvs, err := snapread.ReadKeys(etcdsnap.DBPath(dir))
		if err != nil {
			t.Fatal(err)
		}
		src, err := cli.Get(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithRev(rev))
		if err != nil {
			t.Fatal(err)
		}
		restored := map[string]string{}
		for _, kv := range kvs {
			restored[string(kv.Key)] = string(kv.Value)
		}
		if len(restored) != len(src.Kvs) {
			t.Errorf("restore etcd %v: %d keys, etcd held %d at revision %d", args, len(restored), len(src.Kvs), rev)
		}
		for _, kv := range src.Kvs {
			if restored[string(kv.Key)] != string(kv.Value) {
				t.Errorf("restore etcd %v: %s = %q, etcd held %q at revision %d", args, kv.Key, restored[string(kv.Key)], kv.Value, rev)
			}
		}
	}
	etcdAt(jv.Etcd.Revision)
	etcdAt(after.Header.Revision, "--revision", fmt.Sprint(after.Header.Revision))

	// Killed after the data landed, before the manifests: a rerun
	// finishes it, copying only what is missing.
	for _, p := range []string{"versions", "verified", "config.json"} {
		if err := os.RemoveAll(filepath.Join(pulledDir, p)); err != nil {
			t.Fatal(err)
		}
	}
	left, _ := storeObjects(t, pulledDir)
	again := pull(pulledDir, "--version", jv.ID)
	if again.AlreadyHad != left || again.Objects != pulledObjects-left || !slices.Equal(again.Versions, res.Versions) {
		t.Errorf("the rerun: %+v; want the %d objects left kept and the other %d copied", again, left, pulledObjects-left)
	}
	on("verify", "--read-data")

	// Without -o json: what came, and what stayed in the tier.
	text, err := runCLI(t, "offsite", "pull", "--config", cfg, "--identity", idFile, "--store", filepath.Join(t.TempDir(), "text"), "--version", base.ID[:22], "--log-level", "error")
	if err != nil || !strings.Contains(text, "version "+base.ID+" is in it") || !strings.Contains(text, "versions "+base.ID+" pulled; ") || !strings.Contains(text, "left in the tier") {
		t.Errorf("pull of the base by a prefix of its ID: %v\n%s", err, text)
	}

	// --all: every object, every version.
	all := pull(filepath.Join(t.TempDir(), "all"), "--all")
	if all.Objects != tierObjects || all.Bytes != tierBytes || !slices.Equal(all.Versions, []string{old.ID, base.ID, jv.ID}) || all.Version != jv.ID {
		t.Errorf("pull --all: %+v; the tier holds %d objects, %d bytes and versions %s %s %s", all, tierObjects, tierBytes, old.ID, base.ID, jv.ID)
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubekeep/kubekeep/backup"
	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/internal/testetcd"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// runCLILog is runCLI with stderr (the JSON log) kept.
func runCLILog(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	t.Setenv("KUBEKEEP_CONFIG", "")
	cmd := newRootCommand()
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetArgs(args)
	err = cmd.ExecuteContext(context.Background())
	return out.String(), errb.String(), err
}

// logRecord finds the JSON log line with msg.
func logRecord(t *testing.T, stderr, msg string) map[string]any {
	t.Helper()
	for _, line := range strings.Split(stderr, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			return m
		}
	}
	t.Fatalf("no log line %q in:\n%s", msg, stderr)
	return nil
}

type objectsFixture struct {
	root  string
	dir   string
	cli   *clientv3.Client
	store *rsyncish.Store
	v1    rsyncish.VersionInfo
	kk    func(args ...string) (string, string, error)
}

// newObjectsFixture backs up a sandbox etcd holding a few MiB of
// ConfigMaps in namespace shop (and some elsewhere).
func newObjectsFixture(t *testing.T) *objectsFixture {
	r := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, r)
	f := &objectsFixture{root: r.Dir, dir: filepath.Join(t.TempDir(), "store"), cli: srv.ClientT(t)}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	if _, err := srv.LoadCluster(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 400 {
		ns := []string{"shop", "web", "kube-public"}[i%3]
		f.putCM(t, ns, fmt.Sprintf("cm-%03d", i), strings.Repeat(fmt.Sprint(i%10), 8000))
	}
	f.putCM(t, "shop", "target", "before")
	f.kk = func(args ...string) (string, string, error) {
		return runCLILog(t, append([]string{"--root", f.root, "--store", f.dir, "--allow-same-filesystem", "--log-format", "json", "--log-level", "info"}, args...)...)
	}
	if out, stderr, err := f.kk("backup"); err != nil {
		t.Fatalf("backup: %v\n%s\n%s", err, out, stderr)
	}
	var err error
	if f.store, err = rsyncish.Open(f.dir, rsyncish.Options{AllowSameFilesystem: true}); err != nil {
		t.Fatal(err)
	}
	if f.v1, err = f.store.Newest(); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *objectsFixture) putCM(t *testing.T, ns, name, v string) int64 {
	t.Helper()
	ctx := context.Background()
	if _, err := testetcd.PutObject(ctx, f.cli, "configmaps", &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Data: map[string]string{"k": v}}); err != nil {
		t.Fatal(err)
	}
	r, err := f.cli.Get(ctx, testetcd.Key("configmaps", ns, name))
	if err != nil {
		t.Fatal(err)
	}
	return r.Header.Revision
}

func streamSize(t *testing.T, vi rsyncish.VersionInfo, name string) int64 {
	t.Helper()
	for _, sh := range vi.Streams {
		if sh.Name == name {
			return sh.Size
		}
	}
	t.Fatalf("version %s has no stream %s", vi.ID, name)
	return 0
}

// etcdNames lists what etcd serves under prefix at rev, as "name rev".
func etcdNames(t *testing.T, cli *clientv3.Client, prefix string, rev int64) []string {
	t.Helper()
	resp, err := cli.Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		out = append(out, fmt.Sprintf("%s %d", strings.TrimPrefix(string(kv.Key), prefix), kv.ModRevision))
	}
	return out
}

// listed is `objects -o json`'s rows as "name rev".
func listed(t *testing.T, out string) []string {
	t.Helper()
	var doc struct {
		Objects []struct {
			Name        string `json:"name"`
			ModRevision int64  `json:"modRevision"`
		} `json:"objects"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("objects -o json: %v\n%s", err, out)
	}
	var rows []string
	for _, o := range doc.Objects {
		rows = append(rows, fmt.Sprintf("%s %d", o.Name, o.ModRevision))
	}
	sort.Strings(rows)
	return rows
}

// TestGetReadsOnlyWhatItNeeds: `get` and `objects` of one resource in one
// namespace read, through the store, a small part of the stored snapshot
// (the key index's root, a chunk, a block and the value), not the whole
// stream, and answer what etcd serves. Before, every call copied the whole
// snapshot out of the store into a temp file and indexed every key.
func TestGetReadsOnlyWhatItNeeds(t *testing.T) {
	f := newObjectsFixture(t)
	snapSize := streamSize(t, f.v1, versionread.EtcdSnapshotStream)
	if snapSize < 3<<20 {
		t.Fatalf("snapshot of %d bytes: too small to tell", snapSize)
	}
	out, stderr, err := f.kk("get", "--version", f.v1.ID, "configmaps/shop/target")
	if err != nil {
		t.Fatalf("get: %v\n%s", err, stderr)
	}
	if !strings.Contains(out, "k: before") || !strings.Contains(out, "name: target") {
		t.Errorf("get printed:\n%s", out)
	}
	rec := logRecord(t, stderr, "object")
	read, _ := rec["storeBytesRead"].(float64)
	if rec["indexed"] != true || read <= 0 || int64(read) > snapSize/10 {
		t.Errorf("get read %v bytes of a %d-byte snapshot through the store (indexed %v)", rec["storeBytesRead"], snapSize, rec["indexed"])
	}
	t.Logf("get: %v of %d snapshot bytes read from the store", read, snapSize)

	out, stderr, err = f.kk("objects", "--version", f.v1.ID, "configmaps", "-n", "web", "-o", "json")
	if err != nil {
		t.Fatalf("objects: %v\n%s", err, stderr)
	}
	ve := versionread.VersionEtcd(f.v1)
	want := etcdNames(t, f.cli, "/registry/configmaps/web/", ve.Revision)
	if got := listed(t, out); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("objects configmaps -n web:\n%v\netcd serves:\n%v", got, want)
	}
	rec = logRecord(t, stderr, "listed objects")
	if read, _ := rec["storeBytesRead"].(float64); rec["indexed"] != true || int64(read) > snapSize/4 {
		t.Errorf("objects read %v bytes of a %d-byte snapshot (indexed %v)", rec["storeBytesRead"], snapSize, rec["indexed"])
	}
}

// TestJournalVersion: a journal version (no snapshot of its own: its
// base's snapshot and key index plus the delta journal up to its
// revision), as `kubekeep backup` makes one while the delta stream runs,
// reads exactly as etcd served at that revision, through get, objects and
// diff; a change after its revision is not in it, and `get --at` after
// that change is.
func TestJournalVersion(t *testing.T) {
	f := newObjectsFixture(t)
	ve := versionread.VersionEtcd(f.v1)
	sink, err := backup.DeltaSink(f.store)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- etcdsnap.NewDeltaStreamer(f.cli, ve.Revision, f.v1.Time, sink, etcdsnap.DeltaConfig{Flush: 20 * time.Millisecond}).Run(ctx)
	}()
	j, _ := f.store.Journal(versionread.DeltaJournal)
	durable := func(rev int64) {
		deadline := time.Now().Add(30 * time.Second)
		for {
			segs, _ := j.List()
			if len(segs) > 0 && int64(segs[len(segs)-1].Last) >= rev {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("revision %d never became durable", rev)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	f.putCM(t, "shop", "target", "journal")
	f.putCM(t, "shop", "added", "new")
	if _, err := f.cli.Delete(context.Background(), testetcd.Key("configmaps", "shop", "cm-003")); err != nil {
		t.Fatal(err)
	}
	rev := f.putCM(t, "web", "cm-004", "changed")
	durable(rev)

	// The journal version the backup writes while the delta stream runs.
	out, stderr, err := f.kk("backup", "-o", "json")
	if err != nil {
		t.Fatalf("backup: %v\n%s", err, stderr)
	}
	var made struct {
		ID       string         `json:"id"`
		EtcdKind string         `json:"etcdKind"`
		Etcd     *snapread.Info `json:"etcd"`
	}
	if err := json.Unmarshal([]byte(out), &made); err != nil {
		t.Fatal(err)
	}
	if made.EtcdKind != versionread.EtcdKindJournal || made.Etcd.Base != f.v1.ID || made.Etcd.Revision < rev {
		t.Fatalf("backup with the delta stream running: kind %q, etcd %+v; want a journal version on %s at %d or later", made.EtcdKind, made.Etcd, f.v1.ID, rev)
	}
	jv, err := f.store.Version(made.ID)
	if err != nil {
		t.Fatal(err)
	}
	rev = made.Etcd.Revision
	later := f.putCM(t, "shop", "target", "later")
	durable(later)
	time.Sleep(100 * time.Millisecond)
	after := time.Now()
	time.Sleep(100 * time.Millisecond) // progress marks cover it
	stop()
	<-done

	out, stderr, err = f.kk("get", "--version", jv.ID, "configmaps/shop/target")
	if err != nil {
		t.Fatalf("get: %v\n%s", err, stderr)
	}
	if !strings.Contains(out, "k: journal") {
		t.Errorf("get of the journal version:\n%s", out)
	}
	if rec := logRecord(t, stderr, "object"); rec["indexed"] != true || rec["snapshotRevision"] != float64(rev) {
		t.Errorf("get: indexed %v at revision %v, want the index at %d", rec["indexed"], rec["snapshotRevision"], rev)
	}
	if _, _, err := f.kk("get", "--version", jv.ID, "configmaps/shop/cm-003"); exitCode(err) != 1 {
		t.Errorf("get of a key the journal deleted: %v", err)
	}
	for _, ns := range []string{"shop", "web"} {
		out, stderr, err = f.kk("objects", "--version", jv.ID, "configmaps", "-n", ns, "-o", "json")
		if err != nil {
			t.Fatalf("objects: %v\n%s", err, stderr)
		}
		want := etcdNames(t, f.cli, "/registry/configmaps/"+ns+"/", rev)
		if got := listed(t, out); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("objects configmaps -n %s of the journal version:\n%v\netcd serves at %d:\n%v", ns, got, rev, want)
		}
	}
	out, stderr, err = f.kk("diff", f.v1.ID, jv.ID)
	if err != nil {
		t.Fatalf("diff: %v\n%s", err, stderr)
	}
	for _, want := range []string{"changed  configmaps  shop       target", "added    configmaps  shop       added", "removed  configmaps  shop       cm-003", "changed  configmaps  web        cm-004"} {
		if !strings.Contains(strings.Join(strings.Fields(out), " "), strings.Join(strings.Fields(want), " ")) {
			t.Errorf("diff lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(strings.TrimSpace(out), "\n"); n != 4 {
		t.Errorf("diff: %d changes, want 4:\n%s", n, out)
	}
	out, _, err = f.kk("get", "--at", after.UTC().Format(time.RFC3339Nano), "configmaps/shop/target")
	if err != nil {
		t.Fatalf("get --at: %v", err)
	}
	if !strings.Contains(out, "k: later") {
		t.Errorf("get --at after the later change:\n%s", out)
	}
}

// TestGetDamagedKeyIndexFallsBack: a version whose key index is damaged
// (a block that fails its checksum) still answers get, objects and diff:
// a warning names the damage and the whole snapshot is read instead. A
// version without a key index (older backups) reads the old way.
func TestGetDamagedKeyIndexFallsBack(t *testing.T) {
	f := newObjectsFixture(t)
	read := func(name string) []byte {
		rc, _, err := f.store.OpenStream(f.v1.ID, name)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	snap, idx := read(versionread.EtcdSnapshotStream), read(versionread.EtcdKeyIndexStream)
	idx[20] ^= 0xff // the first block
	commit := func(withIndex bool) string {
		unlock, err := f.store.Lock(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer unlock()
		w, err := f.store.NewVersion(context.Background(), rsyncish.WriteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.AddStream(versionread.EtcdSnapshotStream, bytes.NewReader(snap)); err != nil {
			t.Fatal(err)
		}
		if withIndex {
			if _, err := w.AddStream(versionread.EtcdKeyIndexStream, bytes.NewReader(idx)); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.SetMeta(versionread.MetaEtcd, versionread.VersionEtcd(f.v1)); err != nil {
			t.Fatal(err)
		}
		vi, err := w.Commit()
		if err != nil {
			t.Fatal(err)
		}
		return vi.ID
	}
	damaged, old := commit(true), commit(false)
	for _, id := range []string{damaged, old} {
		for _, name := range []string{"target", "cm-000"} {
			out, stderr, err := f.kk("get", "--version", id, "configmaps/shop/"+name)
			if err != nil {
				t.Fatalf("get %s of %s: %v\n%s", name, id, err, stderr)
			}
			if !strings.Contains(out, "name: "+name) {
				t.Errorf("get %s of %s:\n%s", name, id, out)
			}
			if rec := logRecord(t, stderr, "object"); rec["indexed"] != false {
				t.Errorf("get of %s read through the index", id)
			}
			if id == damaged && !strings.Contains(stderr, "key index is damaged") {
				t.Errorf("no warning about the damaged index:\n%s", stderr)
			}
		}
	}
	out, stderr, err := f.kk("diff", f.v1.ID, damaged)
	if err != nil || strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Errorf("diff with the damaged index's version: %v\n%s\n%s", err, out, stderr)
	}
	if _, err := os.Stat(f.dir); err != nil {
		t.Fatal(err)
	}
}

package tiers_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/kubekeep/kubekeep/internal/s3test"
	"github.com/kubekeep/kubekeep/rsyncish"
	"github.com/kubekeep/kubekeep/rsyncish/backend"
	"github.com/kubekeep/kubekeep/tiers"
	"github.com/kubekeep/kubekeep/tiers/s3"
	"github.com/kubekeep/kubekeep/tiers/seal"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// world is a store with versions, and a sealed tier for it.
type world struct {
	storeDir string
	store    *rsyncish.Store
	src      *backend.Local
	id       *age.X25519Identity
	nameKey  []byte
	inner    backend.Backend
	master   *seal.Sealed // recipients only
	cat      *tiers.Catalogue
	blobs    [][]byte // what each version's stream holds
	versions []string
}

func newWorld(t *testing.T, inner backend.Backend) *world {
	t.Helper()
	w := &world{storeDir: filepath.Join(t.TempDir(), "store"), inner: inner}
	var err error
	if w.store, err = rsyncish.Open(w.storeDir, rsyncish.Options{AllowSameFilesystem: true}); err != nil {
		t.Fatal(err)
	}
	if w.src, err = backend.OpenLocal(w.storeDir); err != nil {
		t.Fatal(err)
	}
	if w.id, err = age.GenerateX25519Identity(); err != nil {
		t.Fatal(err)
	}
	if w.nameKey, err = seal.NewNameKey(); err != nil {
		t.Fatal(err)
	}
	scratch := t.TempDir()
	if w.master, err = seal.New(inner, seal.Config{Recipients: []age.Recipient{w.id.Recipient()}, NameKey: w.nameKey, Scratch: scratch}); err != nil {
		t.Fatal(err)
	}
	if err := seal.SaveNameKey(ctxT(t), inner, w.nameKey, []age.Recipient{w.id.Recipient()}); err != nil {
		t.Fatal(err)
	}
	if w.cat, err = tiers.OpenCatalogue(filepath.Join(w.storeDir, "offsite", "dr.catalogue")); err != nil {
		t.Fatal(err)
	}
	return w
}

// backup commits a version whose stream is the previous one with
// `changed` bytes rewritten (all random for the first).
func (w *world) backup(t *testing.T, size, changed int) {
	t.Helper()
	var data []byte
	if len(w.blobs) == 0 {
		data = make([]byte, size)
		rand.Read(data)
	} else {
		data = bytes.Clone(w.blobs[len(w.blobs)-1])
		rand.Read(data[len(data)/3 : len(data)/3+changed])
	}
	unlock, err := w.store.Lock(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	vw, err := w.store.NewVersion(ctxT(t), rsyncish.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vw.AddStream("etcd/snapshot.db", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	vi, err := vw.Commit()
	if err != nil {
		t.Fatal(err)
	}
	w.blobs = append(w.blobs, data)
	w.versions = append(w.versions, vi.ID)
}

func (w *world) restorer(t *testing.T) *seal.Sealed {
	nk, err := seal.LoadNameKey(ctxT(t), w.inner, []age.Identity{w.id})
	if err != nil {
		t.Fatal(err)
	}
	s, err := seal.New(w.inner, seal.Config{Identities: []age.Identity{w.id}, NameKey: nk, Scratch: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// pullAndCheck pulls the tier into a new store and reads every version's
// stream back byte for byte through the store.
func (w *world) pullAndCheck(t *testing.T) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pulled")
	dst, err := backend.OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tiers.Pull(ctxT(t), w.restorer(t), dst, "dr"); err != nil {
		t.Fatal(err)
	}
	pulled, err := rsyncish.Open(dir, rsyncish.Options{AllowSameFilesystem: true})
	if err != nil {
		t.Fatalf("the pulled store does not open: %v", err)
	}
	vs, err := pulled.Versions()
	if err != nil || len(vs) != len(w.versions) {
		t.Fatalf("pulled store has %d versions (%v), want %d", len(vs), err, len(w.versions))
	}
	for i, id := range w.versions {
		rc, _, err := pulled.OpenStream(id, "etcd/snapshot.db")
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, w.blobs[i]) {
			t.Errorf("version %s from the tier: %d bytes, %v; want the %d bytes backed up", id, len(got), err, len(w.blobs[i]))
		}
	}
}

func localTier(t *testing.T) backend.Backend {
	b, err := backend.OpenLocal(filepath.Join(t.TempDir(), "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A sync uploads what the tier lacks and no more: a second sync nothing,
// one after a backup with 1% changed about that 1%; the pulled store
// restores every version byte for byte.
func TestSyncIsIncremental(t *testing.T) {
	w := newWorld(t, localTier(t))
	const size = 8 << 20
	w.backup(t, size, 0)
	first, err := tiers.Sync(ctxT(t), w.src, w.master, w.cat, tiers.SyncOptions{Tier: "dr"})
	if err != nil {
		t.Fatal(err)
	}
	if first.VersionsUploaded != 1 || first.BytesUploaded < size {
		t.Fatalf("first sync: %+v, want 1 version and at least %d bytes", first, size)
	}
	again, err := tiers.Sync(ctxT(t), w.src, w.master, w.cat, tiers.SyncOptions{Tier: "dr"})
	if err != nil || again.ObjectsUploaded != 0 || again.BytesSkipped < size {
		t.Fatalf("sync with nothing new: %+v %v", again, err)
	}
	w.backup(t, size, size/100)
	inc, err := tiers.Sync(ctxT(t), w.src, w.master, w.cat, tiers.SyncOptions{Tier: "dr"})
	if err != nil {
		t.Fatal(err)
	}
	if inc.VersionsUploaded != 1 || inc.BytesUploaded > size/100+size/50 {
		t.Errorf("sync after 1%% changed: %+v, want 1 version and about %d bytes", inc, size/100)
	}
	w.pullAndCheck(t)
}

// counting counts saves and can cancel the sync after some.
type counting struct {
	backend.Backend
	saves    atomic.Int64 // calls
	ok       atomic.Int64 // calls that stored the object
	cancelAt int64
	cancel   context.CancelFunc
	failN    atomic.Int64 // fail this many saves first
}

func (c *counting) Save(ctx context.Context, h backend.Handle, rd backend.RewindReader) error {
	if c.failN.Add(-1) >= 0 {
		return errors.New("503 Service Unavailable (injected)")
	}
	n := c.saves.Add(1)
	err := c.Backend.Save(ctx, h, rd)
	if err == nil {
		c.ok.Add(1)
	}
	if c.cancel != nil && n == c.cancelAt {
		c.cancel()
	}
	return err
}

// A sync killed half-way (here: its context ended after the fourth
// upload, and the catalogue lost its last line, as a kill -9 between the
// upload and the record would) leaves a tier whose manifests' data is all
// there; the next sync uploads only what did not land.
func TestSyncResumesWithoutReuploading(t *testing.T) {
	w := newWorld(t, localTier(t))
	w.backup(t, 40<<20, 0) // three packs or more
	w.backup(t, 40<<20, 1<<20)
	ctx, cancel := context.WithCancel(ctxT(t))
	c := &counting{Backend: w.master, cancelAt: 4, cancel: cancel}
	if _, err := tiers.Sync(ctx, w.src, c, w.cat, tiers.SyncOptions{Tier: "dr"}); err == nil {
		t.Fatal("a sync cancelled half-way reported success")
	}
	landed := c.ok.Load()
	// No manifest went up before the data it names.
	var manifests int
	w.restorer(t).List(ctxT(t), backend.ManifestFile, func(backend.FileInfo) error { manifests++; return nil })
	if manifests != 0 {
		t.Errorf("%d manifests in the tier after a sync stopped among the packs", manifests)
	}
	// Drop the catalogue's last line: the kill came before it was written.
	catPath := filepath.Join(w.storeDir, "offsite", "dr.catalogue")
	data, _ := os.ReadFile(catPath)
	lines := bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
	os.WriteFile(catPath, append(bytes.Join(lines[:len(lines)-1], []byte("\n")), '\n'), 0o600)
	cat, err := tiers.OpenCatalogue(catPath)
	if err != nil {
		t.Fatal(err)
	}
	c2 := &counting{Backend: w.master}
	res, err := tiers.Sync(ctxT(t), w.src, c2, cat, tiers.SyncOptions{Tier: "dr"})
	if err != nil {
		t.Fatal(err)
	}
	var total int
	for _, ft := range backend.Types {
		w.src.List(ctxT(t), ft, func(fi backend.FileInfo) error {
			if ft != backend.ConfigFile || fi.Name == "config.json" {
				total++
			}
			return nil
		})
	}
	// The one whose record was lost is tried again (the tier says it has
	// it: no bytes go up); everything else that landed is not.
	if got := c2.saves.Load(); got != int64(total)-landed+1 {
		t.Errorf("the resumed sync saved %d objects; %d in the store, %d landed before the kill: want %d", got, total, landed, int64(total)-landed+1)
	}
	if res.ObjectsUploaded != total-int(landed) {
		t.Errorf("resumed sync: %+v, want %d objects uploaded", res, total-int(landed))
	}
	w.pullAndCheck(t)
}

// A tier that fails for a while is retried with backoff; one that keeps
// failing past the budget is an error naming the tier and the object.
func TestSyncRetries(t *testing.T) {
	w := newWorld(t, localTier(t))
	w.backup(t, 1<<20, 0)
	var slept []time.Duration
	opts := tiers.SyncOptions{Tier: "dr", Retry: tiers.Retry{Initial: time.Second, Max: 4 * time.Second, Budget: time.Hour},
		Sleep: func(_ context.Context, d time.Duration) error { slept = append(slept, d); return nil }}
	c := &counting{Backend: w.master}
	c.failN.Store(3)
	if _, err := tiers.Sync(ctxT(t), w.src, c, w.cat, opts); err != nil {
		t.Fatalf("sync through 3 failures: %v", err)
	}
	if len(slept) != 3 {
		t.Errorf("slept %v, want 3 backoffs", slept)
	}
	for i, d := range slept {
		if limit := time.Second << i; d > limit {
			t.Errorf("backoff %d was %s, above %s", i, d, limit)
		}
	}
	w.pullAndCheck(t)

	w.backup(t, 1<<20, 1000)
	c = &counting{Backend: w.master}
	c.failN.Store(1 << 30)
	opts.Retry.Budget = 10 * time.Second
	_, err := tiers.Sync(ctxT(t), w.src, c, w.cat, opts)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("tier dr")) || !bytes.Contains([]byte(err.Error()), []byte("gave up")) {
		t.Errorf("a tier that never answers: %v", err)
	}
}

// The bandwidth limit holds: 2 MiB at 4 MiB/s take about half a second.
func TestSyncBandwidth(t *testing.T) {
	w := newWorld(t, localTier(t))
	w.backup(t, 2<<20, 0)
	start := time.Now()
	res, err := tiers.Sync(ctxT(t), w.src, w.master, w.cat, tiers.SyncOptions{Tier: "dr", Bandwidth: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if took, floor := time.Since(start), time.Duration(float64(res.BytesUploaded-(1<<20))/float64(4<<20)*float64(time.Second)); took < floor {
		t.Errorf("%d bytes at 4 MiB/s took %s, less than %s", res.BytesUploaded, took, floor)
	}
}

// The whole way on a real S3 server: sync, a second backup, sync, then a
// new machine with only the identity pulls and reads every version.
func TestSyncToS3AndPull(t *testing.T) {
	srv := s3test.StartT(t)
	cli, err := minio.New(srv.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.MakeBucket(ctxT(t), "dr-tier", minio.MakeBucketOptions{ObjectLocking: true}); err != nil {
		t.Fatal(err)
	}
	tier, err := s3.Open(ctxT(t), s3.Config{Endpoint: srv.Endpoint, Bucket: "dr-tier", Prefix: "cp1", Region: "us-east-1",
		Creds: credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, ""), Lock: &s3.Lock{Mode: s3.Compliance, Days: 1}})
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld(t, tier)
	w.backup(t, 6<<20, 0)
	if _, err := tiers.Sync(ctxT(t), w.src, w.master, w.cat, tiers.SyncOptions{Tier: "dr"}); err != nil {
		t.Fatal(err)
	}
	w.backup(t, 6<<20, 60<<10)
	res, err := tiers.Sync(ctxT(t), w.src, w.master, w.cat, tiers.SyncOptions{Tier: "dr"})
	if err != nil || res.VersionsUploaded != 1 {
		t.Fatalf("second sync: %+v %v", res, err)
	}
	w.pullAndCheck(t)
	// The catalogue agrees with the bucket.
	if missing, err := w.cat.Reconcile(ctxT(t), w.master); err != nil || missing != 0 {
		t.Errorf("reconcile: %d missing, %v", missing, err)
	}
}

// A sync limited to journal objects (the agent's as segments seal) sends
// those and nothing else; the next full sync sends the rest.
func TestSyncTypes(t *testing.T) {
	w := newWorld(t, localTier(t))
	w.backup(t, 1<<20, 0)
	j, err := w.store.Journal("etcd-deltas")
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Append([]byte("segment"), 10, 12, time.Now()); err != nil {
		t.Fatal(err)
	}
	res, err := tiers.Sync(ctxT(t), w.src, w.master, w.cat, tiers.SyncOptions{Tier: "dr", Types: []backend.FileType{backend.JournalFile}})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[backend.FileType]int{}
	for _, ft := range backend.Types {
		w.master.List(ctxT(t), ft, func(backend.FileInfo) error { kinds[ft]++; return nil })
	}
	var local int // the segment, and what the journal keeps beside it
	w.src.List(ctxT(t), backend.JournalFile, func(backend.FileInfo) error { local++; return nil })
	if local == 0 || res.ObjectsUploaded != local || kinds[backend.JournalFile] != local || kinds[backend.PackFile] != 0 || kinds[backend.ManifestFile] != 0 {
		t.Fatalf("journal-only sync: %+v, the tier holds %v", res, kinds)
	}
	res, err = tiers.Sync(ctxT(t), w.src, w.master, w.cat, tiers.SyncOptions{Tier: "dr"})
	if err != nil || res.VersionsUploaded != 1 || res.ObjectsUploaded < 3 {
		t.Fatalf("the full sync after it: %+v %v", res, err)
	}
	w.pullAndCheck(t)
}

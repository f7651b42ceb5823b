package tiers_test

import (
	"bytes"
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	alioss "github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/internal/s3test"
	"github.com/kubekeep/kubekeep/rsyncish"
	"github.com/kubekeep/kubekeep/rsyncish/backend"
	"github.com/kubekeep/kubekeep/tiers"
	"github.com/kubekeep/kubekeep/tiers/oss"
	"github.com/kubekeep/kubekeep/tiers/oss/ossfake"
	"github.com/kubekeep/kubekeep/tiers/s3"
	"github.com/kubekeep/kubekeep/tiers/seal"
)

// localPrune applies keepLast to the store, as the agent's prune does.
func (w *world) localPrune(t *testing.T, keepLast int) {
	t.Helper()
	unlock, err := w.store.Lock(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if _, err := w.store.Prune(ctxT(t), rsyncish.RetentionPolicy{KeepLast: keepLast}, false); err != nil {
		t.Fatal(err)
	}
}

func (w *world) sync(t *testing.T, dst backend.Backend) tiers.SyncResult {
	t.Helper()
	res, err := tiers.Sync(ctxT(t), w.src, dst, w.cat, tiers.SyncOptions{Tier: "dr"})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// pullVersions pulls the tier into a new store, verifies it (every pack
// read) and reads the versions given back byte for byte; it returns the
// versions the pulled store holds.
func (w *world) pullVersions(t *testing.T, want map[string][]byte) []string {
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
	rep, err := pulled.Verify(ctxT(t), true)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) > 0 {
		t.Errorf("the store pulled after the prune does not verify: %+v", rep.Problems)
	}
	for id, data := range want {
		rc, _, err := pulled.OpenStream(id, "etcd/snapshot.db")
		if err != nil {
			t.Errorf("version %s from the pruned tier: %v", id, err)
			continue
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("version %s from the pruned tier: %d bytes, %v; want the %d bytes backed up", id, len(got), err, len(data))
		}
	}
	vs, err := pulled.Versions()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, v := range vs {
		ids = append(ids, v.ID)
	}
	return ids
}

// bucketVersions counts every object version under the bucket (delete
// markers aside): what the bucket stores and bills.
func bucketVersions(t *testing.T, cli *minio.Client, bucket string) int {
	n := 0
	for oi := range cli.ListObjects(ctxT(t), bucket, minio.ListObjectsOptions{Recursive: true, WithVersions: true}) {
		if oi.Err != nil {
			t.Fatal(oi.Err)
		}
		if !oi.IsDeleteMarker {
			n++
		}
	}
	return n
}

// The tier's retention on a real S3 server with Object Lock: the two
// oldest versions went up unlocked, the next two under compliance
// retention, the two newest too. keepLast 2 deletes the unlocked old
// versions and the packs only they used (for good: no object version
// left behind a delete marker), skips the locked ones with a count (their
// data stays with them), and the tier still pulls, verifies and restores
// every version it holds. A dry run first deletes nothing.
func TestPruneS3ObjectLock(t *testing.T) {
	srv := s3test.StartT(t)
	cli, err := minio.New(srv.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	const bucket = "dr-prune"
	if err := cli.MakeBucket(ctxT(t), bucket, minio.MakeBucketOptions{ObjectLocking: true}); err != nil {
		t.Fatal(err)
	}
	open := func(lock *s3.Lock) *s3.Backend {
		b, err := s3.Open(ctxT(t), s3.Config{Endpoint: srv.Endpoint, Bucket: bucket, Prefix: "cp1", Region: "us-east-1",
			Creds: credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, ""), Lock: lock})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	unlocked := open(nil)
	w := newWorld(t, unlocked)
	sealedWith := func(b backend.Backend) *seal.Sealed {
		s, err := seal.New(b, seal.Config{Recipients: w.recipients(), NameKey: w.nameKey, Scratch: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	const size = 2 << 20
	w.backup(t, size, 0)
	w.backup(t, size, 256<<10)
	w.sync(t, w.master)
	locked := sealedWith(open(&s3.Lock{Mode: s3.Compliance, Days: 1}))
	for range 2 {
		w.backup(t, size, 256<<10)
		w.backup(t, size, 256<<10)
		w.localPrune(t, 2)
		w.sync(t, locked)
	}
	tier := &tiers.Tier{Name: "dr", Remote: unlocked, Sealed: w.master, Catalogue: w.cat}
	opts := tiers.PruneOptions{Tier: "dr", Retention: config.OffsiteRetention{KeepLast: 2}, Store: w.src}

	before := bucketVersions(t, cli, bucket)
	opts.DryRun = true
	dry, err := tiers.Prune(ctxT(t), tier, opts)
	if err != nil {
		t.Fatal(err)
	}
	if after := bucketVersions(t, cli, bucket); after != before {
		t.Fatalf("a dry run changed the bucket: %d object versions, %d before", after, before)
	}
	if dry.VersionsDeleted != 4 || dry.VersionsKept != 2 || dry.ObjectsDeleted <= 4 {
		t.Errorf("dry run: %+v, want 4 versions to delete (and packs), 2 kept", dry)
	}

	opts.DryRun = false
	res, err := tiers.Prune(ctxT(t), tier, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("prune: %+v", res)
	old, held, newest := w.versions[:2], w.versions[2:4], w.versions[4:]
	if !slices.Equal(res.Deleted, old) || res.VersionsDeleted != 2 {
		t.Errorf("deleted versions %v, want the two unlocked ones %v", res.Deleted, old)
	}
	if res.LockedSkipped < 2 {
		t.Errorf("lockedSkipped %d: the two locked manifests were not counted", res.LockedSkipped)
	}
	// The unlocked versions' objects are gone for good; the packs only
	// they used too (more objects than their two manifests).
	if res.ObjectsDeleted <= 2 || res.BytesDeleted <= 0 {
		t.Errorf("objects deleted %d (%d bytes): the old versions' own packs stayed", res.ObjectsDeleted, res.BytesDeleted)
	}
	if after := bucketVersions(t, cli, bucket); after != before-res.ObjectsDeleted {
		t.Errorf("the bucket holds %d object versions, %d before and %d deleted: a delete left the data behind a marker", after, before, res.ObjectsDeleted)
	}
	want := map[string][]byte{}
	for i, id := range w.versions[2:] {
		want[id] = w.blobs[2+i]
	}
	got := w.pullVersions(t, want)
	if !slices.Equal(got, append(slices.Clone(held), newest...)) {
		t.Errorf("the pruned tier holds versions %v, want the locked %v and the kept %v", got, held, newest)
	}
	// The next sync does not upload the pruned versions again, nor the
	// locked ones' objects (they are still there).
	if r := w.sync(t, w.master); r.ObjectsUploaded != 0 {
		t.Errorf("the sync after the prune uploaded %+v", r)
	}
	// And the next prune deletes nothing more while the locks run.
	again, err := tiers.Prune(ctxT(t), tier, opts)
	if err != nil || again.ObjectsDeleted != 0 || again.LockedSkipped < 2 {
		t.Errorf("second prune: %+v %v", again, err)
	}
}

// Versions the tier holds without a reference record (synced by an
// older kubekeep, or the offsite state lost) that the store no longer
// has: prune refuses, deleting nothing, and says to pass the identity;
// with it, it reads their manifests from the tier and goes on.
func TestPruneWithoutRefs(t *testing.T) {
	w := newWorld(t, localTier(t))
	const size = 1 << 20
	for range 4 {
		w.backup(t, size, 64<<10)
		w.sync(t, w.master)
	}
	w.localPrune(t, 1)
	// Lose the refs (an older kubekeep never wrote them).
	catPath := filepath.Join(w.storeDir, "offsite", "dr.catalogue")
	if err := os.Remove(strings.TrimSuffix(catPath, ".catalogue") + ".refs"); err != nil {
		t.Fatal(err)
	}
	cat, err := tiers.OpenCatalogue(catPath)
	if err != nil {
		t.Fatal(err)
	}
	tier := &tiers.Tier{Name: "dr", Remote: w.inner, Sealed: w.master, Catalogue: cat}
	opts := tiers.PruneOptions{Tier: "dr", Retention: config.OffsiteRetention{KeepLast: 2}, Store: w.src}
	_, err = tiers.Prune(ctxT(t), tier, opts)
	if !errors.Is(err, tiers.ErrNoRefs) || !strings.Contains(err.Error(), "--identity") || !strings.Contains(err.Error(), w.versions[0]) {
		t.Fatalf("prune without refs: %v, want ErrNoRefs naming %s and --identity", err, w.versions[0])
	}
	opts.Reader = w.restorer(t)
	res, err := tiers.Prune(ctxT(t), tier, opts)
	if err != nil || res.VersionsDeleted != 2 || res.ObjectsDeleted <= 2 {
		t.Fatalf("prune with the identity: %+v %v", res, err)
	}
	got := w.pullVersions(t, map[string][]byte{w.versions[2]: w.blobs[2], w.versions[3]: w.blobs[3]})
	if !slices.Equal(got, w.versions[2:]) {
		t.Errorf("tier holds %v after the prune, want %v", got, w.versions[2:])
	}
}

func (w *world) recipients() []age.Recipient { return []age.Recipient{w.id.Recipient()} }

// ossClock is the OSS fake's object clock.
type ossClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *ossClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

// The same on OSS (the fake checks signatures and WORM): the bucket's
// locked one-day WORM policy refuses deleting what is younger; prune
// deletes the versions that went up two days before and the packs only
// they used, counts the young ones it may not delete, and the tier pulls
// and restores what it holds.
// ossWorm is an OSS tier (the fake checks signatures and WORM) on a bucket
// whose locked WORM policy refuses deleting what is younger than a day,
// with the fake's object clock.
func ossWorm(t *testing.T) (*ossClock, *ossfake.Server, backend.Backend) {
	clk := &ossClock{t: time.Now()}
	fake := ossfake.New(ossfake.Options{Now: clk.Now})
	fake.AddAccessKey("LTAI5tKubekeepTestKey", "kubekeep-test-secret")
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	fake.CreateBucket("dr-oss")
	cli := alioss.NewClient(alioss.LoadDefaultConfig().WithRegion(fake.Region()).WithEndpoint(srv.URL).
		WithCredentialsProvider(oss.StaticCredentials("LTAI5tKubekeepTestKey", "kubekeep-test-secret", "")))
	days := int32(1)
	ir, err := cli.InitiateBucketWorm(ctxT(t), &alioss.InitiateBucketWormRequest{Bucket: alioss.Ptr("dr-oss"),
		InitiateWormConfiguration: &alioss.InitiateWormConfiguration{RetentionPeriodInDays: &days}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.CompleteBucketWorm(ctxT(t), &alioss.CompleteBucketWormRequest{Bucket: alioss.Ptr("dr-oss"), WormId: ir.WormId}); err != nil {
		t.Fatal(err)
	}
	b, err := oss.Open(ctxT(t), oss.Config{Endpoint: srv.URL, Region: fake.Region(), Bucket: "dr-oss", Prefix: "cp1",
		Creds: oss.StaticCredentials("LTAI5tKubekeepTestKey", "kubekeep-test-secret", ""), LockDays: 1})
	if err != nil {
		t.Fatal(err)
	}
	return clk, fake, b
}

func TestPruneOSSWorm(t *testing.T) {
	clk, fake, b := ossWorm(t)
	w := newWorld(t, b)
	const size = 1 << 20
	w.backup(t, size, 0)
	w.backup(t, size, 128<<10)
	w.sync(t, w.master)
	clk.mu.Lock()
	clk.t = clk.t.Add(48 * time.Hour)
	clk.mu.Unlock()
	for range 2 {
		w.backup(t, size, 128<<10)
		w.backup(t, size, 128<<10)
		w.localPrune(t, 2)
		w.sync(t, w.master)
	}
	objects := len(fake.Objects("dr-oss"))
	tier := &tiers.Tier{Name: "dr", Remote: b, Sealed: w.master, Catalogue: w.cat}
	res, err := tiers.Prune(ctxT(t), tier, tiers.PruneOptions{Tier: "dr", Retention: config.OffsiteRetention{KeepLast: 2}, Store: w.src})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Deleted, w.versions[:2]) || res.LockedSkipped < 2 || res.ObjectsDeleted <= 2 {
		t.Errorf("prune under WORM: %+v; want versions %v deleted with their packs, the 2 young ones skipped", res, w.versions[:2])
	}
	if got := len(fake.Objects("dr-oss")); got != objects-res.ObjectsDeleted {
		t.Errorf("the bucket holds %d objects, %d before and %d deleted", got, objects, res.ObjectsDeleted)
	}
	want := map[string][]byte{}
	for i, id := range w.versions[2:] {
		want[id] = w.blobs[2+i]
	}
	if got := w.pullVersions(t, want); !slices.Equal(got, w.versions[2:]) {
		t.Errorf("the pruned tier holds %v, want %v", got, w.versions[2:])
	}
}

// commit writes a version whose stream is data, with the etcd meta given
// and, for a journal version, a requirement of base's stream.
func (w *world) commit(t *testing.T, data []byte, meta map[string]any, base string) string {
	t.Helper()
	unlock, err := w.store.Lock(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	vw, err := w.store.NewVersion(ctxT(t), rsyncish.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if base != "" {
		if err := vw.Require(rsyncish.Requirement{Version: base, Stream: "etcd/snapshot.db"}); err != nil {
			t.Fatal(err)
		}
	} else if _, err := vw.AddStream("etcd/snapshot.db", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if err := vw.SetMeta("etcd", meta); err != nil {
		t.Fatal(err)
	}
	vi, err := vw.Commit()
	if err != nil {
		t.Fatal(err)
	}
	w.versions = append(w.versions, vi.ID)
	w.blobs = append(w.blobs, data)
	return vi.ID
}

// What kept versions need stays: keepLast 1 keeps the newest, a journal
// version, and its base (an older full version the policy alone would
// drop) with the base's packs; the delta segments below the base's
// snapshot revision go, those above it (the journal version's replay and
// after) stay, as the local prune trims.
func TestPruneKeepsBasesAndJournal(t *testing.T) {
	w := newWorld(t, localTier(t))
	data := func(b byte) []byte { return bytes.Repeat([]byte{b}, 1<<20) }
	old := w.commit(t, data('a'), map[string]any{"revision": 100, "source": "snapshot"}, "")
	base := w.commit(t, data('b'), map[string]any{"revision": 200, "source": "snapshot"}, "")
	jv := w.commit(t, nil, map[string]any{"revision": 260, "source": "journal", "base": base, "baseRevision": 200}, base)
	j, err := w.store.Journal("etcd-deltas")
	if err != nil {
		t.Fatal(err)
	}
	segs := [][2]uint64{{50, 99}, {101, 150}, {151, 199}, {200, 230}, {231, 260}, {261, 270}}
	for _, s := range segs {
		if err := j.Append([]byte("deltas"), s[0], s[1], time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	w.sync(t, w.master)
	// The store moves on: the old version and the segments below the
	// base's revision go locally too.
	unlock, err := w.store.Lock(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.store.Prune(ctxT(t), rsyncish.RetentionPolicy{KeepLast: 1, Needs: func(v rsyncish.VersionInfo) []string {
		if v.ID == jv {
			return []string{base}
		}
		return nil
	}}, false); err != nil {
		t.Fatal(err)
	}
	unlock()
	if _, err := j.Trim(200); err != nil {
		t.Fatal(err)
	}
	tier := &tiers.Tier{Name: "dr", Remote: w.inner, Sealed: w.master, Catalogue: w.cat}
	res, err := tiers.Prune(ctxT(t), tier, tiers.PruneOptions{Tier: "dr", Retention: config.OffsiteRetention{KeepLast: 1}, Store: w.src})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Deleted, []string{old}) || res.VersionsKept != 2 {
		t.Fatalf("prune: %+v, want only %s deleted, %s kept as the base of %s", res, old, base, jv)
	}
	var left []string
	w.restorer(t).List(ctxT(t), backend.JournalFile, func(fi backend.FileInfo) error {
		if strings.HasSuffix(fi.Name, ".seg") {
			left = append(left, fi.Name[len("etcd-deltas/"):len("etcd-deltas/")+41])
		}
		return nil
	})
	slices.Sort(left)
	want := []string{"00000000000000000200-00000000000000000230", "00000000000000000231-00000000000000000260", "00000000000000000261-00000000000000000270"}
	if !slices.Equal(left, want) {
		t.Errorf("segments left in the tier: %v, want %v (those below revision 200 gone)", left, want)
	}
	if got := w.pullVersions(t, map[string][]byte{base: w.blobs[1]}); !slices.Equal(got, []string{base, jv}) {
		t.Errorf("tier holds %v, want %v", got, []string{base, jv})
	}
}

// A prune waits for a running sync of the tier (and gives up after
// LockWait, saying why, having deleted nothing), so it never deletes what
// the sync skipped as uploaded.
func TestPruneWaitsForSync(t *testing.T) {
	w := newWorld(t, localTier(t))
	w.backup(t, 4<<20, 0)
	w.sync(t, w.master)
	w.backup(t, 4<<20, 2<<20)
	done := make(chan error, 1)
	started := make(chan struct{})
	var once sync.Once
	go func() {
		_, err := tiers.Sync(ctxT(t), w.src, w.master, w.cat, tiers.SyncOptions{Tier: "dr", Bandwidth: 2 << 20,
			Progress: func(tiers.Progress) { once.Do(func() { close(started) }) }})
		done <- err
	}()
	<-started
	tier := &tiers.Tier{Name: "dr", Remote: w.inner, Sealed: w.master, Catalogue: w.cat}
	opts := tiers.PruneOptions{Tier: "dr", Retention: config.OffsiteRetention{KeepLast: 1}, Store: w.src, LockWait: 200 * time.Millisecond}
	res, err := tiers.Prune(ctxT(t), tier, opts)
	if err == nil || !strings.Contains(err.Error(), "a sync of the tier is running") || res.ObjectsDeleted != 0 {
		t.Fatalf("prune during a sync: %+v %v, want it to wait and give up", res, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	opts.LockWait = 0
	if res, err := tiers.Prune(ctxT(t), tier, opts); err != nil || res.VersionsDeleted != 1 {
		t.Fatalf("prune after the sync: %+v %v", res, err)
	}
}

// A journal version the tier may not delete yet (WORM) keeps its base,
// though the policy drops both: versions go dependents first, so the base
// is reached knowing that what reads it stayed. Before, the base went
// first and the locked journal version was left unreadable.
func TestPruneKeepsTheBaseOfALockedVersion(t *testing.T) {
	clk, _, b := ossWorm(t)
	w := newWorld(t, b)
	data := func(c byte) []byte { return bytes.Repeat([]byte{c}, 1<<20) }
	base := w.commit(t, data('a'), map[string]any{"revision": 100, "source": "snapshot"}, "")
	w.sync(t, w.master)
	clk.mu.Lock()
	clk.t = clk.t.Add(48 * time.Hour)
	clk.mu.Unlock()
	jv := w.commit(t, nil, map[string]any{"revision": 150, "source": "journal", "base": base, "baseRevision": 100}, base)
	newest := w.commit(t, data('b'), map[string]any{"revision": 200, "source": "snapshot"}, "")
	w.sync(t, w.master)
	tier := &tiers.Tier{Name: "dr", Remote: b, Sealed: w.master, Catalogue: w.cat}
	res, err := tiers.Prune(ctxT(t), tier, tiers.PruneOptions{Tier: "dr", Retention: config.OffsiteRetention{KeepLast: 1}, Store: w.src})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Deleted) != 0 || res.LockedSkipped < 1 {
		t.Errorf("prune: deleted %v, locked skipped %d; want nothing deleted, %s locked", res.Deleted, res.LockedSkipped, jv)
	}
	var why []string
	for _, k := range res.Kept {
		if k.ID == base {
			why = k.Reasons
		}
	}
	if len(why) != 1 || !strings.Contains(why[0], jv) || !strings.Contains(why[0], "locked") {
		t.Errorf("the base's reasons %q, want one naming the locked %s", why, jv)
	}
	if got, want := w.pullVersions(t, map[string][]byte{base: w.blobs[0], newest: w.blobs[2]}), []string{base, jv, newest}; !slices.Equal(got, want) {
		t.Errorf("the pruned tier holds %v, want %v", got, want)
	}
}

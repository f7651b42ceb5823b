package tiers_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/rsyncish"
	"github.com/kubekeep/kubekeep/rsyncish/backend"
	"github.com/kubekeep/kubekeep/tiers"
)

// pullWorld is a tier holding an old full version (its own packs), a
// newer full version (the base), a journal version on it with a stream
// of its own, a newest version that is not good, drill marks of the old
// version and the base, and delta segments from below the old version's
// snapshot to past the journal version.
type pullWorld struct {
	*world
	old, base, jv, bad string
	own                []byte // the journal version's own stream
}

func newPullWorld(t *testing.T) *pullWorld {
	t.Helper()
	w := &pullWorld{world: newWorld(t, localTier(t))}
	random := func(n int) []byte { b := make([]byte, n); rand.Read(b); return b }
	w.old = w.commit(t, random(3<<20), map[string]any{"revision": 100, "source": "snapshot", "verified": true}, "")
	w.base = w.commit(t, random(2<<20), map[string]any{"revision": 200, "source": "snapshot", "verified": true}, "")
	j, err := w.store.Journal("etcd-deltas")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range [][2]uint64{{50, 99}, {101, 150}, {151, 199}, {200, 230}, {231, 260}, {261, 270}} {
		if err := j.Append([]byte("deltas"), s[0], s[1], time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	w.own = random(300 << 10)
	w.jv = w.commitOwn(t, map[string]any{"etcd": map[string]any{"revision": 260, "source": "journal", "base": w.base, "baseRevision": 200}},
		[]rsyncish.Requirement{{Version: w.base, Stream: "etcd/snapshot.db"}, {Journal: "etcd-deltas", After: 200, Through: 260}})
	w.bad = w.commitOwn(t, map[string]any{"status": "degraded"}, nil)
	for _, id := range []string{w.old, w.base} {
		if err := w.store.MarkVerified(id, rsyncish.Verification{Method: "drill"}); err != nil {
			t.Fatal(err)
		}
	}
	w.sync(t, w.master)
	return w
}

// commitOwn commits a version holding w.own as stream files/own, with
// the meta and requirements given.
func (w *pullWorld) commitOwn(t *testing.T, meta map[string]any, reqs []rsyncish.Requirement) string {
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
	if err := vw.Require(reqs...); err != nil {
		t.Fatal(err)
	}
	if _, err := vw.AddStream("files/own", bytes.NewReader(w.own)); err != nil {
		t.Fatal(err)
	}
	for k, v := range meta {
		if err := vw.SetMeta(k, v); err != nil {
			t.Fatal(err)
		}
	}
	vi, err := vw.Commit()
	if err != nil {
		t.Fatal(err)
	}
	w.versions = append(w.versions, vi.ID)
	w.blobs = append(w.blobs, nil)
	return vi.ID
}

// tierTotal is what the tier holds, as a pull of everything counts it.
func (w *pullWorld) tierTotal(t *testing.T) (objects int, bytes int64) {
	t.Helper()
	for _, ft := range backend.Types {
		if err := w.restorer(t).List(ctxT(t), ft, func(fi backend.FileInfo) error {
			if ft != backend.ConfigFile || fi.Name == "config.json" {
				objects++
				bytes += fi.Size
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	return objects, bytes
}

func storeFiles(t *testing.T, dir, sub string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, sub))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// A pull of "latest" (the journal version: the newest version is not
// good) brings that version, its base with the base's drill mark, the
// packs their blocks are in with their indexes, the delta segments from
// the base's snapshot revision on, and config.json; not the old
// version, its packs, its drill mark, nor the segments below the base.
// The pulled store verifies clean with every pack read and gives the
// streams back byte for byte. Before, a pull copied every object.
func TestPullVersionTakesWhatItNeeds(t *testing.T) {
	w := newPullWorld(t)
	tierObjects, tierBytes := w.tierTotal(t)
	dir := filepath.Join(t.TempDir(), "pulled")
	dst, err := backend.OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	res, err := tiers.PullWith(ctxT(t), w.restorer(t), dst, tiers.PullOptions{Tier: "dr", Version: "latest"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != w.jv || !slices.Equal(res.Versions, []string{w.base, w.jv}) {
		t.Fatalf("pull latest: version %s, versions %v; want %s with its base %s", res.Version, res.Versions, w.jv, w.base)
	}
	if res.Objects+res.ObjectsLeft != tierObjects || res.Bytes+res.BytesLeft != tierBytes || res.ObjectsLeft == 0 || res.AlreadyHad != 0 {
		t.Errorf("pull: %+v; the tier holds %d objects of %d bytes", res, tierObjects, tierBytes)
	}
	if res.Bytes >= tierBytes-3<<20 {
		t.Errorf("pull copied %d bytes of the tier's %d: the old version's 3 MiB came too", res.Bytes, tierBytes)
	}
	t.Logf("pulled %d objects, %d bytes; left %d objects, %d bytes in the tier (of %d objects, %d bytes)",
		res.Objects, res.Bytes, res.ObjectsLeft, res.BytesLeft, tierObjects, tierBytes)

	pulled, err := rsyncish.Open(dir, rsyncish.Options{AllowSameFilesystem: true})
	if err != nil {
		t.Fatalf("the pulled store does not open: %v", err)
	}
	vs, err := pulled.Versions()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range vs {
		got = append(got, v.ID)
		if v.Verified != (v.ID == w.base) {
			t.Errorf("pulled version %s: verified %v (only the base has a drill mark among the pulled)", v.ID, v.Verified)
		}
	}
	if !slices.Equal(got, []string{w.base, w.jv}) {
		t.Errorf("the pulled store lists %v, want %v", got, []string{w.base, w.jv})
	}
	if marks := storeFiles(t, dir, "verified"); !slices.Equal(marks, []string{w.base}) {
		t.Errorf("drill marks pulled: %v, want the base's only", marks)
	}
	rep, err := pulled.Verify(ctxT(t), true)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Clean() || len(rep.Warnings) > 0 {
		t.Errorf("verify --read-data of the pulled store: %+v", rep)
	}
	for id, want := range map[string][]byte{w.base: w.blobs[1]} {
		rc, _, err := pulled.OpenStream(id, "etcd/snapshot.db")
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(b, want) {
			t.Errorf("stream of %s from the pulled store: %d bytes, %v", id, len(b), err)
		}
	}
	rc, _, err := pulled.OpenStream(w.jv, "files/own")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(rc); err != nil || !bytes.Equal(b, w.own) {
		t.Errorf("the journal version's own stream: %d bytes, %v", len(b), err)
	}
	rc.Close()
	var segs []string
	for _, s := range storeFiles(t, dir, "journals/etcd-deltas") {
		if strings.HasSuffix(s, ".seg") {
			segs = append(segs, s[:41])
		}
	}
	if want := []string{"00000000000000000200-00000000000000000230", "00000000000000000231-00000000000000000260", "00000000000000000261-00000000000000000270"}; !slices.Equal(segs, want) {
		t.Errorf("segments pulled: %v, want %v (from the base's revision 200 on)", segs, want)
	}
	// Not one pack of the old version: it shares no block with the rest.
	oldPacks := map[string]bool{}
	for _, p := range storeFiles(t, w.storeDir, "packs") {
		oldPacks[p] = true
	}
	for _, p := range storeFiles(t, dir, "packs") {
		delete(oldPacks, p)
	}
	if len(oldPacks) == 0 {
		t.Error("every pack of the store was pulled")
	}

	// A pull killed after its data landed (no manifest, no config yet,
	// a pack short) is finished by a rerun, which copies only that.
	for _, sub := range []string{"versions", "verified"} {
		if err := os.RemoveAll(filepath.Join(dir, sub)); err != nil {
			t.Fatal(err)
		}
	}
	os.Remove(filepath.Join(dir, "config.json"))
	ps := storeFiles(t, dir, "packs")
	os.Remove(filepath.Join(dir, "packs", ps[0]))
	again, err := tiers.PullWith(ctxT(t), w.restorer(t), dst, tiers.PullOptions{Tier: "dr", Version: w.jv})
	if err != nil {
		t.Fatal(err)
	}
	if again.Objects != 5 || again.AlreadyHad != res.Objects-5 || !slices.Equal(again.Versions, res.Versions) {
		t.Errorf("the rerun: %+v; want 5 copied (2 manifests, a mark, config.json, a pack) and the other %d kept", again, res.Objects-5)
	}
	if pulled, err = rsyncish.Open(dir, rsyncish.Options{AllowSameFilesystem: true}); err != nil {
		t.Fatal(err)
	}
	if rep, err := pulled.Verify(ctxT(t), true); err != nil || !rep.Clean() {
		t.Errorf("verify --read-data after the rerun: %+v %v", rep, err)
	}
}

// The version a pull takes is the one the store would resolve the name
// to ("latest" passes over the newest, not good, version; "newest" and an
// ID prefix as given); a version that reads nothing brings no journal;
// an unknown name, a version whose base the tier lost and Types with a
// Version are refused, naming what is wrong, with nothing copied.
func TestPullVersionNames(t *testing.T) {
	w := newPullWorld(t)
	pull := func(name string) (tiers.PullResult, string, error) {
		t.Helper()
		dir := filepath.Join(t.TempDir(), "pulled")
		dst, err := backend.OpenLocal(dir)
		if err != nil {
			t.Fatal(err)
		}
		res, err := tiers.PullWith(ctxT(t), w.restorer(t), dst, tiers.PullOptions{Tier: "dr", Version: name})
		return res, dir, err
	}
	for _, name := range []string{"latest", "newest", w.old[:len(w.old)-2], w.base} {
		want, err := w.store.Resolve(name)
		if err != nil {
			t.Fatal(err)
		}
		res, _, err := pull(name)
		if err != nil || res.Version != want {
			t.Errorf("pull %q: %s, %v; the store resolves it to %s", name, res.Version, err, want)
		}
	}
	res, dir, err := pull("newest")
	if err != nil || !slices.Equal(res.Versions, []string{w.bad}) {
		t.Fatalf("pull newest: %+v %v, want %s alone", res, err, w.bad)
	}
	if segs := storeFiles(t, dir, "journals"); len(segs) != 0 {
		t.Errorf("a version without etcd state brought journals %v", segs)
	}

	res, dir, err = pull("20991231T000000Z")
	if !errors.Is(err, rsyncish.ErrNotFound) || !strings.Contains(err.Error(), "tier dr") || res.Objects != 0 {
		t.Errorf("pull of an unknown version: %+v %v", res, err)
	}
	if ents := storeFiles(t, dir, ""); len(ents) != 0 {
		t.Errorf("a refused pull left %v", ents)
	}
	dst, _ := backend.OpenLocal(t.TempDir())
	if _, err := tiers.PullWith(ctxT(t), w.restorer(t), dst, tiers.PullOptions{Tier: "dr", Version: "latest", Types: []backend.FileType{backend.ManifestFile}}); err == nil {
		t.Error("Types with a Version: no error")
	}
	// The tier loses the base's manifest: the journal version cannot be
	// pulled alone.
	if err := w.restorer(t).Remove(ctxT(t), backend.Handle{Type: backend.ManifestFile, Name: w.base + ".manifest"}); err != nil {
		t.Fatal(err)
	}
	res, _, err = pull(w.jv)
	if err == nil || !strings.Contains(err.Error(), w.base) || !strings.Contains(err.Error(), w.jv) || res.Objects != 0 {
		t.Errorf("pull of a journal version whose base the tier lacks: %+v %v", res, err)
	}
}

// A tier that lost its pack indexes still gives what it can: the pull
// of a version succeeds, counts the blocks no index holds and warns;
// verify of the pulled store then names the damage.
func TestPullVersionLostIndexes(t *testing.T) {
	w := newPullWorld(t)
	r := w.restorer(t)
	var idx []string
	r.List(ctxT(t), backend.IndexFile, func(fi backend.FileInfo) error { idx = append(idx, fi.Name); return nil })
	for _, n := range idx {
		if err := r.Remove(ctxT(t), backend.Handle{Type: backend.IndexFile, Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(t.TempDir(), "pulled")
	dst, _ := backend.OpenLocal(dir)
	var logged bytes.Buffer
	res, err := tiers.PullWith(ctxT(t), r, dst, tiers.PullOptions{Tier: "dr", Version: w.jv, Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	// 2 MiB of base snapshot and 300 KiB of the version's own stream, in
	// 64 KiB blocks.
	if err != nil || res.BlocksMissing != 32+5 || !strings.Contains(logged.String(), "in no pack index") {
		t.Fatalf("pull with the indexes gone: %+v %v; log:\n%s", res, err, logged.String())
	}
	if len(idx) == 0 || len(storeFiles(t, dir, "packs")) != 0 {
		t.Errorf("packs pulled without an index to say what they hold: %v", storeFiles(t, dir, "packs"))
	}
	pulled, err := rsyncish.Open(dir, rsyncish.Options{AllowSameFilesystem: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := pulled.Verify(ctxT(t), false); err != nil || rep.Clean() {
		t.Errorf("verify of a store pulled without the data: %+v %v", rep, err)
	}
}

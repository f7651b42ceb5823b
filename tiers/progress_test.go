package tiers_test

import (
	"path/filepath"
	"testing"

	"github.com/kubekeep/kubekeep/rsyncish/backend"
	"github.com/kubekeep/kubekeep/tiers"
)

// checkProgress checks a run's progress reports: the totals known from
// the first, never going back, ending with every byte and object done.
func checkProgress(t *testing.T, what string, got []tiers.Progress, objects int, bytes int64) {
	t.Helper()
	if len(got) < objects+1 {
		t.Fatalf("%s: %d progress reports for %d objects", what, len(got), objects)
	}
	first, last := got[0], got[len(got)-1]
	if first.ObjectsDone != 0 || first.BytesDone != 0 || first.ObjectsTotal != objects || first.BytesTotal != bytes {
		t.Errorf("%s: first report %+v, want 0 of %d objects and 0 of %d bytes", what, first, objects, bytes)
	}
	if last.ObjectsDone != objects || last.BytesDone != bytes || last.BytesTotal != bytes {
		t.Errorf("%s: last report %+v, want all %d objects and %d bytes done", what, last, objects, bytes)
	}
	midway := false
	for i := 1; i < len(got); i++ {
		if got[i].BytesDone < got[i-1].BytesDone || got[i].ObjectsDone < got[i-1].ObjectsDone {
			t.Errorf("%s: progress went back: %+v after %+v", what, got[i], got[i-1])
		}
		midway = midway || got[i].ObjectsDone == 0 && got[i].BytesDone > 0
	}
	if !midway {
		t.Errorf("%s: no report while the first (16 MiB) object was under way", what)
	}
}

// Sync and pull report progress: bytes of the store's objects (a 20 MiB
// version: a pack of 16 MiB and one of 4) and object counts.
func TestSyncAndPullProgress(t *testing.T) {
	w := newWorld(t, localTier(t))
	w.backup(t, 20<<20, 0)
	var objects int
	var bytes int64
	for _, ft := range backend.Types {
		w.src.List(ctxT(t), ft, func(fi backend.FileInfo) error {
			if ft != backend.ConfigFile || fi.Name == "config.json" {
				objects++
				bytes += fi.Size
			}
			return nil
		})
	}
	var got []tiers.Progress
	res, err := tiers.Sync(ctxT(t), w.src, w.master, w.cat, tiers.SyncOptions{Tier: "dr", Progress: func(p tiers.Progress) { got = append(got, p) }})
	if err != nil {
		t.Fatal(err)
	}
	if res.ObjectsUploaded != objects || res.BytesUploaded != bytes {
		t.Fatalf("sync: %+v, the store has %d objects of %d bytes", res, objects, bytes)
	}
	checkProgress(t, "sync", got, objects, bytes)

	dst, err := backend.OpenLocal(filepath.Join(t.TempDir(), "pulled"))
	if err != nil {
		t.Fatal(err)
	}
	got = nil
	if _, err := tiers.PullWith(ctxT(t), w.restorer(t), dst, tiers.PullOptions{Tier: "dr", Progress: func(p tiers.Progress) { got = append(got, p) }}); err != nil {
		t.Fatal(err)
	}
	checkProgress(t, "pull", got, objects, bytes)
}

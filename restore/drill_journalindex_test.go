package restore

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kubekeep/kubekeep/backup"
	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// The drill holds a journal version's journal key index against the
// replay: the real one agrees, record for record; an index that says
// another lease, misses a key, or names another segment fails, saying
// which key.
func TestDrillChecksTheJournalKeyIndex(t *testing.T) {
	f := newJournalFixture(t)
	for i := 1; i <= 2; i++ {
		f.waitDurable(f.changes(i))
	}
	jv := f.backup(false)
	if jv.EtcdKind != versionread.EtcdKindJournal {
		t.Fatalf("backup: %q, want a journal version", jv.EtcdKind)
	}
	src, err := loadSource(f.store, jv.ID)
	if err != nil {
		t.Fatal(err)
	}
	jr, err := loadJournalReplay(f.store, src)
	if err != nil {
		t.Fatal(err)
	}
	n, err := checkJournalIndex(f.store, jv.ID, f.full.ID, jr)
	if err != nil || n != len(jr.touched) || n == 0 {
		t.Fatalf("the version's own index: %d records (%v), the journal changes %d keys", n, err, len(jr.touched))
	}

	vr, err := f.store.OpenVersion(jv.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer vr.Close()
	read := func(name string) []byte {
		s, err := vr.Stream(name)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		b, err := io.ReadAll(io.NewSectionReader(s, 0, s.Size()))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	keys, segs := read(versionread.EtcdJournalKeysStream), read(versionread.EtcdJournalSegsStream)
	x, err := snapread.OpenKeyIndex(bytes.NewReader(keys), int64(len(keys)))
	if err != nil {
		t.Fatal(err)
	}
	var recs []snapread.IndexedKey
	if err := x.Range("", "", func(r snapread.IndexedKey) bool { recs = append(recs, r); return true }); err != nil {
		t.Fatal(err)
	}
	put := -1
	for i, r := range recs {
		if !r.Revision.Tombstone {
			put = i
		}
	}
	if put < 0 {
		t.Fatal("no put in the index")
	}
	// A second segment table entry, naming a segment that does not hold
	// the change.
	otherSegs := append(append([]byte(nil), segs...), bytes.Repeat([]byte{0}, 72)...)
	copy(otherSegs[len(segs):], "00000000000000000001-00000000000000000001-1.seg")
	for _, c := range []struct {
		name string
		edit func([]snapread.IndexedKey) []snapread.IndexedKey
		segs []byte
		want string
	}{
		{"another lease", func(rs []snapread.IndexedKey) []snapread.IndexedKey { rs[put].Lease++; return rs }, segs, recs[put].Key},
		{"a key missing", func(rs []snapread.IndexedKey) []snapread.IndexedKey { return append(rs[:put:put], rs[put+1:]...) }, segs, "records"},
		{"another segment", func(rs []snapread.IndexedKey) []snapread.IndexedKey {
			rs[put].ValueOffset = int64(len(segs))
			return rs
		}, otherSegs, recs[put].Key},
	} {
		t.Run(c.name, func(t *testing.T) {
			rs := c.edit(append([]snapread.IndexedKey(nil), recs...))
			h := x.Header()
			h.ImageSize, h.Records, h.Keys = int64(len(c.segs)), int64(len(rs)), 0
			for _, r := range rs {
				if !r.Revision.Tombstone {
					h.Keys++
				}
			}
			var idx bytes.Buffer
			if err := snapread.WriteKeyIndex(&idx, h, rs); err != nil {
				t.Fatal(err)
			}
			unlock, err := f.store.Lock(f.ctx)
			if err != nil {
				t.Fatal(err)
			}
			w, err := f.store.NewVersion(f.ctx, rsyncish.WriteOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for name, b := range map[string][]byte{versionread.EtcdJournalKeysStream: idx.Bytes(), versionread.EtcdJournalSegsStream: c.segs} {
				if _, err := w.AddStream(name, bytes.NewReader(b)); err != nil {
					t.Fatal(err)
				}
			}
			vi, err := w.Commit()
			unlock()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := checkJournalIndex(f.store, vi.ID, f.full.ID, jr); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("an index with %s: %v, want an error naming %q", c.name, err, c.want)
			}
		})
	}
}

// The agent merges the small segments behind its versions (backup's
// journal compaction), so an earlier journal version's index names
// segments that are gone: the drill accepts a name whose revisions the
// segment now holding the change includes, and still refuses one it does
// not (the tampered table above).
func TestDrillJournalVersionAfterItsSegmentsMerged(t *testing.T) {
	f := newJournalFixture(t)
	first := journalVersionAfterChanges(t, f, 1)
	journalVersionAfterChanges(t, f, 2)
	journalVersionAfterChanges(t, f, 3)
	segs, err := f.j.List()
	if err != nil {
		t.Fatal(err)
	}
	present := map[string]bool{}
	for _, si := range segs {
		present[si.File] = true
	}
	vr, err := f.store.OpenVersion(first.ID)
	if err != nil {
		t.Fatal(err)
	}
	st, err := vr.Stream(versionread.EtcdJournalSegsStream)
	if err != nil {
		t.Fatal(err)
	}
	names, err := versionread.JournalSegmentNames(st, st.Size())
	st.Close()
	vr.Close()
	if err != nil {
		t.Fatal(err)
	}
	gone := 0
	for _, name := range names {
		if !present[name] {
			gone++
		}
	}
	if gone == 0 {
		t.Fatalf("version %s's index names no merged segment (journal: %d segments)", first.ID, len(segs))
	}
	if n, err := drillJournalIndex(t, f, first.ID); err != nil || n == 0 {
		t.Fatalf("drill of %s after its segments were merged (%d names gone): %d records, %v", first.ID, gone, n, err)
	}
}

// A merge that meets a reader leaves the segments it replaced beside the
// merged one until the next merge: a change is then in two segments, and
// the drill takes the index's name for either.
func TestDrillJournalVersionWhileMergedSegmentsOverlap(t *testing.T) {
	f := newJournalFixture(t)
	first := journalVersionAfterChanges(t, f, 1)
	for i := 1; i <= 4; i++ {
		f.waitDurable(f.changes(20 + i))
	}
	before, err := f.j.List()
	if err != nil {
		t.Fatal(err)
	}
	reader, err := f.store.OpenVersion(first.ID) // holds the read lock
	if err != nil {
		t.Fatal(err)
	}
	second := f.backup(false)
	reader.Close()
	if second.EtcdKind != versionread.EtcdKindJournal {
		t.Fatalf("second backup: %q, want a journal version", second.EtcdKind)
	}
	after, err := f.j.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(after) <= len(before) {
		t.Fatalf("%d segments before the merge, %d after: want the merged one beside the ones it replaced", len(before), len(after))
	}
	if n, err := drillJournalIndex(t, f, first.ID); err != nil || n == 0 {
		t.Fatalf("drill of %s with merged segments overlapping: %d records, %v", first.ID, n, err)
	}
}

// journalVersionAfterChanges makes four change sets (a segment or two
// each), each durable, then one put alone and etcd's progress mark after
// it (two segments named R-R, as on a quiet control plane: compaction
// once took the mark for the change's cover and dropped the change), then
// a journal version.
func journalVersionAfterChanges(t *testing.T, f *journalFixture, v int) *backup.Result {
	t.Helper()
	for i := 1; i <= 4; i++ {
		f.waitDurable(f.changes(10*v + i))
	}
	r, err := f.cli.Put(f.ctx, fmt.Sprintf("/j/alone-%d", v), "x")
	if err != nil {
		t.Fatal(err)
	}
	f.waitMarkAfter(r.Header.Revision)
	jv := f.backup(false)
	if jv.EtcdKind != versionread.EtcdKindJournal {
		t.Fatalf("backup %d: %q, want a journal version", v, jv.EtcdKind)
	}
	return jv
}

// drillJournalIndex is the drill's check of version id's journal key
// index against the journal replayed from its source.
func drillJournalIndex(t *testing.T, f *journalFixture, id string) (int, error) {
	t.Helper()
	src, err := loadSource(f.store, id)
	if err != nil {
		t.Fatal(err)
	}
	jr, err := loadJournalReplay(f.store, src)
	if err != nil {
		t.Fatal(err)
	}
	return checkJournalIndex(f.store, id, f.full.ID, jr)
}

// A journal that lost a one-revision change beside its progress mark (what
// the merge before 1dc91cf did) reads as whole by names; the first backup
// of an agent that starts on it (no cache: the journal since the base is
// read again) finds the hole and takes a full snapshot, and verify names
// the journal versions that need the lost revision.
func TestBackupAfterAOneRevisionChangeWasLostTakesAFull(t *testing.T) {
	f := newJournalFixture(t)
	jv := journalVersionAfterChanges(t, f, 1) // ends with /j/alone-1 alone, then its mark
	segs, err := f.j.List()
	if err != nil {
		t.Fatal(err)
	}
	var lost rsyncish.SegmentInfo
	for i := 1; i < len(segs); i++ {
		if segs[i].First == segs[i].Last && segs[i-1].First == segs[i].First && segs[i-1].Last == segs[i].Last {
			lost = segs[i-1] // the change; segs[i] is its mark
		}
	}
	if lost.File == "" {
		t.Fatalf("no one-revision segment beside its mark in %+v", segs)
	}
	if err := os.Remove(filepath.Join(f.store.Dir(), "journals", versionread.DeltaJournal, lost.File)); err != nil {
		t.Fatal(err)
	}
	s, err := rsyncish.Open(f.store.Dir(), rsyncish.Options{AllowSameFilesystem: true, SegmentSpan: versionread.SegmentSpan})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := s.Verify(f.ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	named := false
	for _, p := range rep.Problems {
		named = named || slices.Contains(p.Versions, jv.ID)
	}
	if !named {
		t.Errorf("verify after %s was lost: %+v, want journal version %s named", lost.File, rep.Problems, jv.ID)
	}
	f.cache = backup.JournalCache{} // an agent started anew
	res, err := backup.Run(f.ctx, backup.Options{Root: f.root, Store: f.store, Etcd: config.Default().Etcd, JournalCache: &f.cache})
	if err != nil || res.Status != versionread.StatusOK {
		t.Fatalf("backup: %v %+v", err, res)
	}
	if res.EtcdKind != versionread.EtcdKindFull || res.FullReason == "" {
		t.Fatalf("the backup after the loss: %q (%q), want a full snapshot saying why", res.EtcdKind, res.FullReason)
	}
	t.Logf("full snapshot because: %s", res.FullReason)
}

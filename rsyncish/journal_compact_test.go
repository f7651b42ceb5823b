package rsyncish

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Replace writes the merged segment before it removes the ones it
// replaces, and removes none while a reader holds the read lock: that
// reader finds every segment it listed, and the journal then holds the
// merged segment over the old ones (what a crash between the two steps
// leaves too), which DropCovered removes later.
func TestJournalReplace(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "store"), 0)
	j, err := s.Journal("deltas")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 23, 11, 0, 0, 0, time.UTC)
	for i, r := range [][2]uint64{{1, 3}, {3, 3}, {4, 6}, {7, 9}} {
		if err := j.Append([]byte{byte('a' + i)}, r[0], r[1], t0.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	segs, err := j.List()
	if err != nil || len(segs) != 4 {
		t.Fatalf("%d segments, %v", len(segs), err)
	}
	if _, _, err := j.Replace(segs[:1], []byte("x"), t0); err == nil {
		t.Error("a replace of one segment was taken")
	}
	if _, _, err := j.Replace([]SegmentInfo{segs[0], segs[3]}, []byte("x"), t0); err == nil || !strings.Contains(err.Error(), "does not follow") {
		t.Errorf("a replace over a gap: %v", err)
	}

	release, err := s.readLock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	merged, removed, err := j.Replace(segs[:3], []byte("abc"), segs[2].Time)
	if err != nil || removed {
		t.Fatalf("replace under a reader: removed %v, %v", removed, err)
	}
	if merged.First != 1 || merged.Last != 6 {
		t.Errorf("merged segment %+v, want revisions 1-6", merged)
	}
	for _, o := range segs[:3] {
		if d, err := j.Read(o); err != nil || len(d) != 1 {
			t.Errorf("a reader's segment %s: %q %v", o.File, d, err)
		}
	}
	if d, err := j.Read(merged); err != nil || string(d) != "abc" {
		t.Errorf("merged segment: %q %v", d, err)
	}
	if gone, err := j.DropCovered(merged, segs[:3]); err != nil || gone {
		t.Errorf("DropCovered under a reader: %v %v", gone, err)
	}
	release()

	if _, err := j.DropCovered(merged, segs[2:4]); err == nil {
		t.Error("DropCovered took a segment outside the keeper")
	}
	if gone, err := j.DropCovered(merged, segs[:3]); err != nil || !gone {
		t.Fatalf("DropCovered: %v %v", gone, err)
	}
	after, err := j.List()
	if err != nil || len(after) != 2 || after[0].File != merged.File || after[1].File != segs[3].File {
		t.Fatalf("after: %+v %v", after, err)
	}
	if gaps, err := j.Gaps(); err != nil || len(gaps) != 0 {
		t.Errorf("gaps after the merge: %v %v", gaps, err)
	}
}

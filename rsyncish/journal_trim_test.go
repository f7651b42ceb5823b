package rsyncish

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// trimFixture is a store whose journal holds six chained segments of ten
// revisions each (1-10 ... 51-60), a second apart.
func trimFixture(t *testing.T) (*Store, *Journal, time.Time) {
	t.Helper()
	s := openTest(t, t.TempDir(), 0)
	j, err := s.Journal("etcd-deltas")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for i := range 6 {
		first := uint64(i*10 + 1)
		if err := j.Append([]byte(strings.Repeat("x", 1000)), first, first+9, t0.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	return s, j, t0
}

func segNames(t *testing.T, j *Journal) string {
	t.Helper()
	segs, err := j.List()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, si := range segs {
		out = append(out, fmt.Sprintf("%d-%d", si.First, si.Last))
	}
	return strings.Join(out, " ")
}

func verifyTrim(t *testing.T, s *Store) *Report {
	t.Helper()
	unlock := lockTest(t, s)
	defer unlock()
	rep, err := s.Verify(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// Segments no kept range needs go from the middle of the journal; the
// hole is recorded first, so verify does not report it as a lost segment
// (before TrimExcept, a hole in the middle was always a gap).
func TestTrimExceptRecordsTheHole(t *testing.T) {
	s, j, t0 := trimFixture(t)
	// A version needing 5-10 and a window from 45 on.
	keep := []Range{{From: 5, To: 10}, {From: 45, To: ^uint64(0)}}
	dry, err := j.TrimExcept(keep, t0.Add(time.Hour), true)
	if err != nil {
		t.Fatal(err)
	}
	if got := segNames(t, j); got != "1-10 11-20 21-30 31-40 41-50 51-60" || dry.Segments != 3 {
		t.Fatalf("dry run removed segments or miscounted: %s, %+v", got, dry)
	}
	res, err := j.TrimExcept(keep, t0.Add(time.Hour), false)
	if err != nil {
		t.Fatal(err)
	}
	if got := segNames(t, j); got != "1-10 41-50 51-60" {
		t.Errorf("segments left %s, want 1-10 41-50 51-60", got)
	}
	if res.Segments != 3 || res.Bytes < 3000 || len(res.Holes) != 1 || res.Holes[0] != (Range{From: 11, To: 40}) {
		t.Errorf("result %+v, want 3 segments of >1000 bytes, hole 11-40", res)
	}
	recs, err := j.Trimmed()
	if err != nil || len(recs) != 1 || recs[0].From != 11 || recs[0].To != 40 || !recs[0].Time.Equal(t0.Add(time.Hour)) {
		t.Fatalf("trim records %+v %v, want one for 11-40", recs, err)
	}
	if gaps, _ := j.Gaps(); len(gaps) != 1 {
		t.Errorf("Gaps %+v: the hole is not a break (a tier's copy of the journal must stay usable)", gaps)
	}
	if rep := verifyTrim(t, s); !rep.Clean() || len(rep.Warnings) > 0 {
		t.Errorf("verify after a trim: %+v %v", rep.Problems, rep.Warnings)
	}
	// The record explains only: a chain over it fails as over any hole.
	if _, err := j.Needed(20, 45, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if segs, _ := j.Needed(10, 45, time.Time{}); len(segs) == 0 || segs[0].First != 41 {
		t.Errorf("Needed over the hole: %+v", segs)
	}

	// A later trim next to the earlier one: one record for the whole hole.
	if _, err := j.TrimExcept([]Range{{From: 55, To: ^uint64(0)}, {From: 3, To: 4}}, t0.Add(2*time.Hour), false); err != nil {
		t.Fatal(err)
	}
	if got := segNames(t, j); got != "1-10 51-60" {
		t.Errorf("segments left %s, want 1-10 51-60", got)
	}
	if recs, _ := j.Trimmed(); len(recs) != 1 || recs[0].From != 11 || recs[0].To != 50 {
		t.Errorf("trim records %+v, want one for 11-50", recs)
	}
	if rep := verifyTrim(t, s); !rep.Clean() || len(rep.Warnings) > 0 {
		t.Errorf("verify after the second trim: %+v %v", rep.Problems, rep.Warnings)
	}
	// Leading segments go without a record, and records before the
	// first segment left go with them.
	if _, err := j.TrimExcept([]Range{{From: 55, To: ^uint64(0)}}, t0.Add(3*time.Hour), false); err != nil {
		t.Fatal(err)
	}
	if got := segNames(t, j); got != "51-60" {
		t.Errorf("segments left %s, want 51-60", got)
	}
	if recs, _ := j.Trimmed(); len(recs) != 0 {
		t.Errorf("trim records %+v before the first segment are left", recs)
	}
	// The last segment stays whatever keep says (the writer continues it).
	if _, err := j.TrimExcept(nil, t0.Add(4*time.Hour), false); err != nil {
		t.Fatal(err)
	}
	if got := segNames(t, j); got != "51-60" {
		t.Errorf("segments left %s, want the tail 51-60", got)
	}
}

// A hole that is a lost segment stays a gap: TrimExcept leaves the
// segments around it, and verify still names it.
func TestTrimExceptLeavesALostSegment(t *testing.T) {
	s, j, t0 := trimFixture(t)
	segs, _ := j.List()
	if err := os.Remove(filepath.Join(j.dir, segs[2].File)); err != nil { // 21-30 lost
		t.Fatal(err)
	}
	res, err := j.TrimExcept([]Range{{From: 5, To: 10}, {From: 55, To: ^uint64(0)}}, t0.Add(time.Hour), false)
	if err != nil {
		t.Fatal(err)
	}
	if got := segNames(t, j); got != "1-10 11-20 31-40 41-50 51-60" || len(res.Skipped) != 1 || len(res.Holes) != 0 {
		t.Errorf("segments left %s, result %+v: want every segment left around the lost one", got, res)
	}
	rep := verifyTrim(t, s)
	if len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0].Detail, "revisions 21-30 (a segment was lost)") {
		t.Errorf("verify: %+v, want the lost 21-30", rep.Problems)
	}
}

// Crash safety: no segment goes before its hole's record is durable. A
// record that cannot be written leaves every segment.
func TestTrimExceptRecordsBeforeRemoving(t *testing.T) {
	_, j, t0 := trimFixture(t)
	// A directory where the record goes: the rename over it fails.
	if err := os.MkdirAll(filepath.Join(j.dir, trimName(11, 40), "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := j.TrimExcept([]Range{{From: 5, To: 10}, {From: 45, To: ^uint64(0)}}, t0, false)
	if err == nil || !strings.Contains(err.Error(), "recording the trim of revisions 11-40") {
		t.Fatalf("TrimExcept with the record unwritable: %v", err)
	}
	if got := segNames(t, j); got != "1-10 11-20 21-30 31-40 41-50 51-60" {
		t.Errorf("segments left %s: a segment went before its record", got)
	}
	// A crash after the record: the record over segments still there
	// changes nothing, and the next trim finishes the job.
	if err := os.RemoveAll(filepath.Join(j.dir, trimName(11, 40))); err != nil {
		t.Fatal(err)
	}
	if err := j.recordTrim(Range{From: 11, To: 40}, t0); err != nil {
		t.Fatal(err)
	}
	if segs, _ := j.Needed(10, 45, time.Time{}); len(segs) != 4 || segs[0].First != 11 {
		t.Errorf("Needed with a record over present segments: %+v", segs)
	}
	if _, err := j.TrimExcept([]Range{{From: 5, To: 10}, {From: 45, To: ^uint64(0)}}, t0, false); err != nil {
		t.Fatal(err)
	}
	if got := segNames(t, j); got != "1-10 41-50 51-60" {
		t.Errorf("segments left %s", got)
	}
}

// A damaged trim record is reported by verify, naming it.
func TestVerifyReportsADamagedTrimRecord(t *testing.T) {
	s, j, t0 := trimFixture(t)
	if _, err := j.TrimExcept([]Range{{From: 5, To: 10}, {From: 45, To: ^uint64(0)}}, t0, false); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(j.dir, trimName(11, 40)), []byte("rot"), 0o600); err != nil {
		t.Fatal(err)
	}
	rep := verifyTrim(t, s)
	var details []string
	for _, p := range rep.Problems {
		details = append(details, p.Detail)
	}
	all := strings.Join(details, "\n")
	if !strings.Contains(all, "damaged trim record "+trimName(11, 40)) || !strings.Contains(all, "revisions 11-40 (a segment was lost)") {
		t.Errorf("verify with a rotten trim record: %s", all)
	}
}

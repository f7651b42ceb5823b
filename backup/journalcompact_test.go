package backup

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// compactJournal merges the runs of small segments in its window into one
// segment each, and a replay of the journal gives the same events at the
// same times after as before: progress marks inside a run go, a catch-up
// segment and the tail stay as they are, and a merged segment left over
// its old ones (a crash between Replace's write and its removals) has
// those removed by the next compaction.
func TestCompactJournal(t *testing.T) {
	tj := newTestJournal(t, rsyncish.Options{}, time.Date(2026, 11, 23, 11, 0, 0, 0, time.UTC))
	s, j, at := tj.s, tj.j, tj.at
	appendSeg := func(n int, catchUp bool, sec int) { t.Helper(); tj.append(t, n, catchUp, sec) }
	sec := 1
	for range 6 { // changes and progress marks, as a control plane's leases make them
		appendSeg(2, false, sec)
		appendSeg(0, false, sec+1)
		sec += 2
	}
	appendSeg(3, true, sec) // a catch-up segment
	sec++
	for range 3 {
		appendSeg(1, false, sec)
		sec++
	}
	windowEnd := tj.rev
	appendSeg(2, false, sec) // the tail side, after the window
	appendSeg(0, false, sec+1)

	replayAt := func(until time.Time) string {
		t.Helper()
		// As get --at and restore read it: the segments up to the target.
		datas, _, err := j.ReadNeeded(100, 0, until)
		if err != nil {
			t.Fatal(err)
		}
		var rs []io.Reader
		for _, d := range datas {
			rs = append(rs, bytes.NewReader(d))
		}
		evs, err := snapread.ReplayEvents(rs, 100, 0, until)
		return fmt.Sprint(evs, err)
	}
	// A replay to the end, and to each second (a point-in-time read):
	// what the journal answers, compared before and after.
	lastSec := sec + 1
	replay := func() string {
		t.Helper()
		out := replayAt(time.Time{})
		for s := 0; s <= lastSec+1; s++ {
			out += "\n" + replayAt(at(s).Add(300*time.Millisecond))
		}
		return out
	}
	before := replay()
	segsBefore, _ := j.List()
	dir := filepath.Join(s.Dir(), "journals", versionread.DeltaJournal)
	raw := map[string][]byte{}
	for _, si := range segsBefore {
		b, err := os.ReadFile(filepath.Join(dir, si.File))
		if err != nil {
			t.Fatal(err)
		}
		raw[si.File] = b
	}
	log := slog.New(slog.DiscardHandler)
	renamed, removed, err := compactJournal(j, segsBefore, 100, windowEnd, log)
	if err != nil {
		t.Fatal(err)
	}
	segsAfter, _ := j.List()
	// 12 + 3 small segments before the catch-up and after it merge into
	// two; the catch-up, the two after the window stay.
	if len(segsAfter) != 5 || removed != len(segsBefore)-1-2 {
		t.Errorf("%d segments before, %d after, %d removed, renamed %v", len(segsBefore), len(segsAfter), removed, renamed)
	}
	after := replay()
	if after != before {
		t.Errorf("the replay differs after the merge:\n%v\n%v", before, after)
	}
	for old, to := range renamed {
		if old == to {
			t.Errorf("%s renamed to itself", old)
		}
	}

	// A crash's leftover: the merged segments and the ones they replaced,
	// all present (written back); the next compaction removes the old.
	for name := range renamed {
		if err := os.WriteFile(filepath.Join(dir, name), raw[name], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := j.List(); len(n) != 5+len(renamed) {
		t.Fatalf("%d segments with the leftovers back", len(n))
	}
	if got := replay(); got != before {
		t.Errorf("the replay differs with the leftovers:\n%v\n%v", before, got)
	}
	segsCrash, _ := j.List()
	_, removed, err = compactJournal(j, segsCrash, 100, windowEnd, log)
	if err != nil || removed != len(renamed) {
		t.Errorf("the next compaction removed %d of %d leftovers: %v", removed, len(renamed), err)
	}
	if n, _ := j.List(); len(n) != 5 {
		t.Errorf("%d segments after the leftovers went, want 5", len(n))
	}
	if got := replay(); got != before {
		t.Errorf("the replay differs after the leftovers went:\n%v\n%v", before, got)
	}

	// Leftovers behind the next window (a merge that met a reader holding
	// the read lock leaves them, and the next merge looks further on)
	// go too.
	for name := range renamed {
		if err := os.WriteFile(filepath.Join(dir, name), raw[name], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	segsCrash, _ = j.List()
	if _, removed, err = compactJournal(j, segsCrash, windowEnd, tj.rev, log); err != nil || removed != len(renamed) {
		t.Errorf("a compaction of the next window removed %d of %d leftovers behind it: %v", removed, len(renamed), err)
	}
	if got := replay(); got != before {
		t.Errorf("the replay differs after the leftovers behind the window went:\n%v\n%v", before, got)
	}
}

// A segment holding one revision R and the progress mark after it have
// the same name range (R-R: the journal records a mark as the empty range
// ending at its revision), the mark the later one. The mark holds
// nothing, so it covers nothing: compaction merges the two, or leaves
// them, and never drops the change as a leftover the mark "dominates".
func TestCompactJournalKeepsAOneRevisionSegmentBesideItsMark(t *testing.T) {
	tj := newTestJournal(t, rsyncish.Options{}, time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC))
	j := tj.j
	appendSeg := func(n, sec int) { t.Helper(); tj.append(t, n, false, sec) }
	for sec := 1; sec <= 12; sec += 2 { // a quiet control plane: one change, then etcd's progress
		appendSeg(1, sec)
		appendSeg(0, sec+1)
	}
	windowEnd := tj.rev
	appendSeg(1, 20) // the tail side
	appendSeg(0, 21)

	events := func() []int64 {
		t.Helper()
		datas, _, err := j.ReadNeeded(100, 0, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		evs, err := snapread.ReplayEventsBytes(datas, 100, 0, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		var revs []int64
		for _, e := range evs {
			revs = append(revs, e.ModRevision)
		}
		return revs
	}
	want := []int64{101, 102, 103, 104, 105, 106, 107}
	if got := events(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("the journal before compaction replays revisions %v, want %v", got, want)
	}
	log := slog.New(slog.DiscardHandler)
	for _, window := range [][2]int64{{100, windowEnd}, {windowEnd, tj.rev}} {
		segs, _ := j.List()
		if _, _, err := compactJournal(j, segs, window[0], window[1], log); err != nil {
			t.Fatal(err)
		}
		if after, _ := j.List(); window[0] == 100 && len(after) != 3 {
			t.Errorf("%d segments after the first window's merge, want 3 (the merged run, the tail's change and mark)", len(after))
		}
		if got := events(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("after compacting revisions %d-%d the journal replays %v, want %v", window[0], window[1], got, want)
		}
	}
}

// The loss compaction made (a one-revision segment gone, its progress
// mark left, both named R-R) reads as a whole chain by names; verify
// with the store's SegmentSpan reads the segments' headers and names the
// hole and the mark beside it, between segments and, for the versions
// that need it, at the chain's start.
func TestVerifySeesAOneRevisionSegmentLostBesideItsMark(t *testing.T) {
	tj := newTestJournal(t, rsyncish.Options{SegmentSpan: versionread.SegmentSpan}, time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC))
	dir, s := tj.dir, tj.s
	for i, n := range []int{1, 0, 1, 0, 2, 0} {
		tj.append(t, n, false, i+1)
	}
	// A version that needs the journal from 100 to 104.
	unlock, err := s.Lock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.NewVersion(t.Context(), rsyncish.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Require(rsyncish.Requirement{Journal: versionread.DeltaJournal, After: 100, Through: 104}); err != nil {
		t.Fatal(err)
	}
	vi, err := w.Commit()
	unlock()
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if rep, err := s.Verify(ctx, false); err != nil || !rep.Clean() {
		t.Fatalf("verify of the whole journal: %v %+v", err, rep)
	}
	j, err := s.Journal(versionread.DeltaJournal)
	if err != nil {
		t.Fatal(err)
	}
	segs, _ := j.List()
	var names []string
	for _, si := range segs {
		names = append(names, fmt.Sprintf("%d-%d", si.First, si.Last))
	}
	if fmt.Sprint(names) != "[101-101 101-101 102-102 102-102 103-104 104-104]" {
		t.Fatalf("segments %v, want each one-revision change beside its mark", names)
	}
	segDir := filepath.Join(dir, "journals", versionread.DeltaJournal)
	problems := func(lost rsyncish.SegmentInfo, mark rsyncish.SegmentInfo, kind string) {
		t.Helper()
		raw, err := os.ReadFile(filepath.Join(segDir, lost.File))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(segDir, lost.File)); err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(filepath.Join(segDir, lost.File), raw, 0o600)
		rep, err := s.Verify(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, p := range rep.Problems {
			gap := fmt.Sprintf("revisions %d-%d", lost.First, lost.Last)
			if p.Kind == kind && strings.Contains(p.Detail, gap) && strings.Contains(p.Detail, mark.File) && strings.Contains(p.Detail, "progress mark") &&
				(kind != "requires" || fmt.Sprint(p.Versions) == fmt.Sprint([]string{vi.ID})) {
				found = true
			}
		}
		if !found {
			t.Errorf("verify after %s was lost beside its mark: %+v, want a %s problem at its revision naming the mark", lost.File, rep.Problems, kind)
		}
		// By names alone the chain looks whole: why the store reads
		// headers.
		byName, err := rsyncish.Open(dir, rsyncish.Options{AllowSameFilesystem: true})
		if err != nil {
			t.Fatal(err)
		}
		if rep, err := byName.Verify(ctx, false); err != nil || !rep.Clean() {
			t.Errorf("verify by names: %v %+v (the names hide this hole; if they show it now, the header check may be redundant)", err, rep.Problems)
		}
	}
	problems(segs[2], segs[3], "journal")  // between segments
	problems(segs[0], segs[1], "requires") // the chain's first: only the version needing it can tell
}

// testJournal is a store's etcd delta journal written as the delta stream
// writes it (through DeltaSink): segments of puts after the last revision,
// or progress marks, each received at its second after t0.
type testJournal struct {
	dir  string
	s    *rsyncish.Store
	j    *rsyncish.Journal
	sink etcdsnap.SegmentSink
	t0   time.Time
	rev  int64 // the last revision appended; the journal starts after 100
}

func newTestJournal(t *testing.T, opts rsyncish.Options, t0 time.Time) *testJournal {
	t.Helper()
	tj := &testJournal{dir: filepath.Join(t.TempDir(), "store"), t0: t0, rev: 100}
	opts.AllowSameFilesystem = true
	var err error
	if tj.s, err = rsyncish.Open(tj.dir, opts); err != nil {
		t.Fatal(err)
	}
	if tj.sink, err = DeltaSink(tj.s); err != nil {
		t.Fatal(err)
	}
	if tj.j, err = tj.s.Journal(versionread.DeltaJournal); err != nil {
		t.Fatal(err)
	}
	return tj
}

func (tj *testJournal) at(sec int) time.Time { return tj.t0.Add(time.Duration(sec) * time.Second) }

// append writes a segment of n puts (0: a progress mark, handed over as
// the stream does: firstRev = lastRev + 1) received from second sec-1 to
// sec.
func (tj *testJournal) append(t *testing.T, n int, catchUp bool, sec int) {
	t.Helper()
	seg := &snapread.Segment{FromRev: tj.rev, ToRev: tj.rev + int64(n), FromTime: tj.at(sec - 1), ToTime: tj.at(sec), CatchUp: catchUp}
	for i := range n {
		r := tj.rev + int64(i) + 1
		seg.Events = append(seg.Events, snapread.Event{Type: snapread.EventPut, Key: fmt.Sprintf("/k/%d", r),
			Value: []byte("v"), ModRevision: r, CreateRevision: r, Version: 1, Time: tj.at(sec)})
	}
	if err := tj.sink.AppendSegment(seg.Encode(), tj.rev+1, tj.rev+int64(n), tj.at(sec)); err != nil {
		t.Fatal(err)
	}
	tj.rev += int64(n)
}

package rsyncish

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// TestJournalGaps: a segment lost from the middle of a delta chain is a
// gap verify reports, while the hole a chain restart leaves (a new
// snapshot after compaction) is declared and is not; a point-in-time
// replay reads only the segments up to its target, so damage after it
// does not block it.
func TestJournalGaps(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	j, err := s.Journal("etcd-deltas")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	seg := func(first, last uint64, i int) {
		t.Helper()
		if err := j.Append([]byte(fmt.Sprintf("%d-%d", first, last)), first, last, t0.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	seg(10, 19, 0)
	seg(20, 29, 1)
	seg(29, 29, 2) // a heartbeat: nothing changed up to 29
	seg(30, 39, 3)
	// The chain broke and restarted from a snapshot at revision 49.
	j2, _ := s.Journal("etcd-deltas") // a new process: the tail is read from disk
	if err := j2.Append([]byte("50-59"), 50, 59, t0.Add(4*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := j2.Append([]byte("60-69"), 60, 69, t0.Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	verify := func() *Report {
		t.Helper()
		unlock := lockTest(t, s)
		defer unlock()
		rep, err := s.Verify(context.Background(), false)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := verify(); !rep.Clean() {
		t.Fatalf("a declared restart is reported: %v", rep.Problems)
	}

	// Replays read only what they need.
	names := func(segs []SegmentInfo) string {
		var out []string
		for _, si := range segs {
			out = append(out, fmt.Sprintf("%d-%d", si.First, si.Last))
		}
		return strings.Join(out, " ")
	}
	for _, c := range []struct {
		after, until uint64
		at           time.Time
		want         string
	}{
		{9, 15, time.Time{}, "10-19"},
		{9, 19, time.Time{}, "10-19"},
		{9, 20, time.Time{}, "10-19 20-29"},
		{15, 35, time.Time{}, "10-19 20-29 29-29 30-39"},
		{29, 0, t0.Add(3500 * time.Millisecond), "30-39 50-59"},
		{49, 0, time.Time{}, "50-59 60-69"},
	} {
		segs, err := j.Needed(c.after, c.until, c.at)
		if err != nil || names(segs) != c.want {
			t.Errorf("Needed(%d, %d, %v) = %s, %v; want %s", c.after, c.until, c.at, names(segs), err, c.want)
		}
	}
	// A corrupt segment 30-39 blocks nothing before it.
	segs, _ := j.List()
	p := filepath.Join(dir, journalsDir, "etcd-deltas", segs[3].File)
	data, _ := os.ReadFile(p)
	data[len(data)-40] ^= 1
	os.WriteFile(p, data, 0o600)
	got, _, err := j.ReadNeeded(9, 25, time.Time{})
	if err != nil || len(got) != 2 || !bytes.Equal(got[1], []byte("20-29")) {
		t.Errorf("replay to 25 past a corrupt later segment: %q %v", got, err)
	}
	if _, _, err := j.ReadNeeded(9, 35, time.Time{}); err == nil || !strings.Contains(err.Error(), segs[3].File) {
		t.Errorf("replay through the corrupt segment: %v", err)
	}
	if rep := verify(); len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0].String(), "revisions 30-39") {
		t.Errorf("corrupt segment: %v", rep.Problems)
	}
	os.WriteFile(p, append(data[:len(data)-40:len(data)-40], append([]byte{data[len(data)-40] ^ 1}, data[len(data)-39:]...)...), 0o600)

	// A segment lost from the middle is a gap.
	os.Remove(filepath.Join(dir, journalsDir, "etcd-deltas", segs[1].File))
	rep := verify()
	if len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0].Detail, "gap") || !strings.Contains(rep.Problems[0].String(), "revisions 20-28") {
		t.Fatalf("lost segment: %v", rep.Problems)
	}

	// Trimming drops the breaks before what it keeps.
	if _, err := j.Trim(60); err != nil {
		t.Fatal(err)
	}
	if b, err := j.Breaks(); err != nil || len(b) != 0 {
		t.Errorf("breaks after trim: %v %v", b, err)
	}
}

// TestJournalGapsBeforeBreaks: a hole from before the journal declared
// its restarts (an older kubekeep appended it) may be a restart: it is a
// warning, not damage. Holes after the first declaring Append are damage.
func TestJournalGapsBeforeBreaks(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	j, _ := s.Journal("etcd-deltas")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	old := func(first, last uint64) { // as the format-1 code wrote them
		data := encodeTestSegment(first, last, t0)
		if err := os.WriteFile(filepath.Join(j.dir, segName(first, last, t0)), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old(10, 19)
	old(30, 39)
	check := func(wantProblems, wantWarnings int) {
		t.Helper()
		unlock := lockTest(t, s)
		defer unlock()
		rep, err := s.Verify(context.Background(), false)
		if err != nil || len(rep.Problems) != wantProblems || len(rep.Warnings) != wantWarnings {
			t.Fatalf("verify: %v problems %v warnings %v", err, rep.Problems, rep.Warnings)
		}
	}
	check(0, 1)
	j2, _ := s.Journal("etcd-deltas")
	if err := j2.Append([]byte("x"), 40, 49, t0); err != nil {
		t.Fatal(err)
	}
	if err := j2.Append([]byte("x"), 50, 59, t0); err != nil {
		t.Fatal(err)
	}
	if err := j2.Append([]byte("x"), 60, 69, t0); err != nil {
		t.Fatal(err)
	}
	check(0, 1)
	segs, _ := j2.List()
	os.Remove(filepath.Join(j.dir, segs[3].File)) // 50-59
	check(1, 1)
}

func encodeTestSegment(first, last uint64, t time.Time) []byte {
	return format.EncodeSegment(format.Segment{First: first, Last: last, Time: t, Data: []byte("old")})
}

// With SetMarkSync, the marks of an idle stream between two durable ones
// are pending: the journal keeps the durable mark beside the newest
// pending one, a crash that tears the pending one loses only the time
// after the durable mark (List leaves the torn mark out, verify stays
// clean, the next Journal to append removes it), and a pending mark that a
// change follows is made durable and replaces the durable one. Before,
// every mark was fsynced and replaced the one before it: a torn newest
// mark was in List and a damaged segment to verify.
func TestJournalPendingMarks(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	j, err := s.Journal("etcd-deltas")
	if err != nil {
		t.Fatal(err)
	}
	j.SetMarkSync(time.Hour)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Second) }
	appendSeg := func(j *Journal, first, last uint64, i int) {
		t.Helper()
		if err := j.Append(encodeTestSegment(first, last, at(i)), first, last, at(i)); err != nil {
			t.Fatal(err)
		}
	}
	names := func() []string {
		t.Helper()
		segs, err := j.List()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, si := range segs {
			out = append(out, si.File)
		}
		return out
	}
	verifyClean := func(when string) {
		t.Helper()
		unlock := lockTest(t, s)
		defer unlock()
		rep, err := s.Verify(context.Background(), false)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.Clean() {
			t.Fatalf("verify %s: %v", when, rep.Problems)
		}
	}
	appendSeg(j, 10, 19, 0)
	appendSeg(j, 19, 19, 1) // the first mark after a change: durable
	for i := 2; i <= 4; i++ {
		appendSeg(j, 19, 19, i) // pending: each replaces the pending one before it
	}
	durable, pending := segName(19, 19, at(1)), segName(19, 19, at(4))
	if got, want := strings.Join(names(), " "), strings.Join([]string{segName(10, 19, at(0)), durable, pending}, " "); got != want {
		t.Fatalf("journal after a change and 4 marks holds\n%s\nwant the change, the durable mark and the newest (pending) one:\n%s", got, want)
	}

	// A crash tears the pending mark (its data never reached the disk).
	if err := os.Truncate(filepath.Join(j.dir, pending), 0); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(names(), " "), segName(10, 19, at(0))+" "+durable; got != want {
		t.Fatalf("after the crash List gives %s, want the torn mark left out: %s", got, want)
	}
	verifyClean("with a torn pending mark")
	segs, err := j.Needed(9, 0, at(3))
	if err != nil || len(segs) != 2 || segs[1].File != durable {
		t.Fatalf("a replay to a moment after the durable mark needs %v (%v), want the durable mark %s (where the journal ends)", segs, err, durable)
	}
	// The next process appends: the torn mark goes, the chain goes on.
	j2, _ := s.Journal("etcd-deltas")
	j2.SetMarkSync(time.Hour)
	j = j2
	appendSeg(j2, 19, 19, 5)
	if _, err := os.Stat(filepath.Join(j2.dir, pending)); !os.IsNotExist(err) {
		t.Fatalf("the torn mark is still there after the next append (%v)", err)
	}
	// A change after a pending mark: the pending mark is made durable and
	// stays before it; the durable mark it replaced goes.
	appendSeg(j2, 19, 19, 6) // pending (j2's first mark was durable)
	appendSeg(j2, 20, 29, 7)
	if got, want := strings.Join(names(), " "), strings.Join([]string{segName(10, 19, at(0)), durable, segName(19, 19, at(6)), segName(20, 29, at(7))}, " "); got != want {
		// durable (at 1) was the first process's; j2 replaced its own.
		t.Fatalf("after a change that follows a pending mark the journal holds\n%s\nwant\n%s", got, want)
	}
	for _, si := range mustList(t, j2) {
		if _, err := j2.Read(si); err != nil {
			t.Errorf("segment %s: %v", si.File, err)
		}
	}
	verifyClean("after the change")
}

// SetMarkSync(every): a mark is durable again once every has passed since
// the last durable one, and replaces it and the pending one.
func TestJournalMarkSyncEvery(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	j, err := s.Journal("etcd-deltas")
	if err != nil {
		t.Fatal(err)
	}
	const every = 300 * time.Millisecond
	j.SetMarkSync(every)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	app := func(first, last uint64, i int) {
		t.Helper()
		at := t0.Add(time.Duration(i) * time.Second)
		if err := j.Append(encodeTestSegment(first, last, at), first, last, at); err != nil {
			t.Fatal(err)
		}
	}
	app(10, 19, 0)
	app(19, 19, 1)
	app(19, 19, 2)
	if !j.pending {
		t.Fatal("a mark right after a durable one is not pending")
	}
	time.Sleep(every + 50*time.Millisecond)
	app(19, 19, 3)
	if j.pending {
		t.Fatalf("a mark %s after the last durable one is still pending", every)
	}
	if got := len(mustList(t, j)); got != 2 {
		t.Fatalf("journal holds %d segments, want the change and the one durable mark", got)
	}
}

func mustList(t *testing.T, j *Journal) []SegmentInfo {
	t.Helper()
	segs, err := j.List()
	if err != nil {
		t.Fatal(err)
	}
	return segs
}

// A pending mark another writer removed (a trim) is no reason to refuse
// the change that follows it.
func TestJournalPendingMarkTrimmed(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	j, err := s.Journal("etcd-deltas")
	if err != nil {
		t.Fatal(err)
	}
	j.SetMarkSync(time.Hour)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, r := range [][2]uint64{{10, 19}, {19, 19}, {19, 19}} {
		at := t0.Add(time.Duration(i) * time.Second)
		if err := j.Append(encodeTestSegment(r[0], r[1], at), r[0], r[1], at); err != nil {
			t.Fatal(err)
		}
	}
	trimmer, _ := s.Journal("etcd-deltas")
	if n, err := trimmer.Trim(20); err != nil || n != 3 {
		t.Fatalf("trim removed %d segments (%v), want 3", n, err)
	}
	at := t0.Add(3 * time.Second)
	if err := j.Append(encodeTestSegment(20, 29, at), 20, 29, at); err != nil {
		t.Fatalf("a change after a trimmed pending mark: %v", err)
	}
}

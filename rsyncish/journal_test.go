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

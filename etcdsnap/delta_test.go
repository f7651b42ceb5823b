package etcdsnap_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/internal/testetcd"
)

// TestDeltaProgressMarksAndCatchUp: an idle but live stream writes
// progress marks, so a restore reaches a moment after the last change
// (before, every moment after the last change was "not covered": the
// progress requests went to a stream without watchers, and etcd answers
// none while a watch waits for its first revision). A stream that
// restarts after changes were made without it writes what it catches up
// on as a catch-up segment, and a moment inside that stretch is refused
// instead of restored without the changes committed before it.
func TestDeltaProgressMarksAndCatchUp(t *testing.T) {
	r := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, r)
	ctx := ctxT(t)
	cli := srv.ClientT(t)
	if _, err := cli.Put(ctx, "/a/base", "0"); err != nil {
		t.Fatal(err)
	}
	cc := clientConfig(r, srv.Endpoint())
	dir := t.TempDir()
	snap := filepath.Join(dir, "a.db")
	info := snapshotToFile(t, cc, snap)

	cfg := etcdsnap.DeltaConfig{Flush: 50 * time.Millisecond, Heartbeat: 100 * time.Millisecond}
	sink := &memSink{}
	run := func(ds *etcdsnap.DeltaStreamer) (stop func()) {
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- ds.Run(sctx) }()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("delta streamer: %v", err)
			}
		}
	}
	waitCovered := func(ds *etcdsnap.DeltaStreamer, rev int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for ds.Covered().ToRev < rev {
			if time.Now().After(deadline) {
				t.Fatalf("deltas cover %d, want %d", ds.Covered().ToRev, rev)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	restoreAt := func(name string, at time.Time) (map[string]string, error) {
		t.Helper()
		rc := restoreConfig(r, snap, filepath.Join(dir, name))
		rc.Segments, rc.UntilTime = sink.readers(), at
		if _, err := etcdsnap.RestoreDataDir(ctx, rc); err != nil {
			return nil, err
		}
		return dbState(t, etcdsnap.DBPath(rc.DataDir)), nil
	}

	ds := etcdsnap.NewDeltaStreamer(cli, info.Revision, info.Started, sink, cfg)
	stop := run(ds)
	// Nothing changed since the snapshot: etcd answers no progress
	// request for a watch still waiting for its first revision, so this
	// is covered by the stream's reads.
	wantSnap := stateAt(t, cli, info.Revision)
	time.Sleep(time.Second)
	got, err := restoreAt("unchanged", time.Now().Add(-300*time.Millisecond))
	if err != nil {
		t.Fatalf("restore to a moment after the snapshot, nothing changed, stream live: %v", err)
	}
	sameState(t, "restore with nothing changed", wantSnap, got)

	put, err := cli.Put(ctx, "/a/one", "1")
	if err != nil {
		t.Fatal(err)
	}
	waitCovered(ds, put.Header.Revision)
	wantOne := stateAt(t, cli, put.Header.Revision)

	// Idle, live: a moment well after the last change is covered.
	time.Sleep(time.Second)
	idleAt := time.Now().Add(-300 * time.Millisecond)
	got, err = restoreAt("idle", idleAt)
	if err != nil {
		t.Fatalf("restore at %s, 700ms after the last change with the stream live: %v", idleAt.Format(time.RFC3339Nano), err)
	}
	sameState(t, "restore to an idle moment", wantOne, got)
	stop()
	if sink.err != nil {
		t.Fatal(sink.err)
	}

	// Changes while nobody watches; the stream resumes where it was durable.
	resume := ds.Covered()
	two, err := cli.Put(ctx, "/a/two", "2")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	inOutage := time.Now()
	time.Sleep(100 * time.Millisecond)
	three, err := cli.Put(ctx, "/a/three", "3")
	if err != nil {
		t.Fatal(err)
	}
	wantThree := stateAt(t, cli, three.Header.Revision)
	time.Sleep(100 * time.Millisecond)

	ds2 := etcdsnap.NewDeltaStreamer(cli, resume.ToRev, resume.ToTime, sink, cfg)
	stop = run(ds2)
	waitCovered(ds2, three.Header.Revision)
	time.Sleep(500 * time.Millisecond) // a progress mark after the catch-up
	afterCatchUp := time.Now().Add(-300 * time.Millisecond)
	stop()
	if sink.err != nil {
		t.Fatal(sink.err)
	}

	if _, err := restoreAt("in-outage", inOutage); err == nil || !strings.Contains(err.Error(), "caught up on revisions") {
		t.Fatalf("restore to a moment while the stream was down (revision %d was committed before it, %d after): %v, want a refusal",
			two.Header.Revision, three.Header.Revision, err)
	}
	got, err = restoreAt("after-catch-up", afterCatchUp)
	if err != nil {
		t.Fatalf("restore after the catch-up: %v", err)
	}
	sameState(t, "restore after the catch-up", wantThree, got)
	// Before the stream stopped is still exact.
	got, err = restoreAt("before-outage", idleAt)
	if err != nil {
		t.Fatalf("restore before the outage: %v", err)
	}
	sameState(t, "restore before the outage", wantOne, got)

	var marks, catchUps int
	for _, rd := range sink.readers() {
		b, err := io.ReadAll(rd)
		if err != nil {
			t.Fatal(err)
		}
		seg, err := snapread.DecodeSegment(b)
		if err != nil {
			t.Fatal(err)
		}
		if len(seg.Events) == 0 && seg.ToTime.After(seg.FromTime) {
			marks++
		}
		if seg.CatchUp {
			catchUps++
		}
	}
	if marks < 3 || catchUps == 0 {
		t.Errorf("%d progress marks and %d catch-up segments; want marks while idle and the resumed stream's catch-up", marks, catchUps)
	}
}

// The planner on hand-made chains: an old journal (no marks, no catch-up
// flag) covers up to its last change as before; a progress mark extends
// that; a catch-up segment refuses the moments between its start and its
// last change and nothing else.
func TestReplayEventsCoverage(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	ev := func(rev int64, s float64) snapread.Event {
		return snapread.Event{Type: snapread.EventPut, Key: fmt.Sprintf("/k/%d", rev), Value: []byte("v"), ModRevision: rev, CreateRevision: rev, Version: 1, Time: at(s)}
	}
	seg := func(from, to int64, fromS, toS float64, catchUp bool, evs ...snapread.Event) io.Reader {
		s := snapread.Segment{FromRev: from, ToRev: to, FromTime: at(fromS), ToTime: at(toS), Events: evs, CatchUp: catchUp}
		return bytes.NewReader(s.Encode())
	}
	old := func() []io.Reader {
		return []io.Reader{seg(10, 12, 0, 2, false, ev(11, 1), ev(12, 2))}
	}
	revs := func(evs []snapread.Event) []int64 {
		var out []int64
		for _, e := range evs {
			out = append(out, e.ModRevision)
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		segs  []io.Reader
		at    float64
		want  []int64
		error string
	}{
		{"old journal, before the last change", old(), 1.5, []int64{11}, ""},
		{"old journal, at the last change", old(), 2, []int64{11, 12}, ""},
		{"old journal, after the last change", old(), 3, nil, "is not covered"},
		{"progress mark covers the quiet", append(old(), seg(12, 12, 2, 9, false)), 8, []int64{11, 12}, ""},
		{"beyond the newest mark", append(old(), seg(12, 12, 2, 9, false)), 9.5, nil, "is not covered"},
		{"inside a catch-up", append(old(), seg(12, 14, 2, 20, true, ev(13, 19), ev(14, 19.5))), 10, nil, "caught up on revisions 13 to 14"},
		{"after a catch-up", append(old(), seg(12, 14, 2, 20, true, ev(13, 19), ev(14, 19.5))), 19.7, []int64{11, 12, 13, 14}, ""},
		{"at the catch-up's start", append(old(), seg(12, 14, 2, 20, true, ev(13, 19), ev(14, 19.5))), 2, []int64{11, 12}, ""},
		{"a catch-up with nothing to catch up", append(old(), seg(12, 12, 2, 20, true)), 10, []int64{11, 12}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := snapread.ReplayEvents(tc.segs, 10, 0, at(tc.at))
			switch {
			case tc.error != "" && (err == nil || !strings.Contains(err.Error(), tc.error)):
				t.Fatalf("got %v %v, want an error with %q", revs(got), err, tc.error)
			case tc.error == "" && err != nil:
				t.Fatal(err)
			case tc.error == "" && fmt.Sprint(revs(got)) != fmt.Sprint(tc.want):
				t.Fatalf("replays %v, want %v", revs(got), tc.want)
			}
		})
	}
}

// A burst etcd sends in one watch response (here: a stream resumed behind
// 40 revisions of 64 KiB values, which etcd replays in batches of up to
// 1000 revisions) is cut into segments of about MaxSegmentBytes, each
// holding whole revisions, and the chain still restores every change.
// Before, a segment was cut only between responses: one segment of the
// whole burst, which a read of one change through a journal key index
// then had to read and decode whole.
func TestDeltaBurstIsCutIntoSegments(t *testing.T) {
	r := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, r)
	ctx := ctxT(t)
	cli := srv.ClientT(t)
	if _, err := cli.Put(ctx, "/a/base", "0"); err != nil {
		t.Fatal(err)
	}
	cc := clientConfig(r, srv.Endpoint())
	dir := t.TempDir()
	snap := filepath.Join(dir, "a.db")
	info := snapshotToFile(t, cc, snap)
	value := strings.Repeat("v", 64<<10)
	var last int64
	for i := range 40 {
		resp, err := cli.Put(ctx, fmt.Sprintf("/a/burst/%02d", i), value)
		if err != nil {
			t.Fatal(err)
		}
		last = resp.Header.Revision
	}
	const max = 256 << 10
	sink := &memSink{}
	ds := etcdsnap.NewDeltaStreamer(cli, info.Revision, info.Started, sink,
		etcdsnap.DeltaConfig{Flush: 10 * time.Second, Heartbeat: 10 * time.Second, MaxSegmentBytes: max})
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ds.Run(sctx) }()
	for deadline := time.Now().Add(20 * time.Second); ds.Covered().ToRev < last; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("deltas cover %d, want %d", ds.Covered().ToRev, last)
		}
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("delta streamer: %v", err)
	}
	if sink.err != nil {
		t.Fatal(sink.err)
	}
	withEvents := 0
	for i, raw := range sink.segs {
		seg, err := snapread.DecodeSegment(raw)
		if err != nil {
			t.Fatal(err)
		}
		if len(seg.Events) > 0 {
			withEvents++
		}
		n := 0
		for _, e := range seg.Events {
			n += len(e.Key) + len(e.Value)
		}
		// At most one revision (one 64 KiB value) past the bound.
		if n > max+len(value)+64 {
			t.Errorf("segment %d holds %d bytes of keys and values (revisions %d-%d), bound %d", i, n, seg.FromRev+1, seg.ToRev, max)
		}
	}
	if withEvents < 40*len(value)/(max+len(value)) {
		t.Errorf("%d segments with changes for %d bytes of burst at %d per segment", withEvents, 40*len(value), max)
	}
	rc := restoreConfig(r, snap, filepath.Join(dir, "burst"))
	rc.Segments = sink.readers()
	if _, err := etcdsnap.RestoreDataDir(ctx, rc); err != nil {
		t.Fatal(err)
	}
	got := dbState(t, etcdsnap.DBPath(rc.DataDir))
	for k, v := range stateAt(t, cli, last) {
		if got[k] != v {
			t.Errorf("restored %s differs from etcd at revision %d", k, last)
		}
	}
}

// ScanEvents, one segment at a time, hands over exactly the changes
// ReplayEvents returns for a revision target (overlapping segments and a
// progress mark included), refuses what it refuses (a gap, a target not
// covered), and says ErrSegmentOrder for segments out of replay order,
// which ReplayEvents would have sorted.
func TestScanEventsIsReplayEventsOneSegmentAtATime(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	ev := func(rev int64) snapread.Event {
		return snapread.Event{Type: snapread.EventPut, Key: fmt.Sprintf("/k/%d", rev%3), Value: []byte(fmt.Sprint("v", rev)), ModRevision: rev, CreateRevision: 1, Version: rev, Time: t0.Add(time.Duration(rev) * time.Second)}
	}
	seg := func(from, to int64, evs ...snapread.Event) []byte {
		s := snapread.Segment{FromRev: from, ToRev: to, FromTime: t0.Add(time.Duration(from) * time.Second), ToTime: t0.Add(time.Duration(to) * time.Second), Events: evs}
		return s.Encode()
	}
	inOrder := [][]byte{seg(5, 8, ev(6), ev(7), ev(8)), seg(7, 9, ev(8), ev(9)), seg(9, 9), seg(9, 12, ev(10), ev(11), ev(12))}
	scan := func(segs [][]byte, from, until int64) ([]snapread.Event, error) {
		i := 0
		var out []snapread.Event
		err := snapread.ScanEvents(func() ([]byte, error) {
			if i == len(segs) {
				return nil, io.EOF
			}
			i++
			return segs[i-1], nil
		}, from, until, func(e *snapread.Event) error {
			out = append(out, *e)
			return nil
		})
		return out, err
	}
	readers := func(segs [][]byte) []io.Reader {
		var rs []io.Reader
		for _, b := range segs {
			rs = append(rs, bytes.NewReader(b))
		}
		return rs
	}
	for _, c := range []struct {
		from, until int64
		error       string
	}{{5, 12, ""}, {6, 11, ""}, {8, 9, ""}, {5, 13, "not covered"}, {4, 12, "gap"}} {
		want, werr := snapread.ReplayEvents(readers(inOrder), c.from, c.until, time.Time{})
		got, gerr := scan(inOrder, c.from, c.until)
		if (werr == nil) != (gerr == nil) || gerr != nil && !strings.Contains(gerr.Error(), c.error) || c.error != "" && gerr == nil {
			t.Errorf("from %d to %d: ScanEvents %v, ReplayEvents %v, want an error with %q", c.from, c.until, gerr, werr, c.error)
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("from %d to %d: ScanEvents gave\n%v\nReplayEvents\n%v", c.from, c.until, got, want)
		}
	}
	shuffled := [][]byte{inOrder[0], inOrder[1], inOrder[3], inOrder[2]}
	if _, err := snapread.ReplayEvents(readers(shuffled), 5, 12, time.Time{}); err != nil {
		t.Fatalf("ReplayEvents of the shuffled segments: %v", err)
	}
	if _, err := scan(shuffled, 5, 12); !errors.Is(err, snapread.ErrSegmentOrder) {
		t.Errorf("ScanEvents of segments out of order: %v, want ErrSegmentOrder", err)
	}
}

// A stream that starts at etcd's own revision (a backup just taken) and
// sees no change writes a progress mark every heartbeat, as one that has
// seen a change does: etcd answers no progress request while a watch waits
// for its first revision, so the stream reads etcd's revision instead of
// asking again. Before, every such request went unanswered and only the
// read after 2 heartbeats of silence made a mark: one every 3 heartbeats
// (6 s at the default 2 s), and a progress request every heartbeat for
// nothing.
func TestDeltaMarksEveryHeartbeatBeforeTheFirstChange(t *testing.T) {
	r := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, r)
	ctx := ctxT(t)
	cli := srv.ClientT(t)
	if _, err := cli.Put(ctx, "/a/base", "0"); err != nil {
		t.Fatal(err)
	}
	info := snapshotToFile(t, clientConfig(r, srv.Endpoint()), filepath.Join(t.TempDir(), "a.db"))
	const hb = 200 * time.Millisecond
	sink := &memSink{}
	ds := etcdsnap.NewDeltaStreamer(cli, info.Revision, info.Started, sink, etcdsnap.DeltaConfig{Flush: hb, Heartbeat: hb})
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ds.Run(sctx) }()
	time.Sleep(15 * hb)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var times []time.Time
	for _, rd := range sink.readers() {
		b, _ := io.ReadAll(rd)
		seg, err := snapread.DecodeSegment(b)
		if err != nil {
			t.Fatal(err)
		}
		if len(seg.Events) > 0 {
			t.Fatalf("a segment with %d events; nothing changed", len(seg.Events))
		}
		times = append(times, seg.ToTime)
	}
	var gaps []time.Duration
	for i := 1; i < len(times); i++ {
		gaps = append(gaps, times[i].Sub(times[i-1]))
	}
	slices.Sort(gaps)
	if len(gaps) < 4 || gaps[len(gaps)/2] > hb*3/2 {
		t.Fatalf("%d progress marks in %s of an idle stream started at etcd's revision, gaps %v; want one about every heartbeat (%s)", len(times), 15*hb, gaps, hb)
	}
}

package restore

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/backup"
	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// journalBytes is the size of the delta journal's segments.
func journalBytes(t *testing.T, j *rsyncish.Journal) (n int64, segs int) {
	t.Helper()
	ss, err := j.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, si := range ss {
		n += si.Size
	}
	return n, len(ss)
}

// Prune keeps of the delta journal only what the kept versions and the
// point-in-time window need. Three bases (full versions) with journal
// versions on each; prune keeps the newest version (keepLast 1: the
// window) and, sparse and old as a daily one would be, a journal version
// on the first base. The journal between that old version and the newest
// base goes (before: prune kept every segment from the oldest kept
// snapshot on, here all of them); every kept version still restores to
// what etcd held at its revision; verify reports no gap; --at in the
// window works, and --at into the trimmed stretch fails saying prune
// trimmed it, naming the versions around it.
func TestPruneTrimsTheJournalBetweenKeptVersions(t *testing.T) {
	f := newJournalFixture(t)
	type made struct {
		res  *backup.Result
		want map[string]string
	}
	var vs []made
	take := func(i int, full bool) *backup.Result {
		t.Helper()
		f.waitDurable(f.changes(i))
		time.Sleep(20 * time.Millisecond) // segments and versions at distinct times
		r := f.backup(full)
		vs = append(vs, made{r, f.stateAt(r.Etcd.Revision)})
		return r
	}
	f1 := f.full
	vs = append(vs, made{f1, f.stateAt(f1.Etcd.Revision)})
	take(1, false)
	old := take(2, false) // kept: sparse and old
	take(3, false)
	f2 := take(4, true)
	take(5, false)
	midAt := time.Now().UTC() // a moment between versions on the second base
	time.Sleep(20 * time.Millisecond)
	take(6, false)
	f3 := take(7, true)
	take(8, false)
	last := take(9, false)
	rev10 := f.changes(10)
	f.waitDurable(rev10)
	time.Sleep(20 * time.Millisecond)
	lateAt := time.Now().UTC() // in the window, after the newest version
	lateWant := f.stateAt(rev10)
	f.waitDurable(f.changes(11))
	for _, v := range vs {
		if v.res.ID != f1.ID && v.res.ID != f2.ID && v.res.ID != f3.ID && v.res.EtcdKind != versionread.EtcdKindJournal {
			t.Fatalf("version %s is %s, want a journal version", v.res.ID, v.res.EtcdKind)
		}
	}
	if f2.EtcdKind != versionread.EtcdKindFull || f3.EtcdKind != versionread.EtcdKindFull {
		t.Fatalf("kinds %s %s, want full", f2.EtcdKind, f3.EtcdKind)
	}
	bytesBefore, segsBefore := journalBytes(t, f.j)

	unlock, err := f.store.Lock(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	pr, err := backup.PruneWith(f.ctx, f.store, rsyncish.RetentionPolicy{KeepLast: 1, Needs: func(v rsyncish.VersionInfo) []string {
		if v.ID == last.ID {
			return []string{old.ID}
		}
		return nil
	}}, false)
	unlock()
	if err != nil {
		t.Fatal(err)
	}
	kept := map[string]bool{}
	for _, k := range pr.Keep {
		kept[k.ID] = true
	}
	for _, id := range []string{f1.ID, old.ID, f3.ID, last.ID} {
		if !kept[id] {
			t.Fatalf("prune kept %+v, want %s", pr.Keep, id)
		}
	}
	if len(pr.Keep) != 4 || pr.DeltaWindowFrom != last.ID {
		t.Fatalf("prune kept %d versions, window from %q; want 4, the window from %s", len(pr.Keep), pr.DeltaWindowFrom, last.ID)
	}
	bytesAfter, segsAfter := journalBytes(t, f.j)
	t.Logf("journal: %d segments, %d bytes before prune; %d segments, %d bytes after (%d trimmed, holes %v)",
		segsBefore, bytesBefore, segsAfter, bytesAfter, pr.DeltaSegmentsTrimmed, pr.DeltaHolesTrimmed)
	if pr.DeltaSegmentsTrimmed == 0 || segsBefore-segsAfter != pr.DeltaSegmentsTrimmed || bytesBefore-bytesAfter != pr.DeltaBytesTrimmed {
		t.Fatalf("trimmed %d segments (%d bytes), the journal went from %d to %d segments (%d to %d bytes)",
			pr.DeltaSegmentsTrimmed, pr.DeltaBytesTrimmed, segsBefore, segsAfter, bytesBefore, bytesAfter)
	}
	// Nothing left holds only revisions after the old version and up to
	// the newest base: that stretch is what no kept version needs.
	segs, _ := f.j.List()
	for _, si := range segs {
		if int64(si.First) > old.Etcd.Revision && int64(si.Last) <= f3.Etcd.Revision {
			t.Errorf("segment %s (%d-%d) is left between the old version (revision %d) and the newest base (%d)", si.File, si.First, si.Last, old.Etcd.Revision, f3.Etcd.Revision)
		}
	}
	if len(pr.DeltaHolesTrimmed) != 1 || int64(pr.DeltaHolesTrimmed[0].From) > old.Etcd.Revision+1 || int64(pr.DeltaHolesTrimmed[0].To) < f2.Etcd.Revision {
		t.Errorf("holes %+v, want one from after revision %d past %d", pr.DeltaHolesTrimmed, old.Etcd.Revision, f2.Etcd.Revision)
	}

	// verify: no gap, no warning, nothing damaged.
	unlock, err = f.store.Lock(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := f.store.Verify(f.ctx, false)
	unlock()
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Clean() || len(rep.Warnings) > 0 {
		t.Errorf("verify after prune: %+v %v", rep.Problems, rep.Warnings)
	}
	// Every kept version restores to what etcd held at its revision.
	for _, v := range vs {
		if !kept[v.res.ID] {
			continue
		}
		vi, err := f.store.Version(v.res.ID)
		if err != nil {
			t.Fatal(err)
		}
		vsAll, _ := f.store.Versions()
		if err := versionread.Readable(f.store, vsAll, vi); err != nil {
			t.Errorf("version %s not readable after prune: %v", v.res.ID, err)
		}
		to := filepath.Join(t.TempDir(), "etcd")
		if _, err := RestoreEtcd(f.ctx, EtcdOptions{Store: f.store, Version: v.res.ID, To: to}); err != nil {
			t.Errorf("restore etcd of kept version %s: %v", v.res.ID, err)
			continue
		}
		sameState(t, "kept version "+v.res.ID, dbState(t, to), v.want)
	}
	// --at in the window: from the newest version on.
	to := filepath.Join(t.TempDir(), "late")
	if _, err := RestoreEtcd(f.ctx, EtcdOptions{Store: f.store, At: lateAt, To: to}); err != nil {
		t.Fatalf("restore etcd --at in the window: %v", err)
	}
	sameState(t, "--at in the window", dbState(t, to), lateWant)
	// --at into the trimmed stretch fails, saying why and what to read.
	to = filepath.Join(t.TempDir(), "mid")
	_, err = RestoreEtcd(f.ctx, EtcdOptions{Store: f.store, At: midAt, To: to})
	if err == nil {
		t.Fatalf("restore etcd --at %s in the trimmed stretch succeeded", midAt)
	}
	for _, want := range []string{"prune trimmed the etcd delta journal", "no version it kept needed it", old.ID, f3.ID} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("restore etcd --at in the trimmed stretch: %v\nwant it to say %q", err, want)
		}
	}
	if _, statErr := os.Stat(filepath.Join(to, "member")); statErr == nil {
		t.Errorf("a failed --at left a data dir in %s", to)
	}
}

package rsyncish

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// requireStore is a store holding a base version with two streams (all of
// the store's packs are the base's), the journal "deltas" with segments
// for revisions 101-110, 111-120, 121-130 and 131-140, and a version that
// holds nothing of its own and requires the base's streams and the
// journal's revisions 101-125 (a journal version of etcd, in miniature).
func requireStore(t *testing.T) (dir, base, dep string, segs []SegmentInfo) {
	t.Helper()
	dir = t.TempDir()
	s := openTest(t, dir, 16<<10)
	b := commitVersion(t, s, func(w *VersionWriter) error {
		if _, err := w.AddStream("etcd/snapshot.db", bytes.NewReader(randBytes(200<<10))); err != nil {
			return err
		}
		_, err := w.AddStream("etcd/keys.idx", bytes.NewReader(randBytes(20<<10)))
		return err
	})
	j, err := s.Journal("deltas")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 4 {
		first := uint64(101 + 10*i)
		if err := j.Append(randBytes(300), first, first+9, t0.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	d := commitVersion(t, s, func(w *VersionWriter) error {
		return w.Require(
			Requirement{Version: b.ID, Stream: "etcd/snapshot.db"},
			Requirement{Version: b.ID, Stream: "etcd/keys.idx", IfHeld: true},
			Requirement{Version: b.ID, Stream: "etcd/never-written", IfHeld: true},
			Requirement{Journal: "deltas", After: 100, Through: 125})
	})
	if segs, err = j.List(); err != nil || len(segs) != 4 {
		t.Fatalf("segments %v %v", segs, err)
	}
	return dir, b.ID, d.ID, segs
}

// names reports whether a problem of the report names version id.
func names(rep *Report, id string) bool {
	for _, p := range rep.Problems {
		if slices.Contains(p.Versions, id) {
			return true
		}
	}
	return false
}

// TestVerifyRequirements: a version that requires another version's
// stream and a journal's revisions is named damaged when what it requires
// is (a pack of the stream deleted or rotten; a segment in the range
// flipped, truncated or deleted), and only then.
func TestVerifyRequirements(t *testing.T) {
	clean, base, dep, segs := requireStore(t)
	open := func(dir string) *Store {
		s, err := Open(dir, Options{AllowSameFilesystem: true, Logger: testLogger(t), NoCreate: true})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	verify := func(dir string, readData bool) *Report {
		t.Helper()
		rep, err := open(dir).Verify(context.Background(), readData)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := verify(clean, true); !rep.Clean() {
		t.Fatalf("undamaged store: %v", rep.Problems)
	}
	packs, _ := filepath.Glob(filepath.Join(clean, packsDir, "*"+packExt))
	if len(packs) == 0 {
		t.Fatal("no pack")
	}
	segPath := func(dir string, i int) string { return filepath.Join(dir, journalsDir, "deltas", segs[i].File) }
	cases := []struct {
		name     string
		readData bool
		damage   func(dir string)
		dep      bool // the dependent version is damaged
	}{
		{"pack deleted", false, func(dir string) { os.Remove(strings.Replace(packs[0], clean, dir, 1)) }, true},
		{"pack rotten", true, func(dir string) { flip(t, strings.Replace(packs[0], clean, dir, 1), 100) }, true},
		{"required segment flipped", false, func(dir string) { flip(t, segPath(dir, 1), 50) }, true},
		{"required segment truncated", false, func(dir string) {
			if err := os.Truncate(segPath(dir, 2), 40); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"required segment deleted", false, func(dir string) { os.Remove(segPath(dir, 1)) }, true},
		{"last required segment deleted", false, func(dir string) { os.Remove(segPath(dir, 2)) }, true},
		// Revisions 131-140 are past what the version requires: the
		// journal is damaged, the version is not.
		{"segment after the range flipped", false, func(dir string) { flip(t, segPath(dir, 3), 50) }, false},
		{"the base's manifest deleted", false, func(dir string) {
			os.Remove(filepath.Join(dir, versionsDir, base+manifestExt))
		}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "s")
			copyDir(t, clean, dir)
			c.damage(dir)
			rep := verify(dir, c.readData)
			if rep.Clean() {
				t.Fatalf("verify found nothing")
			}
			if got := names(rep, dep); got != c.dep {
				t.Errorf("verify names the dependent version %s: %v, want %v; problems %v", dep, got, c.dep, rep.Problems)
			}
			// Repair lists it among the versions damaged for good.
			s := open(dir)
			unlock := lockTest(t, s)
			res, err := s.Repair(context.Background(), RepairOptions{ReadData: true})
			unlock()
			if err != nil {
				t.Fatal(err)
			}
			listed := slices.ContainsFunc(res.Damaged, func(d DamagedVersion) bool { return d.ID == dep })
			if listed != c.dep {
				t.Errorf("repair lists the dependent version as damaged: %v, want %v; %+v", listed, c.dep, res.Damaged)
			}
		})
	}
}

func flip(t *testing.T, path string, at int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[at%len(data)] ^= 0x10
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRequireRefusesDamage: Require refuses what the store is known not
// to hold whole, so a backup builds on a full copy instead.
func TestRequireRefusesDamage(t *testing.T) {
	dir, base, _, segs := requireStore(t)
	s := openTest(t, dir, 16<<10)
	try := func(r Requirement) error {
		unlock := lockTest(t, s)
		defer unlock()
		s.mu.Lock()
		s.idx = nil
		s.mu.Unlock()
		w, err := s.NewVersion(context.Background(), WriteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Abort()
		return w.Require(r)
	}
	snap := Requirement{Version: base, Stream: "etcd/snapshot.db"}
	if err := try(snap); err != nil {
		t.Fatalf("undamaged: %v", err)
	}
	if err := try(Requirement{Version: base, Stream: "etcd/none"}); err == nil {
		t.Error("a stream the version does not hold was accepted")
	}
	// A segment verify found damaged is refused without reading it
	// again (a writer that checked the journal up to some revision
	// before reads only what came after).
	flip(t, filepath.Join(dir, journalsDir, "deltas", segs[2].File), 60)
	unlock := lockTest(t, s)
	if _, err := s.Verify(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	unlock()
	if err := try(Requirement{Journal: "deltas", After: 120, Through: 125}); err == nil || !strings.Contains(err.Error(), "found damaged by verify") {
		t.Errorf("a segment verify found damaged: %v", err)
	}
	if err := try(Requirement{Journal: "deltas", After: 130, Through: 135}); err != nil {
		t.Errorf("a journal range past the damaged segment: %v", err)
	}
	os.Remove(filepath.Join(dir, journalsDir, "deltas", segs[1].File))
	if err := try(Requirement{Journal: "deltas", After: 100, Through: 125}); err == nil {
		t.Error("a journal range with a hole was accepted")
	}
	if err := try(Requirement{Journal: "deltas", After: 130, Through: 140}); err != nil {
		t.Errorf("a journal range past the hole: %v", err)
	}
	packs, _ := filepath.Glob(filepath.Join(dir, packsDir, "*"+packExt))
	for _, p := range packs {
		os.Remove(p)
	}
	if err := try(snap); err == nil {
		t.Error("a stream whose packs are gone was accepted")
	}
}

// TestPruneKeepsRequired: prune keeps a version a kept version requires,
// though the policy would drop it.
func TestPruneKeepsRequired(t *testing.T) {
	dir, base, dep, _ := requireStore(t)
	s := openTest(t, dir, 16<<10)
	unlock := lockTest(t, s)
	res, err := s.Prune(context.Background(), RetentionPolicy{KeepLast: 1}, false)
	unlock()
	if err != nil {
		t.Fatal(err)
	}
	vs, err := s.Versions()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, v := range vs {
		ids = append(ids, v.ID)
	}
	if !slices.Contains(ids, base) || !slices.Contains(ids, dep) {
		t.Fatalf("after prune: %v (want %s and %s); %+v", ids, base, dep, res)
	}
	if rep, err := s.Verify(context.Background(), true); err != nil || !rep.Clean() {
		t.Fatalf("verify after prune: %v %v", rep, err)
	}
}

// errAfter is a context whose Err turns to context.Canceled after n calls:
// it stops Prune between one removal and the next, as a kill would.
type errAfter struct {
	context.Context
	n int
}

func (c *errAfter) Err() error {
	if c.n <= 0 {
		return context.Canceled
	}
	c.n--
	return nil
}

// TestPruneInterruptedLeavesNoVersionWithoutItsBase: when prune drops a
// base and the version that requires it, and is stopped after any number
// of removals, no version is left whose base is gone (dependents are newer
// than their bases, so they go first).
func TestPruneInterruptedLeavesNoVersionWithoutItsBase(t *testing.T) {
	for n := 1; n <= 3; n++ {
		dir, base, dep, _ := requireStore(t)
		s := openTest(t, dir, 16<<10)
		commitVersion(t, s, func(w *VersionWriter) error {
			_, err := w.AddStream("etcd/snapshot.db", bytes.NewReader(randBytes(10<<10)))
			return err
		})
		unlock := lockTest(t, s)
		_, err := s.Prune(&errAfter{Context: context.Background(), n: n}, RetentionPolicy{KeepLast: 1}, false)
		unlock()
		vs, verr := s.Versions()
		if verr != nil {
			t.Fatal(verr)
		}
		left := map[string]bool{}
		for _, v := range vs {
			left[v.ID] = true
		}
		if left[dep] && !left[base] {
			t.Errorf("stopped after %d checks (%v): %s is left without its base %s", n, err, dep, base)
		}
		if rep, err := s.Verify(context.Background(), false); err != nil || !rep.Clean() {
			t.Errorf("stopped after %d checks: verify: %+v %v", n, rep, err)
		}
	}
}

// TestRemovalOrderAfterClockStep: a version that requires another goes
// first even when its time is older than its base's (the clock stepped
// back between the two).
func TestRemovalOrderAfterClockStep(t *testing.T) {
	dir, base, dep, _ := requireStore(t)
	s := openTest(t, dir, 16<<10)
	// As Versions would list them had dep's clock read earlier: dep oldest.
	got := s.removalOrder([]VersionInfo{{ID: dep}, {ID: base}})
	if len(got) != 2 || got[0].ID != dep || got[1].ID != base {
		t.Fatalf("removal order %v, want %s before its base %s", got, dep, base)
	}
}

package backup

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// simStore is 30 days of hourly versions at explicit times, a full one
// every 6 hours (as etcd.fullSnapshot's journalShare makes them on a
// churning db) and journal versions on it in between; the journal holds
// one segment of segBytes per hour, revisions dense (100 an hour). It
// models what the agent leaves, without etcd: each version records only
// its etcd source (a full one a stand-in snapshot stream).
type simVersion struct {
	id        string
	t         time.Time
	rev, base int64
	full      bool
}

func simStore(t *testing.T, days int, segBytes int) (*rsyncish.Store, *rsyncish.Journal, []simVersion) {
	return simStoreEvery(t, days, segBytes, time.Hour, 6)
}

// simStoreEvery is simStore with a version every step and a full one
// every fullEvery versions.
func simStoreEvery(t *testing.T, days int, segBytes int, step time.Duration, fullEvery int) (*rsyncish.Store, *rsyncish.Journal, []simVersion) {
	t.Helper()
	s, err := rsyncish.Open(filepath.Join(t.TempDir(), "store"), rsyncish.Options{AllowSameFilesystem: true})
	if err != nil {
		t.Fatal(err)
	}
	j, err := s.Journal(versionread.DeltaJournal)
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := s.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	t0 := time.Date(2026, 11, 1, 0, 30, 0, 0, time.UTC)
	seg := bytes.Repeat([]byte("d"), segBytes)
	var out []simVersion
	var baseID string
	var baseRev int64
	for h := range days * int(24*time.Hour/step) {
		vt := t0.Add(time.Duration(h) * step)
		first := uint64(h*100 + 1)
		if err := j.Append(seg, first, first+99, vt.Add(-step/60)); err != nil {
			t.Fatal(err)
		}
		rev := int64(h+1) * 100
		full := h%fullEvery == 0
		w, err := s.NewVersion(context.Background(), rsyncish.WriteOptions{Time: vt, Parent: "none"})
		if err != nil {
			t.Fatal(err)
		}
		info := snapread.Info{Revision: rev, Verified: true, Source: "snapshot", Started: vt}
		if full {
			if _, err := w.AddStream(versionread.EtcdSnapshotStream, strings.NewReader("snapshot at "+vt.String())); err != nil {
				t.Fatal(err)
			}
		} else {
			info.Source, info.Base, info.BaseRevision = snapread.SourceJournal, baseID, baseRev
		}
		if err := w.SetMeta(versionread.MetaEtcd, info); err != nil {
			t.Fatal(err)
		}
		if err := w.SetMeta(versionread.MetaStatus, versionread.StatusOK); err != nil {
			t.Fatal(err)
		}
		vi, err := w.Commit()
		if err != nil {
			t.Fatal(err)
		}
		v := simVersion{id: vi.ID, t: vt, rev: rev, full: full, base: baseRev}
		if full {
			baseID, baseRev, v.base = vi.ID, rev, rev
		}
		out = append(out, v)
	}
	return s, j, out
}

func journalSize(t *testing.T, j *rsyncish.Journal) int64 {
	t.Helper()
	segs, err := j.List()
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, si := range segs {
		n += si.Size
	}
	return n
}

// With the default retention over 30 days of versions, prune keeps of the
// journal the last ~24 hours (the keepHourly window) whole and of each
// older kept version only its chain from its base; the rest goes, and
// verify does not call it lost. Before, prune kept every segment from the
// oldest kept version's snapshot on: ~4 weeks of journal.
func TestPruneDefaultRetentionKeepsTheWindowAndTheChains(t *testing.T) {
	const segBytes = 8 << 10
	s, j, made := simStore(t, 30, segBytes)
	before := journalSize(t, j)
	pr := pruneDefault(t, s)
	after := journalSize(t, j)
	t.Logf("30 days of hourly versions, a full every 6 h, %d KiB of journal an hour: journal %d KiB before prune, %d KiB after (%d segments, %d holes trimmed); %d versions kept, window from %s",
		segBytes>>10, before>>10, after>>10, pr.DeltaSegmentsTrimmed, len(pr.DeltaHolesTrimmed), len(pr.Keep), pr.DeltaWindowFromTime.Format(time.RFC3339))

	newest := made[len(made)-1]
	// The window: the whole journal from the oldest version keepLast or
	// keepHourly kept: 24 hourly buckets, 23 hours before the newest.
	if want := newest.t.Add(-23 * time.Hour); !pr.DeltaWindowFromTime.Equal(want) {
		t.Errorf("window from %s, want %s (the oldest of 24 hourly versions)", pr.DeltaWindowFromTime, want)
	}
	kept := map[string]bool{}
	for _, k := range pr.Keep {
		kept[k.ID] = true
	}
	byID := map[string]simVersion{}
	for _, v := range made {
		byID[v.id] = v
	}
	// Every kept version still reads: its chain from its base is whole.
	vs, err := s.Versions()
	if err != nil {
		t.Fatal(err)
	}
	for _, vi := range vs {
		if err := versionread.Readable(s, vs, vi); err != nil {
			t.Errorf("kept version %s: %v", vi.ID, err)
		}
	}
	// --at anywhere in the window: the journal is whole from the window's
	// version to the tail.
	w := byID[pr.DeltaWindowFrom]
	if err := versionread.ChainIntact(j, w.rev, newest.rev); err != nil {
		t.Errorf("the journal in the window from %s: %v", pr.DeltaWindowFrom, err)
	}
	// Between two old kept versions, the journal not in a chain is gone,
	// and a chain over it says prune trimmed it.
	var older []simVersion
	for _, v := range made {
		if kept[v.id] && v.t.Before(w.t) {
			older = append(older, v)
		}
	}
	if len(older) < 8 {
		t.Fatalf("kept %d versions before the window, want the daily and weekly ones", len(older))
	}
	a, b := older[len(older)-3], older[len(older)-2]
	err = versionread.ChainIntact(j, a.rev, b.rev)
	if err == nil || !strings.Contains(err.Error(), "prune trimmed revisions") || !strings.Contains(err.Error(), "no version it kept needed them") {
		t.Errorf("the journal between kept versions %s and %s: %v, want it trimmed and said so", a.id, b.id, err)
	}
	// What is left: the window (24 h) plus, for each older kept journal
	// version, the hours since its base (at most 5 of the 6 between fulls).
	hours := int64(24)
	for _, v := range older {
		if !v.full {
			hours += (v.rev - v.base) / 100
		}
	}
	if max := (hours + 2) * (segBytes + 200); after > max || after*4 > before {
		t.Errorf("journal left %d bytes, want at most %d (%d hours of it) and well under the %d before", after, max, hours, before)
	}
	unlock, err := s.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	rep, err := s.Verify(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Clean() || len(rep.Warnings) > 0 {
		t.Errorf("verify after prune: %+v %v", rep.Problems, rep.Warnings)
	}
}

// The disk prune saves at the agent's cadence, scaled down 1024 times:
// a version every 5 minutes for 30 days, 10 KiB of journal each (10 MiB
// at 1 GiB etcd with 1% of the keys rewritten), a full every 4 hours
// (bench-agent's rate at that churn), the default retention. Off by
// default (8640 versions take a minute or two): KUBEKEEP_TRIM_DEMO=1.
func TestPruneJournalDemo(t *testing.T) {
	if os.Getenv("KUBEKEEP_TRIM_DEMO") == "" {
		t.Skip("KUBEKEEP_TRIM_DEMO=1 runs it")
	}
	for _, c := range []struct {
		name      string
		fullEvery int
	}{{"1 GiB, 1%, a full every 4 h", 48}, {"8 GiB, 0.5%, a full every 7.5 h", 90}} {
		s, j, _ := simStoreEvery(t, 30, 10<<10, 5*time.Minute, c.fullEvery)
		before := journalSize(t, j)
		segs, err := j.List()
		if err != nil {
			t.Fatal(err)
		}
		pr := pruneDefault(t, s)
		after := journalSize(t, j)
		// What the old rule kept: every segment from the oldest kept
		// version's snapshot revision on.
		oldest := int64(-1)
		for _, k := range pr.Keep {
			vi, err := s.Version(k.ID)
			if err != nil {
				t.Fatal(err)
			}
			if src, ok := versionread.EtcdSourceOf(vi); ok && (oldest < 0 || src.SnapshotRevision < oldest) {
				oldest = src.SnapshotRevision
			}
		}
		var oldRule int64
		for _, si := range segs {
			if int64(si.Last) >= oldest {
				oldRule += si.Size
			}
		}
		t.Logf("%s: journal %.1f MiB before prune; after: %.1f MiB (the old rule: %.1f MiB); %d versions kept, %d segments and %d holes trimmed, window from %s",
			c.name, float64(before)/(1<<20), float64(after)/(1<<20), float64(oldRule)/(1<<20), len(pr.Keep), pr.DeltaSegmentsTrimmed, len(pr.DeltaHolesTrimmed), pr.DeltaWindowFromTime.Format(time.RFC3339))
	}
}

// pruneDefault prunes s with the default retention, holding its lock.
func pruneDefault(t *testing.T, s *rsyncish.Store) *PruneResult {
	t.Helper()
	unlock, err := s.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	pr, err := Prune(context.Background(), s, config.Default().Retention, false)
	if err != nil {
		t.Fatal(err)
	}
	return pr
}

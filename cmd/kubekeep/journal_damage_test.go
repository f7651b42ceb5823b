package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// As a user meets it: the packs of a full version's snapshot are lost
// while a journal version is built on it. verify names the journal
// version (it cannot be restored), and the next backup, with the delta
// stream still running, takes a full snapshot instead of another journal
// version on the damaged base (which verify would call damaged from
// birth). Before, the next backup built on the damaged base. (Here the
// journal version's own files share the lost packs, so verify names it
// either way; rsyncish's TestVerifyRequirements pins that a version is
// named for what it requires alone.)
func TestCLIJournalVersionOnDamagedBase(t *testing.T) {
	w := newJournalWorld(t, 3*time.Minute)
	cli, ctx, storeDir := w.cli, w.ctx, w.storeDir
	kk, backupJSON := w.run, w.backupAnyExit
	verifyNames := func() map[string]bool {
		t.Helper()
		out, _ := kk("verify", "-o", "json")
		var rep rsyncish.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("verify -o json: %v\n%s", err, out)
		}
		named := map[string]bool{}
		for _, p := range rep.Problems {
			for _, v := range p.Versions {
				named[v] = true
			}
		}
		return named
	}
	if _, err := cli.Put(ctx, "/dmg/before", "x"); err != nil {
		t.Fatal(err)
	}
	full := backupJSON()
	if full.EtcdKind != versionread.EtcdKindFull {
		t.Fatalf("first backup: kind %q, want full", full.EtcdKind)
	}
	basePacks, _ := filepath.Glob(filepath.Join(storeDir, "packs", "*.pack"))

	w.startStream(full.Etcd.Revision) // stopped at cleanup
	waitJournal := w.waitJournal
	put, err := cli.Put(ctx, "/dmg/journal", "y")
	if err != nil {
		t.Fatal(err)
	}
	waitJournal(put.Header.Revision)
	jv := backupJSON()
	if jv.EtcdKind != versionread.EtcdKindJournal || jv.Etcd.Base != full.ID {
		t.Fatalf("backup with the delta stream running: %+v, want a journal version on %s", jv, full.ID)
	}
	if named := verifyNames(); len(named) > 0 {
		t.Fatalf("verify of the undamaged store names %v", named)
	}

	// The base's packs are lost (a stray rm, a dying disk).
	if len(basePacks) == 0 {
		t.Fatal("the full version wrote no pack")
	}
	for _, p := range basePacks {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	if named := verifyNames(); !named[jv.ID] || !named[full.ID] {
		t.Errorf("verify names %v, want the base %s and the journal version %s on it", named, full.ID, jv.ID)
	}
	put, err = cli.Put(ctx, "/dmg/after", "z")
	if err != nil {
		t.Fatal(err)
	}
	waitJournal(put.Header.Revision)
	next := backupJSON()
	if next.EtcdKind != versionread.EtcdKindFull {
		t.Errorf("the backup after the base's damage: kind %q (base %s), want full", next.EtcdKind, next.Etcd.Base)
	}
	t.Logf("next backup %s: %s (%s)", next.ID, next.EtcdKind, next.FullReason)
	if named := verifyNames(); named[next.ID] {
		t.Errorf("verify names the next backup %s damaged from birth (%v)", next.ID, slices.Sorted(func(yield func(string) bool) {
			for k := range named {
				if !yield(k) {
					return
				}
			}
		}))
	}
}

package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/backup"
	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/internal/testetcd"
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
	root := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, root)
	cli := srv.ClientT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	storeDir := filepath.Join(t.TempDir(), "store")
	kk := func(args ...string) (string, error) {
		t.Helper()
		return runCLI(t, append([]string{"--root", root.Dir, "--store", storeDir, "--allow-same-filesystem", "--log-level", "error"}, args...)...)
	}
	type result struct {
		ID         string         `json:"id"`
		EtcdKind   string         `json:"etcdKind"`
		FullReason string         `json:"fullReason"`
		Etcd       *etcdsnap.Info `json:"etcd"`
	}
	backupJSON := func() result {
		t.Helper()
		out, err := kk("backup", "-o", "json")
		var r result
		if jerr := json.Unmarshal([]byte(out), &r); jerr != nil {
			t.Fatalf("backup: %v %v\n%s", err, jerr, out)
		}
		return r
	}
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
	if full.EtcdKind != backup.EtcdKindFull {
		t.Fatalf("first backup: kind %q, want full", full.EtcdKind)
	}
	basePacks, _ := filepath.Glob(filepath.Join(storeDir, "packs", "*.pack"))

	store, err := rsyncish.Open(storeDir, rsyncish.Options{AllowSameFilesystem: true})
	if err != nil {
		t.Fatal(err)
	}
	sink, err := backup.DeltaSink(store)
	if err != nil {
		t.Fatal(err)
	}
	streamCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- etcdsnap.NewDeltaStreamer(cli, full.Etcd.Revision, time.Now(), sink,
			etcdsnap.DeltaConfig{Flush: 20 * time.Millisecond, Heartbeat: 200 * time.Millisecond}).Run(streamCtx)
	}()
	var once sync.Once
	stopStream := func() { once.Do(func() { stop(); <-done }) }
	defer stopStream()
	j, err := store.Journal(backup.DeltaJournal)
	if err != nil {
		t.Fatal(err)
	}
	waitJournal := func(rev int64) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if segs, _ := j.List(); len(segs) > 0 && int64(segs[len(segs)-1].Last) >= rev {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the delta stream did not reach revision %d", rev)
			}
		}
	}
	put, err := cli.Put(ctx, "/dmg/journal", "y")
	if err != nil {
		t.Fatal(err)
	}
	waitJournal(put.Header.Revision)
	jv := backupJSON()
	if jv.EtcdKind != backup.EtcdKindJournal || jv.Etcd.Base != full.ID {
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
	if next.EtcdKind != backup.EtcdKindFull {
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

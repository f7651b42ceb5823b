package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubekeep/kubekeep/backup"
	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/internal/sandbox"
	"github.com/kubekeep/kubekeep/internal/testetcd"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// journalWorld is what the journal-version CLI tests share: a sandbox
// root with a real etcd, a store the CLI writes, and (startStream) the
// delta stream writing the store's journal as the agent runs it.
type journalWorld struct {
	t        *testing.T
	root     *sandbox.Root
	cli      *clientv3.Client
	ctx      context.Context
	storeDir string
	journal  *rsyncish.Journal
}

func newJournalWorld(t *testing.T, timeout time.Duration) *journalWorld {
	t.Helper()
	root := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, root)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return &journalWorld{t: t, root: root, cli: srv.ClientT(t), ctx: ctx, storeDir: filepath.Join(t.TempDir(), "store")}
}

// run is the CLI on the world's root and store.
func (w *journalWorld) run(args ...string) (string, error) {
	w.t.Helper()
	return runCLI(w.t, append([]string{"--root", w.root.Dir, "--store", w.storeDir, "--allow-same-filesystem", "--log-level", "error"}, args...)...)
}

// must is run, failing the test on a non-zero exit.
func (w *journalWorld) must(args ...string) string {
	w.t.Helper()
	out, err := w.run(args...)
	if err != nil {
		w.t.Fatalf("kubekeep %v: %v\n%s", args, err, out)
	}
	return out
}

// backupResult is the part of `backup -o json` the tests read.
type backupResult struct {
	ID         string         `json:"id"`
	EtcdKind   string         `json:"etcdKind"`
	FullReason string         `json:"fullReason"`
	Etcd       *snapread.Info `json:"etcd"`
}

// backup is `backup -o json ARGS`, which must exit 0.
func (w *journalWorld) backup(args ...string) backupResult {
	w.t.Helper()
	var r backupResult
	if err := json.Unmarshal([]byte(w.must(append([]string{"backup", "-o", "json"}, args...)...)), &r); err != nil {
		w.t.Fatal(err)
	}
	return r
}

// backupAnyExit is `backup -o json`, whatever its exit status (a version
// whose etcd part failed exits 3 and still prints its result).
func (w *journalWorld) backupAnyExit() backupResult {
	w.t.Helper()
	out, err := w.run("backup", "-o", "json")
	var r backupResult
	if jerr := json.Unmarshal([]byte(out), &r); jerr != nil {
		w.t.Fatalf("backup: %v %v\n%s", err, jerr, out)
	}
	return r
}

// startStream runs the delta stream from revision from into the store's
// journal, as the agent does; the returned stop (also run at cleanup)
// ends it and waits for it.
func (w *journalWorld) startStream(from int64) (stop func()) {
	w.t.Helper()
	store, err := rsyncish.Open(w.storeDir, rsyncish.Options{AllowSameFilesystem: true})
	if err != nil {
		w.t.Fatal(err)
	}
	sink, err := backup.DeltaSink(store)
	if err != nil {
		w.t.Fatal(err)
	}
	if w.journal, err = store.Journal(versionread.DeltaJournal); err != nil {
		w.t.Fatal(err)
	}
	streamCtx, cancel := context.WithCancel(w.ctx)
	done := make(chan error, 1)
	go func() {
		done <- etcdsnap.NewDeltaStreamer(w.cli, from, time.Now(), sink,
			etcdsnap.DeltaConfig{Flush: 20 * time.Millisecond, Heartbeat: 200 * time.Millisecond}).Run(streamCtx)
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	w.t.Cleanup(stop)
	return stop
}

// waitJournal waits until the journal's newest segment reaches rev.
func (w *journalWorld) waitJournal(rev int64) {
	w.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if segs, _ := w.journal.List(); len(segs) > 0 && int64(segs[len(segs)-1].Last) >= rev {
			return
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("the delta stream did not reach revision %d", rev)
		}
	}
}

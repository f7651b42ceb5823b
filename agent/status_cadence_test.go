package agent

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/internal/testetcd"
)

// The status file follows a change of state at once, but the delta
// stream's durable revision alone only within StatusDeltaEvery: on a live
// cluster it moves every etcd.deltaFlush, and rewriting (and fsyncing) the
// file each time was ~13% of an idle agent's CPU (issue 14). Before, the
// file was rewritten within 2 s of every durable segment.
func TestStatusFileFollowsDeltaRevisionLazily(t *testing.T) {
	root := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, root)
	if _, err := srv.LoadCluster(context.Background()); err != nil {
		t.Fatal(err)
	}
	dir := storeDir(t)
	cfg := testSettings(root, dir)
	cfg.Schedules.Backup = time.Hour
	const deltaEvery = 10 * time.Second
	a, buf := newAgent(t, cfg, func(c *Config) { c.StatusDeltaEvery = deltaEvery })
	start(t, a, buf)
	waitFor(t, 15*time.Second, "the startup backup", func() bool { return jobState(a, JobBackup).LastSuccess != nil })
	file := func() *FileState {
		t.Helper()
		st, err := ReadStatusFile(dir)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	c := srv.ClientT(t)
	// The stream's first durable segment is news: written promptly.
	rev1 := streamLive(t, a, c, "/registry/configmaps/default/first")
	waitFor(t, 5*time.Second, "the status file to show the delta stream working", func() bool {
		js := file().Jobs[JobEtcdDeltas]
		return js != nil && js.LastSuccess != nil && file().Etcd.DeltaRevision >= rev1
	})
	// Only the durable revision moves: the file keeps the older one for
	// a while...
	rev2 := streamLive(t, a, c, "/registry/configmaps/default/second")
	moved := time.Now()
	for time.Since(moved) < 3*time.Second {
		if got := file().Etcd.DeltaRevision; got >= rev2 {
			t.Fatalf("status file shows delta revision %d (>= %d) %s after it became durable; want it to wait up to StatusDeltaEvery (%s)",
				got, rev2, time.Since(moved).Round(time.Millisecond), deltaEvery)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// ...and has it within StatusDeltaEvery.
	waitFor(t, deltaEvery+5*time.Second, "the status file to catch up with the delta revision", func() bool {
		return file().Etcd.DeltaRevision >= rev2
	})
	// Any other change is written promptly, with the newest revision.
	rev3 := streamLive(t, a, c, "/registry/configmaps/default/third")
	a.etcdUnreachable(errors.New("test: etcd unreachable"))
	changed := time.Now()
	waitFor(t, 5*time.Second, "the status file to show etcd unreachable", func() bool {
		e := file().Etcd
		return !e.APIUp && e.Error == "test: etcd unreachable"
	})
	if d := time.Since(changed); d > statusMinGap+2*time.Second {
		t.Errorf("a change of state took %s to reach the status file", d)
	}
	if got := file().Etcd.DeltaRevision; got < rev3 {
		t.Errorf("status file written for a change of state shows delta revision %d, want the newest, %d", got, rev3)
	}
}

// A status write between the second disk going and the probe noticing
// (the failed delta write that is often the first sign makes a change of
// state, written at once) must not land on the bare mountpoint. Before,
// writeStatus trusted the last probe: TestStoreGoneAndBack failed once
// this way.
func TestStatusNeverWrittenToABareMountpoint(t *testing.T) {
	root := testetcd.SandboxT(t)
	testetcd.StartT(t, root)
	dir := storeDir(t)
	cfg := testSettings(root, dir)
	cfg.Schedules.Backup = time.Hour
	cfg.Etcd.Deltas = false // nothing else notices the disk going
	a, buf := newAgent(t, cfg, func(c *Config) { c.StoreProbe = time.Hour })
	start(t, a, buf)
	waitFor(t, 15*time.Second, "the startup backup", func() bool { return jobState(a, JobBackup).LastSuccess != nil })
	if err := os.Rename(dir, dir+".unmounted"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil { // the bare mountpoint left behind
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.RemoveAll(dir)
		os.Rename(dir+".unmounted", dir) // for the agent's shutdown
	})
	a.writeStatus()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("the status write went to the bare mountpoint: %v", ents)
	}
}

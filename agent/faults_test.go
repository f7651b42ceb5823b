package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/internal/testetcd"
	"github.com/kubekeep/kubekeep/restore"
)

// shiftableClock lets a test move the agent's clock forward.
type shiftableClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *shiftableClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *shiftableClock) shift(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// etcdKeys is every key and value etcd holds at rev.
func etcdKeys(t *testing.T, c *clientv3.Client, rev int64) map[string]string {
	t.Helper()
	resp, err := c.Get(context.Background(), "", clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = string(kv.Value)
	}
	return out
}

// dbKeys is every key and value of a restored data dir.
func dbKeys(t *testing.T, dataDir string) map[string]string {
	t.Helper()
	kvs, err := snapread.ReadKeys(etcdsnap.DBPath(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range kvs {
		out[kv.Key] = string(kv.Value)
	}
	return out
}

func sameKeys(t *testing.T, what string, want, got map[string]string) {
	t.Helper()
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s: key %s = %q (present %v), want %q", what, k, g, ok, v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: unexpected key %s", what, k)
		}
	}
}

// Issue 13 item 14: etcd changes, then stays quiet with the delta stream
// live. A restore to a moment a second ago, well after the last change,
// was refused ("deltas end at <the last change>; ... is not covered"); the
// stream's progress marks now cover it, and the result is etcd's state.
// The quiet stretch leaves one mark file, not one per heartbeat (there was
// one every heartbeat, kept until prune), and that mark covers from the
// change on.
func TestRestoreAtQuietMoment(t *testing.T) {
	root := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, root)
	ctx := context.Background()
	if _, err := srv.LoadCluster(ctx); err != nil {
		t.Fatal(err)
	}
	dir := storeDir(t)
	cfg := testSettings(root, dir)
	cfg.Schedules.Backup = time.Hour
	a, buf := newAgent(t, cfg, nil)
	start(t, a, buf)
	waitFor(t, 15*time.Second, "the startup backup", func() bool { return jobState(a, JobBackup).LastSuccess != nil })

	c := srv.ClientT(t)
	put, err := c.Put(ctx, "/registry/configmaps/default/quiet", "before the quiet")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the put to be durable", func() bool { return etcdState(a).DeltaRevision >= put.Header.Revision })
	want := etcdKeys(t, c, put.Header.Revision)
	time.Sleep(3 * time.Second)
	at := time.Now().Add(-time.Second)

	res, err := restore.RestoreEtcd(ctx, restore.EtcdOptions{Store: openStore(t, dir), At: at, To: t.TempDir() + "/etcd"})
	if err != nil {
		t.Fatalf("restore etcd --at %s (3 s after the last change, stream live): %v", at.Format(time.RFC3339Nano), err)
	}
	if res.ReplayedToRevision != put.Header.Revision {
		t.Errorf("restored to revision %d, want %d", res.ReplayedToRevision, put.Header.Revision)
	}
	sameKeys(t, "restore at a quiet moment", want, dbKeys(t, res.DataDir))

	j, err := openStore(t, dir).Journal(versionread.DeltaJournal)
	if err != nil {
		t.Fatal(err)
	}
	segs, err := j.List()
	if err != nil {
		t.Fatal(err)
	}
	var change *snapread.Segment
	var marks []*snapread.Segment
	for _, si := range segs {
		if int64(si.Last) != put.Header.Revision {
			continue
		}
		data, err := j.Read(si)
		if err != nil {
			t.Fatal(err)
		}
		seg, err := snapread.DecodeSegment(data)
		if err != nil {
			t.Fatal(err)
		}
		if len(seg.Events) > 0 {
			change = seg
		} else {
			marks = append(marks, seg)
		}
	}
	// One mark replaces the next, except that the durable one stays
	// beside the newest pending one (backup.DeltaMarkSync): two at most.
	if change == nil || len(marks) == 0 || len(marks) > 2 {
		t.Fatalf("journal after 3 s of quiet (heartbeat %s): change segment %v, %d progress marks at revision %d; want the change and one or two marks (the durable one, the newest)",
			cfg.Etcd.DeltaFlush, change != nil, len(marks), put.Header.Revision)
	}
	if m := marks[len(marks)-1]; !m.FromTime.Equal(change.ToTime) || !m.ToTime.After(at) {
		t.Errorf("the newest progress mark covers %s to %s; want from the change's %s to after %s",
			m.FromTime.Format(time.RFC3339Nano), m.ToTime.Format(time.RFC3339Nano),
			change.ToTime.Format(time.RFC3339Nano), at.Format(time.RFC3339Nano))
	}
}

// Issue 13 items 15 and 16. A store whose filesystem has less than minFree
// free: every backup and delta write fails. /healthz said 200 with
// kubekeep_store_writable 1; it is now 503 saying the store is full, and
// kubekeep_store_full is 1. The delta revision metric reported 0 after the
// restart (the durable revision was in the journal all along); it now
// reports the journal's.
func TestStoreFullIsUnhealthyAndDeltaRevisionKept(t *testing.T) {
	root := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, root)
	ctx := context.Background()
	if _, err := srv.LoadCluster(ctx); err != nil { // an empty etcd is at revision 0: no stream
		t.Fatal(err)
	}
	dir := storeDir(t)
	cfg := testSettings(root, dir)
	cfg.Schedules.Backup = time.Hour
	a, buf := newAgent(t, cfg, nil)
	r := start(t, a, buf)
	waitFor(t, 15*time.Second, "the startup backup", func() bool { return jobState(a, JobBackup).LastSuccess != nil })
	put, err := srv.ClientT(t).Put(ctx, "/registry/configmaps/default/durable", "v")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the put to be durable", func() bool { return etcdState(a).DeltaRevision >= put.Header.Revision })
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	durable := journalTail(t, dir)
	if durable < put.Header.Revision {
		t.Fatalf("journal ends at %d, before the put at %d", durable, put.Header.Revision)
	}

	cfg.Store.MinFree = 1 << 60 // more than any disk has: the store is full
	b, buf := newAgent(t, cfg, nil)
	start(t, b, buf)
	waitFor(t, 15*time.Second, "the startup backup to fail", func() bool { return jobState(b, JobBackup).LastFailure != nil })
	code, body := scrape(t, b, "/healthz")
	if code != 503 || !strings.Contains(body, "is full") || !strings.Contains(body, "minFree") {
		t.Errorf("/healthz with the store full = %d %s", code, body)
	}
	_, metrics := scrape(t, b, "/metrics")
	if v := metricValue(metrics, "kubekeep_store_full"); v != "1" {
		t.Errorf("kubekeep_store_full = %q with the store full", v)
	}
	want := strconv.FormatInt(durable, 10)
	if v := metricValue(metrics, "kubekeep_etcd_delta_revision"); v != want {
		t.Errorf("kubekeep_etcd_delta_revision = %q after a restart with the store full, want the journal's %s", v, want)
	}
	if e := etcdState(b); e.DeltaRevision != durable {
		t.Errorf("status deltaRevision = %d, want %d", e.DeltaRevision, durable)
	}
}

// streamLive makes a change and waits until the agent's delta stream has
// it durable.
func streamLive(t *testing.T, a *Agent, c *clientv3.Client, key string) int64 {
	t.Helper()
	put, err := c.Put(context.Background(), key, "live")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "the delta stream to have "+key, func() bool { return etcdState(a).DeltaRevision >= put.Header.Revision })
	return put.Header.Revision
}

// journalTail is the newest revision the store's delta journal holds.
func journalTail(t *testing.T, dir string) int64 {
	t.Helper()
	j, err := openStore(t, dir).Journal(versionread.DeltaJournal)
	if err != nil {
		t.Fatal(err)
	}
	segs, err := j.List()
	if err != nil {
		t.Fatal(err)
	}
	var tail int64
	for _, s := range segs {
		tail = max(tail, int64(s.Last))
	}
	return tail
}

// Issue 13 item 15: etcd stopped for 3.5 minutes (the agent's clock moves
// on; raw copies keep the versions good) left /healthz at 200 with
// kubekeep_etcd_api_up 0 and the delta stream failing. Now it is 503,
// naming the etcd outage and the delta stream, and 200 again once etcd is
// back.
func TestEtcdDownIsUnhealthy(t *testing.T) {
	root := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, root)
	ctx := context.Background()
	if _, err := srv.LoadCluster(ctx); err != nil { // an empty etcd is at revision 0: no stream
		t.Fatal(err)
	}
	dir := storeDir(t)
	cfg := testSettings(root, dir)
	cfg.Schedules.Backup = time.Hour
	a, buf := newAgent(t, cfg, nil)
	clock := &shiftableClock{}
	a.now = clock.now
	start(t, a, buf)
	waitFor(t, 15*time.Second, "the startup backup", func() bool { return jobState(a, JobBackup).LastSuccess != nil })
	streamLive(t, a, srv.ClientT(t), "/registry/configmaps/default/live")
	if code, body := scrape(t, a, "/healthz"); code != 200 {
		t.Fatalf("/healthz before the outage = %d %s", code, body)
	}

	srv.Stop()
	waitFor(t, 15*time.Second, "the agent to notice the outage", func() bool { return !etcdState(a).APIUp })
	clock.shift(3*time.Minute + 30*time.Second)
	code, body := scrape(t, a, "/healthz")
	if code != 503 || !strings.Contains(body, "etcd API unreachable for 3m") || !strings.Contains(body, "delta stream is down") {
		t.Errorf("/healthz 3.5 minutes into an etcd outage = %d %s", code, body)
	}

	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "/healthz to be 200 with etcd back", func() bool {
		code, _ := scrape(t, a, "/healthz")
		return code == 200
	})
}

// Issue 13 item 15, the drill: it cannot run for lack of space (the
// restore package's ErrDrillSpace): no version gets verified, and /healthz
// says so.
func TestHealthDrillWithoutSpace(t *testing.T) {
	a, _ := newAgent(t, testSettings(testetcd.SandboxT(t), storeDir(t)), nil)
	a.storeOK.Store(true)
	now := time.Now().UTC()
	ok, fail := now.Add(-time.Minute), now.Add(-10*time.Second)
	a.state = FileState{Started: now.Add(-time.Hour), Jobs: map[string]*JobState{
		JobBackup: {LastSuccess: &ok},
		JobDrill: {LastSuccess: &ok, LastFailure: &fail, Failures: 1,
			LastError: "restore drill of v1: drill of version v1: not enough free space on the store's filesystem for the restore drill: the drill needs 160.0 MiB free"},
	}}
	a.newest = &VersionRef{ID: "v1", Status: "ok", Good: true}
	healthy, problems := a.health()
	if healthy || !strings.Contains(strings.Join(problems, "\n"), "restore drill cannot run for lack of space") {
		t.Errorf("health with a drill failing for space = %v %q", healthy, problems)
	}
	// A drill failing for another reason is the drill's own alert
	// (kubekeep_newest_verified_backup_age_seconds), not a full store.
	a.state.Jobs[JobDrill].LastError = "restore drill of v1: served 3 keys, want 4"
	if healthy, problems := a.health(); !healthy {
		t.Errorf("health with a drill failing on its check = %v %q", healthy, problems)
	}
}

// flappingEtcd is an etcd a test stops and restarts: embedded (3.6) or a
// real etcd 3.5 process.
type flappingEtcd interface {
	Stop()
	Restart(context.Context) error
	ClientT(testing.TB) *clientv3.Client
	LoadCluster(context.Context) ([]string, error)
}

// Issue 13 item 18: etcd stopped and restarted every few seconds. The
// first loss went unnoticed for 23.6 s, then the stream stayed down for a
// minute through four 5-second up-windows; the gap it left showed only in
// the log. Now every outage is noticed within seconds, the stream is back
// within each up-window (a change made there is durable before etcd goes
// again) and, since it resumes from what is durable, it leaves no gap: the
// journal holds every change, status and metrics count no gap. Against
// the embedded etcd 3.6 and a separate etcd 3.5 process (what kubeadm up
// to 1.33 runs).
func TestDeltaStreamThroughFlappingEtcd(t *testing.T) {
	t.Run("embedded 3.6", func(t *testing.T) {
		root := testetcd.SandboxT(t)
		flapping(t, testetcd.StartT(t, root), testSettings(root, storeDir(t)), 3)
	})
	t.Run("etcd 3.5 process", func(t *testing.T) {
		root := testetcd.SandboxT(t)
		flapping(t, testetcd.StartEtcd35T(t, root), testSettings(root, storeDir(t)), 2)
	})
}

// flapping stops and restarts srv cycles times (a stop takes etcd about 7
// s: it waits for the agent's watch connection before it gives up on it).
func flapping(t *testing.T, srv flappingEtcd, cfg config.Config, cycles int) {
	ctx := context.Background()
	if _, err := srv.LoadCluster(ctx); err != nil {
		t.Fatal(err)
	}
	dir := cfg.Store.Path
	cfg.Schedules.Backup = time.Hour
	a, buf := newAgent(t, cfg, nil)
	start(t, a, buf)
	waitFor(t, 15*time.Second, "the startup backup", func() bool { return jobState(a, JobBackup).LastSuccess != nil })
	streamLive(t, a, srv.ClientT(t), "/registry/configmaps/default/live")

	const down, up = 2 * time.Second, 5 * time.Second
	var puts []int64
	for i := range cycles {
		stopped := time.Now()
		srv.Stop()
		stopTook := time.Since(stopped)
		// Noticed within the outage (a few heartbeats), not 20 s later.
		waitFor(t, down+2*time.Second, fmt.Sprintf("outage %d to show (etcd_api_up 0)", i+1), func() bool {
			_, body := scrape(t, a, "/metrics")
			return metricValue(body, "kubekeep_etcd_api_up") == "0"
		})
		time.Sleep(time.Until(stopped.Add(down)))
		restartAt := time.Now()
		if err := srv.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		back := time.Now()
		c := srv.ClientT(t)
		put, err := c.Put(ctx, fmt.Sprintf("/registry/configmaps/default/flap-%d", i), "v")
		if err != nil {
			t.Fatal(err)
		}
		puts = append(puts, put.Header.Revision)
		// Durable within the up-window, with time to spare.
		waitFor(t, up-time.Second, fmt.Sprintf("the change of up-window %d to be durable", i+1), func() bool {
			return etcdState(a).DeltaRevision >= put.Header.Revision
		})
		t.Logf("cycle %d: etcd stopped in %s, restarted in %s; change durable %s after etcd came back", i+1,
			stopTook.Round(time.Millisecond), back.Sub(restartAt).Round(time.Millisecond), time.Since(back).Round(time.Millisecond))
		time.Sleep(time.Until(back.Add(up)))
	}
	for i, rev := range puts {
		if !journalHasKey(t, dir, fmt.Sprintf("/registry/configmaps/default/flap-%d", i), rev) {
			t.Errorf("the journal lacks the change of up-window %d (revision %d)", i+1, rev)
		}
	}
	_, body := scrape(t, a, "/metrics")
	if v := metricValue(body, "kubekeep_etcd_delta_gaps_total"); v != "0" {
		t.Errorf("kubekeep_etcd_delta_gaps_total = %q; the stream resumes where it was durable", v)
	}
	if e := etcdState(a); e.LastDeltaGap != nil {
		t.Errorf("status shows a gap: %+v", e.LastDeltaGap)
	}
}

// Issue 13 item 18, the gap itself: a chain that cannot continue (here:
// the agent was not running while etcd changed and compacted past the
// journal's tail, so the next chain starts from a new snapshot) leaves
// revisions no point-in-time restore can reach. (Without the compaction
// the restarted agent resumes from the tail and there is no gap:
// TestRestartedAgentResumesTheJournal.) That showed only in the log; kubekeep_etcd_delta_gaps_total and
// the status file's lastDeltaGap (revisions and times) now say so, across
// agent restarts.
func TestDeltaGapShowsInStatusAndMetrics(t *testing.T) {
	root := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, root)
	ctx := context.Background()
	if _, err := srv.LoadCluster(ctx); err != nil { // an empty etcd is at revision 0: no stream
		t.Fatal(err)
	}
	dir := storeDir(t)
	cfg := testSettings(root, dir)
	cfg.Schedules.Backup = time.Hour
	a, buf := newAgent(t, cfg, nil)
	r := start(t, a, buf)
	waitFor(t, 15*time.Second, "the startup backup", func() bool { return jobState(a, JobBackup).LastSuccess != nil })
	c := srv.ClientT(t)
	first, err := c.Put(ctx, "/registry/configmaps/default/gap-0", "v")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the put to be durable", func() bool { return etcdState(a).DeltaRevision >= first.Header.Revision })
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	tail := journalTail(t, dir)
	stoppedAt := time.Now()
	var last int64
	for i := 1; i <= 5; i++ {
		resp, err := c.Put(ctx, fmt.Sprintf("/registry/configmaps/default/gap-%d", i), "v")
		if err != nil {
			t.Fatal(err)
		}
		last = resp.Header.Revision
	}
	// As kube-apiserver does every 5 minutes: the changes the agent
	// missed are gone from etcd's history.
	if _, err := c.Compact(ctx, last); err != nil {
		t.Fatal(err)
	}

	b, buf := newAgent(t, cfg, nil)
	r = start(t, b, buf)
	waitFor(t, 15*time.Second, "the new chain", func() bool { return etcdState(b).LastDeltaGap != nil })
	_, body := scrape(t, b, "/metrics")
	if v := metricValue(body, "kubekeep_etcd_delta_gaps_total"); v != "1" {
		t.Errorf("kubekeep_etcd_delta_gaps_total = %q, want 1", v)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	st, err := ReadStatus(openStore(t, dir), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(st.Etcd)
	g := st.Etcd.LastDeltaGap
	if g == nil || g.FromRevision != tail+1 || g.ToRevision != last || g.FromTime.After(stoppedAt) || !g.ToTime.After(stoppedAt) {
		t.Fatalf("status lastDeltaGap = %s; want revisions %d to %d, from before the agent stopped (%s) to after", raw, tail+1, last, stoppedAt.UTC().Format(time.RFC3339Nano))
	}
	if st.Etcd.DeltaGaps != 1 {
		t.Errorf("status deltaGaps = %d, want 1", st.Etcd.DeltaGaps)
	}
}

// An etcd rebuilt from scratch (kubeadm reset and init) starts again at
// revision 1, below what the store's delta journal holds. A new chain
// would put the new cluster's revisions beside the old one's, and a
// point-in-time restore would mix them; the stream stays off instead and
// says why, while versions of the new cluster are still taken.
func TestRebuiltEtcdIsNotMixedIntoTheJournal(t *testing.T) {
	root := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, root)
	ctx := context.Background()
	if _, err := srv.LoadCluster(ctx); err != nil {
		t.Fatal(err)
	}
	c := srv.ClientT(t)
	for i := range 30 {
		if _, err := c.Put(ctx, fmt.Sprintf("/registry/configmaps/default/old-%d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	dir := storeDir(t)
	cfg := testSettings(root, dir)
	cfg.Schedules.Backup = time.Hour
	a, buf := newAgent(t, cfg, nil)
	r := start(t, a, buf)
	waitFor(t, 15*time.Second, "the startup backup", func() bool { return jobState(a, JobBackup).LastSuccess != nil })
	streamLive(t, a, c, "/registry/configmaps/default/old-live")
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	oldTail := journalTail(t, dir)
	j, err := openStore(t, dir).Journal(versionread.DeltaJournal)
	if err != nil {
		t.Fatal(err)
	}
	before, err := j.List()
	if err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	if err := os.RemoveAll(srv.DataDir()); err != nil {
		t.Fatal(err)
	}
	fresh := testetcd.StartT(t, root)
	if _, err := fresh.LoadCluster(ctx); err != nil {
		t.Fatal(err)
	}
	b, buf := newAgent(t, cfg, nil)
	start(t, b, buf)
	waitFor(t, 15*time.Second, "the delta stream to refuse the rebuilt etcd", func() bool {
		return strings.Contains(jobState(b, JobEtcdDeltas).LastError, "not the cluster this store follows")
	})
	if _, err := fresh.ClientT(t).Put(ctx, "/registry/configmaps/default/new", "v"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	after, err := j.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) || journalTail(t, dir) != oldTail {
		t.Errorf("the journal changed with the rebuilt etcd: %d segments to %d, tail %d to %d", len(before), len(after), oldTail, journalTail(t, dir))
	}
	if v := versions(t, dir); len(v) != 2 || versionStatus(v[1]) != string(versionread.StatusOK) {
		t.Errorf("versions of the rebuilt cluster: %+v", v)
	}
}

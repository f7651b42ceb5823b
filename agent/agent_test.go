package agent

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/internal/testetcd"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// End to end against a real TLS etcd on a kubeadm-like sandbox and a real
// store: versions appear on the schedule, etcd changes reach the journal
// as delta segments, a stopped etcd shows in status and metrics while
// versions continue (as raw copies: a stopped etcd leaves its data dir
// free), and a restarted etcd recovers both. A second agent on the same
// store is refused.
func TestAgentScheduleDeltasAndEtcdOutage(t *testing.T) {
	root := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, root)
	ctx := context.Background()
	if _, err := srv.LoadCluster(ctx); err != nil {
		t.Fatal(err)
	}
	dir := storeDir(t)
	a, buf := newAgent(t, testSettings(root, dir), nil)
	r := start(t, a, buf)

	// Versions on schedule: the startup backup, then one every 2 s.
	waitFor(t, time.Minute, "3 versions", func() bool { return len(versions(t, dir)) >= 3 })
	vs := versions(t, dir)
	for i := 1; i < len(vs); i++ {
		if gap := vs[i].Time.Sub(vs[i-1].Time); gap < time.Second || gap > 15*time.Second {
			t.Errorf("versions %s and %s are %s apart; the schedule is every 2s", vs[i-1].ID, vs[i].ID, gap)
		}
	}
	if st := versionStatus(vs[len(vs)-1]); st != string(versionread.StatusOK) {
		t.Fatalf("newest version status %q, want ok", st)
	}

	// A second agent on the same store is refused.
	b, _ := newAgent(t, testSettings(root, dir), func(c *Config) { c.Settings.Metrics.Listen = "" })
	if err := b.Run(ctx); !errors.Is(err, ErrAgentRunning) {
		t.Fatalf("second agent on the store: got %v, want ErrAgentRunning", err)
	}

	// A change in etcd becomes durable in the delta journal.
	c := srv.ClientT(t)
	put, err := c.Put(ctx, "/registry/configmaps/default/agent-test", "v1")
	if err != nil {
		t.Fatal(err)
	}
	rev := put.Header.Revision
	waitFor(t, 10*time.Second, "the put to be in the delta journal", func() bool {
		return etcdState(a).DeltaRevision >= rev
	})
	if !journalHasKey(t, dir, "/registry/configmaps/default/agent-test", rev) {
		t.Fatal("delta journal has no segment with the put")
	}

	// Metrics over HTTP on loopback.
	code, body := scrape(t, a, "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, series := range []string{
		`kubekeep_job_last_success_timestamp_seconds{job="backup"}`,
		`kubekeep_job_runs_total{job="backup"}`,
		`kubekeep_bytes_written_total{job="backup"}`,
		`kubekeep_bytes_written_total{job="etcd-deltas"}`,
		"kubekeep_store_used_bytes", "kubekeep_store_free_bytes", "kubekeep_store_versions",
		"kubekeep_etcd_revision_backed_up", "kubekeep_etcd_delta_lag_seconds",
	} {
		if metricValue(body, series) == "" {
			t.Errorf("metric %s missing", series)
		}
	}
	if v := metricValue(body, "kubekeep_newest_verified_backup_age_seconds"); v != "+Inf" {
		t.Errorf("newest verified age with no drill yet = %q, want +Inf", v)
	}
	if v := metricValue(body, "kubekeep_etcd_api_up"); v != "1" {
		t.Errorf("etcd_api_up = %q while etcd runs", v)
	}
	if code, _ := scrape(t, a, "/healthz"); code != 200 {
		t.Errorf("/healthz = %d while healthy", code)
	}

	// etcd stops: deltas fail, versions keep coming from the free data dir.
	srv.Stop()
	stopped := time.Now()
	n := len(versions(t, dir))
	// Generous waits: under a loaded CI machine one backup can take
	// several seconds (a 20 s wait timed out once).
	waitFor(t, time.Minute, "the etcd outage in the agent's state", func() bool {
		e, js := etcdState(a), jobState(a, JobEtcdDeltas)
		return !e.APIUp && e.Source == snapread.SourceRaw && js.LastFailure != nil && js.LastFailure.After(stopped)
	})
	waitFor(t, time.Minute, "versions to continue during the outage", func() bool { return len(versions(t, dir)) >= n+2 })
	st, err := ReadStatus(openStore(t, dir), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if st.Jobs[JobEtcdDeltas].LastError == "" || st.Jobs[JobEtcdSnapshot].LastError == "" {
		t.Errorf("status does not show the etcd outage: deltas %+v, snapshot %+v", st.Jobs[JobEtcdDeltas], st.Jobs[JobEtcdSnapshot])
	}
	if st.Etcd == nil || st.Etcd.Source != snapread.SourceRaw || st.Etcd.APIUp {
		t.Errorf("status etcd = %+v, want source raw and api down", st.Etcd)
	}
	_, body = scrape(t, a, "/metrics")
	if v := metricValue(body, "kubekeep_etcd_api_up"); v != "0" {
		t.Errorf("etcd_api_up = %q while etcd is stopped", v)
	}
	if v := metricValue(body, `kubekeep_job_failures_total{job="etcd-deltas"}`); v == "" || v == "0" {
		t.Errorf("etcd-deltas failures = %q during the outage", v)
	}

	// etcd comes back: API snapshots and deltas recover.
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	// Versions through the API again: a snapshot, or a journal version on
	// the raw copy taken during the outage (the stream resumed without a gap).
	waitFor(t, 30*time.Second, "API versions after etcd restarted", func() bool {
		e := etcdState(a)
		return e.APIUp && (e.Source == snapread.SourceAPI || e.Source == snapread.SourceJournal)
	})
	c = srv.ClientT(t)
	put, err = c.Put(ctx, "/registry/configmaps/default/after-restart", "v2")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "the post-restart put in the journal", func() bool {
		return journalHasKey(t, dir, "/registry/configmaps/default/after-restart", put.Header.Revision)
	})

	if err := r.stop(t); err != nil {
		t.Fatalf("Run returned %v after cancel", err)
	}
	st, err = ReadStatus(openStore(t, dir), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(st)
	for _, key := range []string{`"jobs"`, `"newestVersion"`, `"newestVerified"`, `"etcdDeltaLagSeconds"`, `"store"`, `"lastSuccess"`, `"nextRun"`} {
		if !strings.Contains(string(raw), key) {
			t.Errorf("status JSON lacks %s: %s", key, raw)
		}
	}
	if st.Agent.Running || st.Jobs[JobBackup].NextRun != nil {
		t.Errorf("stopped agent still shown running / with a next run: %+v", st.Agent)
	}
	fi, err := os.Stat(filepath.Join(dir, StatusFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("status file mode: %v %v", fi, err)
	}
}

// journalHasKey reports whether a delta segment in the store holds a
// change of key at revision rev.
func journalHasKey(t *testing.T, dir, key string, rev int64) bool {
	t.Helper()
	j, err := openStore(t, dir).Journal(versionread.DeltaJournal)
	if err != nil {
		t.Fatal(err)
	}
	segs, err := j.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, si := range segs {
		data, err := j.Read(si)
		if err != nil {
			t.Fatalf("segment %s: %v", si.File, err)
		}
		seg, err := snapread.DecodeSegment(data)
		if err != nil {
			t.Fatalf("segment %s: %v", si.File, err)
		}
		for _, e := range seg.Events {
			if e.Key == key && e.ModRevision == rev {
				return true
			}
		}
	}
	return false
}

// A renewed certificate under pki/ yields a new version within the
// debounce, long before the (hour-long) schedule would.
func TestPKIChangeTriggersBackup(t *testing.T) {
	root := testetcd.SandboxT(t)
	testetcd.StartT(t, root)
	dir := storeDir(t)
	cfg := testSettings(root, dir)
	cfg.Schedules.Backup = time.Hour
	cfg.Schedules.Debounce = 500 * time.Millisecond
	a, buf := newAgent(t, cfg, nil)
	start(t, a, buf)
	waitFor(t, 15*time.Second, "the startup backup", func() bool { return len(versions(t, dir)) == 1 })
	waitFor(t, 5*time.Second, "the watches", a.watching.Load)
	time.Sleep(time.Second) // the startup backup's own writes must not count

	cert := "/etc/kubernetes/pki/apiserver-kubelet-client.crt"
	if err := root.RenewCert(cert); err != nil {
		t.Fatal(err)
	}
	renewed := time.Now()
	want, err := os.ReadFile(root.Path(cert))
	if err != nil {
		t.Fatal(err)
	}
	// Within a minute, not the hour the schedule says: the change
	// triggered it (how fast is a benchmark's business, not a test's: a
	// loaded CI machine took 5.05 s once).
	waitFor(t, time.Minute, "a version after the renewal", func() bool { return len(versions(t, dir)) == 2 })
	if took := time.Since(renewed); took > 30*time.Second {
		t.Errorf("change-triggered version took %s", took)
	}
	vs := versions(t, dir)
	rc, _, err := openStore(t, dir).OpenFile(vs[1].ID, cert)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := make([]byte, len(want)+1)
	n, _ := rc.Read(got)
	if string(got[:n]) != string(want) {
		t.Error("the new version does not hold the renewed certificate")
	}
	// One burst, one backup: no extra version appears afterwards.
	time.Sleep(2 * time.Second)
	if n := len(versions(t, dir)); n != 2 {
		t.Errorf("%d versions after one renewal, want 2", n)
	}
}

// Stopping the agent mid-backup: with time to finish, the version commits;
// without, it is abandoned. Either way Run returns nil and the store
// verifies clean.
func TestShutdownMidBackup(t *testing.T) {
	root := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, root)
	ctx := context.Background()
	c := srv.ClientT(t)
	val := strings.Repeat("x", 100<<10)
	for i := range 300 { // ~30 MB of etcd, so a backup takes a while
		if _, err := c.Put(ctx, "/registry/secrets/default/s"+string(rune('a'+i%26))+time.Now().Format("150405.000000000"), val); err != nil {
			t.Fatal(err)
		}
	}
	dir := storeDir(t)
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		commit  bool
	}{{"finish", 60 * time.Second, true}, {"abandon", time.Millisecond, false}} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(versions(t, dir))
			cfg := testSettings(root, dir)
			cfg.Schedules.Backup = time.Hour
			a, buf := newAgent(t, cfg, func(c *Config) { c.ShutdownTimeout = tc.timeout })
			stopNow := make(chan struct{})
			var once bool
			a.beforeBackup = func() {
				if !once {
					once = true
					close(stopNow)
				}
			}
			r := start(t, a, buf)
			<-stopNow
			time.Sleep(30 * time.Millisecond) // into the snapshot stream
			t0 := time.Now()
			if err := r.stop(t); err != nil {
				t.Fatalf("Run returned %v", err)
			}
			if d := time.Since(t0); !tc.commit && d > 10*time.Second {
				t.Errorf("abandoning took %s", d)
			}
			after := len(versions(t, dir))
			if tc.commit && after != before+1 {
				t.Errorf("versions %d -> %d: the in-flight backup should have committed", before, after)
			}
			if !tc.commit && after != before {
				t.Logf("the backup finished before it could be abandoned (%d -> %d)", before, after)
			}
			s := openStore(t, dir)
			unlock, err := s.Lock(ctx) // also removes leftovers of the aborted run
			if err != nil {
				t.Fatal(err)
			}
			defer unlock()
			rep, err := s.Verify(ctx, true)
			if err != nil {
				t.Fatal(err)
			}
			if !rep.Clean() {
				t.Fatalf("store not clean after shutdown: %v", rep.Problems)
			}
			if running, _ := agentRunning(dir); running {
				t.Error("agent lock still held after Run returned")
			}
		})
	}
}

// A host that slept through three runs of an hourly job runs it once when
// it wakes, not three times and not an hour later. The sleep is simulated
// by moving the agent's wall clock; gocron's timers stay on the real one,
// exactly as they do across a real suspend.
func TestMissedRunsRunOnceAfterSleep(t *testing.T) {
	root := testetcd.SandboxT(t) // etcd not started: backups store files and record the etcd failure
	dir := storeDir(t)
	cfg := testSettings(root, dir)
	cfg.Schedules.Backup = time.Hour
	cfg.Schedules.Verify = time.Hour
	a, buf := newAgent(t, cfg, nil)
	var offset time.Duration
	var mu = make(chan struct{}, 1)
	mu <- struct{}{}
	a.now = func() time.Time {
		<-mu
		o := offset
		mu <- struct{}{}
		return time.Now().Add(o)
	}
	start(t, a, buf)
	waitFor(t, 15*time.Second, "the startup backup", func() bool { return jobState(a, JobBackup).LastSuccess != nil })
	time.Sleep(time.Second)
	if runs := counter(t, a, JobVerify); runs != "" {
		t.Fatalf("verify ran before it was due: %s", runs)
	}

	<-mu
	offset = 3*time.Hour + 10*time.Minute
	mu <- struct{}{}
	waitFor(t, 10*time.Second, "the catch-up runs", func() bool {
		return counter(t, a, JobVerify) == "1" && counter(t, a, JobBackup) == "2"
	})
	time.Sleep(2 * time.Second)
	if v, b := counter(t, a, JobVerify), counter(t, a, JobBackup); v != "1" || b != "2" {
		t.Errorf("after the sleep: verify ran %s times (want 1), backup %s (want 2: start + one catch-up)", v, b)
	}
}

func counter(t *testing.T, a *Agent, job string) string {
	_, body := scrape(t, a, "/metrics")
	return metricValue(body, `kubekeep_job_runs_total{job="`+job+`"}`)
}

// The second disk disappears: the agent stops writing and says so (log,
// metric, /healthz), keeps probing, and resumes with a backup when the
// disk is back.
func TestStoreGoneAndBack(t *testing.T) {
	root := testetcd.SandboxT(t)
	testetcd.StartT(t, root) // good versions: /healthz is 200 again once the disk is back
	dir := storeDir(t)
	cfg := testSettings(root, dir)
	cfg.Schedules.Backup = time.Hour
	a, buf := newAgent(t, cfg, nil)
	start(t, a, buf)
	waitFor(t, 15*time.Second, "the startup backup", func() bool { return jobState(a, JobBackup).LastSuccess != nil })

	away := dir + ".unmounted"
	if err := os.Rename(dir, away); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil { // the bare mountpoint left behind
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the agent to notice", func() bool {
		_, body := scrape(t, a, "/metrics")
		return metricValue(body, "kubekeep_store_writable") == "0"
	})
	if code, body := scrape(t, a, "/healthz"); code != 503 || !strings.Contains(body, "unavailable") {
		t.Errorf("/healthz with the disk gone = %d %s", code, body)
	}
	if !strings.Contains(buf.String(), "second disk missing or read-only") {
		t.Error("no alert in the log")
	}
	time.Sleep(time.Second)
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("the agent wrote to the bare mountpoint: %v", ents)
	}

	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(away, dir); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a backup after the disk came back", func() bool { return len(versions(t, dir)) == 2 })
	if code, _ := scrape(t, a, "/healthz"); code != 200 {
		t.Errorf("/healthz after recovery = %d", code)
	}
}

// A bad config is refused with a clear log line and the old one stays; a
// good edit of the config file is picked up without a signal.
func TestReload(t *testing.T) {
	root := testetcd.SandboxT(t)
	dir := storeDir(t)
	cfgFile := filepath.Join(t.TempDir(), "kubekeep.yaml")
	write := func(s string) {
		if err := os.WriteFile(cfgFile, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("schedules:\n  backup: 1h\n")
	load := func() (config.Config, error) {
		c, err := config.Load(cfgFile)
		if err != nil {
			return c, err
		}
		c.Root, c.Store.Path, c.Store.AllowSameFilesystem, c.Store.MinFree = root.Dir, dir, true, 0
		c.Metrics.Listen = "127.0.0.1:0"
		return c, c.Validate("test", nil)
	}
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	a, buf := newAgent(t, cfg, func(c *Config) { c.Reload, c.ConfigFile = load, cfgFile })
	start(t, a, buf)
	waitFor(t, 5*time.Second, "the watches", a.watching.Load)
	addr := a.MetricsAddr()

	write("schedules:\n  backup: 5x\n")
	waitFor(t, 5*time.Second, "the refusal", func() bool { return strings.Contains(buf.String(), "config reload refused") })
	if got := a.config().Schedules.Backup; got != time.Hour {
		t.Errorf("backup interval %s after a bad config, want the old 1h", got)
	}
	if err := a.Reload(); err == nil || !strings.Contains(err.Error(), "schedules.backup") {
		t.Errorf("Reload of a bad file: %v", err)
	}

	write("schedules:\n  backup: 7m\n  jitter: 0s\n")
	waitFor(t, 5*time.Second, "the new interval", func() bool { return a.config().Schedules.Backup == 7*time.Minute })
	if a.MetricsAddr() != addr {
		t.Error("metrics server moved although its address did not change")
	}
	waitFor(t, 5*time.Second, "the rescheduled backup", func() bool {
		j := a.job(JobBackup)
		a.jobsMu.Lock()
		defer a.jobsMu.Unlock()
		return j.interval == 7*time.Minute
	})
}

// A new install (no status file, nothing verified) drills and verifies
// shortly after its first backup, not one daily interval later.
func TestFirstDrillAndVerifySoonAfterStart(t *testing.T) {
	root := testetcd.SandboxT(t)
	testetcd.StartT(t, root)
	dir := storeDir(t)
	cfg := testSettings(root, dir)
	cfg.Schedules.Backup = time.Hour
	cfg.Schedules.Drill = 24 * time.Hour
	cfg.Schedules.Verify = 24 * time.Hour
	var drilled atomic.Value
	a, buf := newAgent(t, cfg, func(c *Config) {
		c.FirstCheckDelay = 2 * time.Second
		c.Drill = func(ctx context.Context, s *rsyncish.Store, version string) error {
			drilled.Store(version)
			return nil
		}
	})
	start(t, a, buf)
	waitFor(t, 15*time.Second, "the startup backup", func() bool { return len(versions(t, dir)) == 1 })
	waitFor(t, 15*time.Second, "the first drill", func() bool { v, _ := drilled.Load().(string); return v != "" })
	if v := drilled.Load().(string); v != versions(t, dir)[0].ID {
		t.Errorf("drilled %s, want the startup version %s", v, versions(t, dir)[0].ID)
	}
	waitFor(t, 15*time.Second, "the first verify", func() bool {
		a.stMu.Lock()
		defer a.stMu.Unlock()
		js := a.state.Jobs[JobVerify]
		return js != nil && js.LastSuccess != nil
	})
}

// A backup that costs more CPU than schedules.backupCPUBudget allows at its
// interval makes the agent skip scheduled backups until the average is
// back under the budget, and say so (log, metric, status); a file change
// still triggers one at once.
func TestBackupCPUBudget(t *testing.T) {
	root := testetcd.SandboxT(t)
	testetcd.StartT(t, root)
	dir := storeDir(t)
	cfg := testSettings(root, dir)
	cfg.Schedules.Backup = time.Second
	// Any real backup costs over 10 ms of CPU: at 0.001% that is one
	// backup per 1000 s at least, so every 1 s tick after the first is skipped.
	cfg.Schedules.BackupCPUBudget = 0.001
	a, buf := newAgent(t, cfg, nil)
	start(t, a, buf)
	waitFor(t, 15*time.Second, "the startup backup", func() bool { return len(versions(t, dir)) == 1 })
	waitFor(t, 10*time.Second, "a scheduled backup skipped for the budget", func() bool {
		_, body := scrape(t, a, "/metrics")
		n, _ := strconv.ParseFloat(metricValue(body, "kubekeep_backup_budget_skips_total"), 64)
		return n >= 1
	})
	time.Sleep(2 * time.Second)
	if n := len(versions(t, dir)); n != 1 {
		t.Fatalf("%d versions with every scheduled backup over budget, want 1", n)
	}
	if !strings.Contains(buf.String(), "scheduled backup skipped to stay within the CPU budget") {
		t.Error("no log line says why backups are skipped")
	}
	a.writeStatus()
	js := jobState(a, JobBackup)
	if js.LastCPU <= 0 {
		t.Errorf("status records no CPU for the backup: %+v", js)
	}
	if js.NextRun == nil || time.Until(*js.NextRun) < 5*time.Minute {
		t.Errorf("status says the next backup is at %v; the budget puts it hours away", js.NextRun)
	}
	_, body := scrape(t, a, "/metrics")
	if v := metricValue(body, `kubekeep_job_last_cpu_seconds{job="backup"}`); v == "" || v == "0" {
		t.Errorf("kubekeep_job_last_cpu_seconds for backup = %q", v)
	}

	waitFor(t, 5*time.Second, "the watches", a.watching.Load)
	if err := root.RenewCert("/etc/kubernetes/pki/apiserver-kubelet-client.crt"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a change-triggered version despite the budget", func() bool { return len(versions(t, dir)) == 2 })
}

// Jitter moves a schedule's phase, not each gap: the runs follow each
// other by exactly the interval, so "a version every schedules.backup"
// holds. Before, every gap was drawn from [interval, interval+jitter]:
// 11.4 versions an hour instead of 12 at the defaults (bench-agent).
func TestScheduleIntervalIsStrict(t *testing.T) {
	root := testetcd.SandboxT(t)
	testetcd.StartT(t, root)
	dir := storeDir(t)
	cfg := testSettings(root, dir)
	cfg.Schedules.Backup = time.Hour
	cfg.Schedules.Jitter = 10 * time.Minute
	a, buf := newAgent(t, cfg, nil)
	start(t, a, buf)
	var runs []time.Time
	waitFor(t, 30*time.Second, "the backup schedule", func() bool {
		j := a.job(JobBackup)
		if j == nil { // the agent has started, its jobs not yet
			return false
		}
		a.jobsMu.Lock()
		defer a.jobsMu.Unlock()
		if j.gjob == nil {
			return false
		}
		var err error
		runs, err = j.gjob.NextRuns(6)
		return err == nil && len(runs) == 6
	})
	for i := 1; i < len(runs); i++ {
		if gap := runs[i].Sub(runs[i-1]); gap != time.Hour {
			t.Errorf("runs %d and %d of the backup schedule are %s apart, want exactly the 1h interval (next runs %v)", i-1, i, gap, runs)
		}
	}
}

package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/internal/testetcd"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// The CA key vanishes while the agent runs: the PKI watch takes a version
// at once, which is committed degraded; /healthz turns 503 naming the
// problem, the metrics and `status` show it, and the newest good version
// (what a restore's "latest" takes) is still the complete one. The key
// comes back and all of it clears. Before, /healthz said ok throughout.
func TestDegradedBackupShowsInHealthMetricsAndStatus(t *testing.T) {
	root := testetcd.SandboxT(t)
	testetcd.StartT(t, root)
	dir := storeDir(t)
	cfg := testSettings(root, dir)
	cfg.Schedules.Backup = time.Hour
	a, buf := newAgent(t, cfg, nil)
	start(t, a, buf)
	waitFor(t, 15*time.Second, "the startup backup", func() bool { return jobState(a, JobBackup).LastSuccess != nil })
	waitFor(t, 5*time.Second, "the watches", a.watching.Load)
	good := versions(t, dir)[0]
	if code, body := scrape(t, a, "/healthz"); code != 200 {
		t.Fatalf("/healthz after a good backup = %d %s", code, body)
	}
	_, body := scrape(t, a, "/metrics")
	for series, want := range map[string]string{"kubekeep_backup_degraded": "0", "kubekeep_newest_backup_good": "1", "kubekeep_backup_problems": "0"} {
		if v := metricValue(body, series); v != want {
			t.Errorf("%s = %q with a good newest version, want %s", series, v, want)
		}
	}

	key := root.Path("/etc/kubernetes/pki/ca.key")
	data, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the startup backup's own writes must not count
	if err := os.Remove(key); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "a version without ca.key", func() bool { return len(versions(t, dir)) >= 2 })
	waitFor(t, 5*time.Second, "the agent to take in the degraded version", func() bool {
		code, _ := scrape(t, a, "/healthz")
		return code == 503
	})
	code, body := scrape(t, a, "/healthz")
	if code != 503 || !strings.Contains(body, "degraded") || !strings.Contains(body, "/etc/kubernetes/pki/ca.key") {
		t.Errorf("/healthz with a degraded newest version = %d %s", code, body)
	}
	_, body = scrape(t, a, "/metrics")
	if v := metricValue(body, "kubekeep_backup_degraded"); v != "1" {
		t.Errorf("kubekeep_backup_degraded = %q", v)
	}
	if v := metricValue(body, "kubekeep_newest_backup_good"); v != "0" {
		t.Errorf("kubekeep_newest_backup_good = %q", v)
	}
	if v := metricValue(body, "kubekeep_backup_problems"); v == "" || v == "0" {
		t.Errorf("kubekeep_backup_problems = %q", v)
	}
	if v := metricValue(body, "kubekeep_newest_good_backup_age_seconds"); v == "" || v == "+Inf" {
		t.Errorf("kubekeep_newest_good_backup_age_seconds = %q; the first version is good", v)
	}
	st, err := ReadStatus(openStore(t, dir), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !st.Degraded || !strings.Contains(strings.Join(st.Problems, "\n"), "/etc/kubernetes/pki/ca.key") ||
		st.NewestVersion == nil || st.NewestVersion.Good || st.NewestVersion.Status != "degraded" {
		t.Errorf("status: degraded %v problems %q newest %+v", st.Degraded, st.Problems, st.NewestVersion)
	}
	if st.NewestGood == nil || st.NewestGood.ID != good.ID {
		t.Errorf("status newestGood = %+v, want %s", st.NewestGood, good.ID)
	}
	raw, _ := json.Marshal(st)
	for _, k := range []string{`"degraded":true`, `"problems":[`, `"newestGood":{`} {
		if !strings.Contains(string(raw), k) {
			t.Errorf("status JSON lacks %s: %s", k, raw)
		}
	}
	if id, err := openStore(t, dir).Resolve(rsyncish.Latest); err != nil || id != good.ID {
		t.Errorf("latest = %s %v, want %s", id, err, good.ID)
	}
	if !strings.Contains(buf.String(), "ALERT: version committed but not good") {
		t.Error("the degraded version is not in the log as an alert")
	}

	if err := os.WriteFile(key, data, 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "a good version after ca.key is back", func() bool {
		code, _ := scrape(t, a, "/healthz")
		return code == 200
	})
	_, body = scrape(t, a, "/metrics")
	if v := metricValue(body, "kubekeep_backup_degraded"); v != "0" {
		t.Errorf("kubekeep_backup_degraded = %q after recovery", v)
	}
}

// A manifest discovery cannot parse: with it the agent failed 6 of 7
// backups while /healthz said ok. Discovery now reports it as a problem,
// so the versions commit degraded, and /healthz is 503 naming the file.
func TestBadManifestIsUnhealthy(t *testing.T) {
	root := testetcd.SandboxT(t)
	testetcd.StartT(t, root)
	dir := storeDir(t)
	cfg := testSettings(root, dir)
	cfg.Schedules.Backup = time.Hour
	a, buf := newAgent(t, cfg, nil)
	start(t, a, buf)
	waitFor(t, 15*time.Second, "the startup backup", func() bool { return jobState(a, JobBackup).LastSuccess != nil })
	waitFor(t, 5*time.Second, "the watches", a.watching.Load)
	if code, body := scrape(t, a, "/healthz"); code != 200 {
		t.Fatalf("/healthz after a good backup = %d %s", code, body)
	}
	bad := root.Path("/etc/kubernetes/manifests/broken.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: v1\nkind: Pod\nspec: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "/healthz to turn 503", func() bool {
		code, _ := scrape(t, a, "/healthz")
		return code == 503
	})
	_, body := scrape(t, a, "/healthz")
	if !strings.Contains(body, "broken.yaml") {
		t.Errorf("/healthz does not say what is wrong: %s", body)
	}
}

// The last backup run failed: /healthz is 503 at once, with the error,
// not only after three intervals without any success; the next good run
// clears it.
func TestHealthFailingBackupRuns(t *testing.T) {
	a, _ := newAgent(t, testSettings(testetcd.SandboxT(t), storeDir(t)), nil)
	a.storeOK.Store(true)
	now := time.Now().UTC()
	ok, fail := now.Add(-time.Minute), now.Add(-10*time.Second)
	a.state = FileState{Started: now.Add(-time.Hour), Jobs: map[string]*JobState{
		JobBackup: {LastSuccess: &ok, LastFailure: &fail, Failures: 2, LastError: "backup: store files: reading /etc/kubernetes/pki: permission denied"},
	}}
	a.newest = &VersionRef{ID: "v1", Status: "ok", Good: true}
	healthy, problems := a.health()
	if healthy || !strings.Contains(strings.Join(problems, "\n"), "last 2 backup run(s) failed: backup: store files: reading /etc/kubernetes/pki") {
		t.Errorf("health with failing backups = %v %q", healthy, problems)
	}
	later := now
	a.state.Jobs[JobBackup] = &JobState{LastSuccess: &later, LastFailure: &fail}
	if healthy, problems := a.health(); !healthy {
		t.Errorf("health after a good run = %v %q", healthy, problems)
	}
	a.newest = &VersionRef{ID: "v2", Status: "etcd-failed"}
	if healthy, problems := a.health(); healthy || !strings.Contains(strings.Join(problems, "\n"), "v2 is etcd-failed") {
		t.Errorf("health with an etcd-failed newest version = %v %q", healthy, problems)
	}
}

// Every job, the status loop and a reload write the status file; they
// used to share one temp name, so one writer's rename found the file gone
// ("rename .agent-status.json.new: no such file or directory", 17 times
// in 2 minutes). Concurrent writers must all succeed, leave one complete
// file and no temp files.
func TestStatusFileConcurrentWriters(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	errs := make(chan error, 8*50)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				st := &FileState{PID: w, Jobs: map[string]*JobState{fmt.Sprintf("job-%d", i): {LastError: strings.Repeat("x", 1000*w)}}}
				if err := writeStatusFile(dir, st); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		if n < 3 {
			t.Error(err)
		}
		n++
	}
	if n > 0 {
		t.Fatalf("%d of 400 concurrent status writes failed", n)
	}
	st, err := ReadStatusFile(dir)
	if err != nil || len(st.Jobs) != 1 {
		t.Fatalf("status file after concurrent writes: %+v %v", st, err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("files left: %v", names)
	}
	fi, err := os.Stat(filepath.Join(dir, StatusFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("status file mode: %v %v", fi.Mode(), err)
	}

	// A killed agent's temp file goes when the next agent starts.
	stale := filepath.Join(dir, statusTempPrefix+"999999-123")
	old := filepath.Join(dir, "."+StatusFile+".new")
	for _, p := range []string{stale, old} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	removeStatusTemps(dir)
	for _, p := range []string{stale, old} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left behind", p)
		}
	}
}

package agent

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/internal/s3test"
	"github.com/kubekeep/kubekeep/internal/testetcd"
	"github.com/kubekeep/kubekeep/rsyncish/backend"
	"github.com/kubekeep/kubekeep/tiers"
)

// The agent keeps an off-site tier on a real S3 server (versitygw) with
// no CLI sync: the first version reaches it after the commit, a change
// in etcd reaches it within seconds as a journal segment while no version
// is made (schedules.backup is an hour), the metrics and status say so,
// and a tier that goes down fails and retries its job while backups go
// on; when it is back, the job catches up.
func TestAgentOffsiteTier(t *testing.T) {
	srv := s3test.StartT(t)
	srv.Bucket(t, "kk-agent", false)
	ctx := context.Background()
	px := startProxy(t, srv.Endpoint)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}

	root := testetcd.SandboxT(t)
	etcd := testetcd.StartT(t, root)
	if _, err := etcd.LoadCluster(ctx); err != nil {
		t.Fatal(err)
	}
	cli := etcd.ClientT(t)
	dir := storeDir(t)
	cfg := testSettings(root, dir)
	cfg.Schedules.Backup = time.Hour // only the first version, at start
	tc := config.Offsite{Name: "dr", URL: "s3://kk-agent/cp1", Endpoint: "http://" + px.addr, Region: "us-east-1",
		Recipients: []string{id.Recipient().String()}, Every: time.Minute}
	cfg.Offsite = []config.Offsite{tc}
	began := time.Now()
	a, buf := newAgent(t, cfg, func(c *Config) {
		c.OffsiteJournalEvery = time.Second
		c.OffsiteVersionDelay = 200 * time.Millisecond
		c.OffsiteRetry = tiers.Retry{Initial: 100 * time.Millisecond, Max: 500 * time.Millisecond, Budget: 2 * time.Second}
	})
	start(t, a, buf)

	// The tier as a new machine with the identity sees it.
	tierHas := func(ft backend.FileType, name string) bool {
		t.Helper()
		tr, err := tiers.Open(ctx, tc, tiers.OpenOptions{Identities: []age.Identity{id}})
		if err != nil {
			return false // before the first sync the tier has no key yet
		}
		defer tr.Sealed.Close()
		found := false
		if err := tr.Sealed.List(ctx, ft, func(fi backend.FileInfo) error {
			found = found || fi.Name == name
			return nil
		}); err != nil {
			t.Logf("list the tier: %v", err)
		}
		return found
	}
	waitFor(t, 30*time.Second, "the first version", func() bool { return len(versions(t, dir)) == 1 })
	v0 := versions(t, dir)[0].ID
	waitFor(t, 15*time.Second, "the first version in the tier", func() bool {
		return tierHas(backend.ManifestFile, v0+".manifest")
	})

	// A change in etcd reaches the tier as a journal segment, no version
	// made in between.
	resp, err := cli.Put(ctx, "/registry/configmaps/default/offsite-1", "v")
	if err != nil {
		t.Fatal(err)
	}
	put, rev := time.Now(), resp.Header.Revision
	var seg string
	waitFor(t, 10*time.Second, "the change's delta segment in the store", func() bool {
		j, err := openStore(t, dir).Journal(versionread.DeltaJournal)
		if err != nil {
			t.Fatal(err)
		}
		segs, _ := j.List()
		for _, s := range segs {
			if int64(s.First) <= rev && rev <= int64(s.Last) {
				seg = versionread.DeltaJournal + "/" + s.File
				return true
			}
		}
		return false
	})
	waitFor(t, 10*time.Second, "the change's delta segment in the tier", func() bool { return tierHas(backend.JournalFile, seg) })
	if d := time.Since(put); d > 8*time.Second {
		t.Errorf("the segment reached the tier %s after the put; want seconds", d)
	}
	if n := len(versions(t, dir)); n != 1 {
		t.Fatalf("%d versions: the segment must have shipped without a version", n)
	}

	// Metrics and status.
	_, body := scrape(t, a, "/metrics")
	last, _ := strconv.ParseFloat(metricValue(body, `kubekeep_offsite_last_success_timestamp_seconds{tier="dr"}`), 64)
	if last < float64(began.Unix()) || last > float64(time.Now().Unix()+1) {
		t.Errorf("last success = %v, want a time since the test began (%d)\n%s", last, began.Unix(), body)
	}
	lag, err := strconv.ParseFloat(metricValue(body, `kubekeep_offsite_lag_seconds{tier="dr"}`), 64)
	if err != nil || lag < 0 || lag > time.Since(put).Seconds()+1 {
		t.Errorf("lag = %v (%v); the tier holds the segment of a put %s ago", lag, err, time.Since(put))
	}
	uploaded, _ := strconv.ParseFloat(metricValue(body, `kubekeep_offsite_bytes_uploaded_total{tier="dr"}`), 64)
	var bucket int64
	filepath.Walk(srv.Root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			bucket += fi.Size()
		}
		return nil
	})
	if uploaded <= 0 || uploaded > float64(bucket) {
		t.Errorf("bytes uploaded = %v; the bucket holds %d sealed bytes", uploaded, bucket)
	}
	st, err := ReadStatus(openStore(t, dir), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(st)
	var doc struct {
		Offsite map[string]map[string]any `json:"offsite"`
	}
	json.Unmarshal(raw, &doc)
	dr := doc.Offsite["dr"]
	if dr["newestVersion"] != v0 || dr["lastSuccess"] == nil {
		t.Errorf("status offsite = %s, want dr with newestVersion %s and lastSuccess", raw, v0)
	}
	if l, ok := dr["lagSeconds"].(float64); !ok || l < 0 || l > time.Since(put).Seconds()+1 {
		t.Errorf("status offsite.dr.lagSeconds = %v", dr["lagSeconds"])
	}

	// The tier goes down: its job fails and retries; a backup made while
	// the failing sync is in flight is not held up by it.
	px.stop()
	job := OffsiteJob("dr")
	go a.trigger(a.job(job), "test", false)
	waitFor(t, 5*time.Second, "the sync to start", func() bool {
		j := a.job(job)
		j.mu.Lock()
		defer j.mu.Unlock()
		return j.running
	})
	a.trigger(a.job(JobBackup), "test", false)
	backedUp := time.Now()
	if n := len(versions(t, dir)); n != 2 {
		t.Fatalf("%d versions after a backup with the tier down, want 2", n)
	}
	waitFor(t, 20*time.Second, "the sync to fail with the tier down", func() bool { return jobState(a, job).Failures > 0 })
	js := jobState(a, job)
	if !strings.Contains(js.LastError, "tier dr") {
		t.Errorf("sync with the tier down: %q, want an error naming the tier", js.LastError)
	}
	if js.LastFailure == nil || !js.LastFailure.After(backedUp) {
		t.Errorf("the sync failed at %v, before the backup made meanwhile ended (%v): the backup waited for it", js.LastFailure, backedUp)
	}
	v1 := versions(t, dir)[1].ID
	waitFor(t, 20*time.Second, "the sync job to retry", func() bool { return jobState(a, job).Failures >= 2 })
	px.restart(t)
	waitFor(t, 30*time.Second, "the job to succeed once the tier is back", func() bool { return jobState(a, job).Failures == 0 })
	if !tierHas(backend.ManifestFile, v1+".manifest") {
		t.Errorf("version %s made while the tier was down is not in it", v1)
	}
	if strings.Contains(buf.String(), srv.SecretKey) {
		t.Error("the agent logged the tier's secret key")
	}
}

// proxy forwards a loopback port to the S3 server; stop makes the tier
// unreachable (the server keeps its data), restart brings it back on the
// same address.
type proxy struct {
	addr, to string
	mu       sync.Mutex
	ln       net.Listener
	conns    []net.Conn
}

func startProxy(t *testing.T, to string) *proxy {
	p := &proxy{to: to}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(p.stop)
	return p
}

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", p.to)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
}

func (p *proxy) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) restart(t *testing.T) {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.serve(ln)
}

// A reload that drops a tier stops its sync job and its series; one that
// sets its every to 0 turns the job off, saying why.
func TestOffsiteTierReload(t *testing.T) {
	root := testetcd.SandboxT(t)
	dir := storeDir(t)
	cfg := testSettings(root, dir)
	cfg.Schedules.Backup = time.Hour
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	tc := config.Offsite{Name: "dr", URL: "s3://kk/cp1", Endpoint: "http://127.0.0.1:1", Region: "us-east-1",
		Recipients: []string{id.Recipient().String()}, Every: time.Minute}
	cfg.Offsite = []config.Offsite{tc}
	next := cfg
	a, buf := newAgent(t, cfg, func(c *Config) { c.Reload = func() (config.Config, error) { return next, nil } })
	start(t, a, buf)
	job := OffsiteJob("dr")
	scheduled := func() bool {
		a.jobsMu.Lock()
		defer a.jobsMu.Unlock()
		j := a.jobs[job]
		return j != nil && j.gjob != nil && j.interval == time.Minute
	}
	// start returns once the agent runs; its jobs follow a moment later.
	waitFor(t, 10*time.Second, "the tier's sync job to be scheduled", scheduled)
	if _, body := scrape(t, a, "/metrics"); metricValue(body, `kubekeep_offsite_lag_seconds{tier="dr"}`) != "+Inf" {
		t.Errorf("lag of a tier that holds nothing yet: %q, want +Inf", metricValue(body, `kubekeep_offsite_lag_seconds{tier="dr"}`))
	}

	off := tc
	off.Every = 0
	next.Offsite = []config.Offsite{off}
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if js := jobState(a, job); scheduled() || !strings.Contains(js.Disabled, "every is 0") {
		t.Errorf("every: 0 after a reload: %+v, want the job off", js)
	}
	next.Offsite = []config.Offsite{tc}
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if !scheduled() {
		t.Error("every: 1m again: the job is not scheduled")
	}
	next.Offsite = nil
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if js := jobState(a, job); scheduled() || !strings.Contains(js.Disabled, "no longer in the config") {
		t.Errorf("the tier dropped from the config: %+v, want the job off", js)
	}
	if _, body := scrape(t, a, "/metrics"); strings.Contains(body, `tier="dr"`) {
		t.Error("the dropped tier's series are still served")
	}
}

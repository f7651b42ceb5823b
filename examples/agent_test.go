package examples_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/kubekeep/kubekeep/agent"
	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/internal/s3test"
	"github.com/kubekeep/kubekeep/internal/testetcd"
	"github.com/kubekeep/kubekeep/restore"
	"github.com/kubekeep/kubekeep/rsyncish"
	"github.com/kubekeep/kubekeep/tiers"
)

// syncBuffer collects the agent's log, printed when the test fails.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startAgent runs a real agent with every tier the dashboard shows: a
// real etcd, backups every 2 s, the real restore drill, ECS snapshots
// through the agent's hook (a fake that records each request: no ECS
// here), an off-site tier on a real S3 server (versitygw) and one whose
// endpoint is down, so some job fails. It returns the agent's metrics
// address and the number of cloud snapshot requests so far.
func startAgent(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	ctx := context.Background()
	srv := s3test.StartT(t)
	srv.Bucket(t, "kk-monitoring", false)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}

	root := testetcd.SandboxT(t)
	etcd := testetcd.StartT(t, root)
	if _, err := etcd.LoadCluster(ctx); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Root = root.Dir
	cfg.Store.Path = filepath.Join(t.TempDir(), "store")
	cfg.Store.AllowSameFilesystem = true
	cfg.Store.MinFree = 0
	cfg.Schedules = config.Schedules{Backup: 2 * time.Second, Debounce: 300 * time.Millisecond,
		Drill: time.Hour, CloudSnapshot: time.Minute}
	cfg.Etcd.DeltaFlush = 200 * time.Millisecond
	cfg.Etcd.DialTimeout = time.Second
	cfg.Metrics.Listen = "127.0.0.1:0"
	cfg.Cloud.Enabled = true
	cfg.Cloud.Disks = []string{"d-monitoring"}
	recipients := []string{id.Recipient().String()}
	cfg.Offsite = []config.Offsite{
		{Name: "dr", URL: "s3://kk-monitoring/cp1", Endpoint: "http://" + srv.Endpoint, Region: "us-east-1",
			Recipients: recipients, Every: time.Minute},
		{Name: "down", URL: "s3://kk-monitoring/cp1", Endpoint: "http://127.0.0.1:1", Region: "us-east-1",
			Recipients: recipients, Every: time.Minute},
	}
	var clouds atomic.Int32
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := agent.New(agent.Config{
		Settings: cfg,
		Logger:   logger,
		Drill: func(ctx context.Context, s *rsyncish.Store, version string) error {
			res, err := restore.Drill(ctx, s, version, logger)
			if err == nil && !res.Verified {
				err = fmt.Errorf("drill of %s did not verify", res.Version)
			}
			return err
		},
		CloudSnapshot: func(ctx context.Context, req agent.CloudRequest) error {
			if len(req.Cloud.Disks) != 1 {
				return fmt.Errorf("cloud request without the configured disk: %+v", req.Cloud)
			}
			clouds.Add(1)
			return nil
		},
		StoreProbe:          300 * time.Millisecond,
		CatchUpCheck:        200 * time.Millisecond,
		FirstCheckDelay:     time.Second,
		NoSignals:           true,
		ShutdownTimeout:     20 * time.Second,
		OffsiteJournalEvery: time.Second,
		OffsiteVersionDelay: 200 * time.Millisecond,
		OffsiteRetry:        tiers.Retry{Initial: 100 * time.Millisecond, Max: 500 * time.Millisecond, Budget: 2 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("agent: %v", err)
			}
		case <-time.After(40 * time.Second):
			t.Error("agent did not stop within 40s")
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	})
	waitFor(t, 10*time.Second, "the agent's metrics server", func() bool { return a.MetricsAddr() != "" })
	return a.MetricsAddr(), &clouds
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// scrape returns the agent's metric families.
func scrape(t *testing.T, addr string) map[string]*familyView {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	out := map[string]*familyView{}
	for name, f := range fams {
		v := &familyView{labels: map[string]map[string]bool{}}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if v.labels[l.GetName()] == nil {
					v.labels[l.GetName()] = map[string]bool{}
				}
				v.labels[l.GetName()][l.GetValue()] = true
			}
		}
		out[name] = v
	}
	return out
}

// familyView is a scraped metric family's label values.
type familyView struct{ labels map[string]map[string]bool }

func (f *familyView) has(label, value string) bool { return f != nil && f.labels[label][value] }

// jobMatcher finds the job names the rules and the dashboard select by.
var jobMatcher = regexp.MustCompile(`\bjob\s*(=~?)\s*"([^"]*)"`)

// The metrics the rules and the dashboard use are the ones a real agent
// exports, with the job label values they select (backup, cloud-snapshot,
// offsite-*); the series that exist only with the ECS or an off-site tier
// are checked on an agent that has both. Then the real Prometheus, with
// examples/prometheus.yml (honor_labels) pointed at the agent and loading
// the rules, evaluates every rule without error, and every series an alert
// selects and every dashboard query returns data.
func TestMonitoringAgainstRealAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an agent, etcd, an S3 server and Prometheus")
	}
	tool(t, "prometheus") // fail before building and starting everything
	used := usedMetrics(t)
	addr, clouds := startAgent(t)
	prom := startPrometheus(t, addr)

	jobs := map[string]bool{}
	for _, name := range sortedKeys(alertExprs(t)) {
		for _, m := range jobMatcher.FindAllStringSubmatch(alertExprs(t)[name], -1) {
			jobs[m[1]+m[2]] = true
		}
	}
	queries, vars := dashboard(t)
	for _, q := range queries {
		for _, m := range jobMatcher.FindAllStringSubmatch(q.Expr, -1) {
			jobs[m[1]+m[2]] = true
		}
	}
	// What the agent exports once a backup, a drill, an ECS snapshot and
	// an off-site sync ran and the down tier's sync failed.
	var fams map[string]*familyView
	waitFor(t, 3*time.Minute, "a backup, a drill, a cloud snapshot and a sync of each tier", func() bool {
		fams = scrape(t, addr)
		ok := fams["kubekeep_job_last_success_timestamp_seconds"]
		return ok.has("job", agent.JobBackup) && ok.has("job", agent.JobDrill) && ok.has("job", agent.JobCloudSnapshot) &&
			fams["kubekeep_offsite_last_success_timestamp_seconds"].has("tier", "dr") &&
			fams["kubekeep_job_last_failure_timestamp_seconds"].has("job", agent.OffsiteJob("down"))
	})
	if clouds.Load() == 0 {
		t.Error("the cloud snapshot job succeeded without calling the hook")
	}
	for _, name := range sortedKeys(used) {
		if fams[name] == nil {
			t.Errorf("%s is not exported by the agent; used by %v", name, used[name])
		}
	}
	scrapedJobs := fams["kubekeep_job_runs_total"]
	for _, m := range sortedKeys(jobs) {
		switch {
		case strings.HasPrefix(m, "=~"):
			re := regexp.MustCompile("^(?:" + m[2:] + ")$")
			found := false
			for j := range scrapedJobs.labels["job"] {
				found = found || re.MatchString(j)
			}
			if !found {
				t.Errorf("job=~%q matches none of the agent's jobs %v", m[2:], sortedKeys(scrapedJobs.labels["job"]))
			}
		case !scrapedJobs.has("job", m[1:]):
			t.Errorf("job=%q is none of the agent's jobs %v", m[1:], sortedKeys(scrapedJobs.labels["job"]))
		}
	}

	// Prometheus: the rules evaluate, the alerts' selectors and the
	// dashboard's queries find the agent's series.
	var exprs []string
	for _, name := range sortedKeys(alertExprs(t)) {
		exprs = append(exprs, selectors.FindAllString(alertExprs(t)[name], -1)...)
	}
	for _, q := range queries {
		e, err := expand(q.Expr, vars)
		if err != nil {
			t.Fatal(err)
		}
		exprs = append(exprs, e)
	}
	empty := map[string]string{}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
		clear(empty)
		for _, e := range exprs {
			if n, err := prom.count(e); err != nil || n == 0 {
				empty[e] = fmt.Sprint(n, " series, error ", err)
			}
		}
		if len(empty) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, e := range sortedKeys(empty) {
		t.Errorf("Prometheus: %s: %s", e, empty[e])
	}
	rules := prom.rules(t)
	if len(rules) != len(alertExprs(t)) {
		t.Errorf("Prometheus loaded %d rules, want the %d alerts", len(rules), len(alertExprs(t)))
	}
	for _, r := range rules {
		if r.Health != "ok" || r.LastError != "" {
			t.Errorf("rule %s: health %q, %s", r.Name, r.Health, r.LastError)
		}
	}

	// On this agent exactly one alert is active: the down tier's lag
	// (+Inf: it holds nothing), pending for its 5 minutes; the healthy
	// tier, the backups, the drill, etcd and the disk raise none.
	var active []string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Second) {
		active = prom.alerts(t)
		if len(active) > 0 || time.Now().After(deadline) {
			break
		}
	}
	if want := "KubekeepOffsiteLag tier=down pending"; strings.Join(active, "; ") != want {
		t.Errorf("active alerts: %q, want %q", active, want)
	}
}

// alerts are the active (pending or firing) alerts: "NAME tier=T STATE",
// the tier only when the alert has one.
func (p *prometheus) alerts(t *testing.T) []string {
	t.Helper()
	var d struct {
		Alerts []struct {
			Labels map[string]string `json:"labels"`
			State  string            `json:"state"`
		} `json:"alerts"`
	}
	if err := p.get("/api/v1/alerts", &d); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range d.Alerts {
		s := a.Labels["alertname"]
		if tier, ok := a.Labels["tier"]; ok {
			s += " tier=" + tier
		}
		out = append(out, s+" "+a.State)
	}
	sort.Strings(out)
	return out
}

// selectors finds the vector selectors of an alert's expression.
var selectors = regexp.MustCompile(`kubekeep_[a-z0-9_]+(\{[^}]*\})?`)

// prometheus is a running Prometheus server.
type prometheus struct {
	base string
}

// startPrometheus runs the real Prometheus (Debian's package) with
// examples/prometheus.yml, its target set to the agent, its rule file at
// the example's, scraping and evaluating every second.
func startPrometheus(t *testing.T, target string) *prometheus {
	t.Helper()
	bin := tool(t, "prometheus")
	var conf map[string]any
	readYAML(t, promConfig, &conf)
	rulePath, err := filepath.Abs(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	if rf, ok := conf["rule_files"].([]any); !ok || len(rf) != 1 || rf[0] != rulesFile {
		t.Fatalf("%s: rule_files %v, want [%s]", promConfig, conf["rule_files"], rulesFile)
	}
	conf["rule_files"] = []any{rulePath}
	conf["global"] = map[string]any{"scrape_interval": "1s", "evaluation_interval": "1s"}
	sc := conf["scrape_configs"].([]any)
	if len(sc) != 1 {
		t.Fatalf("%s: %d scrape configs", promConfig, len(sc))
	}
	job := sc[0].(map[string]any)
	static := job["static_configs"].([]any)[0].(map[string]any)
	static["targets"] = []any{target}
	b, err := yaml.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	confPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(confPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := l.Addr().String()
	l.Close()
	var out syncBuffer
	cmd := exec.Command(bin, "--config.file="+confPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+listen, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus output:\n%s\nconfig:\n%s", out.String(), b)
		}
	})
	p := &prometheus{base: "http://" + listen}
	waitFor(t, 30*time.Second, "Prometheus to be ready", func() bool {
		resp, err := http.Get(p.base + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

func (p *prometheus) get(path string, v any) error {
	resp, err := http.Get(p.base + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var r struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: %v: %s", path, err, b)
	}
	if r.Status != "success" {
		return fmt.Errorf("%s: %s", path, r.Error)
	}
	return json.Unmarshal(r.Data, v)
}

// count is how many series an instant query returns.
func (p *prometheus) count(expr string) (int, error) {
	var d struct {
		ResultType string            `json:"resultType"`
		Result     []json.RawMessage `json:"result"`
	}
	if err := p.get("/api/v1/query?query="+url.QueryEscape(expr), &d); err != nil {
		return 0, err
	}
	return len(d.Result), nil
}

type ruleState struct {
	Name      string `json:"name"`
	Health    string `json:"health"`
	LastError string `json:"lastError"`
}

// rules are the loaded rules, once each has been evaluated.
func (p *prometheus) rules(t *testing.T) []ruleState {
	t.Helper()
	var out []ruleState
	waitFor(t, 30*time.Second, "Prometheus to evaluate the rules", func() bool {
		var d struct {
			Groups []struct {
				Rules []ruleState `json:"rules"`
			} `json:"groups"`
		}
		if err := p.get("/api/v1/rules", &d); err != nil {
			return false
		}
		out = nil
		for _, g := range d.Groups {
			out = append(out, g.Rules...)
		}
		for _, r := range out {
			if r.Health == "unknown" {
				return false
			}
		}
		return len(out) > 0
	})
	return out
}

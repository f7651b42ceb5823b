package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the agent's Prometheus series. Each agent has its own
// registry so that tests can run several in one process.
type metrics struct {
	reg *prometheus.Registry

	lastSuccess  *prometheus.GaugeVec
	lastFailure  *prometheus.GaugeVec
	duration     *prometheus.GaugeVec
	cpu          *prometheus.GaugeVec
	budgetSkips  prometheus.Counter
	etcdKinds    *prometheus.CounterVec
	runs         *prometheus.CounterVec
	failures     *prometheus.CounterVec
	bytesWritten *prometheus.CounterVec
	storeUsed    prometheus.Gauge
	storeFree    prometheus.Gauge
	storeOK      prometheus.Gauge
	storeFull    prometheus.Gauge
	deltaGaps    prometheus.Counter
	versions     prometheus.Gauge
	etcdRevision prometheus.Gauge
	deltaRev     prometheus.Gauge
	etcdAPIUp    prometheus.Gauge
	degraded     prometheus.Gauge
	newestGood   prometheus.Gauge
	problems     prometheus.Gauge

	offLastSuccess *prometheus.GaugeVec
	offBytes       *prometheus.CounterVec
	offCovered     map[string]time.Time // by tier, under mu: kubekeep_offsite_lag_seconds

	mu             sync.Mutex
	newestVerified time.Time // zero: none
	newestVersion  time.Time
	newestGoodTime time.Time
	deltaCovered   time.Time // latest moment etcd state is durable
	now            func() time.Time
}

func newMetrics(now func() time.Time) *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), now: now}
	job := []string{"job"}
	m.lastSuccess = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kubekeep_job_last_success_timestamp_seconds",
		Help: "Unix time of the job's last successful run."}, job)
	m.lastFailure = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kubekeep_job_last_failure_timestamp_seconds",
		Help: "Unix time of the job's last failed run."}, job)
	m.duration = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kubekeep_job_last_duration_seconds",
		Help: "How long the job's last run took."}, job)
	m.cpu = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kubekeep_job_last_cpu_seconds",
		Help: "CPU the agent process used during the job's last run (other goroutines' included)."}, job)
	m.budgetSkips = prometheus.NewCounter(prometheus.CounterOpts{Name: "kubekeep_backup_budget_skips_total",
		Help: "Scheduled backups skipped to keep the agent within schedules.backupCPUBudget."})
	m.etcdKinds = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kubekeep_backup_etcd_versions_total",
		Help: "Versions whose etcd part was a full snapshot (kind=full) or a reference to a base plus the delta journal (kind=journal)."}, []string{"kind"})
	m.runs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kubekeep_job_runs_total",
		Help: "Runs of the job, successful or not."}, job)
	m.failures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kubekeep_job_failures_total",
		Help: "Failed runs of the job."}, job)
	m.bytesWritten = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kubekeep_bytes_written_total",
		Help: "Bytes the job wrote to the store (new blocks and manifests, delta segments)."}, job)
	m.storeUsed = prometheus.NewGauge(prometheus.GaugeOpts{Name: "kubekeep_store_used_bytes", Help: "Bytes the store occupies on the second disk."})
	m.storeFree = prometheus.NewGauge(prometheus.GaugeOpts{Name: "kubekeep_store_free_bytes", Help: "Bytes free on the store's filesystem."})
	m.storeOK = prometheus.NewGauge(prometheus.GaugeOpts{Name: "kubekeep_store_writable",
		Help: "1 when the store on the second disk is present and writable; 0 while the agent has stopped writing."})
	m.storeFull = prometheus.NewGauge(prometheus.GaugeOpts{Name: "kubekeep_store_full",
		Help: "1 while the store's filesystem has less than store.minFree free or writes fail for lack of space (backups are then not made)."})
	m.deltaGaps = prometheus.NewCounter(prometheus.CounterOpts{Name: "kubekeep_etcd_delta_gaps_total",
		Help: "Gaps left in the etcd delta journal: a new chain started from a snapshot after the old one could not continue (compaction, an agent that was not running); no point in time inside one can be restored. `kubekeep status` shows the newest."})
	m.versions = prometheus.NewGauge(prometheus.GaugeOpts{Name: "kubekeep_store_versions", Help: "Versions in the store."})
	m.etcdRevision = prometheus.NewGauge(prometheus.GaugeOpts{Name: "kubekeep_etcd_revision_backed_up",
		Help: "etcd revision of the newest verified snapshot in the store."})
	m.deltaRev = prometheus.NewGauge(prometheus.GaugeOpts{Name: "kubekeep_etcd_delta_revision",
		Help: "etcd revision up to which watch deltas are durable in the store."})
	m.etcdAPIUp = prometheus.NewGauge(prometheus.GaugeOpts{Name: "kubekeep_etcd_api_up",
		Help: "1 when the last snapshot or delta connection reached the etcd API."})
	m.degraded = prometheus.NewGauge(prometheus.GaugeOpts{Name: "kubekeep_backup_degraded",
		Help: "1 when the newest version is degraded (files lost since the last complete version, or discovery problems); `kubekeep status` lists the problems."})
	m.problems = prometheus.NewGauge(prometheus.GaugeOpts{Name: "kubekeep_backup_problems",
		Help: "Problems recorded in the newest version (0 when it is complete)."})
	m.newestGood = prometheus.NewGauge(prometheus.GaugeOpts{Name: "kubekeep_newest_backup_good",
		Help: "1 when the newest version is good (etcd snapshot checked, file set complete): what `latest` means to a restore."})
	tier := []string{"tier"}
	m.offCovered = map[string]time.Time{}
	m.offLastSuccess = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kubekeep_offsite_last_success_timestamp_seconds",
		Help: "Unix time of the tier's last successful sync by the agent (a full sync or journal segments shipped)."}, tier)
	m.offBytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kubekeep_offsite_bytes_uploaded_total",
		Help: "Bytes of store objects the agent uploaded to the tier (before sealing)."}, tier)
	age := func(name, help string, get func() time.Time) prometheus.GaugeFunc {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
			m.mu.Lock()
			t := get()
			m.mu.Unlock()
			if t.IsZero() {
				// No such backup at all must trip an age alert, not hide.
				return math.Inf(1)
			}
			return m.now().Sub(t).Seconds()
		})
	}
	m.reg.MustRegister(m.lastSuccess, m.lastFailure, m.duration, m.cpu, m.budgetSkips, m.etcdKinds, m.runs, m.failures, m.bytesWritten,
		m.storeUsed, m.storeFree, m.storeOK, m.storeFull, m.deltaGaps, m.versions, m.etcdRevision, m.deltaRev, m.etcdAPIUp,
		m.degraded, m.problems, m.newestGood, m.offLastSuccess, m.offBytes, offsiteLag{m},
		age("kubekeep_newest_verified_backup_age_seconds",
			"Age of the newest version the restore drill verified (+Inf when none): the recovery point that is proven.",
			func() time.Time { return m.newestVerified }),
		age("kubekeep_newest_backup_age_seconds", "Age of the newest version in the store (+Inf when none).",
			func() time.Time { return m.newestVersion }),
		age("kubekeep_newest_good_backup_age_seconds",
			"Age of the newest good version, the one `latest` resolves to (+Inf when none).",
			func() time.Time { return m.newestGoodTime }),
		age("kubekeep_etcd_delta_lag_seconds",
			"Time since the latest moment whose etcd state is durable in the store (newest delta segment or snapshot).",
			func() time.Time { return m.deltaCovered }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

func (m *metrics) setTimes(newestVersion, newestVerified time.Time) {
	m.mu.Lock()
	m.newestVersion, m.newestVerified = newestVersion, newestVerified
	m.mu.Unlock()
}

// setNewest records the newest version's state (nil: no version) and
// the newest good version's time (zero: none).
func (m *metrics) setNewest(v *VersionRef, good time.Time) {
	var degraded, ok bool
	var problems int
	if v != nil {
		degraded, ok, problems = v.Degraded, v.Good, len(v.Problems)
	}
	m.degraded.Set(b2f(degraded))
	m.newestGood.Set(b2f(ok))
	m.problems.Set(float64(problems))
	m.mu.Lock()
	m.newestGoodTime = good
	m.mu.Unlock()
}

func (m *metrics) covered(t time.Time) {
	m.mu.Lock()
	if t.After(m.deltaCovered) {
		m.deltaCovered = t
	}
	m.mu.Unlock()
}

// offsiteCovered records the newest cluster state tier holds (zero: the
// tier is known, what it holds is not yet); it never goes back.
func (m *metrics) offsiteCovered(tier string, t time.Time) {
	m.mu.Lock()
	if cur, ok := m.offCovered[tier]; !ok || t.After(cur) {
		m.offCovered[tier] = t
	}
	m.mu.Unlock()
}

// offsiteKeep forgets the tiers no longer configured.
func (m *metrics) offsiteKeep(tiers map[string]bool) {
	m.mu.Lock()
	for t := range m.offCovered {
		if !tiers[t] {
			delete(m.offCovered, t)
			m.offLastSuccess.DeleteLabelValues(t)
			m.offBytes.DeleteLabelValues(t)
		}
	}
	m.mu.Unlock()
}

var offsiteLagDesc = prometheus.NewDesc("kubekeep_offsite_lag_seconds",
	"Age of the newest cluster state the tier holds: the time of the newest version or etcd delta segment uploaded to it (+Inf when none).",
	[]string{"tier"}, nil)

// offsiteLag computes kubekeep_offsite_lag_seconds at scrape time.
type offsiteLag struct{ m *metrics }

func (o offsiteLag) Describe(ch chan<- *prometheus.Desc) { ch <- offsiteLagDesc }

func (o offsiteLag) Collect(ch chan<- prometheus.Metric) {
	o.m.mu.Lock()
	defer o.m.mu.Unlock()
	now := o.m.now()
	for tier, t := range o.m.offCovered {
		v := math.Inf(1)
		if !t.IsZero() {
			v = now.Sub(t).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(offsiteLagDesc, prometheus.GaugeValue, v, tier)
	}
}

// metricsServer serves /metrics and /healthz on one listener.
type metricsServer struct {
	srv  *http.Server
	addr string
	done chan struct{}
}

func startMetricsServer(addr string, m *metrics, health func() (bool, []string)) (*metricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		ok, problems := health()
		w.Header().Set("Content-Type", "application/json")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		if problems == nil {
			problems = []string{}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"ok": ok, "problems": problems})
	})
	s := &metricsServer{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second},
		addr: ln.Addr().String(),
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

func (s *metricsServer) close() {
	if s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		_ = s.srv.Close()
	}
	<-s.done
}

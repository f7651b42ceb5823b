// Package agent is kubekeep's long-running service and the only package
// that knows about wall-clock time: it schedules backups, cloud snapshots,
// prunes, store checks and restore drills (go-co-op/gocron), triggers a
// backup when the PKI, kubeconfigs or manifests change (fsnotify, with a
// debounce), keeps the etcd watch-delta stream running into the store's
// journal, and reports through a status file in the store and Prometheus
// metrics. The status file follows a change of state within 2 s, but a
// move of the delta stream's durable revision alone (every etcd.deltaFlush
// on a live cluster) only within Config.StatusDeltaEvery (30 s), so
// `kubekeep status` may show the delta revision up to that late; the delta
// lag it prints is read from the journal itself. An idle agent wakes for
// the delta stream's heartbeat (etcd.deltaFlush), the store probe (10 s)
// and the catch-up check (15 s), and for nothing else; of the heartbeat's
// progress marks only one every 30 s is fsynced (backup.DeltaMarkSync: a
// crash loses at most that much time coverage, never a change). A failed job is retried with backoff; the agent never exits
// because of one. A missing or read-only second disk stops all writes
// until it is back.
//
// A version that commits but is not good (etcd-failed, degraded: see the
// backup package) is an alert, not a quiet success: it is logged at error
// level, kubekeep_backup_degraded / kubekeep_newest_backup_good say so,
// `kubekeep status` lists its problems, and /healthz answers 503 until a
// good version follows, as it does while the last backup run failed.
// /healthz is 503 whenever backups are not being made: the store missing
// or full, etcd unreachable or the delta stream making nothing durable for
// over a minute, the drill unable to run for lack of space (health.go has
// the list).
//
// The delta stream (deltas.go) resumes where the journal is durable after
// any break, also when versions were taken meanwhile, so an etcd restart
// leaves no gap; while etcd is away it polls the endpoints' ports and
// reconnects at once, with a short jittered backoff while etcd flaps. Only
// a chain that cannot continue (compaction past it, a rebuilt etcd, an
// agent that was not running) restarts from a snapshot; the gap is counted
// (kubekeep_etcd_delta_gaps_total) and the newest kept in the status file.
// How far the journal is durable is read from it at start, so the metrics
// report what is on disk, never 0 after a restart.
//
// While the stream runs, a scheduled version is a journal version (the
// backup package: the last full version plus the journal up to etcd's
// revision, costing what changed), and a full snapshot is taken only when
// etcd.fullSnapshot says so; the backup waits, bounded, for the stream to
// make etcd's current revision durable. So a version is made at every
// schedules.backup and none is skipped: schedules.backupCPUBudget is a
// safety valve, off (0%) by default. The kind of every version is counted
// (kubekeep_backup_etcd_versions_total{kind}) and shown in status. After a
// full snapshot or a drill the agent returns its freed heap to the OS
// (debug.FreeOSMemory), so its idle RSS is not the peak of the last one.
//
// Off-site tiers (offsite.go; the config's offsite list, tiers.Sync): each
// tier with a non-zero every is a job, offsite-<name>, run every `every`,
// OffsiteVersionDelay (5 s) after each committed version (versions
// committed meanwhile share the run), and retried with backoff like any
// job. Journal segments ship as they seal: each durable delta segment
// wakes a journal-only sync of the tiers, at most every
// OffsiteJournalEvery (10 s; an idle etcd's progress marks at most once a
// minute), skipped for a tier whose job is failing (its retries ship the
// journal too) and handed to the job when it fails. A sync only reads the
// store: it holds neither the store slot nor the writer lock, so backups
// never wait for an upload; prune waits for running syncs (and they for
// it), so a sync never uploads a manifest whose pack a prune removed after
// the listing. Credentials come from the agent's environment (tiers.Open)
// and appear in no log line or error. What a tier holds is read from its
// catalogue in the store (so a CLI sync counts, and a restarted agent
// reports it at once): kubekeep_offsite_lag_seconds{tier} (the age of the
// newest version or segment uploaded), _last_success_timestamp_seconds and
// _bytes_uploaded_total, and "offsite" in the status. A failing tier is
// not a /healthz condition: it does not stop local backups; alert on the
// lag.
package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-co-op/gocron/v2"

	"github.com/kubekeep/kubekeep/backup"
	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/layout"
	"github.com/kubekeep/kubekeep/rsyncish"
	"github.com/kubekeep/kubekeep/tiers"
)

// DrillFunc restores version's etcd into a scratch place, checks it and
// marks the version verified in the store (restore.Drill does this). The
// agent picks the version: the newest with a good etcd snapshot.
type DrillFunc func(ctx context.Context, store *rsyncish.Store, version string) error

// CloudSnapshotFunc takes one ECS snapshot set of the VM. Version and
// EtcdRevision name the local version taken just before (empty/0 when that
// backup had no verified etcd snapshot, so the set is crash-consistent only).
type CloudSnapshotFunc func(ctx context.Context, req CloudRequest) error

// CloudRequest is what the agent hands to CloudSnapshotFunc.
type CloudRequest struct {
	Cloud        config.Cloud
	Version      string
	EtcdRevision int64
}

// Config is everything the agent needs; Settings is the resolved
// configuration (file, then flags).
type Config struct {
	Settings config.Config
	// Reload returns a fresh, validated configuration (the file re-read
	// with the command line flags applied again). nil: no reload.
	Reload func() (config.Config, error)
	// ConfigFile is watched for changes (an edit reloads); empty: only
	// SIGHUP or Agent.Reload reload.
	ConfigFile string
	Logger     *slog.Logger
	// Drill is the restore drill; nil leaves the drill job off.
	Drill DrillFunc
	// CloudSnapshot takes ECS snapshot sets; nil leaves that job off.
	CloudSnapshot CloudSnapshotFunc
	// ShutdownTimeout is how long a running job may take to finish after a
	// stop signal before it is abandoned (its version is then not
	// committed). Default 30 s.
	ShutdownTimeout time.Duration
	// StoreProbe is how often the second disk is checked (and, while it is
	// gone, retried). Default 10 s.
	StoreProbe time.Duration
	// CatchUpCheck is how often the agent compares the wall clock with the
	// scheduled runs, to catch up once after the host slept. Default 15 s.
	CatchUpCheck time.Duration
	// FirstCheckDelay is when a drill or verify that has never run first
	// runs, so a new install has a verified version soon (default 1m).
	FirstCheckDelay time.Duration
	// StatusDeltaEvery is how often at most the status file is rewritten
	// when only the delta stream's durable revision moved (every
	// etcd.deltaFlush on a live cluster); any other change is written
	// within statusMinGap. Default 30 s.
	StatusDeltaEvery time.Duration
	// DeltaHeartbeat is how often an idle delta stream asks etcd for
	// progress and writes the answer as a progress mark (an empty
	// segment), so a point-in-time restore reaches moments after the last
	// change; a dead etcd is noticed within about three of them. Default:
	// etcd.deltaFlush.
	DeltaHeartbeat time.Duration
	// NoSignals leaves SIGHUP alone (tests running several agents).
	NoSignals bool
	// OffsiteRetry is the backoff of a tier's uploads within one sync
	// (zero: DefaultOffsiteRetry); the job retries a failed sync after.
	OffsiteRetry tiers.Retry
	// OffsiteJournalEvery is how often at most journal segments are
	// shipped to the tiers as they seal (default 10 s).
	OffsiteJournalEvery time.Duration
	// OffsiteVersionDelay is how long after a committed version the
	// tiers' sync starts; versions committed meanwhile share it (default
	// 5 s).
	OffsiteVersionDelay time.Duration
}

// Agent runs the jobs for one store.
type Agent struct {
	opts Config
	log  *slog.Logger
	m    *metrics
	// now is the wall clock; tests shift it to simulate a sleeping host.
	now func() time.Time

	cfgMu sync.Mutex
	cfg   config.Config

	store *rsyncish.Store

	stMu  sync.Mutex
	state FileState
	// statusDirty: the state changed and the status file should follow
	// promptly; statusDelta: only how far the delta stream is durable
	// moved, which the file follows within StatusDeltaEvery. statusAt
	// is when it was last written (monotonic). Under stMu; statusKick
	// wakes statusLoop.
	statusDirty bool
	statusDelta bool
	statusAt    time.Time
	statusKick  chan struct{}
	// newest is the newest version's state, for /healthz (under stMu).
	newest *VersionRef
	// statusMu makes writeStatus one writer at a time, so a file written
	// from an older snapshot never replaces a newer one.
	statusMu sync.Mutex

	sched   gocron.Scheduler
	jobsMu  sync.Mutex
	jobs    map[string]*jobRunner
	storeMu chan struct{} // serialises the agent's own store writers

	runMu    sync.RWMutex
	stopping bool
	inflight sync.WaitGroup
	jobCtx   context.Context
	jobStop  context.CancelFunc

	storeOK    atomic.Bool
	storeKick  chan struct{}
	deltaKick  chan struct{}
	rewatch    chan struct{}
	deltaMu    sync.Mutex
	deltaBase  deltaPoint // newest snapshot the stream may start from
	deltaChain *deltaPoint
	deltaStop  context.CancelFunc
	// deltaTail is where the journal is durable (read from it at start):
	// a chain that starts beyond it leaves a gap.
	deltaTail *deltaPoint
	// journal is what the last journal version checked of the journal,
	// so the next one reads only what was written since.
	journal backup.JournalCache
	// deltaWanted: the delta loop has what it needs to stream (a
	// snapshot, etcd's address, the store) and tries to.
	deltaWanted atomic.Bool

	// etcdDownSince is when the etcd API stopped answering (zero while it
	// answers); etcdLastUp when it last answered. Under stMu.
	etcdDownSince time.Time
	etcdLastUp    time.Time

	setMu      sync.Mutex
	discovered *layout.Set

	srvMu sync.Mutex
	srv   *metricsServer

	// watching is set once the change watches are in place.
	watching atomic.Bool

	// Off-site tiers (offsite.go): per-tier state under offMu; offGate
	// is shared by syncs and taken alone by prune; offKick wakes the
	// journal shipper.
	offMu       sync.Mutex
	offTiers    map[string]*offsiteTier
	offMarkKick time.Time
	offGate     sync.RWMutex
	offKick     chan struct{}

	// hooks for tests
	beforeBackup func()
}

// New checks the configuration and builds an agent; Run starts it.
func New(c Config) (*Agent, error) {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.StoreProbe <= 0 {
		c.StoreProbe = 10 * time.Second
	}
	if c.FirstCheckDelay <= 0 {
		c.FirstCheckDelay = time.Minute
	}
	if c.CatchUpCheck <= 0 {
		c.CatchUpCheck = 15 * time.Second
	}
	if c.StatusDeltaEvery <= 0 {
		c.StatusDeltaEvery = defaultStatusDeltaEvery
	}
	if c.OffsiteJournalEvery <= 0 {
		c.OffsiteJournalEvery = defaultOffsiteJournalEvery
	}
	if c.OffsiteVersionDelay <= 0 {
		c.OffsiteVersionDelay = defaultOffsiteVersionDelay
	}
	if err := c.Settings.Validate("agent settings", nil); err != nil {
		return nil, err
	}
	a := &Agent{
		opts:       c,
		log:        c.Logger,
		now:        time.Now,
		cfg:        c.Settings,
		jobs:       map[string]*jobRunner{},
		storeMu:    make(chan struct{}, 1),
		storeKick:  make(chan struct{}, 1),
		deltaKick:  make(chan struct{}, 1),
		rewatch:    make(chan struct{}, 1),
		statusKick: make(chan struct{}, 1),
		offKick:    make(chan struct{}, 1),
		offTiers:   map[string]*offsiteTier{},
		state:      FileState{Jobs: map[string]*JobState{}},
	}
	a.m = newMetrics(func() time.Time { return a.now() })
	a.jobCtx, a.jobStop = context.WithCancel(context.Background())
	return a, nil
}

func (a *Agent) config() config.Config {
	a.cfgMu.Lock()
	defer a.cfgMu.Unlock()
	return a.cfg
}

// MetricsAddr is the address the metrics server listens on ("" when off).
func (a *Agent) MetricsAddr() string {
	a.srvMu.Lock()
	defer a.srvMu.Unlock()
	if a.srv == nil {
		return ""
	}
	return a.srv.addr
}

// Run runs the agent until ctx ends (SIGTERM/SIGINT in the CLI), then stops
// scheduling, lets running jobs finish within ShutdownTimeout or abandons
// them cleanly, and returns nil. It returns an error only when it cannot
// start at all: the metrics address is unusable or another agent holds
// the store.
func (a *Agent) Run(ctx context.Context) error {
	cfg := a.config()
	if cfg.Metrics.Listen != "" {
		srv, err := startMetricsServer(cfg.Metrics.Listen, a.m, a.health)
		if err != nil {
			return err
		}
		a.srvMu.Lock()
		a.srv = srv
		a.srvMu.Unlock()
		a.log.Info("metrics listening", "addr", srv.addr)
	}
	defer func() {
		a.srvMu.Lock()
		a.srv.close()
		a.srv = nil
		a.srvMu.Unlock()
	}()

	if !a.openStore(ctx, cfg) {
		return nil // stopped while waiting for the second disk
	}
	af := a.store.AgentFiles()
	release, err := af.Lock()
	if err != nil {
		return err
	}
	defer release()
	if err := af.RemoveStatusTemps(); err != nil {
		a.log.Warn("could not remove temp files of earlier status writes", "err", err)
	}

	prev, err := readStatusFrom(af)
	if err != nil {
		a.log.Warn("previous agent status unreadable; starting with none", "err", err)
		prev = &FileState{Jobs: map[string]*JobState{}}
	}
	a.stMu.Lock()
	a.state = FileState{PID: os.Getpid(), Started: a.now().UTC(), Jobs: prev.Jobs, Etcd: prev.Etcd, Offsite: prev.Offsite}
	for _, js := range a.state.Jobs {
		js.NextRun = nil
	}
	a.stMu.Unlock()
	a.m.deltaGaps.Add(float64(prev.Etcd.DeltaGaps))
	a.loadDeltaTail()
	a.resumeDeltaChain(cfg)
	a.rediscover(cfg)
	a.refreshStoreStats()

	sched, err := gocron.NewScheduler(
		gocron.WithLocation(time.UTC),
		gocron.WithLogger(gocronLogger{a.log}),
		// Jobs end through the agent's own shutdown path first; this
		// only bounds gocron's wait for its goroutines.
		gocron.WithStopTimeout(5*time.Second),
	)
	if err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	a.sched = sched
	a.schedule(cfg, true)
	sched.Start()
	a.log.Info("agent started", "store", a.store.Dir(), "root", cfg.Root, "backupEvery", cfg.Schedules.Backup.String(),
		"pid", os.Getpid())

	bgCtx, bgStop := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	goBG := func(f func(context.Context)) {
		bg.Add(1)
		go func() { defer bg.Done(); f(bgCtx) }()
	}
	goBG(a.storeMonitor)
	goBG(a.catchUpLoop)
	goBG(a.statusLoop)
	goBG(a.watchLoop)
	goBG(a.deltaLoop)
	goBG(a.offsiteJournalLoop)
	if a.opts.Reload != nil && !a.opts.NoSignals {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		goBG(func(ctx context.Context) {
			for {
				select {
				case <-ctx.Done():
					return
				case <-hup:
					a.log.Info("SIGHUP: reloading the configuration")
					_ = a.Reload()
				}
			}
		})
	}

	<-ctx.Done()
	a.shutdown(sched)
	bgStop()
	bg.Wait()
	a.writeStatus()
	a.log.Info("agent stopped")
	return nil
}

// openStore opens (or creates) the store, waiting for the second disk if
// it is not there yet. It returns false when ctx ended first.
func (a *Agent) openStore(ctx context.Context, cfg config.Config) bool {
	logged := false
	for {
		s, err := rsyncish.Open(cfg.Store.Path, storeOptions(cfg.Store, a, false))
		if err == nil {
			a.store = s
			a.storeOK.Store(true)
			a.m.storeOK.Set(1)
			if logged {
				a.log.Info("second disk is available; starting", "store", cfg.Store.Path)
			}
			return true
		}
		a.m.storeOK.Set(0)
		if !logged {
			a.log.Error("cannot open the store on the second disk; retrying until it is available",
				"store", cfg.Store.Path, "err", err, "retryEvery", a.opts.StoreProbe.String())
			logged = true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(a.opts.StoreProbe):
		}
	}
}

// shutdown stops new runs, waits for running ones up to ShutdownTimeout,
// then cancels them: an abandoned backup aborts its version writer, which
// leaves the store exactly as before it started.
func (a *Agent) shutdown(sched gocron.Scheduler) {
	a.runMu.Lock()
	a.stopping = true
	a.runMu.Unlock()
	a.jobsMu.Lock()
	for _, j := range a.jobs {
		j.stopRetry()
	}
	a.jobsMu.Unlock()
	a.log.Info("stopping: no new runs; letting running jobs finish", "timeout", a.opts.ShutdownTimeout.String())
	done := make(chan struct{})
	go func() { a.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(a.opts.ShutdownTimeout):
		a.log.Warn("running jobs did not finish in time; abandoning them (uncommitted versions are discarded)")
		a.jobStop()
		<-done
	}
	a.jobStop()
	if err := sched.Shutdown(); err != nil {
		a.log.Warn("scheduler shutdown", "err", err)
	}
}

// beginRun registers a run unless the agent is stopping.
func (a *Agent) beginRun() bool {
	a.runMu.RLock()
	defer a.runMu.RUnlock()
	if a.stopping {
		return false
	}
	a.inflight.Add(1)
	return true
}

// withStore runs f holding the agent's store slot, so the agent's own
// writers (backup, prune, verify, drill) never contend for the store lock.
func (a *Agent) withStore(ctx context.Context, f func() error) error {
	select {
	case a.storeMu <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-a.storeMu }()
	return f()
}

func (a *Agent) storeError() string {
	a.stMu.Lock()
	defer a.stMu.Unlock()
	return a.state.StoreError
}

// storeMonitor probes the second disk on a fixed cadence so that its loss
// is reported even between jobs, and so that writing resumes (with a
// backup at once) as soon as it is back.
func (a *Agent) storeMonitor(ctx context.Context) {
	t := time.NewTicker(a.opts.StoreProbe)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.storeKick:
		}
		a.checkStore()
	}
}

// checkStore probes the store and handles the transitions; it returns the
// probe's error.
func (a *Agent) checkStore() error {
	err := probeStore(a.config().Store, a)
	a.updateStoreFull()
	was := a.storeOK.Load()
	switch {
	case err != nil && was:
		a.storeOK.Store(false)
		a.m.storeOK.Set(0)
		a.stMu.Lock()
		a.state.StoreError = err.Error()
		a.statusChangedLocked()
		a.stMu.Unlock()
		a.log.Error("ALERT: second disk missing or read-only; stopped writing backups, retrying",
			"store", a.store.Dir(), "err", err, "retryEvery", a.opts.StoreProbe.String())
	case err == nil && !was:
		a.storeOK.Store(true)
		a.m.storeOK.Set(1)
		a.stMu.Lock()
		a.state.StoreError = ""
		a.statusChangedLocked()
		a.stMu.Unlock()
		a.log.Info("second disk is back; resuming backups", "store", a.store.Dir())
		kick(a.deltaKick)
		if j := a.job(JobBackup); j != nil {
			go a.trigger(j, "second disk is back", false)
		}
	}
	return err
}

// updateStoreFull sets kubekeep_store_full from storeFull.
func (a *Agent) updateStoreFull() {
	full, _ := a.storeFull()
	a.m.storeFull.Set(b2f(full))
}

func kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Status file cadence: a change of state is written at most statusMinGap
// after the previous write (a burst of changes shares one write), a
// change of the delta stream's durable revision alone at most every
// StatusDeltaEvery.
const (
	statusMinGap            = 2 * time.Second
	defaultStatusDeltaEvery = 30 * time.Second
)

// statusChangedLocked notes a change the status file should show
// promptly. The caller holds stMu.
func (a *Agent) statusChangedLocked() {
	a.statusDirty = true
	kick(a.statusKick)
}

// statusDeltaLocked notes that only the delta stream's durable point
// moved. The caller holds stMu.
func (a *Agent) statusDeltaLocked() {
	if !a.statusDelta {
		a.statusDelta = true
		kick(a.statusKick)
	}
}

// statusLoop writes the status file when something changed, and sleeps
// while nothing does: on a live cluster the delta stream moves every
// etcd.deltaFlush, and a write for each (an fsync, and a wakeup of an
// otherwise idle agent) would cost more than the stream's own segments
// (issue 14: the idle agent's CPU).
func (a *Agent) statusLoop(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-a.statusKick:
		case <-t.C:
		}
		a.stMu.Lock()
		dirty, delta, at := a.statusDirty, a.statusDelta, a.statusAt
		a.stMu.Unlock()
		var due time.Time
		switch {
		case dirty:
			due = at.Add(statusMinGap)
		case delta:
			due = at.Add(a.opts.StatusDeltaEvery)
		default:
			continue
		}
		if wait := time.Until(due); wait > 0 {
			t.Reset(wait)
			continue
		}
		t.Stop()
		a.writeStatus()
	}
}

// writeStatus refreshes next-run times from the scheduler and writes the
// status file (skipped while the second disk is unavailable). Jobs, the
// status loop and reloads call it concurrently; one at a time writes.
func (a *Agent) writeStatus() {
	a.statusMu.Lock()
	defer a.statusMu.Unlock()
	next := map[string]time.Time{}
	cpu := map[string]time.Duration{}
	a.jobsMu.Lock()
	for name, j := range a.jobs {
		j.mu.Lock()
		cpu[name] = j.lastCPU
		var notBefore time.Time
		if spacing := a.budgetSpacing(j); name == JobBackup && spacing > 0 {
			// gocron's ticks are on the real clock; so is this.
			notBefore = time.Now().Add(j.lastStart.Add(spacing).Sub(a.now()))
		}
		j.mu.Unlock()
		if j.gjob == nil {
			continue
		}
		t, err := j.gjob.NextRun()
		if err != nil || t.IsZero() {
			continue
		}
		if t.Before(notBefore) && j.interval > 0 {
			// The first tick the CPU budget does not skip (jitter aside).
			// Not gocron's NextRuns: for a jittered job it draws from the
			// job's unsynchronised rand while the scheduler does too.
			t = t.Add(((notBefore.Sub(t) + j.interval - 1) / j.interval) * j.interval)
		}
		next[name] = t.UTC().Round(0)
	}
	a.jobsMu.Unlock()
	a.stMu.Lock()
	for name, js := range a.state.Jobs {
		if t, ok := next[name]; ok && js.Disabled == "" {
			js.NextRun = &t
		} else {
			js.NextRun = nil
		}
		js.LastCPU = roundSec(cpu[name])
	}
	a.state.Updated = a.now().UTC()
	snap := a.state
	snap.Jobs = make(map[string]*JobState, len(a.state.Jobs))
	for k, v := range a.state.Jobs {
		c := *v
		snap.Jobs[k] = &c
	}
	a.statusDirty, a.statusDelta, a.statusAt = false, false, time.Now()
	a.stMu.Unlock()
	if a.store == nil || !a.storeOK.Load() {
		return
	}
	// The second disk may have gone since the last probe: a failed delta
	// write is often the first sign, and the status change it makes is
	// written at once. The file must never land on a bare mountpoint, so
	// the store is checked as the probe checks it (mountpoint, config
	// file), without the probe's write.
	sc := a.config().Store
	if _, err := rsyncish.Open(sc.Path, storeOptions(sc, a, true)); err != nil {
		kick(a.storeKick)
		return
	}
	if err := writeStatusTo(a.store.AgentFiles(), &snap); err != nil {
		a.log.Warn("could not write the agent status file", "err", err)
	}
}

// refreshStoreStats updates the store gauges and the newest-version times.
func (a *Agent) refreshStoreStats() {
	if a.store == nil || !a.storeOK.Load() {
		return
	}
	vs, err := a.store.Versions()
	if err != nil {
		a.log.Warn("listing versions for the metrics", "err", err)
		return
	}
	a.m.versions.Set(float64(len(vs)))
	var newestRef *VersionRef
	var good time.Time
	if len(vs) > 0 {
		newestRef = versionRef(vs[len(vs)-1])
	}
	if g, ok := rsyncish.NewestGoodOf(vs); ok {
		good = g.Time
	}
	a.stMu.Lock()
	a.newest = newestRef
	a.stMu.Unlock()
	a.m.setNewest(newestRef, good)
	var newest, verified time.Time
	var rev int64
	for i := len(vs) - 1; i >= 0; i-- {
		v := vs[i]
		if newest.IsZero() {
			newest = v.Time
		}
		if verified.IsZero() && v.Verified {
			verified = v.Time
		}
		if rev == 0 {
			if info := versionread.VersionEtcd(v); info != nil && info.Verified {
				rev = info.Revision
				a.m.covered(v.Time)
			}
		}
	}
	a.m.setTimes(newest, verified)
	a.m.etcdRevision.Set(float64(rev))
	if used, free, err := a.store.Usage(); err == nil {
		a.m.storeUsed.Set(float64(used))
		a.m.storeFree.Set(float64(free))
	}
}

// gocronLogger sends gocron's own messages to slog at debug level, except
// errors.
type gocronLogger struct{ l *slog.Logger }

func (g gocronLogger) Debug(msg string, args ...any) { g.l.Debug("gocron: "+msg, args...) }
func (g gocronLogger) Info(msg string, args ...any)  { g.l.Debug("gocron: "+msg, args...) }
func (g gocronLogger) Warn(msg string, args ...any)  { g.l.Warn("gocron: "+msg, args...) }
func (g gocronLogger) Error(msg string, args ...any) { g.l.Error("gocron: "+msg, args...) }

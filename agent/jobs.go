package agent

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-co-op/gocron/v2"

	"github.com/kubekeep/kubekeep/config"
)

// jobRunner is one named job. Runs of a job never overlap: a trigger that
// arrives while it runs (a file change) is remembered and runs once after,
// a scheduled tick that arrives while it runs is dropped.
type jobRunner struct {
	name     string
	run      func(ctx context.Context) (int64, error) // bytes written
	interval time.Duration
	jitter   time.Duration

	mu        sync.Mutex
	running   bool
	pending   string // reason of a trigger that arrived mid-run
	lastStart time.Time
	lastCPU   time.Duration // the process's CPU during the last run
	failures  int
	retry     *time.Timer
	gjob      gocron.Job
}

func (j *jobRunner) stopRetry() {
	j.mu.Lock()
	if j.retry != nil {
		j.retry.Stop()
		j.retry = nil
	}
	j.mu.Unlock()
}

func (a *Agent) job(name string) *jobRunner {
	a.jobsMu.Lock()
	defer a.jobsMu.Unlock()
	return a.jobs[name]
}

type jobSpec struct {
	name     string
	interval time.Duration
	off      string // why the job is off; "" when on
	run      func(context.Context) (int64, error)
}

func (a *Agent) specs(cfg config.Config) []jobSpec {
	s := cfg.Schedules
	cloudOff := ""
	switch {
	case !cfg.Cloud.Enabled:
		cloudOff = "cloud.enabled is false"
	case cfg.Cloud.Mode != "agent":
		cloudOff = "cloud.mode is " + cfg.Cloud.Mode + ": ECS's own policy takes the snapshots"
	case a.opts.CloudSnapshot == nil:
		cloudOff = "no cloud snapshot support in this build"
	case s.CloudSnapshot <= 0:
		cloudOff = "schedules.cloudSnapshot is 0"
	}
	drillOff := ""
	switch {
	case a.opts.Drill == nil:
		drillOff = "the restore drill is not available in this build"
	case s.Drill <= 0:
		drillOff = "schedules.drill is 0"
	}
	zeroOff := func(d time.Duration, key string) string {
		if d <= 0 {
			return key + " is 0"
		}
		return ""
	}
	return append([]jobSpec{
		{JobBackup, s.Backup, "", a.backupJob},
		{JobCloudSnapshot, s.CloudSnapshot, cloudOff, a.cloudJob},
		{JobPrune, s.Prune, zeroOff(s.Prune, "schedules.prune"), a.pruneJob},
		{JobVerify, s.Verify, zeroOff(s.Verify, "schedules.verify"), a.verifyJob},
		{JobDrill, s.Drill, drillOff, a.drillJob},
	}, a.offsiteSpecs(cfg)...)
}

// effectiveJitter keeps jitter well inside the interval: a 30 s jitter on
// a 10 s test schedule would make the schedule meaningless.
func effectiveJitter(interval, jitter time.Duration) time.Duration {
	return min(jitter, interval/4)
}

// schedule (re)creates the gocron jobs whose interval or jitter changed.
// The first run of a job follows its last run (kept in the status file
// across agent restarts) plus the interval, so a daily job still runs
// daily when the agent restarts more often than that; a job that is
// overdue runs once, at once. At start the backup always runs at once.
func (a *Agent) schedule(cfg config.Config, starting bool) {
	a.offsiteSetup(cfg)
	a.jobsMu.Lock()
	defer a.jobsMu.Unlock()
	specs := a.specs(cfg)
	// A tier dropped from the config: its sync stops.
	for name, j := range a.jobs {
		if !strings.HasPrefix(name, JobOffsitePrefix) || slices.ContainsFunc(specs, func(sp jobSpec) bool { return sp.name == name }) {
			continue
		}
		specs = append(specs, jobSpec{name: name, off: "the tier is no longer in the config's offsite list", run: j.run})
	}
	for _, sp := range specs {
		j := a.jobs[sp.name]
		if j == nil {
			j = &jobRunner{name: sp.name}
			a.jobs[sp.name] = j
		}
		j.run = sp.run
		jit := effectiveJitter(sp.interval, cfg.Schedules.Jitter)
		a.stMu.Lock()
		js := a.state.Jobs[sp.name]
		if js == nil {
			js = &JobState{}
			a.state.Jobs[sp.name] = js
		}
		js.Disabled = sp.off
		last := latest(js.LastSuccess, js.LastFailure)
		a.stMu.Unlock()

		if sp.off != "" {
			j.stopRetry()
			if j.gjob != nil {
				_ = a.sched.RemoveJob(j.gjob.ID())
				j.gjob = nil
			}
			if starting || j.interval != 0 {
				a.log.Info("job off", "job", sp.name, "reason", sp.off)
			}
			j.interval = 0
			continue
		}
		// The failure counter at 0 before the first run: increase() over
		// a counter that appears at 1 does not count that first failure.
		a.m.failures.WithLabelValues(sp.name)
		if j.gjob != nil && j.interval == sp.interval && j.jitter == jit {
			continue
		}
		if j.gjob != nil {
			_ = a.sched.RemoveJob(j.gjob.ID())
			j.gjob = nil
		}
		j.interval, j.jitter = sp.interval, jit
		j.mu.Lock()
		if !j.lastStart.IsZero() {
			last = j.lastStart
		}
		j.mu.Unlock()

		// A strict interval, its phase jittered: the first run is moved by
		// up to the jitter, then every run follows the one before by
		// exactly the interval. (A random gap per run, as before, made the
		// average gap interval + jitter/2: 11.4 versions an hour instead
		// of 12 at the defaults, against "a version every 5 minutes".)
		def := gocron.DurationJob(sp.interval)
		now := a.now()
		first := now.Add(sp.interval)
		if !last.IsZero() {
			first = last.Add(sp.interval)
		} else if sp.name == JobDrill || sp.name == JobVerify {
			// A new install must not wait a day for its first verified
			// version: check shortly after the first backup instead.
			first = now.Add(min(sp.interval, a.opts.FirstCheckDelay))
		}
		if jit > 0 {
			first = first.Add(rand.N(jit))
		}
		if sp.name == JobBackup && starting {
			first = now
		}
		start := gocron.WithStartImmediately()
		if first.Sub(now) > time.Second {
			// gocron compares with its own clock; hand it a time on that
			// clock so a shifted test clock does not confuse it.
			start = gocron.WithStartDateTime(time.Now().Add(first.Sub(now)))
		}
		jr := j
		gj, err := a.sched.NewJob(def,
			gocron.NewTask(func() { a.trigger(jr, "schedule", true) }),
			gocron.WithName(sp.name),
			gocron.WithSingletonMode(gocron.LimitModeReschedule),
			gocron.WithStartAt(start),
		)
		if err != nil {
			a.log.Error("cannot schedule job", "job", sp.name, "err", err)
			continue
		}
		j.gjob = gj
		a.log.Info("job scheduled", "job", sp.name, "every", sp.interval.String(), "jitter", jit.String(),
			"firstRun", first.UTC().Round(time.Second).Format(time.RFC3339))
	}
	a.stMu.Lock()
	a.statusChangedLocked()
	a.stMu.Unlock()
}

// budgetSpacing is how far apart scheduled backups must be for the last
// one's CPU to stay within the budget; 0 when the interval already is.
// The caller holds j.mu.
func (a *Agent) budgetSpacing(j *jobRunner) time.Duration {
	budget := a.config().Schedules.BackupCPUBudget.Fraction()
	if budget <= 0 || j.lastCPU <= 0 || j.lastStart.IsZero() {
		return 0
	}
	spacing := time.Duration(float64(j.lastCPU) / budget)
	if spacing <= j.interval {
		return 0
	}
	return spacing
}

// processCPU is the CPU this process and its finished children (the
// snapshot check runs in one) have used so far.
func processCPU() time.Duration {
	var self, children syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &self) != nil || syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children) != nil {
		return 0
	}
	tv := func(t syscall.Timeval) time.Duration { return time.Duration(t.Nano()) }
	return tv(self.Utime) + tv(self.Stime) + tv(children.Utime) + tv(children.Stime)
}

func latest(ts ...*time.Time) time.Time {
	var out time.Time
	for _, t := range ts {
		if t != nil && t.After(out) {
			out = *t
		}
	}
	return out
}

// trigger runs job j now unless it is running (then a non-scheduled
// trigger is remembered and runs right after), or the agent is stopping,
// or - for a scheduled tick - it ran less than half an interval ago, which
// is how the late tick after a catch-up run is dropped.
func (a *Agent) trigger(j *jobRunner, reason string, scheduled bool) {
	j.mu.Lock()
	if j.running {
		if !scheduled {
			j.pending = reason
		}
		j.mu.Unlock()
		return
	}
	if scheduled && !j.lastStart.IsZero() && j.interval > 0 && a.now().Round(0).Sub(j.lastStart) < j.interval/2 {
		j.mu.Unlock()
		a.log.Debug("scheduled run skipped: the job ran recently", "job", j.name)
		return
	}
	if scheduled && j.name == JobBackup {
		if spacing := a.budgetSpacing(j); spacing > 0 && a.now().Round(0).Sub(j.lastStart) < spacing {
			last := j.lastCPU
			j.mu.Unlock()
			a.log.Info("scheduled backup skipped to stay within the CPU budget", "lastBackupCPU", last.Round(10*time.Millisecond).String(),
				"budget", a.config().Schedules.BackupCPUBudget.String(), "backupEvery", spacing.Round(time.Second).String(),
				"hint", "etcd changes keep streaming to the store; schedules.backupCPUBudget: 0% backs up at every interval")
			a.m.budgetSkips.Inc()
			return
		}
	}
	if !a.beginRun() {
		j.mu.Unlock()
		return
	}
	j.running = true
	j.mu.Unlock()
	defer a.inflight.Done()
	for {
		a.execute(j, reason)
		j.mu.Lock()
		a.runMu.RLock()
		stopping := a.stopping
		a.runMu.RUnlock()
		if j.pending == "" || stopping {
			j.running, j.pending = false, ""
			j.mu.Unlock()
			return
		}
		reason = j.pending
		j.pending = ""
		j.mu.Unlock()
	}
}

// execute runs j once and records the outcome.
func (a *Agent) execute(j *jobRunner, reason string) {
	start := a.now()
	j.mu.Lock()
	j.lastStart = start.Round(0)
	run := j.run
	j.mu.Unlock()
	a.log.Info("job starting", "job", j.name, "reason", reason)
	var n int64
	var err error
	cpu0 := processCPU()
	if !a.storeOK.Load() {
		err = fmt.Errorf("not writing: %s", a.storeError())
	} else if err = a.checkStore(); err == nil {
		n, err = run(a.jobCtx)
	}
	dur := a.now().Sub(start)
	cpu := processCPU() - cpu0
	j.mu.Lock()
	j.lastCPU = cpu
	j.mu.Unlock()
	a.m.cpu.WithLabelValues(j.name).Set(cpu.Seconds())
	if err != nil && a.jobCtx.Err() != nil {
		a.log.Warn("job abandoned at shutdown", "job", j.name, "err", err)
		return
	}
	a.record(j.name, start, dur, n, err)
	// A backup streams a whole etcd snapshot through buffers; hand that
	// memory back to the OS now rather than keep it for 5 idle minutes
	// (the cost is two GCs per job: gRPC pools its message buffers in
	// sync.Pools, which only the second GC after their last use empties).
	runtime.GC()
	debug.FreeOSMemory()
	if err != nil {
		a.scheduleRetry(j)
	} else {
		j.mu.Lock()
		j.failures = 0
		if j.retry != nil {
			j.retry.Stop()
			j.retry = nil
		}
		j.mu.Unlock()
	}
}

// record stores a job outcome in the status and the metrics.
func (a *Agent) record(name string, start time.Time, dur time.Duration, bytes int64, err error) {
	a.recordQuiet(name, start, dur, bytes, err, true)
}

// recordQuiet is record with the log line optional: a stream that retries
// every second must not write an error line every second.
func (a *Agent) recordQuiet(name string, start time.Time, dur time.Duration, bytes int64, err error, logIt bool) {
	end := start.Add(dur).UTC()
	a.m.runs.WithLabelValues(name).Inc()
	// The failure counter exists (at 0) from the job's first run on: an
	// alert on increase() counts a failure only once the series is there.
	failures := a.m.failures.WithLabelValues(name)
	a.m.duration.WithLabelValues(name).Set(dur.Seconds())
	if bytes > 0 {
		a.m.bytesWritten.WithLabelValues(name).Add(float64(bytes))
	}
	a.stMu.Lock()
	js := a.state.Jobs[name]
	if js == nil {
		js = &JobState{}
		a.state.Jobs[name] = js
	}
	js.LastDuration = roundSec(dur)
	if err != nil {
		js.LastFailure, js.LastError = &end, err.Error()
		js.Failures++
		failures.Inc()
		a.m.lastFailure.WithLabelValues(name).Set(float64(end.UnixNano()) / 1e9)
	} else {
		js.LastSuccess = &end
		js.Failures = 0
		a.m.lastSuccess.WithLabelValues(name).Set(float64(end.UnixNano()) / 1e9)
	}
	fails := js.Failures
	a.statusChangedLocked()
	a.stMu.Unlock()
	switch {
	case !logIt:
	case err != nil:
		a.log.Error("job failed; will retry", "job", name, "err", err, "consecutiveFailures", fails,
			"duration", dur.Round(time.Millisecond).String())
	default:
		a.log.Info("job done", "job", name, "duration", dur.Round(time.Millisecond).String(), "bytesWritten", bytes)
	}
	a.updateStoreFull()
	a.writeStatus()
}

// backoff is the delay before the n-th retry (n from 1): exponential from
// a twentieth of the interval (at least 1 s, at most 30 s), never beyond
// the interval itself or 5 minutes.
func backoff(interval time.Duration, n int) time.Duration {
	base := min(max(interval/20, time.Second), 30*time.Second)
	limit := min(max(interval, time.Second), 5*time.Minute)
	d := base
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

func (a *Agent) scheduleRetry(j *jobRunner) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.failures++
	if j.retry != nil {
		j.retry.Stop()
	}
	interval := j.interval
	if interval <= 0 {
		interval = a.config().Schedules.Backup
	}
	d := backoff(interval, j.failures)
	j.retry = time.AfterFunc(d, func() { a.trigger(j, fmt.Sprintf("retry %d after a failure", j.failuresNow()), false) })
}

func (j *jobRunner) failuresNow() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.failures
}

// catchUpLoop makes a run that fell due while the host slept happen once,
// promptly. Go timers (and so gocron's) run on the monotonic clock, which
// stops during suspend: after a night asleep the next tick would still be
// up to one whole interval away. The wall clock does not stop, so a run
// whose wall-clock time has passed is started here, once; gocron's own
// late tick is then dropped by trigger's recent-run check.
func (a *Agent) catchUpLoop(ctx context.Context) {
	t := time.NewTicker(a.opts.CatchUpCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		grace := a.opts.CatchUpCheck + 2*time.Second
		now := a.now().Round(0)
		a.jobsMu.Lock()
		var due []*jobRunner
		for _, j := range a.jobs {
			if j.gjob == nil {
				continue
			}
			next, err := j.gjob.NextRun()
			if err != nil || next.IsZero() {
				continue
			}
			next = next.Round(0)
			j.mu.Lock()
			// Overdue on the wall clock, and the run that fell due has not
			// started (the last start is from before that slot).
			// Half an interval of slack keeps a run that was merely held up
			// by a long previous run (gocron then skips a tick) from
			// counting as missed.
			overdue := now.After(next.Add(grace+j.interval/2)) && j.lastStart.Before(next.Add(-j.interval/2)) && !j.running
			if spacing := a.budgetSpacing(j); j.name == JobBackup && spacing > 0 && now.Sub(j.lastStart) < spacing {
				overdue = false // the CPU budget would have skipped that run anyway
			}
			j.mu.Unlock()
			if overdue {
				due = append(due, j)
			}
		}
		a.jobsMu.Unlock()
		for _, j := range due {
			a.log.Warn("a scheduled run was missed (the host slept or the clock jumped); running it once now", "job", j.name)
			go a.trigger(j, "catch-up after a missed run", false)
		}
	}
}

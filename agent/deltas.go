package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"reflect"
	"strings"
	"time"

	"github.com/kubekeep/kubekeep/backup"
	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/layout"
)

// deltaPoint is where a delta chain starts or resumes: every change after
// Rev is still to be written.
type deltaPoint struct {
	Rev  int64
	Time time.Time
}

// newDeltaBase records a fresh verified snapshot. A running chain keeps
// going (it covers the new snapshot too); a stopped one may now start.
func (a *Agent) newDeltaBase(rev int64, t time.Time) {
	a.deltaMu.Lock()
	if rev > a.deltaBase.Rev {
		a.deltaBase = deltaPoint{rev, t}
	}
	a.deltaMu.Unlock()
	kick(a.deltaKick)
}

// restartDeltas ends the running stream so that it restarts with the
// current settings (after a reload or a rediscovery changed how to reach
// etcd).
func (a *Agent) restartDeltas() {
	a.deltaMu.Lock()
	stop := a.deltaStop
	a.deltaMu.Unlock()
	if stop != nil {
		stop()
	}
	kick(a.deltaKick)
}

// deltaLoop keeps the etcd watch-delta stream running into the store's
// journal. It starts from the newest snapshot this agent took; when the
// stream breaks (etcd down, a failed write) it resumes from what is
// durable, so the chain has no gap, even when backups were taken
// meanwhile; only when etcd compacted past that point does it ask for a
// new backup and start from it, which leaves a gap that status and
// metrics show (DeltaGap). While etcd is away it polls the endpoints'
// ports and reconnects the moment one accepts, so an etcd that restarts
// every few seconds is caught within its first second up.
func (a *Agent) deltaLoop(ctx context.Context) {
	failures := 0
	var logged deltaLog
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	for ctx.Err() == nil {
		cfg := a.config()
		a.deltaMu.Lock()
		start := a.deltaBase
		if a.deltaChain != nil {
			start = *a.deltaChain
		}
		a.deltaMu.Unlock()
		cc, haveEtcd := a.etcdClientConfig(cfg)
		if !cfg.Etcd.Deltas || start.Rev == 0 || !haveEtcd || !a.storeOK.Load() {
			a.deltaWanted.Store(false)
			select {
			case <-ctx.Done():
				return
			case <-a.deltaKick:
			}
			continue
		}
		a.deltaWanted.Store(true)
		wrote, err := a.streamOnce(ctx, cfg, cc, start)
		if ctx.Err() != nil {
			return
		}
		if err == nil { // restarted on purpose
			failures = 0
			continue
		}
		if wrote {
			failures = 0 // it worked until now: retry as after a first failure
		}
		failures++
		now := a.now()
		a.recordQuiet(JobEtcdDeltas, now, 0, 0, err, logged.should(now, err))
		var nse *etcdsnap.NeedSnapshotError
		var behind *etcdBehindError
		if errors.As(err, &behind) {
			// Another data dir (a rebuilt or restored etcd): neither the
			// chain nor a snapshot of the old one can be continued.
			a.deltaMu.Lock()
			a.deltaChain = nil
			if a.deltaBase.Rev > behind.etcdRev {
				a.deltaBase = deltaPoint{}
			}
			a.deltaMu.Unlock()
			if j := a.job(JobBackup); j != nil {
				go a.trigger(j, "etcd is behind the delta stream", false)
			}
		} else if errors.As(err, &nse) && nse.CompactRevision > 0 {
			a.deltaMu.Lock()
			a.deltaChain = nil
			stale := a.deltaBase.Rev < nse.CompactRevision
			a.deltaMu.Unlock()
			if stale {
				a.log.Warn("etcd compacted past the delta stream; taking a new backup to restart it", "compactRevision", nse.CompactRevision)
				if j := a.job(JobBackup); j != nil {
					go a.trigger(j, "etcd compacted past the delta stream", false)
				}
				a.deltaMu.Lock()
				a.deltaBase = deltaPoint{}
				a.deltaMu.Unlock()
			}
		}
		if !wait(a.deltaRetryDelay(cfg, failures, err)) {
			return
		}
	}
}

// deltaLog rate-limits the delta stream's failure log: a new error is
// logged at once, the same one again at most once a minute (the metrics
// and the status file count every failure).
type deltaLog struct {
	at  time.Time
	msg string
}

func (l *deltaLog) should(now time.Time, err error) bool {
	msg := err.Error()
	if msg == l.msg && now.Sub(l.at) < time.Minute {
		return false
	}
	l.at, l.msg = now, msg
	return true
}

// Delta stream retry delays: jittered, doubling from deltaRetryBase,
// capped at deltaRetryFlapping while etcd was reachable within
// deltaFlapWindow (an etcd that restarts, or one that is up between
// crashes), at deltaRetryMax otherwise and after a store failure.
const (
	deltaRetryBase     = 250 * time.Millisecond
	deltaRetryFlapping = 2 * time.Second
	deltaRetryMax      = 30 * time.Second
	deltaFlapWindow    = 5 * time.Minute
)

func (a *Agent) deltaRetryDelay(cfg config.Config, failures int, err error) time.Duration {
	limit := min(deltaRetryMax, max(cfg.Schedules.Backup, deltaRetryFlapping))
	a.stMu.Lock()
	lastUp := a.etcdLastUp
	a.stMu.Unlock()
	if !lastUp.IsZero() && a.now().Sub(lastUp) < deltaFlapWindow && !isNoSpace(err) && a.storeOK.Load() {
		limit = deltaRetryFlapping
	}
	d := deltaRetryBase
	for i := 1; i < failures && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	// ±50 %: several agents (or a restarting etcd's own clients) do not
	// retry in lockstep.
	return d/2 + rand.N(d)
}

// waitReachable returns once a TCP connection to one of the endpoints
// succeeds (or ctx ends): a port that refuses means etcd is not there,
// and a fresh client per attempt would each wait out its dial timeout,
// missing an etcd that is up only for a few seconds. The first refusal
// is reported as an outage; the polling itself is quiet.
func (a *Agent) waitReachable(ctx context.Context, cc etcdsnap.ClientConfig) {
	var hosts []string
	for _, ep := range cc.Endpoints {
		if h := endpointHost(ep); h != "" {
			hosts = append(hosts, h)
		}
	}
	if len(hosts) == 0 {
		return // let the client say what is wrong with them
	}
	since := a.now()
	reported := false
	for {
		for _, h := range hosts {
			d := net.Dialer{Timeout: 500 * time.Millisecond}
			c, err := d.DialContext(ctx, "tcp", h)
			if err == nil {
				c.Close()
				return
			}
			if ctx.Err() != nil {
				return
			}
			if !reported {
				reported = true
				a.etcdUnreachable(fmt.Errorf("etcd unreachable at %s: %w", strings.Join(hosts, ", "), err))
			}
		}
		// Poll fast while the outage is young; an etcd gone for long is
		// polled every couple of seconds.
		poll := 200 * time.Millisecond
		if a.now().Sub(since) > deltaFlapWindow {
			poll = 2 * time.Second
		}
		t := time.NewTimer(poll/2 + rand.N(poll))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// endpointHost is host:port of an etcd endpoint URL ("" when it is not a
// TCP one).
func endpointHost(ep string) string {
	if !strings.Contains(ep, "://") {
		ep = "https://" + ep
	}
	u, err := url.Parse(ep)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Hostname() == "" {
		return ""
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "2379")
	}
	return u.Host
}

// etcdUnreachable records that the etcd API did not answer.
func (a *Agent) etcdUnreachable(err error) {
	a.m.etcdAPIUp.Set(0)
	a.stMu.Lock()
	if a.etcdDownSince.IsZero() {
		a.etcdDownSince = a.now()
	}
	a.state.Etcd.APIUp, a.state.Etcd.Error = false, err.Error()
	a.statusDirty = true
	a.stMu.Unlock()
}

// etcdReachable records that the etcd API answered.
func (a *Agent) etcdReachable() {
	a.m.etcdAPIUp.Set(1)
	a.stMu.Lock()
	a.etcdDownSince = time.Time{}
	a.etcdLastUp = a.now()
	a.state.Etcd.APIUp, a.state.Etcd.Error = true, ""
	a.statusDirty = true
	a.stMu.Unlock()
}

// streamOnce runs one delta streamer until it stops; nil means it was
// stopped on purpose (restartDeltas or shutdown). wrote: it made at least
// one segment durable.
func (a *Agent) streamOnce(ctx context.Context, cfg config.Config, cc etcdsnap.ClientConfig, start deltaPoint) (wrote bool, err error) {
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	a.deltaMu.Lock()
	a.deltaStop = stop
	a.deltaMu.Unlock()
	a.waitReachable(runCtx, cc)
	if runCtx.Err() != nil {
		return false, nil
	}
	cli, st, ep, err := etcdsnap.ConnectAny(runCtx, cc)
	if err != nil {
		if runCtx.Err() != nil {
			return false, nil
		}
		a.etcdUnreachable(err)
		return false, fmt.Errorf("etcd deltas: %w", err)
	}
	defer cli.Close()
	inner, err := backup.DeltaSink(a.store)
	if err != nil {
		return false, fmt.Errorf("etcd deltas: %w", err)
	}
	a.etcdReachable()
	if rev := st.Header.GetRevision(); rev < start.Rev {
		// A watch from a revision etcd has not reached would wait for
		// it and skip everything below: not the cluster of this chain.
		return false, &etcdBehindError{endpoint: ep, etcdRev: rev, chainRev: start.Rev}
	}
	a.noteChainStart(start)
	a.log.Info("etcd delta stream started", "endpoint", ep, "afterRevision", start.Rev)
	sink := &journalSink{a: a, inner: inner}
	ds := etcdsnap.NewDeltaStreamer(cli, start.Rev, start.Time, sink, etcdsnap.DeltaConfig{Flush: cfg.Etcd.DeltaFlush, Heartbeat: a.opts.DeltaHeartbeat, Now: a.now})
	err = ds.Run(runCtx)
	cov := ds.Covered()
	wrote = cov.Segments > 0
	a.deltaMu.Lock()
	if cov.ToRev > 0 {
		a.deltaChain = &deltaPoint{cov.ToRev, cov.ToTime}
	}
	a.deltaMu.Unlock()
	if err != nil {
		var nse *etcdsnap.NeedSnapshotError
		if errors.As(err, &nse) && !sink.failed && nse.CompactRevision == 0 {
			a.etcdUnreachable(err)
		}
		return wrote, fmt.Errorf("etcd deltas: %w", err)
	}
	return wrote, nil
}

// etcdBehindError: etcd's revision is below where the delta chain is
// durable, so it is not the etcd the chain follows.
type etcdBehindError struct {
	endpoint          string
	etcdRev, chainRev int64
}

func (e *etcdBehindError) Error() string {
	return fmt.Sprintf("etcd at %s is at revision %d, behind the delta chain's %d: a rebuilt or restored etcd; a new backup restarts the chain",
		e.endpoint, e.etcdRev, e.chainRev)
}

// DeltaGap is a stretch the delta journal does not cover: the chain
// ended after FromRevision-1 (durable up to FromTime) and the next one
// starts from a snapshot at ToRevision taken at ToTime, so no moment in
// between can be restored with --at (the snapshot itself still holds
// every key).
type DeltaGap struct {
	FromRevision int64     `json:"fromRevision"`
	ToRevision   int64     `json:"toRevision"`
	FromTime     time.Time `json:"fromTime"`
	ToTime       time.Time `json:"toTime"`
}

// noteChainStart records a gap when a stream starts after what the journal
// holds (a restart from a new snapshot after compaction, or the first
// stream of an agent that was not running).
func (a *Agent) noteChainStart(start deltaPoint) {
	a.deltaMu.Lock()
	tail := a.deltaTail
	if tail == nil || start.Rev > tail.Rev {
		a.deltaTail = &deltaPoint{start.Rev, start.Time}
	}
	a.deltaMu.Unlock()
	if tail == nil || start.Rev <= tail.Rev {
		return
	}
	gap := DeltaGap{FromRevision: tail.Rev + 1, ToRevision: start.Rev, FromTime: tail.Time.UTC(), ToTime: start.Time.UTC()}
	a.m.deltaGaps.Inc()
	a.stMu.Lock()
	a.state.Etcd.DeltaGaps++
	a.state.Etcd.LastDeltaGap = &gap
	a.statusDirty = true
	a.stMu.Unlock()
	a.log.Warn("etcd delta journal has a gap: no point in time between these can be restored with --at",
		"fromRevision", gap.FromRevision, "toRevision", gap.ToRevision,
		"fromTime", gap.FromTime.Format(time.RFC3339Nano), "toTime", gap.ToTime.Format(time.RFC3339Nano))
}

// loadDeltaTail reads how far the journal is durable, so that metrics
// and status report it from the start (never 0 while nothing new could be
// written) and a later chain start can tell a gap.
func (a *Agent) loadDeltaTail() {
	j, err := a.store.Journal(backup.DeltaJournal)
	if err != nil {
		a.log.Warn("reading the delta journal", "err", err)
		return
	}
	segs, err := j.List()
	if err != nil {
		a.log.Warn("reading the delta journal", "err", err)
		return
	}
	var tail *deltaPoint
	for _, si := range segs {
		if tail == nil || int64(si.Last) > tail.Rev || (int64(si.Last) == tail.Rev && si.Time.After(tail.Time)) {
			tail = &deltaPoint{int64(si.Last), si.Time}
		}
	}
	if tail == nil {
		return
	}
	a.deltaMu.Lock()
	a.deltaTail = tail
	a.deltaMu.Unlock()
	a.m.deltaRev.Set(float64(tail.Rev))
	a.m.covered(tail.Time)
	a.stMu.Lock()
	a.state.Etcd.DeltaRevision, a.state.Etcd.DeltaTime = tail.Rev, tail.Time.UTC()
	a.stMu.Unlock()
}

// journalSink makes delta segments durable through the store journal
// (backup.DeltaSink) and accounts for them in status and metrics.
type journalSink struct {
	a     *Agent
	inner etcdsnap.SegmentSink
	// failed: a write failed (the stream ended for the store, not etcd).
	failed bool
}

func (s *journalSink) AppendSegment(data []byte, firstRev, lastRev int64, t time.Time) error {
	if !s.a.storeOK.Load() {
		s.failed = true
		return errors.New("not writing: the second disk is unavailable")
	}
	if err := s.inner.AppendSegment(data, firstRev, lastRev, t); err != nil {
		s.failed = true
		kick(s.a.storeKick)
		return err
	}
	a := s.a
	a.deltaMu.Lock()
	a.deltaTail = &deltaPoint{lastRev, t}
	a.deltaMu.Unlock()
	a.m.bytesWritten.WithLabelValues(JobEtcdDeltas).Add(float64(len(data)))
	a.m.deltaRev.Set(float64(lastRev))
	a.m.covered(t)
	ut := t.UTC()
	a.stMu.Lock()
	a.state.Etcd.DeltaRevision, a.state.Etcd.DeltaTime = lastRev, ut
	js := a.state.Jobs[JobEtcdDeltas]
	if js == nil {
		js = &JobState{}
		a.state.Jobs[JobEtcdDeltas] = js
	}
	js.LastSuccess, js.Failures = &ut, 0
	a.statusDirty = true
	a.stMu.Unlock()
	a.m.lastSuccess.WithLabelValues(JobEtcdDeltas).Set(float64(t.UnixNano()) / 1e9)
	return nil
}

// etcdClientConfig merges discovery with the configured overrides, the
// same way backup does, with host paths put under the root.
func (a *Agent) etcdClientConfig(cfg config.Config) (etcdsnap.ClientConfig, bool) {
	a.setMu.Lock()
	set := a.discovered
	a.setMu.Unlock()
	return backup.ClientConfig(cfg.Root, set, cfg.Etcd)
}

// rediscover reads the manifests again (at start and when one changed).
// A failed discovery keeps the previous view: a manifest caught half
// written must not make the agent forget where etcd is.
func (a *Agent) rediscover(cfg config.Config) {
	set, err := layout.Discover(cfg.Root, layout.Options{Extra: cfg.Paths.Extra, Exclude: cfg.Paths.Exclude})
	if err != nil {
		a.log.Warn("discovery failed; keeping the previous backup set", "root", cfg.Root, "err", err)
		return
	}
	a.setDiscovered(set)
}

// setDiscovered installs a discovery result; when what to watch or how to
// reach etcd changed, the watches and the delta stream follow.
func (a *Agent) setDiscovered(set *layout.Set) {
	a.setMu.Lock()
	old := a.discovered
	a.discovered = set
	a.setMu.Unlock()
	if old == nil || !reflect.DeepEqual(old.Etcd, set.Etcd) {
		if old != nil {
			a.log.Info("etcd access changed in the manifests; restarting the delta stream")
		}
		a.restartDeltas()
	}
	if old == nil || !reflect.DeepEqual(old.HostPaths(), set.HostPaths()) {
		kick(a.rewatch)
	}
}

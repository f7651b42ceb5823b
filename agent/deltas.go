package agent

import (
	"context"
	"errors"
	"fmt"
	"reflect"
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
// durable, so the chain has no gap; when etcd compacted past that point it
// asks for a new backup and starts from it.
func (a *Agent) deltaLoop(ctx context.Context) {
	failures := 0
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
		if a.deltaChain != nil && a.deltaChain.Rev >= start.Rev {
			start = *a.deltaChain
		}
		a.deltaMu.Unlock()
		cc, haveEtcd := a.etcdClientConfig(cfg)
		if !cfg.Etcd.Deltas || start.Rev == 0 || !haveEtcd || !a.storeOK.Load() {
			select {
			case <-ctx.Done():
				return
			case <-a.deltaKick:
			}
			continue
		}
		err := a.streamOnce(ctx, cfg, cc, start)
		if ctx.Err() != nil {
			return
		}
		if err == nil { // restarted on purpose
			failures = 0
			continue
		}
		failures++
		now := a.now()
		a.record(JobEtcdDeltas, now, 0, 0, err)
		var nse *etcdsnap.NeedSnapshotError
		if errors.As(err, &nse) && nse.CompactRevision > 0 {
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
		if !wait(backoff(min(30*time.Second, cfg.Schedules.Backup), failures)) {
			return
		}
	}
}

// streamOnce runs one delta streamer until it stops; nil means it was
// stopped on purpose (restartDeltas or shutdown).
func (a *Agent) streamOnce(ctx context.Context, cfg config.Config, cc etcdsnap.ClientConfig, start deltaPoint) error {
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	a.deltaMu.Lock()
	a.deltaStop = stop
	a.deltaMu.Unlock()
	cli, _, ep, err := etcdsnap.ConnectAny(runCtx, cc)
	if err != nil {
		a.m.etcdAPIUp.Set(0)
		a.stMu.Lock()
		a.state.Etcd.APIUp, a.state.Etcd.Error = false, err.Error()
		a.statusDirty = true
		a.stMu.Unlock()
		if runCtx.Err() != nil {
			return nil
		}
		return fmt.Errorf("etcd deltas: %w", err)
	}
	defer cli.Close()
	sink, err := backup.DeltaSink(a.store)
	if err != nil {
		return fmt.Errorf("etcd deltas: %w", err)
	}
	a.m.etcdAPIUp.Set(1)
	a.stMu.Lock()
	a.state.Etcd.APIUp, a.state.Etcd.Error = true, ""
	a.statusDirty = true
	a.stMu.Unlock()
	a.log.Info("etcd delta stream started", "endpoint", ep, "afterRevision", start.Rev)
	ds := etcdsnap.NewDeltaStreamer(cli, start.Rev, start.Time, &journalSink{a: a, inner: sink}, etcdsnap.DeltaConfig{Flush: cfg.Etcd.DeltaFlush, Heartbeat: a.opts.DeltaHeartbeat})
	err = ds.Run(runCtx)
	cov := ds.Covered()
	a.deltaMu.Lock()
	if cov.ToRev > 0 {
		a.deltaChain = &deltaPoint{cov.ToRev, cov.ToTime}
	}
	a.deltaMu.Unlock()
	if err != nil {
		return fmt.Errorf("etcd deltas: %w", err)
	}
	return nil
}

// journalSink makes delta segments durable through the store journal
// (backup.DeltaSink) and accounts for them in status and metrics.
type journalSink struct {
	a     *Agent
	inner etcdsnap.SegmentSink
}

func (s *journalSink) AppendSegment(data []byte, firstRev, lastRev int64, t time.Time) error {
	if !s.a.storeOK.Load() {
		return errors.New("not writing: the second disk is unavailable")
	}
	if err := s.inner.AppendSegment(data, firstRev, lastRev, t); err != nil {
		kick(s.a.storeKick)
		return err
	}
	a := s.a
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

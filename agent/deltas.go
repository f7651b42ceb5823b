package agent

import (
	"context"
	"errors"
	"fmt"
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
		wrote, err := a.streamOnce(ctx, cfg, cc, start, failures > 0)
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
		if !wait(a.deltaRetryDelay(cfg, failures, err)) {
			return
		}
	}
}

// streamOnce runs one delta streamer until it stops; nil means it was
// stopped on purpose (restartDeltas or shutdown). wrote: it made at least
// one segment durable.
func (a *Agent) streamOnce(ctx context.Context, cfg config.Config, cc etcdsnap.ClientConfig, start deltaPoint, afterFailure bool) (wrote bool, err error) {
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	a.deltaMu.Lock()
	a.deltaStop = stop
	a.deltaMu.Unlock()
	if afterFailure {
		// Only then: each probe is a connection etcd logs as a failed
		// TLS handshake.
		a.waitReachable(runCtx, cc)
		if runCtx.Err() != nil {
			return false, nil
		}
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
	a.deltaMu.Lock()
	journalRev := start.Rev
	if a.deltaTail != nil {
		journalRev = max(journalRev, a.deltaTail.Rev)
	}
	a.deltaMu.Unlock()
	if rev := st.Header.GetRevision(); rev < journalRev {
		// Not the cluster of this journal (a rebuilt one starts again
		// from revision 1): a watch from a revision etcd has not reached
		// would skip everything below it, and a new chain would put a
		// second cluster's revisions beside the first's.
		return false, &etcdBehindError{endpoint: ep, etcdRev: rev, journalRev: journalRev}
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
		if errors.As(err, &nse) && !sink.failed && nse.CompactRevision == 0 &&
			!strings.HasPrefix(nse.Reason, "watch stalled") && !strings.Contains(nse.Reason, "out of order") {
			// Not answering, no leader, the connection gone.
			a.etcdUnreachable(err)
		}
		return wrote, fmt.Errorf("etcd deltas: %w", err)
	}
	return wrote, nil
}

// etcdBehindError: etcd's revision is below what the delta journal holds,
// so it is not the etcd the journal follows. The stream stays off (a
// restore would mix the two clusters' changes) and says so.
type etcdBehindError struct {
	endpoint            string
	etcdRev, journalRev int64
}

func (e *etcdBehindError) Error() string {
	return fmt.Sprintf("etcd at %s is at revision %d, below the %d the store's delta journal holds: not the cluster this store follows (rebuilt with kubeadm reset/init?); no deltas are written: point the agent at a new store for the new cluster (the old versions stay restorable where they are)",
		e.endpoint, e.etcdRev, e.journalRev)
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

package agent

// The jobs themselves; jobs.go schedules and runs them.

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"time"

	"github.com/kubekeep/kubekeep/backup"
	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/rsyncish"
)

func (a *Agent) backupJob(ctx context.Context) (int64, error) {
	var res *backup.Result
	err := a.withStore(ctx, func() error {
		var err error
		res, err = a.takeBackup(ctx)
		return err
	})
	if err != nil {
		return 0, err
	}
	return res.BytesWritten, nil
}

// takeBackup writes one version and records what its etcd part did; the
// caller holds the store slot.
func (a *Agent) takeBackup(ctx context.Context) (*backup.Result, error) {
	cfg := a.config()
	if a.beforeBackup != nil {
		a.beforeBackup()
	}
	started := a.now()
	res, err := backup.Run(ctx, backup.Options{
		Root:    cfg.Root,
		Store:   a.store,
		Paths:   cfg.Paths.Extra,
		Exclude: cfg.Paths.Exclude,
		Etcd:    cfg.Etcd,
		Origin:  versionread.OriginAgent,
		Logger:  a.log,
		// A journal version needs this agent's delta stream: without it
		// (deltas off, or not running) the version is a full one.
		ForceFull:    !cfg.Etcd.Deltas || !a.deltaWanted.Load(),
		JournalWait:  max(backup.DefaultJournalWait, 3*cfg.Etcd.DeltaFlush),
		DeltaTail:    a.durableRevision,
		JournalCache: &a.journal,
	})
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	for _, w := range res.Warnings {
		a.log.Warn("backup warning", "version", res.ID, "warning", w)
	}
	if res.Good {
		a.log.Info("version committed", "version", res.ID, "status", string(res.Status), "files", res.Files,
			"bytesNew", res.BytesNew, "duration", res.Duration)
	} else {
		// Committed, kept, and not what a restore's "latest" will take.
		a.log.Error("ALERT: version committed but not good; latest still means the newest good version",
			"version", res.ID, "status", string(res.Status), "degraded", res.Degraded, "problems", res.Problems,
			"files", res.Files, "duration", res.Duration)
	}
	if res.Set != nil {
		a.setDiscovered(res.Set)
	}
	a.recordEtcdSnapshot(res, started)
	a.refreshStoreStats()
	a.offsiteVersionCommitted()
	if res.EtcdKind == versionread.EtcdKindFull {
		// A full snapshot went through this process a MiB at a time (the
		// store's blocks, the check copy, the key index): the heap it grew
		// to stays mapped until the scavenger returns it minutes later,
		// which is the idle RSS an operator sees. Return it now.
		debug.FreeOSMemory()
	}
	return res, nil
}

func (a *Agent) recordEtcdSnapshot(res *backup.Result, started time.Time) {
	dur := a.now().Sub(started)
	switch res.Status {
	case versionread.StatusOK:
		info := res.Etcd
		t := res.Time
		if !info.Started.IsZero() {
			t = info.Started
		}
		a.stMu.Lock()
		a.state.Etcd.Source, a.state.Etcd.Revision, a.state.Etcd.Time = info.Source, info.Revision, t.UTC()
		a.state.Etcd.Kind, a.state.Etcd.Base = res.EtcdKind, info.Base
		if res.EtcdKind == versionread.EtcdKindJournal {
			a.state.Etcd.JournalVersions++
		} else {
			a.state.Etcd.FullVersions++
			a.state.Etcd.FullReason = res.FullReason
		}
		a.stMu.Unlock()
		if res.EtcdKind != "" {
			a.m.etcdKinds.WithLabelValues(res.EtcdKind).Inc()
		}
		rawMsg := "etcd API did not answer; the data dir was copied raw while no etcd held it"
		if info.Source == "api" || info.Source == snapread.SourceJournal {
			a.etcdReachable()
		} else {
			a.etcdUnreachable(errors.New(rawMsg))
		}
		a.m.covered(t)
		a.newDeltaBase(info.Revision, t)
		var err error
		if info.Source == snapread.SourceRaw {
			// The version is good, but etcd itself is down: keep that
			// visible as an etcd failure rather than a quiet success.
			err = errors.New(rawMsg)
		}
		a.record(JobEtcdSnapshot, started, dur, 0, err)
	case versionread.StatusEtcdFailed:
		msg := "etcd snapshot failed"
		if res.EtcdError != nil {
			msg = res.EtcdError.Error()
		}
		a.etcdUnreachable(errors.New(msg))
		a.record(JobEtcdSnapshot, started, dur, 0, res.EtcdError)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// cloudJob takes a local version first, so the ECS set is tagged with an
// application-consistent point, then the set. A failed local backup does
// not stop the set: a crash-consistent VM snapshot still beats none.
func (a *Agent) cloudJob(ctx context.Context) (int64, error) {
	cfg := a.config()
	req := CloudRequest{Cloud: cfg.Cloud}
	var written int64
	err := a.withStore(ctx, func() error {
		res, err := a.takeBackup(ctx)
		if err != nil {
			return err
		}
		written = res.BytesWritten
		if res.Status == versionread.StatusOK {
			req.Version, req.EtcdRevision = res.ID, res.Etcd.Revision
		}
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return 0, err
		}
		a.log.Warn("local backup before the cloud snapshot failed; the set will be crash-consistent only", "err", err)
	} else if req.Version == "" {
		a.log.Warn("local version has no verified etcd snapshot; the cloud set is not tagged with one")
	}
	if err := a.opts.CloudSnapshot(ctx, req); err != nil {
		return written, fmt.Errorf("cloud snapshot: %w", err)
	}
	return written, nil
}

func (a *Agent) pruneJob(ctx context.Context) (int64, error) {
	cfg := a.config()
	// No tier sync runs while prune removes (or repacks) what it may have
	// listed; syncs wait for the prune, backups do not wait for syncs.
	a.offGate.Lock()
	defer a.offGate.Unlock()
	return 0, a.withStore(ctx, func() error {
		unlock, err := a.store.LockWait(ctx, time.Minute)
		if err != nil {
			return fmt.Errorf("prune: %w", err)
		}
		defer unlock()
		res, err := backup.Prune(ctx, a.store, cfg.Retention, false)
		if err != nil {
			return fmt.Errorf("prune: %w", err)
		}
		a.log.Info("pruned", "kept", len(res.Keep), "removed", len(res.Remove), "bytesFreed", res.BytesFreed,
			"deltaSegmentsTrimmed", res.DeltaSegmentsTrimmed)
		a.refreshStoreStats()
		return nil
	})
}

func (a *Agent) verifyJob(ctx context.Context) (int64, error) {
	return 0, a.withStore(ctx, func() error {
		unlock, err := a.store.LockWait(ctx, time.Minute)
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		defer unlock()
		rep, err := a.store.Verify(ctx, true)
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		if !rep.Clean() {
			var parts []string
			for i, p := range rep.Problems {
				if i == 3 {
					parts = append(parts, fmt.Sprintf("and %d more", len(rep.Problems)-3))
					break
				}
				parts = append(parts, p.String())
			}
			return fmt.Errorf("store damaged: %d problem(s): %s", len(rep.Problems), strings.Join(parts, "; "))
		}
		a.log.Info("store verified clean", "versions", rep.Versions, "packs", rep.Packs, "bytesRead", rep.BytesRead)
		return nil
	})
}

func (a *Agent) drillJob(ctx context.Context) (int64, error) {
	return 0, a.withStore(ctx, func() error {
		vs, err := a.store.Versions()
		if err != nil {
			return fmt.Errorf("restore drill: %w", err)
		}
		var pick *rsyncish.VersionInfo
		for i := len(vs) - 1; i >= 0 && pick == nil; i-- {
			// A journal version too (its base's snapshot plus the journal,
			// checked against what etcd held), while its chain is intact.
			if info := versionread.VersionEtcd(vs[i]); info != nil && info.Verified && versionStatus(vs[i]) == string(versionread.StatusOK) &&
				versionread.Readable(a.store, vs, vs[i]) == nil {
				pick = &vs[i]
			}
		}
		switch {
		case pick == nil:
			return errors.New("restore drill: no version with a good etcd snapshot yet")
		case pick.Verified:
			a.log.Info("restore drill: the newest good version is already verified", "version", pick.ID)
			return nil
		}
		err = a.opts.Drill(ctx, a.store, pick.ID)
		// The drill ran an etcd in this process: give its heap back.
		debug.FreeOSMemory()
		if err != nil {
			return fmt.Errorf("restore drill of %s: %w", pick.ID, err)
		}
		a.log.Info("restore drill passed; version marked verified", "version", pick.ID)
		a.refreshStoreStats()
		return nil
	})
}

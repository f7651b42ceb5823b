package agent

// What the delta stream made durable: the journal's tail, the gaps a new
// chain leaves, and the sink that accounts for every segment.

import (
	"errors"
	"time"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/etcdsnap"
)

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
	a.statusChangedLocked()
	a.stMu.Unlock()
	a.log.Warn("etcd delta journal has a gap: no point in time between these can be restored with --at",
		"fromRevision", gap.FromRevision, "toRevision", gap.ToRevision,
		"fromTime", gap.FromTime.Format(time.RFC3339Nano), "toTime", gap.ToTime.Format(time.RFC3339Nano))
}

// loadDeltaTail reads how far the journal is durable, so that metrics
// and status report it from the start (never 0 while nothing new could be
// written) and a later chain start can tell a gap.
func (a *Agent) loadDeltaTail() {
	j, err := a.store.Journal(versionread.DeltaJournal)
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

// resumeDeltaChain lets the delta stream go on from the journal's tail
// when the agent starts on a store whose journal an earlier run wrote, so
// the first version after a restart can be a journal version holding what
// changed meanwhile, not a full snapshot (~8 s of CPU per GiB of db, and
// etcd sending the whole db). The stream treats the tail as it treats the
// point it resumes from after an outage: when etcd compacted past it, a
// new backup restarts the chain (and the gap shows); when etcd is not the
// journal's cluster (its revision below the tail), the stream stays off.
// Until the stream is durable up to etcd's revision, a backup waits for it
// (backup.Options.JournalWait) and takes a full snapshot if it is not.
func (a *Agent) resumeDeltaChain(cfg config.Config) {
	if !cfg.Etcd.Deltas {
		return
	}
	a.deltaMu.Lock()
	defer a.deltaMu.Unlock()
	if a.deltaTail == nil || a.deltaChain != nil {
		return
	}
	c := *a.deltaTail
	a.deltaChain = &c
	// The first backup may start before the delta loop's first pass; the
	// loop clears this again when it cannot stream (no etcd, no store).
	a.deltaWanted.Store(true)
	a.log.Info("resuming the etcd delta stream from the journal", "afterRevision", c.Rev, "journalTime", c.Time.UTC().Format(time.RFC3339))
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
	news := js == nil || js.Failures > 0 || js.LastSuccess == nil
	if js == nil {
		js = &JobState{}
		a.state.Jobs[JobEtcdDeltas] = js
	}
	js.LastSuccess, js.Failures = &ut, 0
	if news {
		// The stream works again (or for the first time): status says
		// so promptly.
		a.statusChangedLocked()
	} else {
		// Only how far it is durable moved: the status file follows
		// within StatusDeltaEvery (the journal itself is what status
		// reads the delta lag from).
		a.statusDeltaLocked()
	}
	a.stMu.Unlock()
	a.m.lastSuccess.WithLabelValues(JobEtcdDeltas).Set(float64(t.UnixNano()) / 1e9)
	a.offsiteSegment(firstRev, lastRev)
	return nil
}

// durableRevision is how far this agent's delta stream made the journal
// durable (backup.Options.DeltaTail), 0 before its first segment.
func (a *Agent) durableRevision() int64 {
	a.deltaMu.Lock()
	defer a.deltaMu.Unlock()
	if a.deltaTail == nil {
		return 0
	}
	return a.deltaTail.Rev
}

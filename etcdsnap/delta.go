package etcdsnap

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// SegmentSink makes segments durable (the store: write, fsync) before it
// returns. Segments arrive in order and chain: firstRev is the previous
// lastRev + 1. A progress mark holds no change and has firstRev =
// lastRev + 1; it records that nothing changed up to time t. A mark that
// follows a mark covers from that one's start (Segment.FromTime), so a
// sink may keep only the newest of consecutive marks.
type SegmentSink interface {
	AppendSegment(data []byte, firstRev, lastRev int64, t time.Time) error
}

// DeltaConfig tunes a DeltaStreamer; zero values take the defaults.
type DeltaConfig struct {
	// Flush is the longest a received change waits before it is handed
	// to the sink: the RPO between snapshots. Default 2 s.
	Flush time.Duration
	// Heartbeat is how often a stream that heard nothing asks etcd for
	// watch progress (on the watch's own gRPC stream) and writes etcd's
	// answer as a progress mark: "every change up to revision R is
	// durable, as of time T". A restore can then reach any moment up to
	// the newest mark, not only up to the last change. It also bounds how
	// long a loss goes unnoticed: when a progress request cannot be sent,
	// or nothing at all (change or progress) arrives for 2 heartbeats,
	// etcd must answer a linearizable read within one heartbeat (at least
	// a second) or the chain ends; an answer at the stream's own revision
	// is a progress mark too. Default: Flush.
	Heartbeat time.Duration
	// MaxSegmentBytes flushes early when this many key+value bytes are
	// pending, at a revision boundary (inside one watch response too):
	// it bounds memory under a write burst, and what reading one change
	// through a journal key index reads (the segment holding it).
	// Default 1 MiB.
	MaxSegmentBytes int
	// Now is the clock; tests may replace it.
	Now func() time.Time
}

func (c DeltaConfig) withDefaults() DeltaConfig {
	if c.Flush <= 0 {
		c.Flush = 2 * time.Second
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = c.Flush
	}
	if c.MaxSegmentBytes <= 0 {
		c.MaxSegmentBytes = 1 << 20
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// stallHeartbeats is how many heartbeats a watch may stay silent while
// etcd answers reads before the stream is restarted: a watcher that
// catches up sends changes, and a synced one answers progress requests,
// so a silent watch on a live etcd is stuck.
const stallHeartbeats = 20

// ErrNeedSnapshot: the delta chain cannot continue without a gap; take a
// new snapshot and start a new streamer from its revision.
var ErrNeedSnapshot = errors.New("a new etcd snapshot is needed")

// NeedSnapshotError says why the chain ended and how far it is durable.
type NeedSnapshotError struct {
	Reason string
	// Covered is what was durably written before the chain ended.
	Covered Coverage
	// CompactRevision is set when etcd compacted past where we watched.
	CompactRevision int64
	Err             error
}

func (e *NeedSnapshotError) Error() string {
	msg := fmt.Sprintf("etcd deltas stopped after revision %d: %s", e.Covered.ToRev, e.Reason)
	if e.CompactRevision > 0 {
		msg += fmt.Sprintf(" (compacted at %d)", e.CompactRevision)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg + "; " + ErrNeedSnapshot.Error()
}

func (e *NeedSnapshotError) Is(target error) bool { return target == ErrNeedSnapshot }
func (e *NeedSnapshotError) Unwrap() error        { return e.Err }

// Coverage is the durable range of a delta chain: every change in
// revisions (FromRev, ToRev] is in the sink, received between FromTime
// and ToTime.
type Coverage struct {
	FromRev  int64     `json:"fromRevision"`
	ToRev    int64     `json:"toRevision"`
	FromTime time.Time `json:"fromTime"`
	ToTime   time.Time `json:"toTime"`
	Segments int64     `json:"segments"`
	Events   int64     `json:"events"`
}

// DeltaStreamer watches the whole keyspace after a snapshot revision and
// writes every change, in order, to a SegmentSink.
type DeltaStreamer struct {
	cli  *clientv3.Client
	sink SegmentSink
	cfg  DeltaConfig

	mu  sync.Mutex
	cov Coverage
}

// NewDeltaStreamer starts after afterRev (the snapshot's exact revision,
// DBStats.Revision) at time since (when the snapshot was taken).
func NewDeltaStreamer(cli *clientv3.Client, afterRev int64, since time.Time, sink SegmentSink, cfg DeltaConfig) *DeltaStreamer {
	return &DeltaStreamer{cli: cli, sink: sink, cfg: cfg.withDefaults(),
		cov: Coverage{FromRev: afterRev, ToRev: afterRev, FromTime: since, ToTime: since}}
}

// Covered returns the durable range so far.
func (d *DeltaStreamer) Covered() Coverage {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cov
}

// Run streams until ctx ends (then it flushes what it holds and returns
// nil) or the chain breaks: compaction past the start, a watch error, a
// silent etcd or a failing sink all return a *NeedSnapshotError, after
// flushing every change received so the chain is durable up to the break.
//
// What the watch delivers before etcd's first progress answer is written
// as catch-up segments (Segment.CatchUp): after a restart it holds the
// changes committed while nobody watched, whose commit times are unknown.
// A stream that starts at etcd's own revision (read before the watch is
// created) has nothing to catch up on: its changes are live from the first.
// While idle, every answer to a progress request, or a read showing that
// etcd is still at the stream's revision, becomes a progress mark (an
// empty segment), unless a segment was written less than 3/4 of a
// heartbeat before. Until etcd has sent a change or a progress answer on
// the stream (it sends no progress below a watch's start revision, so a
// stream started at etcd's revision gets none before the first change),
// each heartbeat is that read instead of a progress request: a mark every
// heartbeat in either case.
func (d *DeltaStreamer) Run(ctx context.Context) error {
	// Progress requests are routed by the context's gRPC metadata: they
	// must carry the watch's own (require-leader) metadata, or clientv3
	// opens a second, watcher-less stream whose answers nobody reads.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	start := d.Covered().ToRev
	hbEvery := d.cfg.Heartbeat
	probeTimeout := max(hbEvery, time.Second)
	// A stream that starts at etcd's own revision (a backup just taken)
	// missed nothing: what it receives is live, not a catch-up. Read
	// before the watch exists, so no change can fall between the two.
	// A loaded machine gets a longer answer window: a failed read only
	// makes the first changes count as a catch-up, which is safe but
	// refuses moments among them.
	rctx, rcancel := context.WithTimeout(wctx, 3*probeTimeout)
	resp, err := d.cli.Get(rctx, "\x00", clientv3.WithCountOnly())
	rcancel()
	startsLive := err == nil && resp.Header.GetRevision() == start
	wch := d.cli.Watch(wctx, "", clientv3.WithPrefix(), clientv3.WithRev(start+1), clientv3.WithProgressNotify())

	// A progress mark only when nothing was written for most of a
	// heartbeat: a busy cluster's own segments already say how far the
	// chain is, and each mark is one more file in the journal.
	markEvery := hbEvery * 3 / 4
	cur := d.newPending()
	pendingBytes := 0
	var flushC <-chan time.Time
	var flushT *time.Timer
	hb := time.NewTicker(hbEvery)
	defer hb.Stop()
	lastHeard := d.cfg.Now()
	lastWrite := time.Time{}
	// markFrom is the start of the progress mark written last, while no
	// change followed it: the next mark covers from there (a sink may
	// keep only the newest of consecutive marks, as the store's journal
	// does).
	var markFrom time.Time
	// catchingUp until etcd's first progress answer: until then, what
	// arrives was committed at some unknown moment since the resume point.
	catchingUp := !startsLive
	// answered: etcd answered a progress request or sent a change on
	// this stream. It answers no progress request while the watch waits
	// for its first revision (a stream started at etcd's revision, before
	// the first change), so until then an idle stream reads etcd's
	// revision each heartbeat instead (check), which makes the mark,
	// rather than ask again for nothing.
	answered := false

	// One progress request in flight at a time, sent from its own
	// goroutine: while clientv3 reconnects, the send blocks.
	progErr := make(chan error, 1)
	inFlight := false
	requestProgress := func() {
		if inFlight {
			return
		}
		inFlight = true
		go func() {
			rctx, rcancel := context.WithTimeout(wctx, hbEvery)
			defer rcancel()
			progErr <- d.cli.RequestProgress(rctx)
		}()
	}
	defer func() {
		cancel()
		if inFlight {
			<-progErr
		}
	}()
	requestProgress() // ends the catch-up as soon as etcd has sent it

	flush := func() error {
		if flushT != nil {
			flushT.Stop()
			flushT, flushC = nil, nil
		}
		isMark := len(cur.Events) == 0 && cur.ToRev == cur.FromRev
		if isMark && !cur.ToTime.After(cur.FromTime) {
			return nil
		}
		if isMark && !markFrom.IsZero() {
			// It replaces the mark before it in the journal, so it
			// covers from where that one did.
			cur.FromTime = markFrom
		}
		if err := d.sink.AppendSegment(cur.Encode(), cur.FromRev+1, cur.ToRev, cur.ToTime); err != nil {
			return &NeedSnapshotError{Reason: "delta sink failed", Covered: d.Covered(), Err: err}
		}
		markFrom = time.Time{}
		if isMark {
			markFrom = cur.FromTime
		}
		d.mu.Lock()
		d.cov.ToRev, d.cov.ToTime = cur.ToRev, cur.ToTime
		d.cov.Segments++
		d.cov.Events += int64(len(cur.Events))
		d.mu.Unlock()
		lastWrite = d.cfg.Now()
		cur, pendingBytes = d.newPending(), 0
		return nil
	}
	broken := func(reason string, compactRev int64, err error) error {
		if ferr := flush(); ferr != nil {
			return ferr
		}
		return &NeedSnapshotError{Reason: reason, Covered: d.Covered(), CompactRevision: compactRev, Err: err}
	}
	// check asks etcd for its revision with a linearizable read: the
	// watch said nothing, or a progress request could not even be sent.
	// No answer ends the chain. An answer at the revision the stream has
	// is as good as a progress notification: nothing changed until now.
	// (etcd answers no progress request while a watch waits for its first
	// revision, so an idle stream started at etcd's revision needs this.)
	check := func(why string) error {
		rctx, rcancel := context.WithTimeout(wctx, probeTimeout)
		resp, err := d.cli.Get(rctx, "\x00", clientv3.WithCountOnly())
		rcancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return broken(fmt.Sprintf("etcd not answering (%s; a read failed within %s)", why, probeTimeout), 0, err)
		}
		now := d.cfg.Now()
		if len(cur.Events) == 0 && resp.Header.GetRevision() == cur.ToRev {
			lastHeard, catchingUp = now, false
			cur.ToTime = now
			if now.Sub(lastWrite) >= markEvery {
				return flush()
			}
		}
		return nil
	}

	for {
		select {
		case <-ctx.Done():
			return flush()
		case <-flushC:
			if err := flush(); err != nil {
				return err
			}
		case err := <-progErr:
			inFlight = false
			if err != nil && ctx.Err() == nil {
				silent := d.cfg.Now().Sub(lastHeard).Round(time.Millisecond)
				if cerr := check(fmt.Sprintf("a watch progress request failed after %s of silence: %v", silent, err)); cerr != nil {
					return cerr
				}
			}
		case <-hb.C:
			// Half a heartbeat: ticks and answers are not in step, so
			// "a whole one" would skip every other tick.
			silent := d.cfg.Now().Sub(lastHeard)
			switch {
			case !answered && !catchingUp && silent >= hbEvery/2 && len(cur.Events) == 0:
				if err := check(fmt.Sprintf("no change since the stream started and %s of silence", silent.Round(time.Millisecond))); err != nil {
					return err
				}
				silent = d.cfg.Now().Sub(lastHeard)
			case silent >= hbEvery/2 || catchingUp:
				requestProgress()
			}
			if silent >= 2*hbEvery {
				if err := check(fmt.Sprintf("nothing from the watch for %s", silent.Round(time.Millisecond))); err != nil {
					return err
				}
				if silent = d.cfg.Now().Sub(lastHeard); silent > stallHeartbeats*hbEvery {
					return broken(fmt.Sprintf("watch stalled: etcd answers reads and has changes, but the watch sent nothing for %s", silent.Round(time.Millisecond)), 0, nil)
				}
			}
		case resp, ok := <-wch:
			if !ok {
				if ctx.Err() != nil {
					return flush()
				}
				return broken("watch channel closed", 0, nil)
			}
			now := d.cfg.Now()
			lastHeard = now
			if resp.CompactRevision != 0 {
				return broken("etcd compacted revisions the watch still needed", resp.CompactRevision, resp.Err())
			}
			if err := resp.Err(); err != nil {
				if ctx.Err() != nil {
					return flush()
				}
				return broken("watch failed", 0, err)
			}
			if resp.Created {
				// The watch exists; it proves nothing about what was sent.
				continue
			}
			if resp.IsProgressNotify() {
				answered = true
				// Every change up to the header revision has been sent.
				if resp.Header.Revision > cur.ToRev {
					cur.ToRev = resp.Header.Revision
				}
				cur.ToTime = now
				if catchingUp {
					catchingUp = false
					if len(cur.Events) > 0 {
						if err := flush(); err != nil {
							return err
						}
						continue
					}
				}
				if len(cur.Events) == 0 && now.Sub(lastWrite) >= markEvery {
					if err := flush(); err != nil {
						return err
					}
				}
				continue
			}
			for _, ev := range resp.Events {
				e := snapread.Event{Type: snapread.EventPut, Key: string(ev.Kv.Key), Value: ev.Kv.Value, ModRevision: ev.Kv.ModRevision,
					CreateRevision: ev.Kv.CreateRevision, Version: ev.Kv.Version, Lease: ev.Kv.Lease, Time: now}
				if ev.Type == mvccpb.DELETE {
					e.Type, e.Value = snapread.EventDelete, nil
				}
				if e.ModRevision <= cur.ToRev && len(cur.Events) > 0 && e.ModRevision < cur.Events[len(cur.Events)-1].ModRevision {
					return broken("watch delivered revisions out of order", 0,
						fmt.Errorf("revision %d after %d", e.ModRevision, cur.Events[len(cur.Events)-1].ModRevision))
				}
				// A response holds up to 1000 revisions: a burst is cut
				// into segments of about MaxSegmentBytes, between
				// revisions (a segment holds whole revisions).
				if pendingBytes >= d.cfg.MaxSegmentBytes && len(cur.Events) > 0 && e.ModRevision > cur.Events[len(cur.Events)-1].ModRevision {
					cur.ToTime = now
					cur.CatchUp = cur.CatchUp || catchingUp
					if err := flush(); err != nil {
						return err
					}
				}
				cur.Events = append(cur.Events, e)
				cur.ToRev = max(cur.ToRev, e.ModRevision)
				pendingBytes += len(e.Key) + len(e.Value)
			}
			if len(resp.Events) > 0 {
				answered = true // the watch is past its start: etcd answers progress requests
				cur.ToTime = now
				cur.CatchUp = cur.CatchUp || catchingUp
			}
			if pendingBytes >= d.cfg.MaxSegmentBytes {
				if err := flush(); err != nil {
					return err
				}
			} else if flushT == nil && len(cur.Events) > 0 {
				flushT = time.NewTimer(d.cfg.Flush)
				flushC = flushT.C
			}
		}
	}
}

func (d *DeltaStreamer) newPending() snapread.Segment {
	c := d.Covered()
	return snapread.Segment{FromRev: c.ToRev, ToRev: c.ToRev, FromTime: c.ToTime, ToTime: c.ToTime}
}

package snapread

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"sort"
	"time"

	"github.com/kubekeep/kubekeep/internal/parallel"
)

// replayTarget is what a replay moves a snapshot forward by: the delta
// segments, up to a revision or a time (zero: no such target).
type replayTarget struct {
	Segments      [][]byte
	UntilRevision int64
	UntilTime     time.Time
	Sealed        bool // each segment's bytes checked by the caller (DecodeSegmentSealed)
}

// ReplayEvents returns the changes a replay from a snapshot at snapRev up
// to untilRevision or untilTime (zero: no such target) applies, with the
// checks etcdsnap.RestoreDataDir makes before it writes anything: the segments
// chain from the snapshot without a gap, the target is covered (up to the
// newest change or progress mark), and a time target does not fall in a
// stretch a restarted watch caught up on. Readers that apply deltas
// themselves (get --at) use it to refuse what a restore refuses.
func ReplayEvents(segments []io.Reader, snapRev, untilRevision int64, untilTime time.Time) ([]Event, error) {
	bs := make([][]byte, len(segments))
	for i, r := range segments {
		b, err := io.ReadAll(r)
		if err != nil {
			return nil, fmt.Errorf("read delta segment %d: %w", i, err)
		}
		bs[i] = b
	}
	return ReplayEventsBytes(bs, snapRev, untilRevision, untilTime)
}

// ReplayEventsBytes is ReplayEvents over segments already in memory, which
// it decodes in place (get --at reads megabytes of them): the events'
// values are views of segments, which the caller keeps unchanged (and,
// when mapped, mapped) while it uses them.
func ReplayEventsBytes(segments [][]byte, snapRev, untilRevision int64, untilTime time.Time) ([]Event, error) {
	return planReplay(replayTarget{Segments: segments, UntilRevision: untilRevision, UntilTime: untilTime}, snapRev)
}

// ReplayEventsSealed is ReplayEventsBytes over segments each read out of
// a journal file whose blake3 seal the caller has checked
// (rsyncish.Journal.MapNeeded): they are decoded as DecodeSegmentSealed
// decodes, without their own crc32c over the same bytes.
func ReplayEventsSealed(segments [][]byte, snapRev, untilRevision int64, untilTime time.Time) ([]Event, error) {
	return planReplay(replayTarget{Segments: segments, UntilRevision: untilRevision, UntilTime: untilTime, Sealed: true}, snapRev)
}

// unsureWindow is a stretch of time a catch-up segment leaves unknown:
// its changes were committed after from and received by to.
type unsureWindow struct {
	from, to       time.Time
	fromRev, toRev int64
}

// planReplay decodes every segment, checks the chain from the snapshot
// revision to the target has no hole, and returns the events to apply.
//
// A time target is covered up to the newest moment the chain is durable
// for: the last segment's end, which is a progress mark's time when etcd
// was heard to be quiet after the last change. Inside a catch-up segment
// (a watch that restarted and received what was committed meanwhile), the
// moments between its start and its last change are refused: where they
// fall among those changes is unknown.
func planReplay(cfg replayTarget, snapRev int64) ([]Event, error) {
	var events []Event
	if len(cfg.Segments) == 0 {
		if cfg.UntilRevision > 0 && cfg.UntilRevision != snapRev {
			return events, fmt.Errorf("revision %d asked for but no deltas given (snapshot is at %d)", cfg.UntilRevision, snapRev)
		}
		return events, nil
	}
	if cfg.UntilRevision > 0 && cfg.UntilRevision < snapRev {
		return events, fmt.Errorf("revision %d is before the snapshot's revision %d: restore an older snapshot", cfg.UntilRevision, snapRev)
	}
	decoded, err := decodeSegments(cfg.Segments, cfg.Sealed)
	if err != nil {
		return events, err
	}
	segs := decoded[:0]
	for _, s := range decoded {
		if s.ToRev >= snapRev {
			segs = append(segs, s)
		}
	}
	// By start, then end; progress marks at one revision by time.
	sort.SliceStable(segs, func(i, j int) bool { return segmentBefore(segs[i], segs[j]) })
	rp := &replayer{cfg: cfg, covered: snapRev, take: func(e *Event) error {
		events = append(events, *e)
		return nil
	}}
	for _, s := range segs {
		if err := rp.add(s); err != nil {
			return events, err
		}
	}
	return events, rp.finish()
}

// decodeSegments decodes segments in place, on every CPU (each segment
// is its own: `get --at` at 8 GiB of etcd replays 85 MiB of them); the
// first error in input order is the one returned.
func decodeSegments(bs [][]byte, sealed bool) ([]*Segment, error) {
	out := make([]*Segment, len(bs))
	errs := make([]error, len(bs))
	decode := DecodeSegmentInPlace
	if sealed {
		decode = DecodeSegmentSealed
	}
	parallel.Each(len(bs), runtime.GOMAXPROCS(0), func(i int) {
		out[i], errs[i] = decode(bs[i])
	})
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("delta segment %d: %w", i, err)
		}
	}
	return out, nil
}

// segmentBefore is the order a replay takes segments in: by start, then
// end; progress marks at one revision by time.
func segmentBefore(a, b *Segment) bool {
	if a.FromRev != b.FromRev {
		return a.FromRev < b.FromRev
	}
	if a.ToRev != b.ToRev {
		return a.ToRev < b.ToRev
	}
	return a.ToTime.Before(b.ToTime)
}

// replayer checks segments taken in replay order and hands take the
// changes a replay applies.
type replayer struct {
	cfg                    replayTarget
	covered                int64
	coveredTime, startTime time.Time
	unsure                 []unsureWindow
	take                   func(*Event) error
}

func (rp *replayer) add(s *Segment) error {
	cfg := rp.cfg
	if s.FromRev > rp.covered {
		return fmt.Errorf("deltas have a gap: revisions %d to %d are missing", rp.covered+1, s.FromRev)
	}
	if rp.startTime.IsZero() {
		rp.startTime = s.FromTime
	}
	var first, last *Event
	for i := range s.Events {
		e := &s.Events[i]
		if e.ModRevision <= rp.covered {
			continue // already in the snapshot or an overlapping segment
		}
		if first == nil {
			first = e
		}
		last = e
		if cfg.UntilRevision > 0 && e.ModRevision > cfg.UntilRevision {
			continue
		}
		if !cfg.UntilTime.IsZero() && e.Time.After(cfg.UntilTime) {
			continue
		}
		if err := rp.take(e); err != nil {
			return err
		}
	}
	if s.CatchUp && last != nil && last.Time.After(s.FromTime) {
		rp.unsure = append(rp.unsure, unsureWindow{from: s.FromTime, to: last.Time, fromRev: first.ModRevision, toRev: last.ModRevision})
	}
	rp.covered = max(rp.covered, s.ToRev)
	if s.ToTime.After(rp.coveredTime) {
		rp.coveredTime = s.ToTime
	}
	return nil
}

func (rp *replayer) finish() error {
	cfg, covered, coveredTime, startTime := rp.cfg, rp.covered, rp.coveredTime, rp.startTime
	if cfg.UntilRevision > covered {
		return fmt.Errorf("deltas end at revision %d; revision %d is not covered", covered, cfg.UntilRevision)
	}
	if t := cfg.UntilTime; !t.IsZero() {
		if t.After(coveredTime) {
			return fmt.Errorf("deltas end at %s (revision %d: the newest change or progress mark that is durable); %s is not covered",
				coveredTime.Format(time.RFC3339Nano), covered, t.Format(time.RFC3339Nano))
		}
		if !startTime.IsZero() && t.Before(startTime) {
			return fmt.Errorf("%s is before the snapshot (%s): restore an older snapshot", t.Format(time.RFC3339Nano), startTime.Format(time.RFC3339Nano))
		}
		for _, w := range rp.unsure {
			if t.After(w.from) && t.Before(w.to) {
				return fmt.Errorf("%s is not covered: the delta stream was interrupted and caught up on revisions %d to %d, committed between %s and %s at times it cannot tell; restore to a moment outside that stretch (or --revision)",
					t.Format(time.RFC3339Nano), w.fromRev, w.toRev, w.from.Format(time.RFC3339Nano), w.to.Format(time.RFC3339Nano))
			}
		}
	}
	return nil
}

// ErrSegmentOrder: ScanEvents was handed a segment that a replay takes
// before the one handed before it.
var ErrSegmentOrder = errors.New("delta segments out of replay order")

// ScanEvents is ReplayEvents for a revision target over segments handed
// one at a time in replay order (by start, then end; a journal lists them
// so): next returns the next segment's bytes, or io.EOF after the last.
// fn sees each change a replay from snapRev to untilRevision applies, in
// order; the Event is valid only during the call. It makes ReplayEvents'
// checks, holds one segment at a time, and fails with ErrSegmentOrder on
// a segment handed out of order (ReplayEvents sorts them).
func ScanEvents(next func() ([]byte, error), snapRev, untilRevision int64, fn func(*Event) error) error {
	if untilRevision > 0 && untilRevision < snapRev {
		return fmt.Errorf("revision %d is before the snapshot's revision %d: restore an older snapshot", untilRevision, snapRev)
	}
	rp := &replayer{cfg: replayTarget{UntilRevision: untilRevision}, covered: snapRev, take: fn}
	var prev *Segment
	for i := 0; ; i++ {
		b, err := next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		s, err := DecodeSegment(b)
		if err != nil {
			return fmt.Errorf("delta segment %d: %w", i, err)
		}
		if s.ToRev < snapRev {
			continue
		}
		if prev != nil && segmentBefore(s, prev) {
			return fmt.Errorf("%w: segment %d (revisions %d-%d) after %d-%d", ErrSegmentOrder, i, s.FromRev, s.ToRev, prev.FromRev, prev.ToRev)
		}
		if err := rp.add(s); err != nil {
			return err
		}
		s.Events, prev = nil, s // the order needs only the header
	}
	if prev == nil && untilRevision > 0 && untilRevision != snapRev {
		return fmt.Errorf("revision %d asked for but no deltas given (snapshot is at %d)", untilRevision, snapRev)
	}
	return rp.finish()
}

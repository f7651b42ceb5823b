package backup

import (
	"bytes"
	"fmt"
	"io"
	"time"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// journalSink makes the store's journal the durable end of an etcd
// DeltaStreamer: a segment is on the second disk (fsynced) before
// AppendSegment returns, which is what bounds the RPO between versions.
type journalSink struct{ j *rsyncish.Journal }

// DeltaMarkSync is how often at most the delta journal makes an idle
// stream's progress marks durable (rsyncish.Journal.SetMarkSync): every
// change is durable before AppendSegment returns, but of the marks in
// between (one per etcd.deltaFlush while etcd is quiet) only one every
// DeltaMarkSync is fsynced. The others are on disk for every reader at
// once; a crash loses only the time coverage they added since the last
// durable mark (--at a moment in it says the deltas end there), never a
// change.
const DeltaMarkSync = 30 * time.Second

// DeltaSink returns the sink the agent's DeltaStreamer writes into.
func DeltaSink(s *rsyncish.Store) (etcdsnap.SegmentSink, error) {
	j, err := s.Journal(versionread.DeltaJournal)
	if err != nil {
		return nil, err
	}
	j.SetMarkSync(DeltaMarkSync)
	return journalSink{j}, nil
}

func (s journalSink) AppendSegment(data []byte, firstRev, lastRev int64, t time.Time) error {
	// A progress mark (etcdsnap: nothing changed up to lastRev by t) has
	// firstRev = lastRev + 1; the journal indexes segments by their
	// revision range, so record it as the empty range ending at lastRev.
	first := firstRev
	if first > lastRev {
		first = lastRev
	}
	if first < 0 {
		return fmt.Errorf("delta segment with negative revision %d", first)
	}
	return s.j.Append(data, uint64(first), uint64(lastRev), t)
}

// DeltaSegments returns, in revision order, the journal segments that
// hold changes after afterRev: what a point-in-time restore replays on
// top of a snapshot taken at afterRev.
func DeltaSegments(s *rsyncish.Store, afterRev int64) ([]io.Reader, []rsyncish.SegmentInfo, error) {
	j, err := s.Journal(versionread.DeltaJournal)
	if err != nil {
		return nil, nil, err
	}
	segs, err := j.List()
	if err != nil {
		return nil, nil, err
	}
	var readers []io.Reader
	var used []rsyncish.SegmentInfo
	for _, si := range segs {
		if int64(si.Last) <= afterRev {
			continue
		}
		data, err := j.Read(si)
		if err != nil {
			return nil, nil, fmt.Errorf("delta segment %s: %w", si.File, err)
		}
		readers = append(readers, bytes.NewReader(data))
		used = append(used, si)
	}
	return readers, used, nil
}

package versionread

import (
	"fmt"

	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// SegmentSpan is the store's rsyncish.SegmentSpan: what an etcd delta
// journal segment's header says it holds, (fromRev, toRev]. With it,
// verify sees the one loss a segment's name cannot show: a one-revision
// segment (R-R) lost beside the progress mark after it, which the journal
// names R-R too (rsyncish/journal_span.go).
func SegmentSpan(journal string, data []byte) (after, through uint64, err error) {
	if journal != DeltaJournal {
		return 0, 0, rsyncish.ErrSpanUnknown
	}
	from, to, err := snapread.SegmentRange(data)
	if err != nil {
		return 0, 0, err
	}
	if from < 0 {
		return 0, 0, fmt.Errorf("%w: negative revision %d", snapread.ErrBadSegment, from)
	}
	return uint64(from), uint64(to), nil
}

package rsyncish

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/kubekeep/kubekeep/internal/parallel"
)

// MapNeeded is ReadNeeded for a reader that keeps what it decodes (`get
// --at`, which replays every change since a version into the snapshot it
// reads): each segment's data is a view of its file mapped read-only, not
// a copy on the heap (at 8 GiB of etcd a 5-minute window is 85 MiB, and
// allocating it was a quarter of `get --at`), each checked as Read checks
// it, the segments checked in parallel. release unmaps them; nothing read
// from them may be used after it.
func (j *Journal) MapNeeded(afterRev, untilRev uint64, untilTime time.Time) (datas [][]byte, segs []SegmentInfo, release func(), err error) {
	segs, err = j.Needed(afterRev, untilRev, untilTime)
	if err != nil {
		return nil, nil, nil, err
	}
	datas = make([][]byte, len(segs))
	unmaps := make([]func(), len(segs))
	errs := make([]error, len(segs))
	release = func() {
		for _, u := range unmaps {
			if u != nil {
				u()
			}
		}
	}
	parallel.Each(len(segs), runtime.GOMAXPROCS(0), func(i int) {
		datas[i], unmaps[i], errs[i] = j.mapSegment(segs[i])
	})
	for _, e := range errs {
		if e != nil {
			release()
			return nil, nil, nil, e
		}
	}
	return datas, segs, release, nil
}

// mapSegment maps and checks one segment: Read without the copy.
func (j *Journal) mapSegment(si SegmentInfo) (data []byte, unmap func(), err error) {
	path, err := j.segmentPath(si)
	if err != nil {
		return nil, nil, err
	}
	raw, unmapRaw, err := mapStoreFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("journal %s: %w", j.name, err)
	}
	defer func() {
		if err != nil {
			unmapRaw()
			data, unmap = nil, nil
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverFault(&err, "journal "+j.name+" segment "+si.File)
	if data, err = j.segmentData(si, raw); err != nil {
		return nil, nil, err
	}
	return data, unmapRaw, nil
}

package rsyncish

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// Compacting a journal: many small segments replaced by one.
//
// A writer that makes a change durable within seconds writes a segment
// every few seconds: a kubeadm control plane renews its leases every 2 to
// 10 s, so the etcd delta journal gains ~20,000–40,000 files a day.
// Everything that lists the journal (every journal version, `get` of one,
// verify, the drill) pays for each file.
// The owner of the content (package backup, which knows what a segment
// holds) merges a run of them into one segment and calls Replace.
//
// Crash safety: the new segment is durable (written, fsynced, renamed, the
// directory fsynced) before any segment it replaces is removed. A crash in
// between leaves the new segment over segments still there: overlapping
// segments, which every reader of the journal takes (a replay skips the
// revisions it has already applied, a chain is covered either way), and
// which the next compaction removes (DropCovered). A segment is removed
// only while no reader holds the store's read lock: a get or restore that
// listed the journal finds every segment it listed, and a compaction that
// meets a reader leaves the old segments for the next one.

// Replace writes seg (a segment holding what olds hold, in the writer's
// encoding) as one segment named for revisions olds[0].First to the last
// of olds at time t, then removes olds, unless a reader holds the store's
// read lock (removed says whether they went). olds must be a run of at
// least two segments of j, ordered as List orders them, each starting
// no later than one revision after the run so far ends.
func (j *Journal) Replace(olds []SegmentInfo, seg []byte, t time.Time) (si SegmentInfo, removed bool, err error) {
	if len(olds) < 2 {
		return SegmentInfo{}, false, fmt.Errorf("journal %s: replace needs at least two segments, got %d", j.name, len(olds))
	}
	first, last := olds[0].First, olds[0].Last
	for _, o := range olds[1:] {
		if o.First < first || o.First > last+1 {
			return SegmentInfo{}, false, fmt.Errorf("journal %s: segment %s does not follow revisions %d-%d", j.name, o.File, first, last)
		}
		last = max(last, o.Last)
	}
	for _, o := range olds {
		if f, l, ok := parseSegName(o.File); !ok || o.File != filepath.Base(o.File) || f != o.First || l != o.Last {
			return SegmentInfo{}, false, fmt.Errorf("journal %s: bad segment name %q", j.name, o.File)
		}
	}
	name := segName(first, last, t)
	for _, o := range olds {
		if o.File == name {
			return SegmentInfo{}, false, fmt.Errorf("journal %s: the replacement would be named %s, as a segment it replaces", j.name, name)
		}
	}
	data := format.EncodeSegment(format.Segment{First: first, Last: last, Time: t, Data: seg})
	if free, err := freeBytes(j.dir); err == nil && free < int64(len(data))+j.s.opts.MinFree {
		return SegmentInfo{}, false, fmt.Errorf("journal %s: %w: %s free, minFree %s", j.name, ErrNoSpace, human(free), human(j.s.opts.MinFree))
	}
	if err := writeFileAtomic(filepath.Join(j.dir, name), data, 0o600); err != nil {
		return SegmentInfo{}, false, fmt.Errorf("journal %s: %w", j.name, err)
	}
	si = SegmentInfo{First: first, Last: last, Time: t.UTC(), Size: int64(len(data)), File: name}
	removed, err = j.removeUnread(olds)
	return si, removed, err
}

// DropCovered removes segments whose revisions keeper's also holds (what a
// crash between Replace's write and its removals leaves), after checking
// that keeper is there and reads. It returns whether they went (not while
// a reader holds the store's read lock).
func (j *Journal) DropCovered(keeper SegmentInfo, covered []SegmentInfo) (bool, error) {
	for _, c := range covered {
		if c.File == keeper.File || c.First < keeper.First || c.Last > keeper.Last {
			return false, fmt.Errorf("journal %s: segment %s (revisions %d-%d) is not within %s", j.name, c.File, c.First, c.Last, keeper.File)
		}
	}
	if _, err := j.Read(keeper); err != nil {
		return false, err
	}
	return j.removeUnread(covered)
}

// removeUnread removes segs while no reader holds the store's read lock.
func (j *Journal) removeUnread(segs []SegmentInfo) (bool, error) {
	f, err := openLockFile(j.s.path(readLockFile), os.O_RDONLY)
	if err != nil {
		return false, nil // no read lock (a read-only store): readers are not told apart; leave them
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return false, nil
		}
		return false, fmt.Errorf("store read lock: %w", err)
	}
	for _, s := range segs {
		if err := os.Remove(filepath.Join(j.dir, s.File)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("journal %s: %w", j.name, err)
		}
	}
	return true, syncDir(j.dir)
}
